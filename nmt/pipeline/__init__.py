"""The stages of the pipeline chained, and `nmt evaluate`: what the commands run."""

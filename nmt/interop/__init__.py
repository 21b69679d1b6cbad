"""The doors out of nmt: export to CTranslate2, to Hugging Face transformers, and a stripped
release checkpoint; decoding a CTranslate2 export with nmt's command line; and the door in:
importing a transformers model.

    source.py       the one place that reads an nmt checkpoint for export
    layout.py       the tensor-name table nmt <-> transformers (Marian / Pegasus layouts),
                    written once so that an import can walk it the other way
    ctranslate2.py  `nmt export --to ctranslate2`, and the CTranslate2-backed translator
    huggingface.py  `nmt export --to huggingface` and its model card
    release.py      `nmt export --to nmt`: weights, config and tokenizer, no training state
    importer.py     `nmt import huggingface`: a transformers Marian directory as a checkpoint
    m2m100.py       the same for an M2M100 directory and one language pair
    seq2seq.py      what both imports share: the model, its config, weights and SentencePiece
    vocab.py        an imported vocabulary in nmt's ids: row order, rewritten SentencePiece
    export.py       the `nmt export` command: choose the target, stage, rename into place
"""

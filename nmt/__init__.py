"""nmt: neural machine translation from the command line.

Importing the package must stay cheap and must not import `datasets` (GPU machines may
lack it): heavy modules are imported by the stages that need them.
"""

__version__ = "0.1.0"

"""nmt: neural machine translation from the command line, and from Python:

    from nmt import Translator
    Translator.from_checkpoint("runs/x/checkpoints/best.pt").translate("Ein Hund rennt.")

Importing the package must stay cheap and must not import torch or `datasets` (GPU machines
may lack it): heavy modules are imported by the stages that need them, and `Translator` on
first use (module `__getattr__`, PEP 562).
"""

from nmt.version import __version__

__all__ = ["Translator", "__version__"]


def __getattr__(name: str):
    if name == "Translator":
        from nmt.api import Translator

        return Translator
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")

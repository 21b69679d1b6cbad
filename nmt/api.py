"""The Python API: `from nmt import Translator`.

    from nmt import Translator

    translator = Translator.from_checkpoint("runs/multi30k_de_en/checkpoints/best.pt")
    translator.translate("Ein Hund rennt durch den Park.")  # one string -> one string
    translator.translate(["Ein Hund.", "Zwei Katzen."])  # a list -> a list, in order

Importing this module sets up the process as `nmt` does before torch is imported (the CPU
memory policy of `nmt.memory`), and devices default to `auto` as on the command line, so a
script gets the speed and the device the CLI gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nmt import memory

# Before torch is imported below: torch reads THP_MEM_ALLOC_ENABLE once, at its first CPU
# allocation (the same call as at the top of nmt/cli.py).
memory.configure_cpu_memory()

from nmt.backends import load_backend  # noqa: E402 - after the line above
from nmt.decoding.backend import TranslationBackend  # noqa: E402
from nmt.decoding.options import DecodeOptions  # noqa: E402
from nmt.errors import NmtError  # noqa: E402


class Translator:
    """A trained model that translates text: one output line per input line, always (an
    empty input gives an empty output).

    `engine` is the backend underneath (`nmt.decoding.backend`), for n-best lists, scores and
    speed statistics (`engine.translate(lines)` returns them all).
    """

    def __init__(self, engine: TranslationBackend):
        self.engine = engine

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", **options) -> Translator:
        """The model of a checkpoint written by `nmt train` (or `nmt average`), or of a
        directory written by `nmt export --to ctranslate2`, decoding with the options of
        `nmt translate` (`nmt.decoding.options.DecodeOptions`: beam_size, n_best,
        length_penalty, min_len, max_len_a, max_len_b, batch_tokens, quantize, precision,
        sampling, temperature, seed); each one left out takes the model's own setting.
        `device` is auto (a GPU if there is one), cpu, cuda or cuda:N."""
        return cls(load_backend(Path(path), DecodeOptions(device=device, **options)))

    def translate(self, text: str | Sequence[str]) -> str | list[str]:
        """The translation of one string (a str), or of each string of a list (a list)."""
        if isinstance(text, str):
            return self.engine.translate([text]).best[0]
        lines = list(text)
        for i, line in enumerate(lines):
            if not isinstance(line, str):
                raise NmtError(f"item {i} is {type(line).__name__}, not str: give text")
        return self.engine.translate(lines).best

    @property
    def device(self) -> str:
        return str(self.engine.device)

    def __repr__(self) -> str:
        return f"Translator(device={self.device!r}, numerics={self.engine.numerics!r})"

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

from nmt.decoding.translator import Translator as _Engine  # noqa: E402 - after the line above


class Translator:
    """A trained model that translates text: one output line per input line, always (an
    empty input gives an empty output).

    `engine` is the `nmt.decoding.translator.Translator` underneath, for n-best lists,
    scores and speed statistics (`engine.translate(lines)` returns them all).
    """

    def __init__(self, engine: _Engine):
        self.engine = engine

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        beam_size: int | None = None,
        length_penalty: float | None = None,
        batch_tokens: int | None = None,
        quantize: str | None = None,
        precision: str | None = None,
    ) -> Translator:
        """The model of a checkpoint written by `nmt train` (or `nmt average`), with the
        options of `nmt translate`: every one left as None takes the checkpoint's decode
        setting; `device` is auto (a GPU if there is one), cpu, cuda or cuda:N."""
        engine = _Engine.from_checkpoint(
            Path(path),
            device=device,
            beam_size=beam_size,
            length_penalty=length_penalty,
            quantize=quantize,
            precision=precision,
        )
        if batch_tokens:
            engine.batch_tokens = batch_tokens
        return cls(engine)

    def translate(self, text: str | Sequence[str]) -> str | list[str]:
        """The translation of one string (a str), or of each string of a list (a list)."""
        if isinstance(text, str):
            return self.engine.translate([text]).best[0]
        return self.engine.translate(list(text)).best

    @property
    def device(self) -> str:
        return str(self.engine.device)

    def __repr__(self) -> str:
        return f"Translator(device={self.device!r}, numerics={self.engine.numerics!r})"

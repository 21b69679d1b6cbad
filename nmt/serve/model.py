"""The one model a server holds, behind the small interface the batcher and the routes use.

It wraps any `nmt.decoding.backend` backend (nmt's engine or a CTranslate2 export; which
one a path gets is decided before the server starts, by `nmt.backends`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nmt.data.clean import normalize
from nmt.decoding.backend import TranslationBackend
from nmt.decoding.options import DecodeOptions
from nmt.serve.batcher import LineResult


@dataclass
class ServedModel:
    """A backend and the language pair of its model."""

    translator: TranslationBackend
    name: str
    _variants: dict[DecodeOptions, TranslationBackend] = field(default_factory=dict, repr=False)

    @property
    def source(self) -> str:
        return self.translator.config.data.src_lang

    @property
    def target(self) -> str:
        return self.translator.config.data.tgt_lang

    def check(self, options: DecodeOptions) -> None:
        """Refuse options the model cannot take (n-best above its beam) before they reach a
        batch."""
        self._variant(options)

    def translate(self, lines: list[str], options: DecodeOptions) -> list[LineResult]:
        """One LineResult per line, in order (runs in the decoding thread)."""
        result = self._variant(options).translate(lines)
        return [LineResult(t, h) for t, h in zip(result.texts, result.hypotheses)]

    def measure(self, lines: Sequence[str]) -> list[int]:
        """Source tokens per line (EOS included) as the translator counts them; 0 for a line
        that encodes to nothing, which the translator answers with "" without the model."""
        ids = self.translator.tokenizer.encode_src([normalize(line) for line in lines])
        return [len(i) + 1 if len(i) else 0 for i in ids]

    @property
    def beam_size(self) -> int:
        return self.translator.settings.beam_size

    def _variant(self, options: DecodeOptions) -> TranslationBackend:
        if options not in self._variants:
            self._variants[options] = self.translator.with_options(options)
        return self._variants[options]

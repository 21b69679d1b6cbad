"""The one model a server holds, behind the small interface the batcher and the routes use.

`load_served_model` is the one place that knows what MODEL may be: an nmt checkpoint or a
CTranslate2 export directory (`nmt export --to ctranslate2`), both through
`Translator.from_checkpoint`, which hands a directory to CTranslate2's engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nmt.data.clean import normalize
from nmt.decoding.translator import Translator
from nmt.serve.batcher import LineResult, SearchOptions


@dataclass
class ServedModel:
    """A Translator and the language pair of its checkpoint."""

    translator: Translator
    source: str
    target: str
    name: str
    _variants: dict[SearchOptions, Translator] = field(default_factory=dict, repr=False)

    def check(self, options: SearchOptions) -> None:
        """Refuse impossible options (n-best above the beam) before they reach a batch."""
        self._variant(options)

    def translate(self, lines: list[str], options: SearchOptions) -> list[LineResult]:
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

    def _variant(self, options: SearchOptions) -> Translator:
        if options not in self._variants:
            self._variants[options] = self.translator.with_search(**asdict(options))
        return self._variants[options]


def load_served_model(
    path: Path,
    *,
    device: str = "auto",
    beam_size: int | None = None,
    quantize: str | None = None,
    precision: str | None = None,
) -> ServedModel:
    translator = Translator.from_checkpoint(
        path, device=device, beam_size=beam_size, quantize=quantize, precision=precision
    )
    data = translator.config.data
    return ServedModel(translator, source=data.src_lang, target=data.tgt_lang, name=path.name)

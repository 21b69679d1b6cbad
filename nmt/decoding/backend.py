"""What translates: the interface every decoding backend offers, and the results it returns.

Two backends implement it: nmt's own engine (`nmt.decoding.engine.Engine`, a checkpoint or
an ensemble of several) and CTranslate2 (`nmt.interop.ctranslate2.CTranslate2Engine`, an
export directory). Which one a path gets is decided above both (`nmt.backends`). Callers ask
a backend's `capabilities` instead of its class: `require` refuses, naming the option, what
a backend cannot do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from nmt.data.languages import without_spurious_spaces
from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import Hypothesis, SearchSettings
from nmt.errors import NmtError


@dataclass
class TranslationStats:
    sentences: int = 0
    truncated: int = 0
    empty: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: TranslationStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Translation:
    """n-best hypotheses per input line (in input order), and their text."""

    hypotheses: list[list[Hypothesis]]
    texts: list[list[str]]
    stats: TranslationStats = field(default_factory=TranslationStats)

    @property
    def best(self) -> list[str]:
        return [t[0] if t else "" for t in self.texts]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond translating with beam search."""

    prefixes: bool  # target prefixes (--prefix-file)
    n_best: bool  # n-best lists equal to nmt's own
    alignment: bool  # the cross-attention alignment (--print-alignment)
    sampling: bool  # drawing tokens instead of searching (--sampling)
    ensembles: bool  # several models decoding as one (the mean of their log-probs)


# The option each capability answers, as the command line names it.
CAPABILITY_OPTIONS = {
    "prefixes": "--prefix-file",
    "n_best": "--n-best",
    "alignment": "--print-alignment",
    "sampling": "--sampling",
    "ensembles": "an ensemble",
}


class TranslationBackend(Protocol):
    """A loaded model that translates raw lines, one result per line, in order."""

    capabilities: Capabilities
    config: Any  # the model's resolved ExperimentConfig
    settings: SearchSettings
    numerics: str  # what the weights compute in: fp32, bf16, int8, "ctranslate2 int8"...
    batch_tokens: int
    max_input_tokens: int

    @property
    def device(self) -> Any: ...  # `.type` is "cpu" or "cuda"

    def translate(
        self, lines: Sequence[str], *, prefixes: Sequence[str] | None = None
    ) -> Translation: ...

    def with_options(self, options: DecodeOptions) -> TranslationBackend:
        """The same loaded model (shared, not copied) searching with `options` applied."""
        ...


def require(backend: TranslationBackend, capability: str, *, what: str) -> None:
    """Refuse, naming the option and `what` the backend is, a feature it does not have."""
    if not getattr(backend.capabilities, capability):
        raise NmtError(f"{CAPABILITY_OPTIONS[capability]} needs a checkpoint; {what}")


# Every character str.splitlines() breaks a line on (text-mode open() breaks on \n and \r).
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """A hypothesis as one line: byte-fallback pieces such as <0x0A> decode to real line
    breaks, which would split one output into two lines and shift all the following ones."""
    return _LINE_BREAKS.sub(" ", text)


def output_line(text: str, target_language: str | None) -> str:
    """Decoded text as an output line: one line, and no spaces between Chinese or Japanese
    characters (`nmt.data.languages.without_spurious_spaces`)."""
    return without_spurious_spaces(one_line(text), target_language)


def texts_of(hypotheses: list[list[Hypothesis]], tokenizer, target_language) -> list[list[str]]:
    """The output lines of each input's n-best list ([""] for an input without any)."""
    return [
        [output_line(t, target_language) for t in tokenizer.decode_tgt([h.tokens for h in nbest])]
        if nbest
        else [""]
        for nbest in hypotheses
    ]


def output_tokens(hypotheses: list[list[Hypothesis]]) -> int:
    """Tokens of the best hypotheses, EOS included (what tokens/s counts)."""
    return sum(len(n[0].tokens) + 1 for n in hypotheses if n)

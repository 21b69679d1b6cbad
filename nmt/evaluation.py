"""sacreBLEU scoring (BLEU, chrF, TER with their signatures) of files or a corpus split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmt.data.text import STDIN, read_lines
from nmt.errors import DataError


@dataclass(frozen=True)
class Score:
    name: str
    score: float
    signature: str
    text: str  # sacreBLEU's own one-line rendering

    def as_dict(self) -> dict:
        return {"score": self.score, "signature": self.signature, "text": self.text}


def score_lines(
    hypotheses: list[str], references: list[str], *, lowercase: bool = False
) -> dict[str, Score]:
    """Corpus-level BLEU (13a tokenisation), chrF and TER of hypotheses against one reference."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: line counts must match"
        )
    # force=True only silences sacreBLEU's "tokenized period" warning, which early-training
    # outputs like "A man ." trigger; scores are unchanged. TER keeps sacreBLEU's default
    # (case-insensitive) so its signature matches `sacrebleu -m ter`.
    metrics = {
        "bleu": BLEU(lowercase=lowercase, force=True),
        "chrf": CHRF(lowercase=lowercase),
        "ter": TER(),
    }
    scores = {}
    for name, metric in metrics.items():
        result = metric.corpus_score(hypotheses, [references])
        scores[name] = Score(name, float(result.score), str(metric.get_signature()), str(result))
    return scores


def score_files(hyp: Path, ref: Path, *, lowercase: bool = False) -> dict[str, Score]:
    hyps, refs = read_lines(hyp), read_lines(ref)
    if len(hyps) != len(refs):
        raise DataError(
            f"line counts differ: {hyp} has {len(hyps)} lines but {ref} has {len(refs)}"
        )
    if not refs:  # sacreBLEU would fail with an IndexError on empty lists
        raise DataError(f"nothing to score: {hyp} and {ref} have no lines")
    return score_lines(hyps, refs, lowercase=lowercase)


def scores_as_json(scores: dict[str, Score], **extra) -> dict:
    return {name: s.as_dict() for name, s in scores.items()} | extra


def evaluate_command(
    *,
    checkpoint: Path | None,
    corpus: str | None,
    split: str | None,
    src: Path | None,
    ref: Path | None,
    hyp: Path | None,
    lowercase: bool,
    json_output: bool,
    beam_size: int | None,
    device: str,
    data_dir: Path | None,
    output_dir: Path | None,
    quantize: str | None = None,
    precision: str | None = None,
    length_penalty: float | None = None,
    batch_tokens: int | None = None,
) -> None:
    """`nmt evaluate`: score existing output, a source file, or a corpus split."""
    import json

    _check_one_stdin(hyp=hyp, ref=ref, src=src)
    if hyp is not None:
        if ref is None:
            raise DataError("--hyp needs --ref")
        scores = score_files(hyp, ref, lowercase=lowercase)
        hyp_path = hyp
    else:
        if checkpoint is None:
            raise DataError("give a CHECKPOINT to translate with, or --hyp FILE --ref FILE")
        hyp_path, scores = _translate_and_score(
            checkpoint,
            corpus=corpus,
            split=split,
            src=src,
            ref=ref,
            lowercase=lowercase,
            device=device,
            data_dir=data_dir,
            output_dir=output_dir,
            quantize=quantize,
            precision=precision,
            search=dict(beam_size=beam_size, length_penalty=length_penalty),
            batch_tokens=batch_tokens,
        )
    report = scores_as_json(scores, hypotheses=str(hyp_path), lowercase=lowercase)
    if hyp is None:
        from nmt.data.text import atomic_write

        with atomic_write(hyp_path.with_suffix(hyp_path.suffix + ".scores.json")) as f:
            json.dump(report, f, indent=2)
    if json_output:
        print(json.dumps(report))
    else:
        for s in scores.values():
            print(s.text)
            print(f"  signature: {s.signature}")


def _check_one_stdin(**files: Path | None) -> None:
    """At most one input can be stdin ("-"): the others would find it already read."""
    named = [f"--{key}" for key, path in files.items() if path is not None and str(path) == STDIN]
    if len(named) > 1:
        raise DataError(f"{' and '.join(named)} are both - (stdin): only one input can be stdin")


def _translate_and_score(
    checkpoint: Path,
    *,
    corpus,
    split,
    src,
    ref,
    lowercase,
    device,
    data_dir,
    output_dir,
    quantize,
    precision,
    search: dict,
    batch_tokens: int | None,
) -> tuple[Path, dict[str, Score]]:
    from nmt.data.download import corpus_dir
    from nmt.data.text import write_lines_atomic
    from nmt.decoding.translator import Translator

    translator = Translator.from_checkpoint(
        checkpoint, device=device, quantize=quantize, precision=precision, **search
    )
    if batch_tokens:
        translator.batch_tokens = batch_tokens
    cfg = translator.config
    if src is not None:
        if ref is None:
            raise DataError("--src needs --ref")
        name = "stdin" if str(src) == STDIN else Path(src).name
    else:
        if split is None:
            raise DataError("give --split (with --corpus), --src/--ref, or --hyp/--ref")
        base = corpus_dir(data_dir or cfg.data.data_dir, corpus or cfg.data.corpus)
        src = base / f"{split}.{cfg.data.src_lang}"
        ref = base / f"{split}.{cfg.data.tgt_lang}"
        name = split
    sources, refs = read_lines(src), read_lines(ref)
    if len(sources) != len(refs):
        raise DataError(
            f"line counts differ: {src} has {len(sources)} lines but {ref} has {len(refs)}"
        )
    hyps = translator.translate(sources).best
    out_dir = output_dir or default_output_dir(checkpoint)
    hyp_path = out_dir / f"{name}.hyp.{cfg.data.tgt_lang}"
    write_lines_atomic(hyp_path, hyps)
    return hyp_path, score_lines(hyps, refs, lowercase=lowercase)


def default_output_dir(checkpoint: Path) -> Path:
    """runs/<name>/eval for a checkpoint in runs/<name>/checkpoints/, else eval/ beside it
    (never the grandparent of a checkpoint kept elsewhere, e.g. /home/eval for ~/avg.pt)."""
    folder = Path(checkpoint).resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "eval"

"""Translate and score: `nmt evaluate`, and the test splits `nmt train` and `nmt run` score.

Both go through `translate_and_score`: the hypotheses are written under a name no other
evaluation uses (`nmt.evaluation.results.result_tag`), scored with sacreBLEU, and recorded
with the identity of every model in the output directory's results.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nmt.backends import load_backend
from nmt.config import ExperimentConfig
from nmt.data.download import check_names, corpus_dir
from nmt.data.text import STDIN, check_one_stdin, read_lines, write_lines_atomic
from nmt.decoding.backend import TranslationBackend, require
from nmt.decoding.options import DecodeOptions
from nmt.decoding.stream import prefix_count_message
from nmt.errors import DataError
from nmt.evaluation import metrics, results
from nmt.evaluation.results import CheckpointIdentity, file_identity
from nmt.files import atomic_write


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_for_evaluation(
    models: Sequence[Path], options: DecodeOptions
) -> tuple[TranslationBackend, list[CheckpointIdentity]]:
    """The backend for `models` (one, or an ensemble) and the identity of every model file.
    A checkpoint replaced while being read (training rewrites best.pt) is refused rather
    than described by the hash of another file."""
    before = [results.file_state(path) for path in models]
    backend = load_backend(models, options)
    identities = [results.identify_checkpoint(path) for path in models]
    for path, state in zip(models, before):
        if results.file_state(path) != state:
            raise DataError(
                f"{path} was replaced while it was read (is training writing it?); "
                "evaluate again, or give a step_N.pt"
            )
    return backend, identities


@dataclass(frozen=True)
class Inputs:
    """What one evaluation translates: `name` names the hypotheses file (the split, or the
    --src file's name); `named_by_file`: files given by path, whose content enters the tag
    (a/test.de and b/test.de share a name)."""

    name: str
    src: Path
    ref: Path
    named_by_file: bool = False
    prefix_file: str | None = None


def translate_and_score(
    backend: TranslationBackend,
    identities: Sequence[CheckpointIdentity],
    inputs: Inputs,
    *,
    out_dir: Path,
    tokenize: str,
) -> dict:
    """Translate `inputs.src`, write the hypotheses, score them against `inputs.ref` (cased
    and lowercased) and return the results.json record (not yet written)."""
    sources, refs = read_lines(inputs.src), read_lines(inputs.ref)
    if len(sources) != len(refs):
        raise DataError(
            f"line counts differ: {inputs.src} has {len(sources)} lines but {inputs.ref} "
            f"has {len(refs)}"
        )
    prefixes = _read_prefixes(inputs.prefix_file, inputs.src, len(sources))
    translation = backend.translate(sources, prefixes=prefixes)
    hyps = translation.best
    digest = _lines_digest(sources + ["\0"] + refs) if inputs.named_by_file else None
    prefix_digest = None if prefixes is None else _lines_digest(prefixes)
    tag = results.result_tag(identities, backend, prefixes=prefix_digest, inputs=digest)
    hyp_path = out_dir / f"{inputs.name}.{tag}.hyp.{backend.config.data.tgt_lang}"
    write_lines_atomic(hyp_path, hyps)
    described = results.provenance(identities, backend)
    if inputs.prefix_file is not None:
        described["prefixes"] = file_identity(inputs.prefix_file)
    stats = translation.stats
    return results.split_record(
        split=inputs.name,
        source=inputs.src,
        reference=inputs.ref,
        hypotheses=hyp_path,
        cased=metrics.score_lines(hyps, refs, tokenize=tokenize),
        lowercased=metrics.score_lines(hyps, refs, lowercase=True, tokenize=tokenize),
        sentences_per_s=stats.sentences / max(stats.seconds, 1e-9),
        described=described,
    )


def _read_prefixes(prefix_file: str | None, src: Path, lines: int) -> list[str] | None:
    """The `--prefix-file` lines, one per source line (else one error naming both)."""
    if prefix_file is None:
        return None
    prefixes = read_lines(prefix_file)
    if len(prefixes) != lines:
        raise DataError(prefix_count_message(prefix_file, len(prefixes), str(src), lines))
    return prefixes


def _lines_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def evaluate_test_splits(
    cfg: ExperimentConfig, checkpoint: Path, *, device: str = "cpu"
) -> list[dict]:
    """Score `checkpoint` on every `data.test_splits` of its corpus (the checkpoint's own
    decode settings); the records go to the run's eval/results.json."""
    if not cfg.data.test_splits:
        return []
    d = cfg.data
    backend, identities = load_for_evaluation([checkpoint], DecodeOptions(device=device))
    tokenize = metrics.configured_bleu_tokenizer(cfg)
    base = corpus_dir(d.data_dir, d.corpus)
    out_dir = cfg.run_path / "eval"
    records = []
    for split in d.test_splits:
        src, ref = base / f"{split}.{d.src_lang}", base / f"{split}.{d.tgt_lang}"
        for path in (src, ref):
            if not path.exists():
                raise DataError(f"{path} not found; run `nmt download {d.corpus}`")
        inputs = Inputs(split, src, ref)
        records.append(
            translate_and_score(backend, identities, inputs, out_dir=out_dir, tokenize=tokenize)
        )
    results.record_results(out_dir, records)
    for r in records:
        cased = r["cased"]
        log(f"{r['split']}: {cased['bleu']['text']}")
        log(
            f"{r['split']}: lowercased BLEU {r['lowercased']['bleu']['score']:.2f}, "
            f"chrF {cased['chrf']['score']:.2f}, TER {cased['ter']['score']:.2f}"
        )
    return records


@dataclass(frozen=True)
class EvaluateRequest:
    """What `nmt evaluate` was asked: existing output (`hyp` with `ref`), a source file
    (`src` with `ref`) or a corpus split (`split`, `corpus`, `data_dir`), translated by
    `models` with `options`; `tokenize` is BLEU's sacreBLEU tokenizer (None: the model's
    eval.bleu_tokenize, "auto" for --hyp, which picks by the reference file's language)."""

    models: tuple[Path, ...] = ()
    options: DecodeOptions = DecodeOptions()
    corpus: str | None = None
    split: str | None = None
    src: Path | None = None
    ref: Path | None = None
    hyp: Path | None = None
    prefix_file: str | None = None
    lowercase: bool = False
    tokenize: str | None = None
    data_dir: Path | None = None
    output: Path | None = None


def evaluate_command(request: EvaluateRequest, *, json_output: bool) -> None:
    """`nmt evaluate`: print the scores (sacreBLEU's lines, or one JSON object)."""
    r = request
    check_one_stdin(hyp=r.hyp, ref=r.ref, src=r.src, prefix_file=r.prefix_file)
    report = _score_existing_output(r) if r.hyp is not None else _translate_and_report(r)
    if json_output:
        print(json.dumps(report))
    else:
        for name in ("bleu", "chrf", "ter"):
            print(report[name]["text"])
            print(f"  signature: {report[name]['signature']}")


def _score_existing_output(r: EvaluateRequest) -> dict:
    """--hyp scores a file as it is: a model or a decoding option given with it could not
    take effect, so it is refused, named."""
    if r.models:
        raise DataError(
            f"--hyp scores existing output: leave out the checkpoint {r.models[0]} "
            "(or leave out --hyp to translate with it)"
        )
    given = [r.options.name(name) for name in r.options.given()]  # --device is harmless
    given += ["--prefix-file"] if r.prefix_file is not None else []
    if given:
        raise DataError(
            f"--hyp scores existing output: {', '.join(given)} applies only when translating"
        )
    if r.ref is None:
        raise DataError("--hyp needs --ref")
    tokenize = metrics.bleu_tokenizer(metrics.language_of_file(r.ref), r.tokenize or "auto")
    return metrics.scores_as_json(
        metrics.score_files(r.hyp, r.ref, lowercase=r.lowercase, tokenize=tokenize),
        hypotheses=str(r.hyp),
        references=str(r.ref),
        files={"hypotheses": file_identity(r.hyp), "references": file_identity(r.ref)},
        lowercase=r.lowercase,
    )


def _translate_and_report(r: EvaluateRequest) -> dict:
    """Translate with the models, score, record in results.json, and write the report
    beside the hypotheses (`<hypotheses>.scores.json`)."""
    if not r.models:
        raise DataError("give a CHECKPOINT to translate with, or --hyp FILE --ref FILE")
    backend, identities = load_for_evaluation(r.models, r.options)
    cfg = backend.config
    tokenize = metrics.bleu_tokenizer(cfg.data.tgt_lang, r.tokenize or cfg.eval.bleu_tokenize)
    metrics.check_bleu_tokenizer(tokenize)  # before translating, not after
    if r.prefix_file is not None:
        require(backend, "prefixes", what=f"{r.models[0]} is a directory")
    out_dir = Path(r.output or results.default_output_dir(r.models[0]))
    record = translate_and_score(
        backend, identities, _inputs(r, cfg), out_dir=out_dir, tokenize=tokenize
    )
    # The report beside the hypotheses: the scores asked for, then how they were made.
    scores = record["lowercased" if r.lowercase else "cased"]
    report = scores | {"hypotheses": record["hypotheses"], "lowercase": r.lowercase}
    report |= {k: v for k, v in record.items() if k not in SCORES_AND_FILES}
    with atomic_write(Path(record["hypotheses"] + ".scores.json")) as f:
        json.dump(report, f, indent=2)
    results.record_results(out_dir, [record])
    return report


SCORES_AND_FILES = {"split", "source", "reference", "cased", "lowercased", "hypotheses"}
SCORES_AND_FILES |= {"sentences_per_s"}


def _inputs(r: EvaluateRequest, cfg: ExperimentConfig) -> Inputs:
    if r.src is not None:
        if r.ref is None:
            raise DataError("--src needs --ref")
        name = "stdin" if str(r.src) == STDIN else Path(r.src).name
        return Inputs(name, r.src, r.ref, named_by_file=True, prefix_file=r.prefix_file)
    if r.split is None:
        raise DataError("give --split (with --corpus), --src/--ref, or --hyp/--ref")
    check_names("--split", [r.split])  # it names the hypothesis file written
    base = corpus_dir(r.data_dir or cfg.data.data_dir, r.corpus or cfg.data.corpus)
    src = base / f"{r.split}.{cfg.data.src_lang}"
    ref = base / f"{r.split}.{cfg.data.tgt_lang}"
    return Inputs(r.split, src, ref, prefix_file=r.prefix_file)

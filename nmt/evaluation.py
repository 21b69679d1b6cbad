"""sacreBLEU scoring (BLEU, chrF, TER with their signatures) of files or a corpus split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from nmt.data.text import STDIN, read_lines, sha256_of
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


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class CheckpointIdentity:
    """What a result was computed from: a name such as best.pt moves on as training goes on,
    the content hash and step do not."""

    path: str  # resolved
    step: int | None
    sha256: str
    averaged_from: list[str] | None = None
    init_from: dict | None = None  # the checkpoint its run started from (train.init_from)

    def as_dict(self) -> dict:
        out = {"path": self.path, "step": self.step, "sha256": self.sha256}
        out |= {"averaged_from": self.averaged_from} if self.averaged_from else {}
        return out | ({"init_from": self.init_from} if self.init_from else {})


def load_for_evaluation(checkpoint: Path, **options):
    """`Translator.from_checkpoint(checkpoint, **options)` and the identity of the bytes it
    loaded. A checkpoint replaced while being read (training rewrites best.pt) is refused
    rather than described by the hash of another file."""
    from nmt.decoding.translator import Translator

    before = _file_state(checkpoint)
    translator = Translator.from_checkpoint(checkpoint, **options)
    identity = identify_checkpoint(checkpoint)
    if _file_state(checkpoint) != before:
        raise DataError(
            f"{checkpoint} was replaced while it was read (is training writing it?); "
            "evaluate again, or give a step_N.pt"
        )
    return translator, identity


def identify_checkpoint(checkpoint: Path) -> CheckpointIdentity:
    import torch

    from nmt.checkpoint import checkpoint_step

    path = Path(checkpoint).resolve()
    if path.is_dir():  # a CTranslate2 export directory
        return _identify_export(path)
    sha = sha256_of(path)
    try:  # mapped, not read: only the small training-state entries are touched
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step = checkpoint_step(state)
        averaged = state.get("averaged_from")
        init = state.get("init_from") if isinstance(state.get("init_from"), dict) else None
    except Exception:  # an old or foreign layout: the hash still identifies it
        step, averaged, init = None, None, None
    return CheckpointIdentity(str(path), step, sha, averaged, init)


def _file_state(path: Path) -> tuple | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def result_tag(identity: CheckpointIdentity, translator) -> str:
    """`step<N>-<8 hex>` for hypothesis file names: the hex digits hash the checkpoint's
    content and the decoding settings, so no later evaluation (another checkpoint behind the
    same name, another beam) overwrites a file an earlier result points at."""
    settings = {
        "checkpoint": identity.sha256,
        "search": repr(translator.settings),
        "numerics": translator.numerics,
        "device": translator.device.type,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"step{identity.step}-{digest}" if identity.step is not None else digest


def decoding_description(translator) -> dict:
    sampling = getattr(translator.settings, "sampling", None)
    return {
        "beam_size": translator.settings.beam_size,
        "device": str(translator.device),
        "numerics": translator.numerics,  # the weights' precision: fp32, bf16, int8...
    } | ({"sampling": asdict(sampling)} if sampling is not None else {})


def record_results(out_dir: Path, records: list[dict]) -> Path:
    """Merge `records` into out_dir/results.json under the directory's lock: a record of the
    same split, checkpoint content and decoding replaces the old one, every other record
    stays (an evaluation never erases another's result)."""
    from nmt.files import atomic_write, command_line, run_lock

    path = Path(out_dir) / "results.json"
    with run_lock(out_dir, command=command_line(), wait=True):
        kept = [r for r in _read_results(path) if _result_key(r) not in map(_result_key, records)]
        with atomic_write(path) as f:
            json.dump({"results": kept + records}, f, indent=2)
            f.write("\n")
    return path


def _read_results(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    results = data.get("results") if isinstance(data, dict) else None
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


def _result_key(record: dict) -> tuple:
    checkpoint = record.get("checkpoint")
    sha = checkpoint.get("sha256") if isinstance(checkpoint, dict) else checkpoint
    return (record.get("split"), sha, Path(str(record.get("hypotheses"))).name)


# --------------------------------------------------------------------------- nmt evaluate


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
    sampling=None,
) -> None:
    """`nmt evaluate`: score existing output, a source file, or a corpus split; `sampling`
    (an `nmt.decoding.sampling.Sampling`) draws the translations instead of searching."""
    _check_one_stdin(hyp=hyp, ref=ref, src=src)
    if hyp is not None:
        if ref is None:
            raise DataError("--hyp needs --ref")
        scores = score_files(hyp, ref, lowercase=lowercase)
        report = scores_as_json(
            scores,
            hypotheses=str(hyp),
            references=str(ref),
            files={"hypotheses": _file_identity(hyp), "references": _file_identity(ref)},
            lowercase=lowercase,
        )
    else:
        if checkpoint is None:
            raise DataError("give a CHECKPOINT to translate with, or --hyp FILE --ref FILE")
        report, scores = _translate_and_score(
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
            search=dict(beam_size=beam_size, length_penalty=length_penalty, sampling=sampling),
            batch_tokens=batch_tokens,
        )
    if json_output:
        print(json.dumps(report))
    else:
        for s in scores.values():
            print(s.text)
            print(f"  signature: {s.signature}")


def _file_identity(path: Path) -> dict:
    """Where scored text came from: a file's path and sha256; stdin ("-") has no bytes left
    to hash once read, so it is named as stdin."""
    if str(path) == STDIN:
        return {"path": STDIN, "sha256": None}
    return {"path": str(Path(path).resolve()), "sha256": sha256_of(path)}


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
) -> tuple[dict, dict[str, Score]]:
    """Translate, write the hypotheses under a name no other evaluation uses, score, and
    record the result (with its checkpoint's identity) in results.json; returns the report."""
    from nmt.data.download import check_names, corpus_dir
    from nmt.data.text import write_lines_atomic
    from nmt.files import atomic_write

    translator, identity = load_for_evaluation(
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
        check_names("--split", [split])  # it names the hypothesis file written
        base = corpus_dir(data_dir or cfg.data.data_dir, corpus or cfg.data.corpus)
        src = base / f"{split}.{cfg.data.src_lang}"
        ref = base / f"{split}.{cfg.data.tgt_lang}"
        name = split
    sources, refs = read_lines(src), read_lines(ref)
    if len(sources) != len(refs):
        raise DataError(
            f"line counts differ: {src} has {len(sources)} lines but {ref} has {len(refs)}"
        )
    translation = translator.translate(sources)
    hyps = translation.best
    out_dir = Path(output_dir or default_output_dir(checkpoint))
    hyp_path = out_dir / f"{name}.{result_tag(identity, translator)}.hyp.{cfg.data.tgt_lang}"
    write_lines_atomic(hyp_path, hyps)
    cased, lowered = score_lines(hyps, refs), score_lines(hyps, refs, lowercase=True)
    scores = lowered if lowercase else cased
    provenance = {"checkpoint": identity.as_dict(), **decoding_description(translator)}
    report = scores_as_json(scores, hypotheses=str(hyp_path), lowercase=lowercase) | provenance
    with atomic_write(hyp_path.with_name(hyp_path.name + ".scores.json")) as f:
        json.dump(report, f, indent=2)
    speed = translation.stats.sentences / max(translation.stats.seconds, 1e-9)
    record = {
        "split": name,
        "source": str(src),
        "reference": str(ref),
        "cased": scores_as_json(cased),
        "lowercased": scores_as_json(lowered),
        "hypotheses": str(hyp_path),
        "sentences_per_s": speed,
        **provenance,
    }
    record_results(out_dir, [record])
    return report, scores


def _identify_export(directory: Path) -> CheckpointIdentity:
    """An export directory: the hash of the weights it decodes with (model.bin), and the step
    of the checkpoint it was exported from (recorded by `nmt export`)."""
    from nmt.interop.source import PROVENANCE_NAME

    try:
        source = json.loads((directory / PROVENANCE_NAME).read_text(encoding="utf-8"))
        step = source.get("step") if isinstance(source, dict) else None
    except (OSError, ValueError):  # exported before provenance was recorded, or edited
        step = None
    weights = directory / "model.bin"
    sha = sha256_of(weights) if weights.is_file() else ""
    return CheckpointIdentity(str(directory), step if isinstance(step, int) else None, sha)


def default_output_dir(checkpoint: Path) -> Path:
    """runs/<name>/eval for a checkpoint in runs/<name>/checkpoints/, else eval/ beside it
    (never the grandparent of a checkpoint kept elsewhere, e.g. /home/eval for ~/avg.pt)."""
    folder = Path(checkpoint).resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "eval"

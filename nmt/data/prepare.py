"""The `prepare` stage: raw text -> cleaned text -> SentencePiece -> memory-mapped id arrays.

Output, in `<run_dir>/data/`: `spm.model` (or `spm.src.model` + `spm.tgt.model`), for every
split `<split>.<lang>` (cleaned text) and `<split>.<lang>.ids.npy` / `.offsets.npy`, and
`prepare.json` (statistics plus a fingerprint of the inputs and settings). Re-running with
unchanged inputs and settings does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt import __version__
from nmt.config import DataConfig, ExperimentConfig
from nmt.data.binarize import TokenArray, TokenArrayWriter
from nmt.data.clean import CleanStats, FilterSettings, filter_pairs, normalize
from nmt.data.download import corpus_dir
from nmt.data.text import iter_lines, sha256_of
from nmt.data.tokenizer import SpmSettings, Tokenizer, train_sentencepiece
from nmt.errors import DataError, OutputError
from nmt.files import atomic_write, os_reason, remove_stale_temporaries, temporary_name

STATS_FILE = "prepare.json"
_ENCODE_CHUNK = 10_000  # lines per SentencePiece call: bounded memory, threads stay busy


@dataclass(frozen=True)
class PrepareResult:
    directory: Path
    stats: dict
    skipped: bool
    # --force replaced the data that the run's checkpoints were trained on: they can no
    # longer be resumed (`nmt train` refuses them by their data fingerprint).
    orphaned_checkpoints: list[Path] = dataclasses.field(default_factory=list)


def prepared_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_path / "data"


def prepare(cfg: ExperimentConfig, *, force: bool = False) -> PrepareResult:
    """Clean, train SentencePiece and binarize every split named by `cfg.data`."""
    d = cfg.data
    out = prepared_dir(cfg)
    raw = _raw_files(cfg)
    reused = reused_tokenizer(cfg)
    fingerprint = _with_reused_tokenizer(_fingerprint(d, raw), reused)
    previous = _read_stats(out)
    if not force and previous.get("fingerprint") == fingerprint and _outputs_exist(out, d):
        return PrepareResult(out, previous, skipped=True)
    checkpoints = existing_checkpoints(cfg)
    before = data_fingerprint(cfg) if checkpoints else None
    # Everything is built in a staging directory that replaces `out` only when complete: a
    # failure leaves the previous prepared data as it was (or nothing), never a mix, and no
    # file of an earlier prepare (a stale spm.model beside new spm.src/tgt.model) survives.
    # The name is unique (pid + random), and the staging directories of prepares that were
    # killed are removed first (the CLI holds the run's lock, so no live prepare owns one).
    remove_stale_temporaries(out.parent)
    staging = temporary_name(out)
    try:
        created = _make_dirs(staging)
    except OSError as exc:
        raise OutputError(f"cannot create {staging.parent}: {os_reason(exc)}") from exc
    try:
        stats = _prepare_into(staging, cfg, raw, fingerprint, reused=reused)
        # Checkpoints trained on the data being replaced cannot go on with other data.
        # (No prepared data left to compare: nmt train's fingerprint check decides.)
        changed = before is not None and before != _fingerprint_of(staging, d)
        orphaned = checkpoints if changed else []
        if orphaned and not force:
            raise DataError(_refusal_to_replace(cfg, checkpoints))
        _replace_dir(out, staging)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        for directory in reversed(created[:-1]):  # e.g. runs/<name>/ made for this attempt
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty
        if isinstance(exc, OSError):  # a full disk, a read-only run directory
            raise OutputError(f"cannot write {out}: {os_reason(exc)}") from exc
        raise
    return PrepareResult(out, stats, skipped=False, orphaned_checkpoints=orphaned)


# --------------------------------------------------------------------------- checkpoints


def existing_checkpoints(cfg: ExperimentConfig) -> list[Path]:
    """The checkpoint files of the run (trained on its prepared data as it is now)."""
    directory = cfg.run_path / "checkpoints"
    return sorted(directory.glob("*.pt")) if directory.is_dir() else []


def _refusal_to_replace(cfg: ExperimentConfig, checkpoints: list[Path]) -> str:
    return (
        f"{cfg.run_path} has checkpoints ({len(checkpoints)} in {checkpoints[0].parent}) trained "
        f"on its prepared data, which these data settings or inputs would change (another "
        f"SentencePiece model or other training data); use a fresh run directory (another name "
        f"or run_dir), or `nmt prepare --force` to replace the data anyway (the run must then "
        f"restart: its checkpoints can no longer be resumed)"
    )


def data_fingerprint(cfg: ExperimentConfig) -> str | None:
    """sha256 of what training reads from the prepared data: the SentencePiece model file(s)
    and the training split's token ids and offsets; None where they are not all there.

    Checkpoints record it, so a run never resumes on data its weights were not trained on.
    Evaluation splits are not in it: adding a test split changes nothing the weights saw.
    """
    return _fingerprint_of(prepared_dir(cfg), cfg.data)


def _fingerprint_of(out: Path, d: DataConfig) -> str | None:
    names = sorted(p.name for p in out.glob("spm*.model")) + [
        f"{d.train_split}.{lang}.{part}.npy"
        for lang in (d.src_lang, d.tgt_lang)
        for part in ("ids", "offsets")
    ]
    digest = hashlib.sha256()
    try:
        for name in names:
            digest.update(f"{name}:{sha256_of(out / name)}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def _prepare_into(
    out: Path, cfg: ExperimentConfig, raw: dict, fingerprint: str, *, reused: Tokenizer | None
) -> dict:
    """Clean, train SentencePiece (or write the `reused` models) and binarize into the
    (empty) directory `out`."""
    d = cfg.data
    stats: dict = {"fingerprint": fingerprint, "nmt_version": __version__, "splits": {}}
    stats["splits"][d.train_split] = _clean_train(d, raw[d.train_split], out)
    tokenizer = reused or _train_tokenizer(d, out, seed=cfg.train.seed)
    if reused is not None:
        stats["tokenizer_from"] = str(Path(cfg.train.init_from).resolve())
    tokenizer.save(out)
    stats["vocab"] = {
        "src": tokenizer.src_vocab_size,
        "tgt": tokenizer.tgt_vocab_size,
        "joint": tokenizer.joint,
    }
    for split in _eval_splits(d):
        stats["splits"][split] = _clean_eval(d, split, raw[split], out)
    for split in _all_splits(d):
        stats["splits"][split].update(_binarize_split(d, split, tokenizer, out))
    with atomic_write(out / STATS_FILE) as f:
        json.dump(stats, f, indent=2)
    return stats


def _make_dirs(path: Path) -> list[Path]:
    """Create `path` afresh (and missing parents); returns the directories created, outermost
    first, so that a failure can remove what it added."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True)
    return list(reversed(missing))


def _replace_dir(out: Path, staging: Path) -> None:
    """Put the finished `staging` directory where `out` is, then delete the old `out`."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = temporary_name(out)
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- inputs


def _all_splits(d: DataConfig) -> list[str]:
    return list(dict.fromkeys([d.train_split, *_eval_splits(d)]))


def _eval_splits(d: DataConfig) -> list[str]:
    return [s for s in dict.fromkeys([d.valid_split, *d.test_splits]) if s != d.train_split]


def _raw_files(cfg: ExperimentConfig) -> dict[str, tuple[Path, Path]]:
    d = cfg.data
    base = corpus_dir(d.data_dir, d.corpus)
    files = {}
    for split in _all_splits(d):
        pair = (base / f"{split}.{d.src_lang}", base / f"{split}.{d.tgt_lang}")
        for path in pair:
            if not path.exists():
                raise DataError(
                    f"corpus file not found: {path}; run `nmt download {d.corpus} "
                    f"--langs {d.src_lang},{d.tgt_lang}` (or `nmt run`, which downloads)"
                )
        files[split] = pair
    return files


def _fingerprint(d: DataConfig, raw: dict[str, tuple[Path, Path]]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(d), sort_keys=True).encode())
    digest.update(__version__.encode())
    for split in sorted(raw):
        for path in raw[split]:
            digest.update(f"{split}:{path.name}:{sha256_of(path)}".encode())
    return digest.hexdigest()


def _outputs_exist(out: Path, d: DataConfig) -> bool:
    needed = [f"{s}.{lang}.ids.npy" for s in _all_splits(d) for lang in (d.src_lang, d.tgt_lang)]
    return all((out / name).exists() for name in needed)


def _read_stats(out: Path) -> dict:
    try:
        return json.loads((out / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- cleaning


def aligned_lines(src: Path, tgt: Path) -> Iterator[tuple[str, str]]:
    """Yield (src, tgt) line pairs; raise DataError naming both files if counts differ."""
    src_lines, tgt_lines = iter_lines(src), iter_lines(tgt)
    count = 0
    for pair in itertools.zip_longest(src_lines, tgt_lines):
        if None in pair:
            longer, rest = (src_lines, tgt_lines) if pair[1] is None else (tgt_lines, src_lines)
            extra = 1 + sum(1 for _ in longer)
            n_src, n_tgt = (count + extra, count) if pair[1] is None else (count, count + extra)
            raise DataError(f"line counts differ: {src} has {n_src} lines but {tgt} has {n_tgt}")
        count += 1
        yield pair  # type: ignore[misc]
    if count == 0:
        raise DataError(f"corpus is empty: {src} and {tgt} have no lines")


def _clean_train(d: DataConfig, raw: tuple[Path, Path], out: Path) -> dict:
    settings = FilterSettings(d.max_chars, d.max_length_ratio, d.dedup)
    stats = CleanStats()
    normalized = (
        (normalize(s, nfc=d.normalize_unicode), normalize(t, nfc=d.normalize_unicode))
        for s, t in aligned_lines(*raw)
    )
    with (
        atomic_write(out / f"{d.train_split}.{d.src_lang}") as fs,
        atomic_write(out / f"{d.train_split}.{d.tgt_lang}") as ft,
    ):
        for s, t in filter_pairs(normalized, settings, stats):
            fs.write(s + "\n")
            ft.write(t + "\n")
    if stats.kept == 0:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.dropped.items()))
        raise DataError(
            f"every training pair was filtered out of {raw[0]} / {raw[1]} "
            f"({stats.read} read; dropped: {reasons}); check data.max_chars "
            f"({d.max_chars}) and data.max_length_ratio ({d.max_length_ratio:g})"
        )
    return stats.as_dict()


def _clean_eval(d: DataConfig, split: str, raw: tuple[Path, Path], out: Path) -> dict:
    """Dev/test: normalise only. Lines are never dropped (references must stay complete)."""
    n = 0
    with (
        atomic_write(out / f"{split}.{d.src_lang}") as fs,
        atomic_write(out / f"{split}.{d.tgt_lang}") as ft,
    ):
        for s, t in aligned_lines(*raw):
            fs.write(normalize(s, nfc=d.normalize_unicode) + "\n")
            ft.write(normalize(t, nfc=d.normalize_unicode) + "\n")
            n += 1
    return {"read": n, "kept": n, "dropped": {}}


# --------------------------------------------------------------------------- subwords


def reused_tokenizer(cfg: ExperimentConfig) -> Tokenizer | None:
    """The SentencePiece models of the checkpoint a run starts from (`train.init_from`),
    which `prepare` writes and encodes with instead of training new ones: the weights only
    make sense with the vocabulary they were trained on. None for a run from scratch."""
    if cfg.train.init_from is None:
        return None
    from nmt.checkpoint import read_model_checkpoint  # imported here: it loads torch

    return read_model_checkpoint(Path(cfg.train.init_from)).tokenizer


def _with_reused_tokenizer(fingerprint: str, reused: Tokenizer | None) -> str:
    """The inputs' fingerprint, extended by the reused models' bytes: another init_from
    checkpoint with another vocabulary must not count as unchanged inputs."""
    if reused is None:
        return fingerprint
    digest = hashlib.sha256(fingerprint.encode())
    for blob in (reused.src_model, reused.tgt_model):
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()


def _train_tokenizer(d: DataConfig, out: Path, *, seed: int) -> Tokenizer:
    settings = SpmSettings(
        vocab_size=d.vocab_size,
        model_type=d.spm_model_type,
        character_coverage=d.character_coverage,
        byte_fallback=d.byte_fallback,
        input_sentence_size=d.spm_input_sentence_size,
        seed=seed,
    )
    src_text = out / f"{d.train_split}.{d.src_lang}"
    tgt_text = out / f"{d.train_split}.{d.tgt_lang}"
    if d.joint_vocab:
        both = itertools.chain.from_iterable(zip(iter_lines(src_text), iter_lines(tgt_text)))
        return Tokenizer(train_sentencepiece(both, settings))
    return Tokenizer(
        train_sentencepiece(iter_lines(src_text), settings),
        train_sentencepiece(iter_lines(tgt_text), settings),
    )


def _binarize_split(d: DataConfig, split: str, tok: Tokenizer, out: Path) -> dict:
    """Encode one split. Training pairs over the token limit are dropped (and counted);
    dev/test sentences are truncated instead so no reference line goes missing."""
    is_train = split == d.train_split
    limit = d.max_tokens_per_sentence
    stem = out / split
    writers = (
        TokenArrayWriter(Path(f"{stem}.{d.src_lang}"), vocab_size=tok.src_vocab_size),
        TokenArrayWriter(Path(f"{stem}.{d.tgt_lang}"), vocab_size=tok.tgt_vocab_size),
    )
    over = pairs = 0
    try:
        text = aligned_lines(out / f"{split}.{d.src_lang}", out / f"{split}.{d.tgt_lang}")
        for chunk in _chunks(text, _ENCODE_CHUNK):
            srcs = tok.encode_src([s for s, _ in chunk])
            tgts = tok.encode_tgt([t for _, t in chunk])
            for s, t in zip(srcs, tgts):
                if len(s) > limit or len(t) > limit:
                    over += 1
                    if is_train:
                        continue
                    s, t = s[:limit], t[:limit]
                writers[0].add(s)
                writers[1].add(t)
                pairs += 1
    except BaseException:
        for w in writers:
            w.abort()
        raise
    n_src, n_tgt = writers[0].close(), writers[1].close()
    src_arr, tgt_arr = (
        TokenArray(Path(f"{stem}.{d.src_lang}")),
        TokenArray(Path(f"{stem}.{d.tgt_lang}")),
    )
    return {
        ("dropped_too_many_tokens" if is_train else "truncated"): over,
        "pairs": pairs,
        "tokens": {"src": n_src, "tgt": n_tgt},
        "length_percentiles": {
            "src": _percentiles(src_arr.lengths),
            "tgt": _percentiles(tgt_arr.lengths),
        },
    }


def _chunks(items, size: int):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _percentiles(lengths: np.ndarray) -> dict:
    if len(lengths) == 0:
        return {}
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": int(lengths.max())}


def load_prepared(cfg: ExperimentConfig, split: str) -> tuple[TokenArray, TokenArray]:
    """The (source, target) id arrays of a prepared split, checked against the prepared
    SentencePiece vocabularies."""
    out = prepared_dir(cfg)
    d = cfg.data
    tok = Tokenizer.load(out)
    return (
        TokenArray(out / f"{split}.{d.src_lang}", vocab_size=tok.src_vocab_size),
        TokenArray(out / f"{split}.{d.tgt_lang}", vocab_size=tok.tgt_vocab_size),
    )

"""The `prepare` stage: raw text -> cleaned text -> SentencePiece -> memory-mapped id arrays.

Output, in `<run_dir>/data/`: `spm.model` (or `spm.src.model` + `spm.tgt.model`), for every
split `<split>.<lang>` (cleaned text) and `<split>.<lang>.ids.npy` / `.offsets.npy`, and
`prepare.json` (statistics plus a fingerprint of the inputs and settings). Re-running with
unchanged inputs and settings does nothing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt import __version__
from nmt.config import DataConfig, ExperimentConfig
from nmt.data.binarize import TokenArray, TokenArrayWriter, percentiles_of_counts
from nmt.data.clean import CleanStats, FilterSettings, filter_pairs, normalize
from nmt.data.download import corpus_dir
from nmt.data.text import iter_lines, sha256_of
from nmt.data.tokenizer import SpmSettings, Tokenizer, train_sentencepiece
from nmt.errors import DataError, OutputError
from nmt.files import atomic_write, os_reason, remove_stale_temporaries, temporary_name

STATS_FILE = "prepare.json"
_ENCODE_CHUNK = 10_000  # lines per SentencePiece call: bounded memory, threads stay busy
_CHUNKS_IN_FLIGHT = 2  # per encoding process: each has the next chunk queued, no more
# Data settings that do not change what prepare writes (left out of its input fingerprint).
_SAME_OUTPUT_KEYS = frozenset({"encode_workers"})


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
    fingerprint = _fingerprint(d, raw)
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
        stats = _prepare_into(staging, cfg, raw, fingerprint)
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


def _prepare_into(out: Path, cfg: ExperimentConfig, raw: dict, fingerprint: str) -> dict:
    """Clean, train SentencePiece and binarize into the (empty) directory `out`."""
    d = cfg.data
    stats: dict = {"fingerprint": fingerprint, "nmt_version": __version__, "splits": {}}
    stats["splits"][d.train_split] = _clean_train(d, raw[d.train_split], out)
    tokenizer = _train_tokenizer(d, out, seed=cfg.train.seed)
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
    settings = {k: v for k, v in dataclasses.asdict(d).items() if k not in _SAME_OUTPUT_KEYS}
    digest.update(json.dumps(settings, sort_keys=True).encode())
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


def _train_tokenizer(d: DataConfig, out: Path, *, seed: int) -> Tokenizer:
    settings = SpmSettings(
        vocab_size=d.vocab_size,
        model_type=d.spm_model_type,
        character_coverage=d.character_coverage,
        byte_fallback=d.byte_fallback,
        sample=d.spm_sample,
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
    """Encode one split into its id arrays, streaming (`_encoded_chunks`). Training pairs
    over the token limit are dropped (and counted); dev/test sentences are truncated
    instead so no reference line goes missing."""
    is_train = split == d.train_split
    stem = out / split
    writers = (
        TokenArrayWriter(Path(f"{stem}.{d.src_lang}"), vocab_size=tok.src_vocab_size),
        TokenArrayWriter(Path(f"{stem}.{d.tgt_lang}"), vocab_size=tok.tgt_vocab_size),
    )
    rule = _LengthRule(limit=d.max_tokens_per_sentence, drop=is_train)
    over = 0
    try:
        text = aligned_lines(out / f"{split}.{d.src_lang}", out / f"{split}.{d.tgt_lang}")
        for encoded in _encoded_chunks(tok, text, rule, workers=encode_workers(d)):
            writers[0].add_many(encoded.src_ids, encoded.src_lengths)
            writers[1].add_many(encoded.tgt_ids, encoded.tgt_lengths)
            over += encoded.over_limit
    except BaseException:
        for w in writers:
            w.abort()
        raise
    n_src, n_tgt = writers[0].close(), writers[1].close()
    return {
        ("dropped_too_many_tokens" if is_train else "truncated"): over,
        "pairs": writers[0].sentences,
        "tokens": {"src": n_src, "tgt": n_tgt},
        "length_percentiles": {
            "src": _percentiles(writers[0].length_counts),
            "tgt": _percentiles(writers[1].length_counts),
        },
    }


# --------------------------------------------------------------------------- encoding


def encode_workers(d: DataConfig) -> int:
    """Processes that encode a split: data.encode_workers, or (0) min(4, usable CPUs)."""
    if d.encode_workers:
        return d.encode_workers
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, usable or 1)


@dataclass(frozen=True)
class _LengthRule:
    """Sentences over `limit` pieces: the pair is dropped (`drop`) or both sides truncated."""

    limit: int
    drop: bool


@dataclass(frozen=True)
class EncodedChunk:
    """The ids of a chunk of pairs, each side flat with its sentence lengths: src_ids (N,),
    src_lengths (P,) where N = sum(src_lengths); the same for tgt. `over_limit`: pairs of
    the chunk over the token limit (dropped or truncated)."""

    src_ids: np.ndarray
    src_lengths: np.ndarray
    tgt_ids: np.ndarray
    tgt_lengths: np.ndarray
    over_limit: int


def encode_chunk(
    tok: Tokenizer, pairs: list[tuple[str, str]], rule: _LengthRule, *, threads: int | None = None
) -> EncodedChunk:
    """Encode (src, tgt) pairs and apply the length rule; the one encoding of prepare,
    whether it runs here or in an encoding process."""
    srcs = tok.encode_src([s for s, _ in pairs], threads=threads)
    tgts = tok.encode_tgt([t for _, t in pairs], threads=threads)
    kept_src, kept_tgt, over = [], [], 0
    for s, t in zip(srcs, tgts):
        if len(s) > rule.limit or len(t) > rule.limit:
            over += 1
            if rule.drop:
                continue
            s, t = s[: rule.limit], t[: rule.limit]
        kept_src.append(s)
        kept_tgt.append(t)
    return EncodedChunk(*_flat(kept_src), *_flat(kept_tgt), over_limit=over)


def _flat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(ids of all rows concatenated (N,) int32, lengths (R,) int64)."""
    lengths = np.fromiter(map(len, rows), np.int64, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), np.int32, count=int(lengths.sum()))
    return ids, lengths


def _encoded_chunks(
    tok: Tokenizer, pairs: Iterator[tuple[str, str]], rule: _LengthRule, *, workers: int
) -> Iterator[EncodedChunk]:
    """`encode_chunk` of every chunk of `pairs`, in order. A split of more than one chunk
    is encoded by `workers` processes (when more than 1), with at most _CHUNKS_IN_FLIGHT
    chunks per process read ahead, so memory is bounded by the chunk size, not the split."""
    chunks = _chunks(pairs, _ENCODE_CHUNK)
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if workers <= 1 or second is None:
        for chunk in itertools.chain([first], [second] if second else [], chunks):
            yield encode_chunk(tok, chunk, rule)
        return
    yield from _encode_in_processes(tok, itertools.chain([first, second], chunks), rule, workers)


def _encode_in_processes(
    tok: Tokenizer, chunks: Iterator[list], rule: _LengthRule, workers: int
) -> Iterator[EncodedChunk]:
    # spawn, not fork: the parent may hold threads (SentencePiece's, torch's) that a forked
    # child would inherit mid-lock.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_encoding_process,
        initargs=(tok.src_model, None if tok.joint else tok.tgt_model),
    )
    pending: collections.deque = collections.deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(_encode_in_process, chunk, rule))
            if len(pending) >= _CHUNKS_IN_FLIGHT * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise DataError(
            f"an encoding process of nmt prepare died (out of memory?); with fewer processes, "
            f"set data.encode_workers (now {workers}), e.g. data.encode_workers=1"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_PROCESS_TOKENIZER: Tokenizer | None = None  # in an encoding process: the split's tokenizer


def _start_encoding_process(src_model: bytes, tgt_model: bytes | None) -> None:
    global _PROCESS_TOKENIZER
    # Ctrl-C reaches the whole process group: the parent stops the pool; a worker that
    # raised KeyboardInterrupt itself would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PROCESS_TOKENIZER = Tokenizer(src_model, tgt_model)


def _encode_in_process(chunk: list[tuple[str, str]], rule: _LengthRule) -> EncodedChunk:
    # One SentencePiece thread each: the processes are the parallelism.
    return encode_chunk(_PROCESS_TOKENIZER, chunk, rule, threads=1)


def _chunks(items, size: int):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _percentiles(length_counts: np.ndarray) -> dict:
    """Sentence-length percentiles from `length_counts[n]`, the sentences of n pieces."""
    if length_counts.sum() == 0:
        return {}
    p50, p90, p99 = percentiles_of_counts(length_counts, [50, 90, 99])
    longest = int(np.flatnonzero(length_counts)[-1])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": longest}


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

"""The `prepare` stage: raw text -> cleaned text -> SentencePiece -> memory-mapped id arrays.

Output, in `<run_dir>/data/`: `spm.model` (or `spm.src.model` + `spm.tgt.model`), for every
split `<split>.<lang>` (cleaned text) and `<split>.<lang>.ids.npy` / `.offsets.npy`, and
`prepare.json` (statistics plus a fingerprint of the inputs and settings). Re-running with
unchanged inputs and settings does nothing.

With `data.corpora` the training split is the union of the listed corpora's training splits,
each cleaned and token-limited on its own, concatenated corpus after corpus; `<train
split>.corpora.json` records which run of pairs came from which corpus (and its weight), for
the trainer's weighted sampling. Validation and test splits come from `data.corpus`.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nmt.config import CorpusWeight, DataConfig, ExperimentConfig
from nmt.data.binarize import TokenArray, TokenArrayWriter, percentiles_of_counts
from nmt.data.clean import CleanStats, FilterSettings, filter_pairs, normalize
from nmt.data.corpora import REGISTRY
from nmt.data.download import corpus_dir, corpus_dirname
from nmt.data.languages import default_character_coverage
from nmt.data.text import iter_lines, sha256_of
from nmt.data.tokenizer import SpmSettings, Tokenizer, train_sentencepiece
from nmt.errors import DataError, OutputError
from nmt.files import atomic_write, os_reason, remove_stale_temporaries, temporary_name
from nmt.version import __version__

if TYPE_CHECKING:
    from nmt.data.batching import CorpusMix

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


def prepare(
    cfg: ExperimentConfig, *, force: bool = False, reused: Tokenizer | None = None
) -> PrepareResult:
    """Clean, train SentencePiece and binarize every split named by `cfg.data`. `reused`: the
    SentencePiece models of the `train.init_from` checkpoint (read by the caller), written and
    encoded with instead of new ones: the weights only make sense with their own vocabulary."""
    d = cfg.data
    out = prepared_dir(cfg)
    raw = _raw_files(cfg)
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
    if d.corpora is not None:  # which pairs come from which corpus (single corpus: unchanged)
        names.append(corpora_file(out, d).name)
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
    if d.corpora:
        stats["corpora"], stats["splits"][d.train_split] = _clean_corpora(d, raw, out)
    else:
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
        if d.corpora and split == d.train_split:
            binarized = _binarize_corpora(d, tokenizer, out, stats["corpora"])
        else:
            binarized = _binarize_split(d, split, tokenizer, out)
        stats["splits"][split].update(binarized)
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
    """split -> its (source, target) files; with data.corpora the training files of each
    corpus are under `_corpus_key` instead of the training split's name."""
    d = cfg.data
    if d.corpora:  # the training corpora first: their errors name their data.corpora entry
        training = _raw_corpora_files(d)
        return _raw_eval_files(d) | training
    return _raw_eval_files(d, (d.train_split,))


def _raw_eval_files(d: DataConfig, extra: tuple[str, ...] = ()) -> dict[str, tuple[Path, Path]]:
    """The files of `extra` and the evaluation splits, all in data.corpus."""
    base = corpus_dir(d.data_dir, d.corpus)
    files = {}
    for split in dict.fromkeys([*extra, *_eval_splits(d)]):
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
    if settings["corpora"] is None:  # as before data.corpora existed: prepared runs stay valid
        del settings["corpora"]
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(__version__.encode())
    for split in sorted(raw):
        for path in raw[split]:
            digest.update(f"{split}:{path.name}:{sha256_of(path)}".encode())
    return digest.hexdigest()


def _outputs_exist(out: Path, d: DataConfig) -> bool:
    needed = [f"{s}.{lang}.ids.npy" for s in _all_splits(d) for lang in (d.src_lang, d.tgt_lang)]
    if d.corpora:
        needed.append(corpora_file(out, d).name)
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
    _write_pairs(d, d.train_split, out, filter_pairs(_normalized(d, raw), settings, stats))
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
    n = _write_pairs(d, split, out, _normalized(d, raw))
    return {"read": n, "kept": n, "dropped": {}}


def _normalized(d: DataConfig, raw: tuple[Path, Path]) -> Iterator[tuple[str, str]]:
    for s, t in aligned_lines(*raw):
        yield normalize(s, nfc=d.normalize_unicode), normalize(t, nfc=d.normalize_unicode)


def _write_pairs(d: DataConfig, split: str, out: Path, pairs: Iterator[tuple[str, str]]) -> int:
    """Write `pairs` as the split's two text files; returns the number written."""
    n = 0
    with (
        atomic_write(out / f"{split}.{d.src_lang}") as fs,
        atomic_write(out / f"{split}.{d.tgt_lang}") as ft,
    ):
        for s, t in pairs:
            fs.write(s + "\n")
            ft.write(t + "\n")
            n += 1
    return n


# --------------------------------------------------------------------------- subwords


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
        byte_fallback=d.byte_fallback,
        sample=d.spm_sample,
        seed=seed,
    )
    src_text = out / f"{d.train_split}.{d.src_lang}"
    tgt_text = out / f"{d.train_split}.{d.tgt_lang}"
    if d.joint_vocab:
        both = itertools.chain.from_iterable(zip(iter_lines(src_text), iter_lines(tgt_text)))
        joint = spm_coverage(d, d.src_lang, d.tgt_lang)
        return Tokenizer(train_sentencepiece(both, replace(settings, character_coverage=joint)))
    src_settings = replace(settings, character_coverage=spm_coverage(d, d.src_lang))
    tgt_settings = replace(settings, character_coverage=spm_coverage(d, d.tgt_lang))
    return Tokenizer(
        train_sentencepiece(iter_lines(src_text), src_settings),
        train_sentencepiece(iter_lines(tgt_text), tgt_settings),
    )


def spm_coverage(d: DataConfig, *languages: str) -> float:
    """data.character_coverage, or when it is null the default for the languages of the
    text one SentencePiece model is trained on (`nmt.data.languages`)."""
    if d.character_coverage is not None:
        return d.character_coverage
    return default_character_coverage(*languages)


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
    head = list(itertools.islice(chunks, 2))
    chunks = itertools.chain(head, chunks)
    if workers > 1 and len(head) == 2:
        yield from _encode_in_processes(tok, chunks, rule, workers)
    else:
        yield from (encode_chunk(tok, chunk, rule) for chunk in chunks)


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


# --------------------------------------------------------------------------- several corpora
#
# With data.corpora, each listed corpus's training split is cleaned and binarized on its own
# in `corpora/<k>/` of the staging directory (with the single-corpus functions above, so each
# gets its own duplicates and counts), then concatenated, corpus after corpus, into the
# training split's files. SentencePiece trains on that union, each pair once: weights decide
# how often a pair is trained on, not which pieces exist (fairseq and Marian also build the
# vocabulary from the plain concatenation).

_PARTS = "corpora"


def corpora_file(out: Path, d: DataConfig) -> Path:
    """`<train_split>.corpora.json`: the name, weight and number of pairs of each corpus, in
    the order their pairs follow one another in the training arrays."""
    return out / f"{d.train_split}.corpora.json"


def splits_by_corpus(d: DataConfig) -> dict[str, list[str]]:
    """The splits the config reads from each corpus: the training split of every training
    corpus, and the validation and test splits of data.corpus."""
    evaluation = list(dict.fromkeys([d.valid_split, *d.test_splits]))
    if not d.corpora:
        return {d.corpus: list(dict.fromkeys([d.train_split, *evaluation]))}
    wanted = {c.name: [d.train_split] for c in d.corpora}
    wanted[d.corpus] = list(dict.fromkeys([*wanted.get(d.corpus, []), *evaluation]))
    return wanted


def _corpus_key(d: DataConfig, corpus: CorpusWeight) -> str:
    """The `raw` entry of a corpus's training files (the fingerprint hashes its name)."""
    return f"{d.train_split}@{corpus.name}"


def _raw_corpora_files(d: DataConfig) -> dict[str, tuple[Path, Path]]:
    """Each listed corpus's training (source, target) files; a corpus without them, or a
    corpus directory listed twice under two names, is refused naming its data.corpora entry."""
    keys = [f"data.corpora[{i}] ({corpus.name})" for i, corpus in enumerate(d.corpora)]
    seen: dict[str, str] = {}
    for key, corpus in zip(keys, d.corpora):
        directory = corpus_dirname(corpus.name)
        if directory in seen:
            raise DataError(f"{key}: the same corpus directory as {seen[directory]}; list it once")
        seen[directory] = key
    files = {
        _corpus_key(d, corpus): _corpus_train_files(d, corpus.name, key)
        for key, corpus in zip(keys, d.corpora)
    }
    # Two names, one file (a symlinked directory, a case-insensitive file system): the same
    # pairs would be trained on twice as often as listed.
    inodes: dict[tuple[int, int], str] = {}
    for key, (src, _) in zip(keys, files.values()):
        st = src.stat()
        if (st.st_dev, st.st_ino) in inodes:
            raise DataError(
                f"{key}: {src} is the file of {inodes[st.st_dev, st.st_ino]}; list it once"
            )
        inodes[st.st_dev, st.st_ino] = key
    return files


def _corpus_train_files(d: DataConfig, name: str, key: str) -> tuple[Path, Path]:
    languages = (d.src_lang, d.tgt_lang)
    if name in REGISTRY:  # a known corpus says which splits and languages it has
        try:
            REGISTRY[name].check([d.train_split], list(languages))
        except DataError as exc:
            raise DataError(f"{key}: {exc}") from None
    base = corpus_dir(d.data_dir, name)
    pair = (base / f"{d.train_split}.{d.src_lang}", base / f"{d.train_split}.{d.tgt_lang}")
    missing = [path for path in pair if not path.exists()]
    if missing:
        have = sorted(p.name for p in base.glob(f"{d.train_split}.*") if p.suffix != ".json")
        found = f"it has {', '.join(have)}" if have else f"{base} has no {d.train_split} split"
        raise DataError(
            f"{key}: no {missing[0]} for data.{'src' if missing[0] == pair[0] else 'tgt'}_lang "
            f"{missing[0].suffix[1:]!r} ({found}); register the files with `nmt download "
            f"{name} --src F --tgt F --src-lang {d.src_lang} --tgt-lang {d.tgt_lang}`, or "
            f"run `nmt download {name} --langs {d.src_lang},{d.tgt_lang}`"
        )
    return pair


def _clean_corpora(d: DataConfig, raw: dict, out: Path) -> tuple[dict, dict]:
    """Clean each training corpus on its own into corpora/<k>/, then write their union, corpus
    after corpus, as the training split's text. Returns (stats per corpus name, the sums)."""
    per_corpus = {}
    for k, corpus in enumerate(d.corpora):
        part = out / _PARTS / str(k)
        part.mkdir(parents=True)
        cleaned = _clean_train(d, raw[_corpus_key(d, corpus)], part)
        per_corpus[corpus.name] = {"weight": corpus.weight} | cleaned
    for lang in (d.src_lang, d.tgt_lang):
        parts = [out / _PARTS / str(k) / f"{d.train_split}.{lang}" for k in range(len(d.corpora))]
        with atomic_write(out / f"{d.train_split}.{lang}", "wb") as union:
            for path in parts:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, union)
    return per_corpus, _summed_counts(list(per_corpus.values()))


def _summed_counts(stats: list[dict]) -> dict:
    dropped: collections.Counter = collections.Counter()
    for s in stats:
        dropped.update(s["dropped"])
    read, kept = (sum(s[key] for s in stats) for key in ("read", "kept"))
    return {"read": read, "kept": kept, "dropped": dict(dropped)}


def _binarize_corpora(d: DataConfig, tok: Tokenizer, out: Path, per_corpus: dict) -> dict:
    """Binarize each corpus's cleaned text (the token limit drops pairs of each, counted per
    corpus), concatenate the arrays into the training split's, record the pairs per corpus
    in `corpora_file`, and remove corpora/. Returns the training split's binarize stats."""
    stems = []
    for k, stats in enumerate(per_corpus.values()):
        part = out / _PARTS / str(k)
        stats.update(_binarize_split(d, d.train_split, tok, part))
        stems.append(part / d.train_split)
    for lang in (d.src_lang, d.tgt_lang):
        _concatenate_arrays(
            [Path(f"{stem}.{lang}") for stem in stems], out / f"{d.train_split}.{lang}"
        )
    runs = [
        {"name": name, "weight": s["weight"], "pairs": s["pairs"]} for name, s in per_corpus.items()
    ]
    with atomic_write(corpora_file(out, d)) as f:
        json.dump({"corpora": runs}, f, indent=2)
    shutil.rmtree(out / _PARTS)
    src = TokenArray(out / f"{d.train_split}.{d.src_lang}")
    tgt = TokenArray(out / f"{d.train_split}.{d.tgt_lang}")
    return {
        "dropped_too_many_tokens": sum(s["dropped_too_many_tokens"] for s in per_corpus.values()),
        "pairs": len(src),
        "tokens": {"src": src.num_tokens, "tgt": tgt.num_tokens},
        "length_percentiles": {"src": _percentiles(src.lengths), "tgt": _percentiles(tgt.lengths)},
    }


def _concatenate_arrays(parts: list[Path], stem: Path) -> None:
    """Write the token arrays `parts` one after another as `stem` (ids and shifted offsets)."""
    arrays = [TokenArray(part) for part in parts]
    starts = np.cumsum([0] + [a.num_tokens for a in arrays[:-1]])
    offsets = np.concatenate([[0]] + [a.offsets[1:] + start for a, start in zip(arrays, starts)])
    for suffix, array in (
        ("ids", np.concatenate([a.ids for a in arrays])),
        ("offsets", offsets.astype(np.int64)),
    ):
        with atomic_write(Path(f"{stem}.{suffix}.npy"), "wb") as f:
            np.save(f, array)


def load_corpus_mix(cfg: ExperimentConfig, num_pairs: int) -> CorpusMix | None:
    """The training split's corpora and weights for weighted sampling (None without
    data.corpora), checked against the config: prepared data of another corpus list would
    weight the wrong pairs."""
    from nmt.data.batching import CorpusMix

    d = cfg.data
    path = corpora_file(prepared_dir(cfg), d)
    if d.corpora is None:
        if path.exists():
            raise DataError(f"{path.parent} was prepared from data.corpora; run `nmt prepare`")
        return None
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["corpora"]
        recorded = [(r["name"], r["weight"]) for r in runs]
        sizes = tuple(int(r["pairs"]) for r in runs)
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{path} is missing or malformed; run `nmt prepare --force`") from None
    wanted = [(c.name, c.weight) for c in d.corpora]
    if recorded != wanted or sum(sizes) != num_pairs or min(sizes) < 0:
        raise DataError(
            f"{path.parent} holds the corpora {recorded} ({sum(sizes)} pairs), not data.corpora "
            f"{wanted}; run `nmt prepare` with this config"
        )
    mix = CorpusMix(sizes=sizes, weights=tuple(c.weight for c in d.corpora))
    for i, (n, drawn) in enumerate(zip(sizes, mix.pairs_per_epoch())):
        if n and not drawn:  # the corpus would be prepared, listed and never trained on
            raise DataError(
                f"data.corpora[{i}].weight: {d.corpora[i].weight:g} draws none of the {n} "
                f"pairs of {d.corpora[i].name!r} an epoch (weight x pairs rounds to 0); "
                f"use a weight of at least {0.5 / n:.2g}, or leave the corpus out"
            )
    return mix

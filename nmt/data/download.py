"""Fetch a corpus into `data/<corpus>/<split>.<lang>` plus `manifest.json`.

Sources, in order of preference: an offline mirror directory (`--mirror` or the environment
variable NMT_DATA_MIRROR), the corpus's own release files, sacreBLEU's downloader for WMT test
sets, or `datasets.load_dataset` for `hf:` corpora. Every file is checked (strict UTF-8,
equal line counts across the languages of a split, not empty) and written atomically; the
manifest records line counts, sha256 and source. Re-running is a no-op while files match.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nmt.config import file_name_problem
from nmt.data.corpora import CorpusSpec, HubCorpus, SacrebleuCorpus, UrlCorpus, get_corpus
from nmt.data.text import count_lines, iter_lines, iter_raw_lines, sha256_of
from nmt.errors import DataError, OutputError
from nmt.files import (
    atomic_write,
    command_line,
    os_reason,
    remove_stale_temporaries,
    run_lock,
    temporary_name,
)

MIRROR_ENV = "NMT_DATA_MIRROR"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DownloadResult:
    directory: Path
    files: dict[str, dict]  # file name -> {"lines", "sha256", "source"}
    skipped: bool  # True when everything was already present and intact


def corpus_dirname(name: str) -> str:
    """Directory name for a corpus: `hf:wmt/wmt14:de-en` -> `hf_wmt_wmt14_de-en`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def corpus_dir(data_dir: str | Path, name: str) -> Path:
    """data_dir/<corpus_dirname(name)>; refuses a name that is no directory name (``..``,
    empty) and a data directory (or corpus directory) that is a file."""
    dirname = corpus_dirname(name)
    if dirname in ("", ".", ".."):
        raise DataError(f"corpus name {name!r} cannot name a directory; use letters and digits")
    target = Path(data_dir) / dirname
    for path in (target, *target.parents):
        if path.exists():
            if not path.is_dir():
                raise DataError(f"{path} is not a directory (data directory {data_dir})")
            break
    return target


def check_names(what: str, names: list[str]) -> None:
    """Languages and splits become file names (<split>.<lang>): `../x`, `de/en` or an empty
    name would write outside the corpus directory, or nowhere."""
    for name in names:
        problem = file_name_problem(name, what)
        if problem:
            raise DataError(problem)


def resolve_mirror(mirror: str | Path | None) -> Path | None:
    chosen = mirror or os.environ.get(MIRROR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen)
    if not path.is_dir():
        raise DataError(f"mirror directory not found: {path}")
    return path


# --------------------------------------------------------------------------- entry points


def download(
    name: str,
    *,
    languages: list[str],
    splits: list[str] | None = None,
    data_dir: str | Path = "data",
    mirror: str | Path | None = None,
) -> DownloadResult:
    """Fetch `splits` (default: all) of corpus `name` in `languages` into data_dir/<name>/."""
    check_names("language", languages)
    check_names("--split", splits or [])
    spec = get_corpus(name)
    if isinstance(spec, HubCorpus):
        return _download_hub(spec, languages=languages, splits=splits, data_dir=data_dir)
    mirror_root = resolve_mirror(mirror)
    if not splits:
        splits = _default_splits(spec, languages, mirror_root)
    spec.check(splits, languages)
    target = corpus_dir(data_dir, name)
    wanted = {f"{split}.{lang}": (split, lang) for split in splits for lang in languages}
    manifest = _read_manifest(target, note=False)  # the read under the lock says why
    if _all_intact(target, manifest, wanted):
        return DownloadResult(target, {k: manifest[k] for k in wanted}, skipped=True)
    fetch = _mirror_fetcher(spec, mirror_root) if mirror_root else _online_fetcher(spec)
    with run_lock(target, command=command_line()):
        remove_stale_temporaries(target)  # of a download that was killed
        manifest = _read_manifest(target)  # as the previous holder of the lock left it
        for split in splits:
            _install_split(target, split, languages, manifest, fetch)
    return DownloadResult(target, {k: manifest[k] for k in wanted}, skipped=False)


def _default_splits(spec: CorpusSpec, languages: list[str], mirror: Path | None) -> list[str]:
    """Every split that has all `languages` (and, offline, that the mirror holds)."""
    spec.check([], languages)
    splits = [s for s in spec.splits if set(languages) <= set(spec.languages_by_split[s])]
    if mirror is not None:
        splits = [s for s in splits if _in_mirror(mirror / spec.mirror_dir, s, languages)]
    if not splits:
        raise DataError(f"no split of {spec.name!r} has all of {', '.join(languages)}")
    return splits


def _in_mirror(directory: Path, split: str, languages: list[str]) -> bool:
    return all(
        (directory / f"{split}.{lang}").exists() or (directory / f"{split}.{lang}.gz").exists()
        for lang in languages
    )


def register_files(
    name: str,
    *,
    src: Path,
    tgt: Path,
    src_lang: str,
    tgt_lang: str,
    split: str = "train",
    data_dir: str | Path = "data",
) -> DownloadResult:
    """Copy user files (plain or .gz) into data/<name>/<split>.<lang> after checking them."""
    check_names("--src-lang", [src_lang])
    check_names("--tgt-lang", [tgt_lang])
    check_names("--split", [split])
    if src_lang == tgt_lang:
        raise DataError(f"--src-lang and --tgt-lang are both {src_lang!r}")
    for path in (Path(src), Path(tgt)):
        if not path.is_file():
            raise DataError(f"file not found: {path}")
    # Check both inputs completely before writing anything.
    n_src, n_tgt = _count_corpus_lines(Path(src)), _count_corpus_lines(Path(tgt))
    if n_src != n_tgt:
        raise DataError(f"line counts differ: {src} has {n_src} lines but {tgt} has {n_tgt}")
    target = corpus_dir(data_dir, name)
    user_files = {src_lang: Path(src), tgt_lang: Path(tgt)}

    def copy(_split: str, lang: str, dest: Path) -> str:
        _copy_checked(user_files[lang], dest)
        return f"file:{user_files[lang].resolve()}"

    with run_lock(target, command=command_line()):
        remove_stale_temporaries(target)
        manifest = _read_manifest(target)
        _install_split(target, split, [src_lang, tgt_lang], manifest, copy, keep_intact=False)
    return DownloadResult(
        target, {k: manifest[k] for k in (f"{split}.{src_lang}", f"{split}.{tgt_lang}")}, False
    )


# --------------------------------------------------------------------------- fetchers

Fetcher = Callable[[str, str, Path], str]  # (split, lang, destination) -> source description


def _mirror_fetcher(spec: CorpusSpec, mirror: Path) -> Fetcher:
    def fetch(split: str, lang: str, dest: Path) -> str:
        base = mirror / spec.mirror_dir / f"{split}.{lang}"
        for candidate in (base, base.with_name(base.name + ".gz")):
            if candidate.exists():
                _copy_checked(candidate, dest)
                return f"mirror:{candidate.resolve()}"
        raise DataError(f"mirror {mirror} has no {spec.mirror_dir}/{split}.{lang} (or .gz)")

    return fetch


def _online_fetcher(spec: CorpusSpec) -> Fetcher:
    if isinstance(spec, UrlCorpus):
        return lambda split, lang, dest: _fetch_url(spec.url(split, lang), dest)
    if isinstance(spec, SacrebleuCorpus):
        return lambda split, lang, dest: _fetch_sacrebleu(spec, split, lang, dest)
    raise DataError(f"corpus {spec.name!r} has no online source; use --mirror")  # pragma: no cover


def _fetch_url(url: str, dest: Path) -> str:
    suffix = ".gz" if url.endswith(".gz") else ""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / f"download{suffix}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(raw, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(
                f"cannot download {url}: {exc}. Offline? Use --mirror DIR or set {MIRROR_ENV}"
            ) from None
        try:
            _copy_checked(raw, dest)
        except DataError as exc:  # name what the user knows, the URL, not our temporary
            raise DataError(str(exc).replace(str(raw), url)) from None
    return url


def _fetch_sacrebleu(spec: SacrebleuCorpus, split: str, lang: str, dest: Path) -> str:
    from sacrebleu.dataset import DATASETS

    testset = DATASETS[spec.testsets[split]]
    try:
        testset.process_to_text(spec.langpair)
    except Exception as exc:  # sacreBLEU raises bare exceptions / SystemExit on network errors
        raise DataError(f"sacreBLEU could not fetch {testset.name}: {exc}; use --mirror") from None
    src_lang, tgt_lang = spec.langpair.split("-")
    path = (
        testset.get_source_file(spec.langpair)
        if lang == src_lang
        else testset.get_reference_files(spec.langpair)[0]
    )
    _copy_checked(Path(path), dest)
    return f"sacrebleu:{testset.name}:{spec.langpair}:{lang}"


def _download_hub(
    spec: HubCorpus, *, languages: list[str], splits: list[str] | None, data_dir: str | Path
) -> DownloadResult:
    """Write each split of a hub translation dataset as plain text per language, row by row
    as the dataset streams: no split is ever held in memory, however large."""
    try:
        import datasets  # lazy: not installed on every machine
    except ImportError:
        raise DataError("hf: corpora need the `datasets` package: pip install datasets") from None
    if len(languages) != 2:
        raise DataError("hf: corpora need exactly two languages, e.g. --pair de-en")
    # A local folder of json/csv/parquet files has only a default config; hub translation
    # datasets (wmt14, opus_books, ...) name their configs after the pair.
    local = Path(spec.dataset).exists()
    config = spec.config or (None if local else "-".join(languages))
    target = corpus_dir(data_dir, spec.name)
    try:
        dsets = datasets.load_dataset(spec.dataset, config, streaming=True)
    except Exception as exc:  # datasets raises many unrelated types for a missing dataset
        raise DataError(
            f"cannot load Hugging Face dataset {spec.dataset!r} ({config}): {exc}"
        ) from None
    chosen = splits or list(dsets.keys())
    check_names(f"split of dataset {spec.dataset!r}", chosen)
    missing = [s for s in chosen if s not in dsets]
    if missing:
        raise DataError(
            f"dataset {spec.dataset!r} has no split {missing[0]!r}; valid: {', '.join(dsets)}"
        )
    with run_lock(target, command=command_line()):
        manifest = _read_manifest(target)
        for split in chosen:
            rows = dsets[split]
            files = {lang: target / f"{split}.{lang}" for lang in languages}
            write_hub_split(rows, files, dataset=spec.dataset, total=_split_size(rows, split))
            for dest in files.values():
                manifest[dest.name] = _describe_file(dest, f"hf:{spec.dataset}:{config}:{split}")
        _write_manifest(target, manifest)
    return DownloadResult(target, {k: v for k, v in manifest.items()}, skipped=False)


def _split_size(rows, split: str) -> int | None:
    """The rows of `split` as the dataset's metadata gives them (None where unknown)."""
    known = getattr(getattr(rows, "info", None), "splits", None) or {}
    return known[split].num_examples if split in known else None


def write_hub_split(
    rows: Iterable[dict], files: dict[str, Path], *, dataset: str, total: int | None = None
) -> int:
    """Write the `translation` column of `rows`, one language per file of `files`
    ({lang: path}), as the rows arrive: one pass, nothing kept but the row in hand; both
    files atomic (a bad row leaves neither). A progress bar on a terminal. Returns the rows.

    Every row must be {"translation": {lang: text, ...}}; a newline inside a text becomes a
    space (a line is a sentence)."""
    n = 0
    with contextlib.ExitStack() as stack:
        outs = {lang: stack.enter_context(atomic_write(path)) for lang, path in files.items()}
        advance = stack.enter_context(_row_progress(f"{dataset} -> {_common_stem(files)}", total))
        for n, row in enumerate(rows, start=1):
            texts = _translation_of(row, n, dataset)
            for lang, out in outs.items():
                out.write(_text_of(texts, lang, n, dataset).replace("\n", " ") + "\n")
            if n % _PROGRESS_EVERY == 0:
                advance(_PROGRESS_EVERY)
    return n


_PROGRESS_EVERY = 1000  # rows between progress bar updates (an update per row is costly)


def _translation_of(row: dict, n: int, dataset: str) -> dict:
    texts = row.get("translation") if isinstance(row, dict) else None
    if not isinstance(texts, dict):
        columns = list(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(
            f"dataset {dataset!r} row {n - 1} has no 'translation' mapping (columns: {columns})"
        )
    return texts


def _text_of(texts: dict, lang: str, n: int, dataset: str) -> str:
    if lang not in texts:
        raise DataError(f"dataset {dataset!r} row {n - 1} has no language {lang!r}: {list(texts)}")
    if not isinstance(texts[lang], str):
        raise DataError(
            f"dataset {dataset!r} row {n - 1}: its {lang!r} text is {texts[lang]!r}, not a string"
        )
    return texts[lang]


def _common_stem(files: dict[str, Path]) -> str:
    first = next(iter(files.values()))
    return str(first.with_suffix(".{" + ",".join(files) + "}"))


@contextlib.contextmanager
def _row_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """`advance(rows)` of a progress bar of rows written, on stderr when it is a terminal
    (rich; gone when done); silent otherwise."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda rows: progress.advance(task, rows)


# --------------------------------------------------------------------------- checks & manifest


def _install_split(
    target: Path,
    split: str,
    languages: list[str],
    manifest: dict,
    fetch: Fetcher,
    *,
    keep_intact: bool = True,
) -> None:
    """Fetch one split's files into temporaries, check that every language has the same
    number of lines, and only then move them into place and record them in the manifest.

    A bad file (misaligned, invalid UTF-8, empty...) leaves neither that split's new files
    nor manifest entries behind, so a re-run cannot take a broken split for a finished one.
    With `keep_intact`, files whose sha256 matches the manifest are not fetched again.
    """
    staged: dict[str, tuple[Path, str]] = {}  # file name -> (temporary file, source)
    try:
        for lang in languages:
            name = f"{split}.{lang}"
            if keep_intact and name in manifest and _intact(target / name, manifest[name]):
                continue
            temporary = temporary_name(target / name)
            staged[name] = (temporary, fetch(split, lang, temporary))
        _check_split_aligned(target, split, languages, staged)
    except BaseException:
        for temporary, _ in staged.values():
            temporary.unlink(missing_ok=True)
        raise
    for name, (temporary, source) in staged.items():
        try:
            os.replace(temporary, target / name)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {target / name}: {os_reason(exc)}") from exc
        manifest[name] = _describe_file(target / name, source)
    if staged:
        _write_manifest(target, manifest)


def _check_split_aligned(
    target: Path, split: str, languages: list[str], staged: dict[str, tuple[Path, str]]
) -> None:
    """Raise naming each file (its source, when just fetched) if line counts differ."""
    counts = {}
    for lang in languages:
        name = f"{split}.{lang}"
        if name in staged:
            temporary, source = staged[name]
            counts[_source_name(source)] = count_lines(temporary)
        else:
            counts[str(target / name)] = count_lines(target / name)
    if len(set(counts.values())) > 1:
        described = ", ".join(f"{where} has {n} lines" for where, n in counts.items())
        raise DataError(f"line counts differ in split {split!r}: {described}")


def _source_name(source: str) -> str:
    """`mirror:/m/train.de` -> `/m/train.de`; a URL or sacreBLEU name stays as it is."""
    return re.sub(r"^(mirror|file):", "", source)


def _copy_checked(src: Path, dest: Path) -> None:
    """Copy text (gunzipping if needed), checking UTF-8 line by line; atomic at `dest`. The
    lines are copied as stored (a BOM, CRLF): every reader of `dest` reads them as text."""
    with atomic_write(dest) as out:
        # Raised inside the block: an earlier good `dest` stays untouched.
        for line in _checked_lines(src, iter_raw_lines(src)):
            out.write(line + "\n")


def _count_corpus_lines(path: Path) -> int:
    """Line count of a corpus file that `_checked_lines` accepts."""
    return sum(1 for _ in _checked_lines(path, iter_lines(path)))


def _checked_lines(path: Path, text: Iterator[str]) -> Iterator[str]:
    """The lines of `path`; after the last, refuse an empty file, and one with CR-only
    (classic Mac) line ends: only "\\n" ends a line, so such a file reads as one line, and
    aligning it would pair whole files."""
    lines, first = 0, ""
    for lines, line in enumerate(text, start=1):
        if lines == 1:
            first = line
        yield line
    if lines == 0:
        raise DataError(f"{path} is empty")
    if lines == 1 and "\r" in first.rstrip("\r"):
        raise DataError(
            f"{path} has CR-only (classic Mac) line ends, so it reads as one line; "
            "convert them to \\n first, e.g. tr '\\r' '\\n' < IN > OUT"
        )


def _describe_file(path: Path, source: str) -> dict:
    return {"lines": count_lines(path), "sha256": sha256_of(path), "source": source}


def _read_manifest(target: Path, *, note: bool = True) -> dict:
    """The manifest's entries that are well formed. A manifest that is not JSON, or not
    shaped as `_write_manifest` writes it, only means re-fetching: its bad entries are left
    out (so those files are fetched again), with a note on stderr (unless `note` is False)."""
    path = target / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        return _manifest_ignored(path, f"unreadable ({type(exc).__name__})", note=note)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return _manifest_ignored(path, "not an object with a 'files' object", note=note)
    good = {name: entry for name, entry in files.items() if _well_formed(entry)}
    if note and len(good) < len(files):
        print(
            f"note: {path} has {len(files) - len(good)} malformed entries; "
            "fetching those files again",
            file=sys.stderr,
        )
    return good


def _well_formed(entry) -> bool:
    return (
        isinstance(entry, dict)
        and type(entry.get("lines")) is int
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("source"), str)
    )


def _manifest_ignored(path: Path, why: str, *, note: bool) -> dict:
    if note:
        print(f"note: {path} is {why}; fetching its files again", file=sys.stderr)
    return {}


def _write_manifest(target: Path, files: dict) -> None:
    with atomic_write(target / MANIFEST) as f:
        json.dump({"files": dict(sorted(files.items()))}, f, indent=2)
        f.write("\n")


def _intact(path: Path, entry: dict) -> bool:
    return path.exists() and entry.get("sha256") == sha256_of(path)


def _all_intact(target: Path, manifest: dict, wanted: dict) -> bool:
    return all(name in manifest and _intact(target / name, manifest[name]) for name in wanted)

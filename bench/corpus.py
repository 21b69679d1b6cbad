"""Benchmark inputs: one SentencePiece model and real sentences from ../shared/data.

Every system in a benchmark reads the same ids: the joint 10k SentencePiece model (nmt's
special ids: PAD 0, UNK 1, BOS 2, EOS 3) is trained once on Multi30k train plus the WMT
newstest de-en sets and cached in bench/.cache/ (git-ignored).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import numpy as np
import torch

from nmt.data.clean import normalize
from nmt.data.text import iter_lines
from nmt.data.tokenizer import EOS_ID, PAD_ID, SpmSettings, Tokenizer, train_sentencepiece

BENCH = Path(__file__).resolve().parent
# The checkout's sibling shared/ folder, or NMT_SHARED_DATA as for the tests.
DATA_ROOT = Path(os.environ.get("NMT_SHARED_DATA", BENCH.parent.parent / "shared" / "data"))
CACHE = BENCH / ".cache"


def spm_sources(data_root: Path) -> list[Path]:
    multi30k = [data_root / "multi30k" / f"train.{lang}" for lang in ("de", "en")]
    newstest = sorted((data_root / "wmt_newstest" / "de-en").glob("newstest*.*"))
    return multi30k + newstest


def sentencepiece_model(*, data_root: Path = DATA_ROOT, vocab_size: int = 10_000) -> Path:
    """The cached joint SentencePiece model file (trained on first use, ~30 s on 2 cores)."""
    sources = spm_sources(data_root)
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        raise FileNotFoundError(f"benchmark data not found: {', '.join(missing)}")
    key = hashlib.sha256(f"{vocab_size}|{[p.name for p in sources]}".encode()).hexdigest()[:10]
    path = CACHE / f"spm{vocab_size}-{key}.model"
    if not path.exists():
        lines = (
            normalize(line) for line in itertools.chain.from_iterable(map(iter_lines, sources))
        )
        blob = train_sentencepiece(lines, SpmSettings(vocab_size=vocab_size))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return path


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer(Path(path).read_bytes())


def sentences_by_length(
    tokenizer: Tokenizer, path: Path, *, count: int, min_tokens: int, max_tokens: int
) -> list[list[int]]:
    """The first `count` lines of `path` whose piece count is in [min_tokens, max_tokens].

    Ids come without EOS. Raises ValueError if the file has fewer such lines.
    """
    chosen = []
    for line in iter_lines(path):
        ids = tokenizer.encode_src([normalize(line)])[0]
        if min_tokens <= len(ids) <= max_tokens:
            chosen.append(ids)
            if len(chosen) == count:
                return chosen
    raise ValueError(
        f"{path} has only {len(chosen)} lines of {min_tokens}-{max_tokens} pieces; {count} asked"
    )


def parallel_ids(
    tokenizer: Tokenizer, src: Path, tgt: Path, *, limit: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both sides of a parallel corpus as id arrays (no BOS/EOS), as binarize.py stores them."""
    src_lines = [normalize(x) for x in iter_lines(src)]
    tgt_lines = [normalize(x) for x in iter_lines(tgt)]
    if limit:
        src_lines, tgt_lines = src_lines[:limit], tgt_lines[:limit]
    as_arrays = lambda rows: [np.asarray(r, dtype=np.int64) for r in rows]  # noqa: E731
    return as_arrays(tokenizer.encode_src(src_lines)), as_arrays(tokenizer.encode_tgt(tgt_lines))


def with_eos(sentences: list[list[int]]) -> list[list[int]]:
    return [s + [EOS_ID] for s in sentences]


def pad(rows: list[list[int]]) -> torch.Tensor:
    """Right-pad id lists with PAD into a LongTensor [B, max length]."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long)


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]

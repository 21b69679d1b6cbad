"""Length-bucketed, token-budget batches; deterministic per-epoch shuffling; the Batch type.

Shape legend: B batch, S source length (ids + EOS), T target length (BOS + ids, or ids + EOS).

A pair's *width* is the padded length it forces on its batch: max(src_len, tgt_len) + 1, since
the source gains EOS and each target side gains BOS or EOS. A batch of B pairs whose widest pair
has width W fills at most B * W token slots on each side; `max_tokens` bounds B * W, so neither
side's padded tensor ever holds more than the budget.

Data flow:
    make_batches(lengths, max_tokens=...)     once per run: fixed groups of sentence indices
    batches_for_epoch(batches, seed, epoch)   that epoch's shuffled order, this rank's shard
    collate(src, tgt, indices)                one group -> padded LongTensors (a Batch)

With several corpora (data.corpora), the pairs an epoch holds depend on the epoch, so its
groups are made afresh each epoch: `weighted_batches(lengths, mix, seed, epoch)` replaces
`make_batches`, then `batches_for_epoch` shuffles and shards them as above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
import torch

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

BucketBy = Literal["max", "src", "tgt"]


class TokenSequences(Protocol):
    """What `collate` reads: `binarize.TokenArray` or anything with the same indexing."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


# --------------------------------------------------------------------------- the batch


@dataclass(frozen=True)
class Batch:
    """One padded batch of sentence pairs (or of sources alone, when translating).

    src_ids  [B, S]  LongTensor: ids + EOS, right-padded with PAD_ID
    tgt_in   [B, T]  LongTensor: BOS + ids (decoder input); None when translating
    tgt_out  [B, T]  LongTensor: ids + EOS (labels); None when translating
    indices  [B]     int64 numpy array: each row's sentence index in the dataset. It stays on
                     the host (`to` leaves it), since it only serves bookkeeping such as
                     restoring input order after translation.
    num_src_tokens, num_tgt_tokens: non-pad counts (EOS/BOS included; tgt counts one side,
    i.e. the labels). Plain ints, so reading them after `to(device)` never syncs the device.
    """

    src_ids: torch.Tensor
    tgt_in: torch.Tensor | None
    tgt_out: torch.Tensor | None
    indices: np.ndarray
    num_src_tokens: int
    num_tgt_tokens: int

    def __len__(self) -> int:
        return self.src_ids.shape[0]

    @property
    def src_slots(self) -> int:
        """Padded source size B * S."""
        return self.src_ids.numel()

    @property
    def tgt_slots(self) -> int:
        """Padded target size B * T (0 without a target)."""
        return 0 if self.tgt_out is None else self.tgt_out.numel()

    def to(self, device: torch.device | str, *, non_blocking: bool = True) -> Batch:
        """A new Batch with its tensors on `device` (non-blocking copies from pinned memory)."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A new Batch with its tensors in page-locked memory (needs an accelerator)."""
        return self._map_tensors(lambda t: t.pin_memory())

    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return replace(
            self,
            src_ids=fn(self.src_ids),
            tgt_in=None if self.tgt_in is None else fn(self.tgt_in),
            tgt_out=None if self.tgt_out is None else fn(self.tgt_out),
        )


def collate(
    src: TokenSequences, tgt: TokenSequences | None, indices: Sequence[int] | np.ndarray
) -> Batch:
    """Pad the sentences at `indices` into a Batch; `tgt=None` (translation) leaves tgt None.

    Ids come without BOS/EOS (see binarize.py); here the source gains EOS, the decoder input
    BOS and the labels EOS. Rows keep the order of `indices`.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or len(indices) == 0:
        raise ValueError(
            f"collate needs a non-empty 1-D list of indices, got shape {indices.shape}"
        )
    src_flat, src_lengths = _gather(src, indices)
    src_ids = _fill_rows(src_flat, src_lengths, prefix=None, suffix=EOS_ID)
    tgt_in = tgt_out = None
    num_tgt_tokens = 0
    if tgt is not None:
        tgt_flat, tgt_lengths = _gather(tgt, indices)
        tgt_in = _fill_rows(tgt_flat, tgt_lengths, prefix=BOS_ID, suffix=None)
        tgt_out = _fill_rows(tgt_flat, tgt_lengths, prefix=None, suffix=EOS_ID)
        num_tgt_tokens = int(tgt_lengths.sum()) + len(indices)
    return Batch(
        src_ids=torch.from_numpy(src_ids),
        tgt_in=None if tgt_in is None else torch.from_numpy(tgt_in),
        tgt_out=None if tgt_out is None else torch.from_numpy(tgt_out),
        indices=indices,
        num_src_tokens=int(src_lengths.sum()) + len(indices),
        num_tgt_tokens=num_tgt_tokens,
    )


def _gather(side: TokenSequences, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sentences at `indices`, concatenated [sum(lengths)], and their lengths [B]."""
    rows = [np.asarray(side[int(i)], dtype=np.int64) for i in indices]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    return np.concatenate(rows), lengths


def _fill_rows(
    flat: np.ndarray, lengths: np.ndarray, *, prefix: int | None, suffix: int | None
) -> np.ndarray:
    """[B, max(lengths) + extras] int64: each row is prefix? + its ids + suffix?, then PAD."""
    start = int(prefix is not None)
    width = int(lengths.max()) + start + int(suffix is not None)
    out = np.full((len(lengths), width), PAD_ID, dtype=np.int64)
    columns = np.arange(width)[None, :]
    body = (columns >= start) & (columns < lengths[:, None] + start)  # [B, width]
    out[body] = flat  # boolean assignment walks row-major, the concatenation's order
    if prefix is not None:
        out[:, 0] = prefix
    if suffix is not None:
        out[np.arange(len(lengths)), lengths + start] = suffix
    return out


def padding_fraction(batch: Batch) -> float:
    """Pad slots / all slots, over the source and the target labels together."""
    slots = batch.src_slots + batch.tgt_slots
    return (slots - batch.num_src_tokens - batch.num_tgt_tokens) / slots


# --------------------------------------------------------------------------- grouping


def make_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray | None,
    *,
    max_tokens: int,
    bucket_by: BucketBy = "max",
) -> list[np.ndarray]:
    """Group sentence indices into batches of similar length within a padded-token budget.

    Sort (stable, so ties keep corpus order) by the `bucket_by` side's width: "max" (the
    wider side, then source, then target width), "src" or "tgt" (that side, then the other).
    Then fill greedily: a batch of B pairs with widest width W keeps B * W <= max_tokens.
    Lengths exclude BOS/EOS, as stored by binarize.py. Deterministic: a pure function.

    Raises ValueError if one pair alone exceeds the budget: config validation makes
    max_tokens hold the longest allowed sentence and the trainer filters longer ones, so
    this is a bug upstream, not something to hide by dropping data.
    """
    src_w, tgt_w = _widths(src_lengths, tgt_lengths)
    widths = np.maximum(src_w, tgt_w)
    _check_budget(widths, max_tokens=max_tokens)
    order = _bucket_order(
        src_w, tgt_w, widths, bucket_by=bucket_by, has_tgt=tgt_lengths is not None
    )
    return _fill_greedily(order, widths, max_tokens=max_tokens)


class ListSequences:
    """Lists of ids behind the TokenArray interface `collate` reads."""

    def __init__(self, sentences: Sequence[Sequence[int]]):
        self.sentences = sentences

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.sentences[i], dtype=np.int64)


def make_inference_batches(lengths: np.ndarray, *, max_tokens: int) -> list[np.ndarray]:
    """Source-only batches, longest first, within `max_tokens` padded source slots.

    Widths are length + 1 (EOS). The caller restores input order with `Batch.indices`. A
    sentence wider than the budget gets a batch of its own rather than an error: translation
    must give one output line per input line.
    """
    widths, _ = _widths(lengths, None)
    _check_positive(max_tokens)
    order = np.argsort(-widths, kind="stable")
    return _fill_greedily(order, widths, max_tokens=max_tokens)


def _widths(
    src_lengths: np.ndarray, tgt_lengths: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Padded widths [N] of each side: length + 1 (EOS on the source; BOS or EOS on the target)."""
    src = np.asarray(src_lengths, dtype=np.int64)
    tgt = src if tgt_lengths is None else np.asarray(tgt_lengths, dtype=np.int64)
    if src.ndim != 1 or src.shape != tgt.shape:
        raise ValueError(f"lengths must be 1-D and aligned, got {src.shape} and {tgt.shape}")
    if len(src) and min(src.min(), tgt.min()) < 0:
        raise ValueError("sentence lengths must be >= 0")
    return src + 1, (np.zeros_like(src) if tgt_lengths is None else tgt + 1)


def _check_positive(max_tokens: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")


def _check_budget(widths: np.ndarray, *, max_tokens: int) -> None:
    _check_positive(max_tokens)
    too_wide = np.flatnonzero(widths > max_tokens)
    if len(too_wide):
        i = int(too_wide[0])
        raise ValueError(
            f"sentence {i} needs {int(widths[i])} padded tokens (longest side + BOS/EOS), more "
            f"than max_tokens={max_tokens} ({len(too_wide)} such sentences); filter long pairs "
            "before batching or raise the budget"
        )


def _bucket_order(
    src_w: np.ndarray, tgt_w: np.ndarray, widths: np.ndarray, *, bucket_by: BucketBy, has_tgt: bool
) -> np.ndarray:
    """Sentence indices [N] sorted by the bucketing key; np.lexsort is stable, last key first."""
    if bucket_by == "tgt" and not has_tgt:
        raise ValueError("bucket_by='tgt' needs target lengths")
    keys = {"max": (tgt_w, src_w, widths), "src": (tgt_w, src_w), "tgt": (src_w, tgt_w)}
    if bucket_by not in keys:
        raise ValueError(f"bucket_by={bucket_by!r}; allowed: {', '.join(keys)}")
    return np.lexsort(keys[bucket_by])


def _fill_greedily(order: np.ndarray, widths: np.ndarray, *, max_tokens: int) -> list[np.ndarray]:
    """Cut `order` into consecutive runs with len(run) * max(widths[run]) <= max_tokens.

    The first sentence of a run is always taken, so a too-wide one stands alone.
    """
    batches, start, run_width = [], 0, 0
    for pos, width in enumerate(widths[order].tolist()):
        run_width = max(run_width, width)
        if pos > start and (pos - start + 1) * run_width > max_tokens:
            batches.append(order[start:pos])
            start, run_width = pos, width
    if start < len(order):
        batches.append(order[start:])
    return batches


# --------------------------------------------------------------------------- epochs


def batches_for_epoch(
    batches: list[np.ndarray], *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """This rank's batches for `epoch`: the batch order shuffled, then sharded across ranks.

    Only the order of batches changes (by np.random.default_rng((seed, epoch))); each
    batch's content stays, so padding stays small while the data order is random. Then the
    shuffled list is cut to a multiple of `world_size` (the last len % world_size batches
    are dropped, so every rank runs the same number of steps and none waits on another at a
    collective; a different few drop each epoch) and rank r takes every world_size-th from r.
    With fewer batches than ranks every rank gets an empty list.

    A pure function of its arguments: a resumed run rebuilds the same list from (seed, epoch)
    and restarts at the stored position in it.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    order = np.random.default_rng((seed, epoch)).permutation(len(batches))
    kept = order[: len(order) - len(order) % world_size]
    return [batches[i] for i in kept[rank::world_size]]


# --------------------------------------------------------------------------- several corpora

_MIX_STREAM = 0x6D6978  # keeps the epoch's pair draw apart from batches_for_epoch's stream


@dataclass(frozen=True)
class CorpusMix:
    """Training pairs that lie corpus after corpus (corpus k holds sizes[k] pairs) and each
    corpus's weight, an upsampling factor (data.corpora)."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...]

    def pairs_per_epoch(self) -> list[int]:
        """M_k = floor(w_k) n_k + round(frac(w_k) n_k): what `epoch_pairs` takes of corpus k."""
        return [int(w // 1) * n + round((w % 1) * n) for n, w in zip(self.sizes, self.weights)]


def epoch_pairs(mix: CorpusMix, *, seed: int, epoch: int) -> np.ndarray:
    """The pair indices [M] of one epoch of a mix, in random order.

    Corpus k (weight w, n pairs) gives floor(w) copies of each of its pairs plus
    round(frac(w) n) of its pairs drawn without replacement, a new draw each epoch. So its
    share of every epoch is w n / sum_j w_j n_j up to rounding (fairseq's upsampling ratios,
    Marian's corpus weights): weight 4 trains on a pair four times as often as weight 1, and
    0.5 on half of the corpus each epoch. A pure function of (mix, seed, epoch).
    """
    rng = np.random.default_rng((seed, epoch, _MIX_STREAM))
    parts, start = [], 0
    for n, w, m in zip(mix.sizes, mix.weights, mix.pairs_per_epoch()):
        whole = int(w // 1)
        parts.append(np.tile(np.arange(start, start + n, dtype=np.int64), whole))
        if m > whole * n:
            parts.append(start + rng.choice(n, size=m - whole * n, replace=False))
        start += n
    return rng.permutation(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def weighted_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    mix: CorpusMix,
    *,
    max_tokens: int,
    seed: int,
    epoch: int,
) -> list[np.ndarray]:
    """`make_batches` over the pairs of one epoch of `mix`; each batch holds pair indices.

    The pairs come shuffled and are sorted (stably) by their width alone, the wider side's
    length: every copy of an upsampled pair has the same width, and a tie-break on the source
    and target lengths would put them side by side into one batch; this way they spread over
    the batches of their width. The token budget is the same (it bounds B x width).
    """
    pairs = epoch_pairs(mix, seed=seed, epoch=epoch)
    wider = np.maximum(np.asarray(src_lengths), np.asarray(tgt_lengths))[pairs]
    local = make_batches(wider, wider, max_tokens=max_tokens)
    return [pairs[batch] for batch in local]

"""Greedy and beam search over a small model protocol.

Shape legend: B batch, S source length, V vocabulary, K beam size, b sentences still being
searched, k hypotheses kept per sentence (1 at the first step, then K), N = b * k rows (sentence
major: the rows of sentence i are i*k .. i*k + k-1), C = min(2K, k*V) candidates per sentence,
t tokens generated so far.

Search needs only this protocol (`nmt.model.transformer.Transformer` implements it):

    memory = model.encode(src_ids)                    # src_ids [B, S], PAD at the end
    memory.index_select(index)                        # rows of the memory, selected or repeated
    cache = model.init_cache(memory, max_len=steps)   # room for `steps` decoding steps
    cache.reorder(index, sentences=kept)              # in place: new row i = old row index[i]
    log_probs = model.decode_step(prev, memory, cache)  # prev [N] -> [N, V]; cache grows by one

The first `prev` is BOS in every row. Rows are sentence major (k per sentence); `kept` lists
the sentences that remain (positions among the current ones) when some left, else None. A
cache may use it to keep per-sentence state (the encoder memory) once per sentence.
`decode_step` returns a new tensor each call: search masks it in place.

Scores. A hypothesis is the generated tokens y_1 .. y_L followed by EOS; its length counts EOS:

    length    = L + 1
    log_prob  = sum_{i=1}^{L+1} log p(y_i | y_<i, x)       (y_{L+1} = EOS)
    score     = log_prob / length ** alpha                 (alpha = length_penalty; 0: none)

Length rules, the same for greedy and beam search:
  * max_len = max(1, min(floor(max_len_a * src_len + max_len_b), max_len_cap)) per sentence,
    src_len being its number of non-PAD source tokens; max_len_cap is the decoder's position
    table size (fairseq caps the same way). A hypothesis has at most max_len tokens including
    EOS: at its last allowed step only EOS may follow, and EOS's log-prob still counts.
  * min_len: EOS may not follow fewer than min_len generated tokens (max_len wins if smaller).
  * PAD and BOS are never generated.
Masking a token does not renormalise the others: each token keeps its model log-prob.

Target prefixes (CTranslate2's `target_prefix`): with `prefixes`, sentence i's first
len(prefixes[i]) tokens are forced to its prefix (every other token masked at those steps)
and search goes on from there; the prefix tokens are part of the hypothesis and of its
log_prob. Its max_len grows to at least len(prefix) + 1, so the prefix always fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from nmt.decoding.sampling import Sampling
from nmt.decoding.topk import grouped_topk

NEG_INF = float("-inf")


class Memory(Protocol):
    """The encoder output, one row per sentence (or per hypothesis)."""

    def index_select(self, index: Tensor) -> Memory: ...


class DecoderCache(Protocol):
    """Decoder state for incremental decoding, one row per hypothesis."""

    def reorder(self, index: Tensor, *, sentences: Tensor | None = None) -> None: ...


class SearchModel(Protocol):
    def encode(self, src_ids: Tensor) -> Memory: ...

    def init_cache(self, memory: Memory, *, max_len: int) -> DecoderCache: ...

    def decode_step(self, prev_tokens: Tensor, memory: Memory, cache: DecoderCache) -> Tensor: ...


@dataclass(frozen=True)
class SearchSettings:
    """How to search; see the module docstring for the length rules and the score."""

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0  # alpha in score = log_prob / length**alpha
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 1
    max_len_cap: int | None = None  # hard limit, e.g. the model's max_positions
    sampling: Sampling | None = None  # draw each token (greedy search's step policy)

    def max_len(self, src_len: int) -> int:
        """Most tokens (EOS included) a hypothesis for a source of src_len tokens may have."""
        limit = math.floor(self.max_len_a * src_len + self.max_len_b)
        if self.max_len_cap is not None:
            limit = min(limit, self.max_len_cap)
        return max(1, limit)

    def __post_init__(self) -> None:
        # The settings are checked where they enter (the config schema, DecodeOptions); this
        # pairing can still arise here: an engine that samples, given a request's beam.
        if self.sampling is not None and self.beam_size != 1:
            raise ValueError(
                f"sampling draws one hypothesis: beam_size must be 1, got {self.beam_size}"
            )


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # generated ids, without BOS and EOS
    score: float  # log_prob / length**alpha, length = len(tokens) + 1 (EOS counts)
    log_prob: float  # sum of the token log-probs, EOS included


# --------------------------------------------------------------------------- public entry points


def search(
    model: SearchModel,
    src_ids: Tensor,
    settings: SearchSettings,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Greedy search when beam_size is 1, beam search otherwise (same results for beam 1).

    With `settings.sampling`, greedy search draws each token with `generator` (a fresh one
    seeded with sampling.seed when None). `prefixes`: one target prefix per sentence (ids,
    may be empty) that its hypotheses start with."""
    ids = dict(bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, prefixes=prefixes)
    if settings.beam_size != 1:
        return beam_search(model, src_ids, settings, **ids)
    return greedy_search(model, src_ids, settings, **ids, generator=generator)


def greedy_search(
    model: SearchModel,
    src_ids: Tensor,
    settings: SearchSettings,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """The most likely next token at every step, under the length rules of the module docstring
    (or, with settings.sampling, a drawn one: `_step_policy`).

    src_ids [B, S] -> B lists of one Hypothesis. A sentence leaves the batch (its rows are
    pruned from memory and cache) as soon as it ends in EOS.
    """
    rules = _Rules(settings.min_len, bos_id, eos_id, pad_id, prefixes)
    pick = _step_policy(settings.sampling, generator, src_ids.device)
    finished = _Finished(len(src_ids))
    with torch.inference_mode():
        state = _start(model, src_ids, settings, rules)
        while state is not None:
            best, tokens = pick(rules.next_log_probs(model, state))  # [N]
            # EOS is forced at a row's last step; the limit also ends a row whose EOS is -inf
            ended = (tokens == eos_id) | (state.max_lens == state.step + 1)
            state = _greedy_advance(state, tokens, state.log_probs + best, ended, finished)
        return finished.best(n_best=1, alpha=settings.length_penalty)


def beam_search(
    model: SearchModel,
    src_ids: Tensor,
    settings: SearchSettings,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search over B sentences x K hypotheses; returns n_best per sentence.

    src_ids [B, S] -> B lists of up to `n_best` Hypothesis, best score first. One step:

      1. expand: the top C = 2K of  log_prob(row) + log p(token | row)  over the k*V extensions
         of each sentence's k rows (k = 1 at the first step, so the K beams start distinct);
      2. finalize: candidates ending in EOS among each sentence's top K move to its finished
         list (scored log_prob / length**alpha);
      3. a sentence is done once it has K finished hypotheses (fairseq's stopping rule) or after
         its last allowed step; done sentences leave the batch, so later steps run on fewer rows;
      4. keep alive the K best candidates not ending in EOS; reorder tokens and cache to them.

    Several EOS candidates may finish in one step, so a sentence can end with more than K
    finished hypotheses; all are kept and the n_best are chosen by score. With K = 1 this is
    exactly `greedy_search`. Ties between equal scores break arbitrarily.
    """
    k_max = settings.beam_size
    rules = _Rules(settings.min_len, bos_id, eos_id, pad_id, prefixes)
    finished = _Finished(len(src_ids))
    with torch.inference_mode():
        state = _start(model, src_ids, settings, rules)
        while state is not None:
            cands = _expand(state, rules.next_log_probs(model, state), beam_size=k_max)
            live = _finalize(state, cands, finished, beam_size=k_max, eos_id=eos_id)
            state = _keep_alive(state, cands, live, beam_size=k_max, eos_id=eos_id)
        return finished.best(n_best=settings.n_best, alpha=settings.length_penalty)


# --------------------------------------------------------------------------- shared state


@dataclass(frozen=True)
class _Rules:
    """Which tokens a step may produce (the length rules of the module docstring)."""

    min_len: int
    bos_id: int
    eos_id: int
    pad_id: int
    prefixes: Sequence[Sequence[int]] | None = None  # per input sentence

    def constrain(self, log_probs: Tensor, *, step: int, last_rows: list[int]) -> Tensor:
        """Set disallowed tokens to -inf, in place. log_probs [N, V] -> float32 [N, V].

        `step` counts the tokens already generated; `last_rows` are the rows at their last
        step (max_len - 1): there every token but EOS is masked, which overrides min_len.
        Only the few banned columns and last rows are written, never a full [N, V] mask.
        """
        log_probs = log_probs.float()
        device = log_probs.device
        banned = [t for t in (self.pad_id, self.bos_id) if t != self.eos_id]
        if step < self.min_len:
            banned.append(self.eos_id)
        rows = _index(last_rows, device) if last_rows else None
        if rows is not None:
            eos = log_probs[rows, self.eos_id]  # a copy, taken before min_len may ban EOS
        log_probs.index_fill_(1, _index(banned, device), NEG_INF)
        if rows is not None:
            log_probs.index_fill_(0, rows, NEG_INF)
            log_probs[rows, self.eos_id] = eos
        return log_probs

    def next_log_probs(self, model: SearchModel, state: _Rows) -> Tensor:
        """One decoding step of every row, constrained. -> float32 [N, V]."""
        log_probs = model.decode_step(state.prev, state.memory, state.cache)
        log_probs = self.constrain(log_probs, step=state.step, last_rows=state.rows_at_limit())
        if self.prefixes is not None:
            self.force_prefixes(log_probs, state)
        return log_probs

    def force_prefixes(self, log_probs: Tensor, state: _Rows) -> None:
        """In place: the rows of a sentence whose prefix reaches past this step may produce
        only its token at this step, with its model log-prob. log_probs [N, V]."""
        rows, tokens, step = [], [], state.step
        for i, sentence in enumerate(state.sentences):
            prefix = self.prefixes[sentence]
            if step < len(prefix):
                rows.extend(range(i * state.k, (i + 1) * state.k))
                tokens.extend([prefix[step]] * state.k)
        if rows:
            rows_t, tokens_t = _index(rows, log_probs.device), _index(tokens, log_probs.device)
            forced = log_probs[rows_t, tokens_t]
            log_probs.index_fill_(0, rows_t, NEG_INF)
            log_probs[rows_t, tokens_t] = forced


@dataclass(frozen=True)
class _Rows:
    """The hypotheses still alive: k rows for each of b unfinished sentences (N = b*k)."""

    sentences: list[int]  # [b] index of each sentence in the input batch
    limits: list[int]  # [b] max_len of each sentence
    k: int
    prev: Tensor  # [N] last token of each row (BOS before the first step)
    tokens: Tensor  # [N, t] generated so far
    log_probs: Tensor  # [N] float32 sum of the token log-probs
    max_lens: Tensor  # [N] max_len of each row's sentence
    memory: Memory  # N rows (B before the first step of beam search)
    cache: DecoderCache

    @property
    def step(self) -> int:
        """The tokens generated so far: the step about to run, counted from 0."""
        return self.tokens.size(1)

    def rows_at_limit(self) -> list[int]:
        """The rows whose sentence allows no token after this step (max_len = step + 1)."""
        ending = [i for i, limit in enumerate(self.limits) if limit == self.step + 1]
        return [i * self.k + j for i in ending for j in range(self.k)]

    def extend(self, rows: Tensor, *, tokens: Tensor, log_probs: Tensor, live: list[int]) -> _Rows:
        """New row i = old row rows[i] followed by tokens[i]. rows, tokens, log_probs [N'].

        `live` lists the kept sentences (positions in `sentences`); rows must be sentence major.
        The memory is re-selected only when the row layout changes (sentences leave, or the
        first beam step grows k from 1 to K): beams of one sentence share the same memory rows.
        """
        left = len(live) != len(self.sentences)
        self.cache.reorder(rows, sentences=_index(live, rows.device) if left else None)
        k = len(rows) // len(live)
        regroup = k != self.k or left
        return _Rows(
            sentences=[self.sentences[i] for i in live],
            limits=[self.limits[i] for i in live],
            k=k,
            prev=tokens,
            tokens=torch.cat([self.tokens[rows], tokens[:, None]], dim=1),
            log_probs=log_probs,
            max_lens=self.max_lens[rows],
            memory=self.memory.index_select(rows) if regroup else self.memory,
            cache=self.cache,
        )


def _start(
    model: SearchModel, src_ids: Tensor, settings: SearchSettings, rules: _Rules
) -> _Rows | None:
    """Encode the batch and set up one row per sentence; None for an empty batch."""
    batch, device = len(src_ids), src_ids.device
    if batch == 0:
        return None
    limits = [settings.max_len(n) for n in (src_ids != rules.pad_id).sum(dim=1).tolist()]
    if rules.prefixes is not None:  # room for the prefix and EOS after it
        limits = [max(limit, len(prefix) + 1) for limit, prefix in zip(limits, rules.prefixes)]
    memory = model.encode(src_ids)
    return _Rows(
        sentences=list(range(batch)),
        limits=limits,
        k=1,
        prev=torch.full((batch,), rules.bos_id, dtype=torch.long, device=device),
        tokens=torch.empty((batch, 0), dtype=torch.long, device=device),
        log_probs=torch.zeros(batch, device=device),
        max_lens=torch.tensor(limits, device=device),
        memory=memory,
        cache=model.init_cache(memory, max_len=max(limits)),
    )


class _Finished:
    """Finished hypotheses of each input sentence, kept on the device until the search ends."""

    def __init__(self, batch_size: int):
        self.counts = [0] * batch_size
        self._chunks: list[tuple[list[int], Tensor, Tensor]] = []

    def add(self, sentences: list[int], *, tokens: Tensor, log_probs: Tensor) -> None:
        """One hypothesis per entry of `sentences`: tokens [F, t] (no EOS), log_probs [F]."""
        for s in sentences:
            self.counts[s] += 1
        self._chunks.append((sentences, tokens, log_probs))

    def best(self, *, n_best: int, alpha: float) -> list[list[Hypothesis]]:
        """The n_best hypotheses of each sentence by score = log_prob / length**alpha."""
        hyps: list[list[Hypothesis]] = [[] for _ in self.counts]
        for sentences, tokens, log_probs in self._chunks:
            for s, ids, log_prob in zip(sentences, tokens.tolist(), log_probs.tolist()):
                score = log_prob / (len(ids) + 1) ** alpha
                hyps[s].append(Hypothesis(tokens=ids, score=score, log_prob=log_prob))
        return [sorted(h, key=lambda hyp: hyp.score, reverse=True)[:n_best] for h in hyps]


def _index(values: list[int], device: torch.device) -> Tensor:
    # From pageable host memory a non-blocking copy is staged at once and never waits on the GPU.
    return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)


# --------------------------------------------------------------------------- greedy step


def _step_policy(sampling: Sampling | None, generator: torch.Generator | None, device):
    """log_probs [N, V] -> (log-prob of the chosen token [N], chosen token [N]): the most
    likely one, or one drawn as `sampling` says."""
    if sampling is None:
        return lambda log_probs: log_probs.max(dim=-1)
    generator = generator if generator is not None else sampling.generator(device)
    return lambda log_probs: sampling.pick(log_probs, generator)


def _greedy_advance(
    state: _Rows, tokens: Tensor, log_probs: Tensor, ended: Tensor, finished: _Finished
) -> _Rows | None:
    """Finish the `ended` rows, extend the others by their token. tokens, log_probs, ended [N]."""
    flags = ended.tolist()  # the step's one host sync
    done = [i for i, e in enumerate(flags) if e]
    live = [i for i, e in enumerate(flags) if not e]
    device = tokens.device
    if done:
        index = _index(done, device)
        sentences = [state.sentences[i] for i in done]
        finished.add(sentences, tokens=state.tokens[index], log_probs=log_probs[index])
    if not live:
        return None
    if not done:  # same rows: no reorder needed
        grown = torch.cat([state.tokens, tokens[:, None]], dim=1)
        return replace(state, prev=tokens, tokens=grown, log_probs=log_probs)
    rows = _index(live, device)
    return state.extend(rows, tokens=tokens[rows], log_probs=log_probs[rows], live=live)


# --------------------------------------------------------------------------- beam step


@dataclass(frozen=True)
class _Candidates:
    """The best extensions of each sentence's rows, best first. Each field [b, C]."""

    log_probs: Tensor  # log_prob(row) + log p(token | row)
    rows: Tensor  # the row (0 .. N-1) each candidate extends
    tokens: Tensor  # the token it appends


def _expand(state: _Rows, log_probs: Tensor, *, beam_size: int) -> _Candidates:
    """Top C = min(2K, k*V) of  log_prob(row) + log p(token | row)  per sentence.

    2K candidates always hold K that do not end in EOS: each of the k <= K rows contributes at
    most one EOS candidate.
    """
    b, k = len(state.sentences), state.k
    vocab = log_probs.size(-1)
    count = min(2 * beam_size, k * vocab)
    top, flat = grouped_topk(log_probs, state.log_probs, groups=b, count=count)  # [b, C]
    first_row = k * torch.arange(b, device=flat.device)[:, None]  # [b, 1]
    rows = first_row + torch.div(flat, vocab, rounding_mode="floor")
    return _Candidates(log_probs=top, rows=rows, tokens=flat % vocab)


def _finalize(
    state: _Rows, cands: _Candidates, finished: _Finished, *, beam_size: int, eos_id: int
) -> list[int]:
    """Move EOS candidates among each sentence's top K to its finished list; return the live
    sentences (positions in `state.sentences`).

    Only EOS ranked within the top K finishes (fairseq's rule): an EOS ranked below K live
    candidates is not among the K best, and with K = 1 this makes beam search greedy. A
    sentence is done once it has K finished hypotheses, or after its last allowed step.
    """
    top = slice(None, beam_size)
    ends = (cands.tokens[:, top] == eos_id) & cands.log_probs[:, top].isfinite()  # [b, <=K]
    width = ends.size(1)
    flat = [i for i, e in enumerate(ends.reshape(-1).tolist()) if e]  # the step's one host sync
    if flat:
        index = _index(flat, cands.rows.device)
        rows = cands.rows[:, top].reshape(-1)[index]
        finished.add(
            [state.sentences[i // width] for i in flat],
            tokens=state.tokens[rows],
            log_probs=cands.log_probs[:, top].reshape(-1)[index],
        )
    return [
        i
        for i, (s, limit) in enumerate(zip(state.sentences, state.limits))
        if finished.counts[s] < beam_size and state.step + 1 < limit
    ]


def _keep_alive(
    state: _Rows, cands: _Candidates, live: list[int], *, beam_size: int, eos_id: int
) -> _Rows | None:
    """The K best candidates not ending in EOS of each live sentence become the new rows,
    each parent's best child in the parent's own row (`_by_parent_slot`)."""
    if not live:
        return None
    # A stable sort moves EOS candidates last and keeps the others in score order.
    is_eos = cands.tokens == eos_id  # [b, C]
    order = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :beam_size]
    first_row = state.k * torch.arange(len(state.sentences), device=order.device)[:, None]
    order = order.gather(1, _by_parent_slot(cands.rows.gather(1, order) - first_row))
    keep = None if len(live) == len(state.sentences) else _index(live, order.device)

    def pick(x: Tensor) -> Tensor:  # [b, C] -> [b', K] -> [b'*K]
        x = x.gather(1, order)
        return (x if keep is None else x[keep]).reshape(-1)

    tokens, log_probs = pick(cands.tokens), pick(cands.log_probs)
    # Fewer than K live candidates (a vocabulary smaller than K, a forced prefix) leave dead
    # rows: an EOS or a -inf candidate. They get -inf, which they never leave, and EOS as
    # their token (not the PAD or BOS a -inf tie may pick): a valid decoder input.
    dead = (tokens == eos_id) | log_probs.isneginf()
    log_probs = log_probs.masked_fill(dead, NEG_INF)
    tokens = tokens.masked_fill(dead, eos_id)
    return state.extend(pick(cands.rows), tokens=tokens, log_probs=log_probs, live=live)


def _by_parent_slot(parents: Tensor) -> Tensor:
    """Where each sentence's new rows go: perm [b, K], slot j takes new row perm[:, j].

    parents [b, K]: the row (0 .. k-1 within its sentence, k <= K) each new row extends, new
    rows best first. The best child of each parent takes its parent's slot; the other rows
    fill the free slots in score order. Rows that stay where their prefix already is need no
    copy when the cache is reordered (DecoderCache copies only moved rows on the CPU); the
    order of a sentence's rows never changes what the search finds.
    """
    b, k = parents.shape
    rank = torch.arange(k, device=parents.device)
    same_parent = parents[:, :, None] == parents[:, None, :]  # [b, K, K]
    first = ~(same_parent & (rank[None, :] < rank[:, None])).any(dim=2)  # [b, K]
    # Only a first child claims a slot; the others write into a spare column, dropped.
    claimed = torch.zeros(b, k + 1, dtype=torch.bool, device=parents.device)
    claimed.scatter_(1, torch.where(first, parents, k), True)
    free = torch.sort(claimed[:, :k].to(torch.uint8), dim=1, stable=True).indices  # free first
    others = (torch.cumsum(~first, dim=1) - 1).clamp_(min=0)  # i-th non-first -> i-th free
    slots = torch.where(first, parents, free.gather(1, others))  # [b, K]: slot of each row
    return torch.empty_like(slots).scatter_(1, slots, rank.expand(b, k))

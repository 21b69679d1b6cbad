"""Greedy and beam search against a scripted decoder with hand-written step probabilities.

Vocabulary: PAD 0, UNK 1, BOS 2, EOS 3 and two words a = 4, b = 5. A table maps the prefix
generated so far to the next-token distribution; expected beams and scores are worked out by
hand in the comments (p(...) is the product of the step probabilities, EOS included).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from nmt.config import DecodeConfig
from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import (
    Hypothesis,
    SearchSettings,
    beam_search,
    greedy_search,
    search,
)
from nmt.errors import NmtError

PAD, UNK, BOS, EOS, A, B = range(6)
IDS = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)

Prefix = tuple[int, ...]
Source = tuple[int, ...]


# --------------------------------------------------------------------------- the fake model


class FakeMemory:
    """One source sentence (its non-PAD ids) per row."""

    def __init__(self, sources: list[Source]):
        self.sources = sources

    def index_select(self, index: torch.Tensor) -> FakeMemory:
        return FakeMemory([self.sources[i] for i in index.tolist()])


class FakeCache:
    """Tracks each row's generated prefix, as a real key/value cache tracks its positions."""

    def __init__(self, rows: int, max_len: int):
        self.prefixes: list[Prefix] = [()] * rows
        self.max_len = max_len
        self.steps = 0
        self.sentences = list(range(rows))  # the input sentences still searched, in order
        self.owners = list(range(rows))  # the input sentence of each row

    def reorder(self, index: torch.Tensor, *, sentences: torch.Tensor | None = None) -> None:
        """Checks the protocol's contract: rows stay sentence major, `sentences` is exact."""
        self.prefixes = [self.prefixes[i] for i in index.tolist()]
        self.owners = [self.owners[i] for i in index.tolist()]
        if sentences is not None:
            self.sentences = [self.sentences[i] for i in sentences.tolist()]
        k = len(self.owners) // len(self.sentences)
        assert self.owners == [s for s in self.sentences for _ in range(k)]


class ScriptedModel:
    """decode_step returns `log_probs(source, prefix)` for every row; checks the protocol."""

    def __init__(self, log_probs: Callable[[Source, Prefix], torch.Tensor]):
        self.log_probs = log_probs
        self.rows_per_step: list[int] = []
        self.cache_max_len: int | None = None

    def encode(self, src_ids: torch.Tensor) -> FakeMemory:
        return FakeMemory([tuple(t for t in row if t != PAD) for row in src_ids.tolist()])

    def init_cache(self, memory: FakeMemory, *, max_len: int) -> FakeCache:
        self.cache_max_len = max_len
        return FakeCache(len(memory.sources), max_len)

    def decode_step(self, prev: torch.Tensor, memory: FakeMemory, cache: FakeCache):
        assert torch.is_inference_mode_enabled()
        prev_ids = prev.tolist()
        assert len(prev_ids) == len(memory.sources) == len(cache.prefixes)
        if cache.steps == 0:
            assert prev_ids == [BOS] * len(prev_ids)
        else:
            assert BOS not in prev_ids and PAD not in prev_ids
            cache.prefixes = [p + (t,) for p, t in zip(cache.prefixes, prev_ids)]
        cache.steps += 1
        assert cache.steps <= cache.max_len
        self.rows_per_step.append(len(prev_ids))
        rows = [self.log_probs(s, p) for s, p in zip(memory.sources, cache.prefixes)]
        return torch.stack(rows)


def table_model(tables: dict[Source, dict[Prefix, dict[int, float]]]) -> ScriptedModel:
    """tables[source][prefix] = {token: probability}; the prefix None holds the default."""

    def log_probs(source: Source, prefix: Prefix) -> torch.Tensor:
        table = tables[source] if source in tables else tables[None]
        dist = table.get(prefix, table[None])
        return torch.tensor([dist.get(t, 0.0) for t in range(6)]).log()

    return ScriptedModel(log_probs)


def random_model(seed: int, *, vocab: int = 8, eos_bias: float = 0.0) -> ScriptedModel:
    """Random but fixed distributions, a function of (seed, source, prefix)."""

    def log_probs(source: Source, prefix: Prefix) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((seed, source, prefix)) % 2**31)
        logits = 2 * torch.randn(vocab, generator=g)
        logits[EOS] += eos_bias + 0.4 * len(prefix)
        return logits.log_softmax(-1)

    return ScriptedModel(log_probs)


def src(*rows: Source) -> torch.Tensor:
    """A padded source batch."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [PAD] * (width - len(r)) for r in rows])


def expect(tokens: list[int], *probs: float, alpha: float) -> tuple[list[int], float, float]:
    """(tokens, score, log_prob) for step probabilities `probs` (EOS's last)."""
    log_prob = sum(math.log(p) for p in probs)
    return tokens, log_prob / len(probs) ** alpha, log_prob


def check(hyps: list[Hypothesis], *expected: tuple[list[int], float, float]) -> None:
    assert [h.tokens for h in hyps] == [e[0] for e in expected]
    assert [h.score for h in hyps] == pytest.approx([e[1] for e in expected], rel=1e-6)
    assert [h.log_prob for h in hyps] == pytest.approx([e[2] for e in expected], rel=1e-6)


def settings(**kw) -> SearchSettings:
    return SearchSettings(**{"max_len_a": 0.0, "max_len_b": 10, **kw})


ONE_SOURCE = src((7, 8, 9))

# Greedy takes a (0.5), then must end with p(EOS | a) = 0.4; b (0.4) ends far more surely.
DIVERGE = {
    None: {
        (): {A: 0.5, B: 0.4, EOS: 0.05, UNK: 0.05},
        (A,): {EOS: 0.4, A: 0.3, B: 0.2, UNK: 0.1},
        (B,): {EOS: 0.9, A: 0.05, B: 0.03, UNK: 0.02},
        None: {EOS: 0.5, A: 0.25, B: 0.15, UNK: 0.1},
    }
}

# A short hypothesis [a] with p = 0.25 and a long one [b b] with p = 0.18: 0.25 > 0.18 (raw),
# but 0.18 > 0.25**1.5 = 0.125, so per token (alpha = 1) the long one is better.
SHORT_LONG = {
    None: {
        (): {A: 0.5, B: 0.4, EOS: 0.05, UNK: 0.05},
        (A,): {EOS: 0.5, A: 0.25, B: 0.15, UNK: 0.1},
        (B,): {B: 0.9, EOS: 0.05, A: 0.03, UNK: 0.02},
        (B, B): {EOS: 0.5, A: 0.3, B: 0.12, UNK: 0.08},
        None: {EOS: 0.5, A: 0.25, B: 0.15, UNK: 0.1},
    }
}


# --------------------------------------------------------------------------- known answers


def test_beam_finds_a_better_sequence_than_greedy():
    # greedy: a (0.5, EOS banned by min_len=1), then EOS (0.4): [a], p = 0.5 * 0.4 = 0.2
    (greedy,) = greedy_search(table_model(DIVERGE), ONE_SOURCE, settings(), **IDS)
    check(greedy, expect([A], 0.5, 0.4, alpha=1.0))
    # beam 2, step 0: a 0.5, b 0.4 alive.
    # step 1: b EOS 0.4*0.9 = 0.36, a EOS 0.5*0.4 = 0.2, a a 0.15, a b 0.1. Both top-2 are EOS:
    # two finished, the sentence is done. Both have length 2: score = log p / 2.
    (beam,) = beam_search(table_model(DIVERGE), ONE_SOURCE, settings(beam_size=2, n_best=2), **IDS)
    check(beam, expect([B], 0.4, 0.9, alpha=1.0), expect([A], 0.5, 0.4, alpha=1.0))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_length_penalty_orders_short_and_long(alpha):
    # step 0: a 0.5, b 0.4 alive.
    # step 1: b b 0.36, a EOS 0.25, a a 0.125, a b 0.075 -> [a] finished (p 0.25, length 2);
    #         alive b b, a a.
    # step 2: b b EOS 0.18, b b a 0.108, a a EOS 0.0625 -> [b b] finished (p 0.18, length 3);
    #         two finished: done.
    # alpha 0: log 0.25 = -1.386 > log 0.18 = -1.715            -> [a] first
    # alpha 1: log 0.25 / 2 = -0.693 < log 0.18 / 3 = -0.572    -> [b b] first
    (hyps,) = beam_search(
        table_model(SHORT_LONG),
        ONE_SOURCE,
        settings(beam_size=2, n_best=2, length_penalty=alpha),
        **IDS,
    )
    short = expect([A], 0.5, 0.5, alpha=alpha)
    long = expect([B, B], 0.4, 0.9, 0.5, alpha=alpha)
    check(hyps, *([short, long] if alpha == 0.0 else [long, short]))


def test_max_len_forces_eos():
    # EOS is never likely; the source has 4 real tokens, so max_len = floor(0.5 * 4 + 1) = 3.
    model_tables = {
        None: {
            (B,): {A: 0.5, B: 0.3, EOS: 0.15, UNK: 0.05},
            None: {A: 0.6, B: 0.25, EOS: 0.1, UNK: 0.05},
        }
    }
    padded = src((7, 8, 9, 10), (7, 8, 9, 10, 11, 12))[:1]  # one row with two PADs
    rules = dict(max_len_a=0.5, max_len_b=1, length_penalty=0.0)
    # greedy: a 0.6, a 0.6, then EOS is forced at the third token: p = 0.6 * 0.6 * 0.1
    model = table_model(model_tables)
    (greedy,) = greedy_search(model, padded, SearchSettings(**rules), **IDS)
    check(greedy, expect([A, A], 0.6, 0.6, 0.1, alpha=0.0))
    assert model.cache_max_len == 3 and len(model.rows_per_step) == 3
    # beam 2: step 0: a 0.6, b 0.25. step 1: a a 0.36, a b 0.15, b a 0.125, b b 0.075 (no EOS
    # in the top 2). step 2 is the last: only EOS, a a EOS 0.036, a b EOS 0.015.
    model = table_model(model_tables)
    (beam,) = beam_search(model, padded, SearchSettings(beam_size=2, n_best=2, **rules), **IDS)
    check(beam, expect([A, A], 0.6, 0.6, 0.1, alpha=0.0), expect([A, B], 0.6, 0.25, 0.1, alpha=0.0))
    assert model.cache_max_len == 3 and model.rows_per_step == [1, 2, 2]


@pytest.mark.parametrize("search_fn", [greedy_search, beam_search])
def test_max_len_overrides_min_len_and_keeps_the_eos_probability(search_fn):
    """min_len 5 bans EOS, but max_len 3 ends the hypothesis: EOS is forced at the third
    token and its model probability (0.1) still counts. In the same batch a longer source
    (max_len 4) reaches its own limit one step later: limits are per sentence."""
    model_tables = {None: {None: {A: 0.6, B: 0.25, EOS: 0.1, UNK: 0.05}}}
    batch = src((7, 8, 9, 10), (7, 8, 9, 10, 11, 12))
    rules = SearchSettings(beam_size=2, max_len_a=0.5, max_len_b=1, min_len=5, length_penalty=0.0)
    short, long = search_fn(table_model(model_tables), batch, rules, **IDS)
    check(short[:1], expect([A, A], 0.6, 0.6, 0.1, alpha=0.0))
    check(long[:1], expect([A, A, A], 0.6, 0.6, 0.6, 0.1, alpha=0.0))


MIN_LEN = {
    None: {
        (): {EOS: 0.5, A: 0.3, B: 0.2},
        (A,): {EOS: 0.7, A: 0.2, B: 0.1},
        (B,): {EOS: 0.55, A: 0.35, B: 0.1},
        (A, A): {EOS: 0.8, A: 0.1, B: 0.1},
        None: {EOS: 0.6, A: 0.25, B: 0.15},
    }
}


@pytest.mark.parametrize(
    ("min_len", "expected"),
    [
        (0, expect([], 0.5, alpha=1.0)),  # EOS at once: length 1
        (1, expect([A], 0.3, 0.7, alpha=1.0)),  # EOS banned at step 0: a, then EOS 0.7
        (2, expect([A, A], 0.3, 0.2, 0.8, alpha=1.0)),  # also after a: a 0.2 (not renormalised)
    ],
)
def test_min_len_blocks_early_eos_greedy(min_len, expected):
    (hyps,) = greedy_search(table_model(MIN_LEN), ONE_SOURCE, settings(min_len=min_len), **IDS)
    check(hyps, expected)


def test_min_len_blocks_early_eos_beam():
    # min_len 2, beam 2. step 0 (EOS banned): a 0.3, b 0.2.
    # step 1 (EOS banned): b a 0.2*0.35 = 0.07, a a 0.06, a b 0.03, b b 0.02 -> alive b a, a a.
    # step 2: a a EOS 0.06*0.8 = 0.048, b a EOS 0.07*0.6 = 0.042 -> two finished, done.
    (hyps,) = beam_search(
        table_model(MIN_LEN),
        ONE_SOURCE,
        settings(beam_size=2, n_best=2, min_len=2, length_penalty=0.0),
        **IDS,
    )
    check(hyps, expect([A, A], 0.3, 0.2, 0.8, alpha=0.0), expect([B, A], 0.2, 0.35, 0.6, alpha=0.0))


def test_n_best_sorted_by_score():
    # beam 3. step 0 (EOS banned): a 0.5, b 0.4, UNK 0.05 alive.
    # step 1: b EOS 0.36, a EOS 0.2, a a 0.15 | a b 0.1, a UNK 0.05, UNK EOS 0.025
    #   -> [b], [a] finished (the top 3 hold two EOS); alive a a, a b, a UNK.
    # step 2: a a EOS 0.075, a b EOS 0.05, a a a 0.0375 -> [a a], [a b] finished: 4 >= 3, done.
    # alpha 1: log .36/2 = -0.511, log .2/2 = -0.805, log .075/3 = -0.863, log .05/3 = -0.999
    (hyps,) = beam_search(table_model(DIVERGE), ONE_SOURCE, settings(beam_size=3, n_best=3), **IDS)
    check(
        hyps,
        expect([B], 0.4, 0.9, alpha=1.0),
        expect([A], 0.5, 0.4, alpha=1.0),
        expect([A, A], 0.5, 0.3, 0.5, alpha=1.0),
    )
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


# --------------------------------------------------------------------------- batches


def two_sentence_model() -> ScriptedModel:
    """Sentence (7, 8) follows SHORT_LONG; (9, .., 13) follows random EOS-averse tables."""
    table = table_model(SHORT_LONG).log_probs
    rand = random_model(3, vocab=6, eos_bias=-3.0).log_probs
    return ScriptedModel(lambda s, p: table(s, p) if s == (7, 8) else rand(s, p))


@pytest.mark.parametrize("run", [greedy_search, beam_search])
def test_batch_equals_each_sentence_alone(run):
    # max_len = floor(1 * src_len + 0): 2 for the short sentence, 5 for the long one.
    rules = SearchSettings(beam_size=2, n_best=2, max_len_a=1.0, max_len_b=0)
    short, long = (7, 8), (9, 10, 11, 12, 13)
    alone = [run(two_sentence_model(), src(s), rules, **IDS)[0] for s in (short, long)]
    model = two_sentence_model()
    assert run(model, src(short, long), rules, **IDS) == alone
    assert model.cache_max_len == 5
    if run is beam_search:
        # the short sentence stops at max_len 2: step 0 a 0.5, b 0.4; step 1 forces EOS:
        # [a] 0.5 * 0.5, [b] 0.4 * 0.05
        check(alone[0], expect([A], 0.5, 0.5, alpha=1.0), expect([B], 0.4, 0.05, alpha=1.0))
        # step 0 one row per sentence, then 2 + 2, then the short sentence is pruned
        assert model.rows_per_step == [2, 4, 2, 2, 2]
    else:
        assert model.rows_per_step == [2, 2, 1, 1, 1]


# --------------------------------------------------------------------------- properties


SOURCES = src((7,), (8, 9, 10, 11, 12, 13), (14, 15, 16))
RULES = [
    SearchSettings(beam_size=1, length_penalty=1.0, max_len_a=1.0, max_len_b=2, min_len=1),
    SearchSettings(beam_size=1, length_penalty=0.0, max_len_a=0.5, max_len_b=1, min_len=0),
    SearchSettings(beam_size=1, length_penalty=0.6, max_len_a=2.0, max_len_b=3, min_len=3),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rules", RULES)
def test_beam_1_equals_greedy(seed, rules):
    greedy = greedy_search(random_model(seed), SOURCES, rules, **IDS)
    assert beam_search(random_model(seed), SOURCES, rules, **IDS) == greedy
    assert search(random_model(seed), SOURCES, rules, **IDS) == greedy
    assert all(len(hyps) == 1 for hyps in greedy)


@pytest.mark.parametrize("seed", range(4))
def test_beam_hypotheses_obey_the_rules(seed):
    rules = SearchSettings(beam_size=4, n_best=3, length_penalty=0.8, max_len_a=1.0, max_len_b=2)
    model = random_model(seed, eos_bias=-1.0)
    results = beam_search(model, SOURCES, rules, **IDS)
    for row, hyps in zip(SOURCES.tolist(), results):
        source = tuple(t for t in row if t != PAD)
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3  # distinct beams
        for h in hyps:
            assert 1 <= len(h.tokens) + 1 <= len(source) + 2  # min_len 1, max_len
            assert not {PAD, BOS, EOS} & set(h.tokens)
            # log_prob is the model's log-prob of tokens + EOS, even when EOS was forced
            steps = [(tuple(h.tokens[:i]), t) for i, t in enumerate(h.tokens + [EOS])]
            log_prob = sum(model.log_probs(source, p)[t].item() for p, t in steps)
            assert h.log_prob == pytest.approx(log_prob, rel=1e-5)
            assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1) ** 0.8)


def test_empty_batch_and_invalid_settings():
    assert (
        beam_search(random_model(0), torch.zeros((0, 3), dtype=torch.long), SearchSettings(), **IDS)
        == []
    )
    # Settings are checked where they enter: the decoding options refuse what search would not take.
    with pytest.raises(NmtError, match=r"n_best \(3\) must be <= beam_size \(2\)"):
        DecodeOptions(beam_size=2, n_best=3).resolve(DecodeConfig())
    with pytest.raises(NmtError, match="beam_size: 0 is out of range"):
        DecodeOptions(beam_size=0)
    with pytest.raises(NmtError, match="min_len: -1 is out of range"):
        DecodeOptions(min_len=-1)


def test_max_len_formula_and_cap():
    settings = SearchSettings(max_len_a=1.2, max_len_b=10, max_len_cap=1024)
    assert settings.max_len(10) == 22  # floor(1.2 * 10 + 10)
    assert settings.max_len(1001) == 1024  # floor(1211.2) capped by the position table
    assert SearchSettings(max_len_a=0.0, max_len_b=0).max_len(5) == 1  # never below 1


def test_new_rows_stay_in_their_parents_slot_where_they_can():
    """The best child of each parent takes the parent's slot; the others fill the free slots
    in score order. perm[s, j] is the new row (best first) that goes to slot j."""
    from nmt.decoding.search import _by_parent_slot

    parents = torch.tensor([[2, 2, 0, 1, 1], [0, 0, 0, 0, 0], [4, 3, 2, 1, 0], [1, 1, 1, 1, 1]])
    expected = [[2, 3, 0, 1, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 0, 2, 3, 4]]
    assert _by_parent_slot(parents).tolist() == expected

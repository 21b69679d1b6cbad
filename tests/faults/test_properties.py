"""Properties of cleaning and batching that must hold for *any* input, checked with hypothesis.

Cleaning: a line never splits or merges (only "\\n" ends a line), `normalize` is idempotent
and its output is one clean NFC line, and every pair read is either kept once or counted
under the reason it was dropped. Batching: within an epoch every training pair is in
exactly one batch, every batch fits its token budget, and sharding across ranks loses only
the whole batches it says it drops.

Examples are bounded (`max_examples`, small sizes) so the file runs in a few seconds.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nmt.data.batching import batches_for_epoch, make_batches, make_inference_batches
from nmt.data.binarize import TokenArray, write_token_array
from nmt.data.clean import CleanStats, FilterSettings, drop_reason, filter_pairs, normalize
from nmt.data.languages import length_units
from nmt.data.prepare import aligned_lines
from nmt.data.text import iter_raw_lines, read_lines, write_lines_atomic

# Characters that stress cleaning: separators that str.splitlines would split on, controls,
# BOM, CR, combining marks (NFC), a compatibility character, other scripts and emoji.
AWKWARD = list(
    "\r\t\x00\x07\x0b\x0c\x1c\x1d\x1e\x1f\x7f\x85\xa0\u2028\u2029\ufeff\u200b\u0301\u0308"
    "\u0323\u1e0b\u212b\ufb01 aeAZ.,'-ßé犬собакаكلب😀"
)
# Few characters, so that hypothesis often puts a control or BOM between a letter and its
# combining mark: deleting it must not leave text that NFC would still change.
COMPOSING = list("eaAo \t\r\x00\x07\x85\u2028\ufeff\u0301\u0308\u0323\u0307")
awkward_text = st.one_of(
    st.text(alphabet=st.sampled_from(COMPOSING), max_size=12),
    st.text(
        alphabet=st.one_of(st.sampled_from(AWKWARD), st.characters(codec="utf-8")), max_size=40
    ),
)
# A line as read from a file: anything encodable in UTF-8 except the line feed itself.
file_line = st.text(
    alphabet=st.one_of(
        st.sampled_from(AWKWARD), st.characters(codec="utf-8", exclude_characters="\n")
    ),
    max_size=30,
)

FAST = settings(max_examples=150, deadline=None)
SLOW_IO = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --------------------------------------------------------------------------- lines


def as_text(lines: list[str]) -> list[str]:
    """What reading a file as text gives back: a final CR is the CR of a CRLF line end, and a
    BOM opening the file marks its encoding; neither is text."""
    text = [line[:-1] if line.endswith("\r") else line for line in lines]
    if text and text[0].startswith("\ufeff"):
        text[0] = text[0][1:]
    return text


@SLOW_IO
@given(lines=st.lists(file_line, max_size=12))
def test_lines_survive_a_write_read_round_trip_unsplit(lines, tmp_path):
    """U+2028, U+0085, form feeds, CRs... stay inside their line: alignment holds. The raw
    reader (download's byte-for-byte copy) gives back every character."""
    path = tmp_path / "round_trip.txt"
    assert write_lines_atomic(path, lines) == len(lines)
    assert read_lines(path) == as_text(lines)
    assert list(iter_raw_lines(path)) == lines
    assert [p.name for p in tmp_path.iterdir()] == ["round_trip.txt"]  # no temporary left


@SLOW_IO
@given(pairs=st.lists(st.tuples(file_line, file_line), min_size=1, max_size=12))
def test_aligned_lines_yield_exactly_the_written_pairs(pairs, tmp_path):
    src, tgt = tmp_path / "a.src", tmp_path / "a.tgt"
    write_lines_atomic(src, [s for s, _ in pairs])
    write_lines_atomic(tgt, [t for _, t in pairs])
    expected = zip(as_text([s for s, _ in pairs]), as_text([t for _, t in pairs]))
    assert list(aligned_lines(src, tgt)) == list(expected)


# --------------------------------------------------------------------------- normalize


@FAST
@given(text=awkward_text)
@example("A\ufeff\u0301")  # found by hypothesis: NFC ran before the BOM was deleted
@example("e\x00\u0301")
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@FAST
@given(text=awkward_text)
@example("A\ufeff\u0301")
@example("o\x07\u0308 \r\n")
def test_normalize_gives_one_trimmed_nfc_line_without_controls(text):
    out = normalize(text)
    assert unicodedata.is_normalized("NFC", out)
    assert out == out.strip() and "  " not in out
    assert "\ufeff" not in out
    for ch in out:
        assert ch == " " or not ch.isspace(), repr(out)  # every separator became a space
        assert unicodedata.category(ch) != "Cc", repr(out)


@FAST
@given(text=awkward_text)
def test_normalize_without_nfc_only_removes_and_collapses(text):
    """nfc=False keeps every visible character in order: nothing is composed or invented."""
    visible = [
        ch
        for ch in text
        if not ch.isspace() and ch != "\ufeff" and unicodedata.category(ch) != "Cc"
    ]
    assert [ch for ch in normalize(text, nfc=False) if ch != " "] == visible


# --------------------------------------------------------------------------- filters


def reference_filter(pairs, settings: FilterSettings) -> tuple[list, Counter]:
    """A direct, unoptimised statement of the filter rules (the known answer)."""
    kept, dropped, seen = [], Counter(), set()
    for src, tgt in pairs:
        # the ratio compares length units (CJK letters count 3; tests/data/test_cjk.py)
        units = sorted((length_units(src), length_units(tgt)))
        if not src or not tgt:
            dropped["empty"] += 1
        elif max(len(src), len(tgt)) > settings.max_chars:
            dropped["too_long"] += 1
        elif (
            settings.max_length_ratio > 0
            and units[1] > 10
            and units[1] / max(1, units[0]) > settings.max_length_ratio
        ):
            dropped["length_ratio"] += 1
        elif settings.dedup and (src, tgt) in seen:
            dropped["duplicate"] += 1
        else:
            seen.add((src, tgt))
            kept.append((src, tgt))
    return kept, dropped


short_or_repeated = st.one_of(awkward_text, st.sampled_from(["", " ", "Ja .", "Ein Hund ."]))
filter_settings = st.builds(
    FilterSettings,
    max_chars=st.integers(1, 40),
    max_length_ratio=st.sampled_from([0.0, 1.5, 3.0]),
    dedup=st.booleans(),
)


@FAST
@given(
    raw=st.lists(st.tuples(short_or_repeated, short_or_repeated), max_size=40),
    settings=filter_settings,
)
def test_cleaning_keeps_or_counts_every_pair(raw, settings):
    """normalize + filter_pairs (what `prepare` runs on the train split) against the rules."""
    pairs = [(normalize(s), normalize(t)) for s, t in raw]
    stats = CleanStats()
    kept = list(filter_pairs(pairs, settings, stats))
    expected_kept, expected_dropped = reference_filter(pairs, settings)
    assert kept == expected_kept
    assert stats.dropped == expected_dropped
    assert (stats.read, stats.kept) == (len(raw), len(kept))
    assert stats.kept + sum(stats.dropped.values()) == stats.read
    assert all(drop_reason(s, t, settings) is None for s, t in kept)


@FAST
@given(
    raw=st.lists(st.tuples(short_or_repeated, short_or_repeated), max_size=40),
    settings=filter_settings,
)
def test_cleaning_twice_changes_nothing(raw, settings):
    """Cleaned output, cleaned again, is kept whole: no pair is dropped or altered."""
    once = list(
        filter_pairs([(normalize(s), normalize(t)) for s, t in raw], settings, CleanStats())
    )
    stats = CleanStats()
    twice = list(filter_pairs([(normalize(s), normalize(t)) for s, t in once], settings, stats))
    assert twice == once
    assert stats.dropped == Counter()


# --------------------------------------------------------------------------- batching

pair_lengths = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=120)


def widest(src: np.ndarray, tgt: np.ndarray, batch: np.ndarray) -> int:
    """Padded width of a batch: its longest side plus BOS/EOS."""
    return int(max(src[batch].max(), tgt[batch].max())) + 1


@FAST
@given(
    pairs=pair_lengths,
    max_tokens=st.integers(61, 700),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 50),
)
def test_every_pair_is_in_exactly_one_batch_of_an_epoch(pairs, max_tokens, seed, epoch):
    src = np.array([s for s, _ in pairs], dtype=np.int64)
    tgt = np.array([t for _, t in pairs], dtype=np.int64)
    batches = batches_for_epoch(
        make_batches(src, tgt, max_tokens=max_tokens), seed=seed, epoch=epoch
    )
    seen = np.concatenate(batches).tolist() if batches else []
    assert sorted(seen) == list(range(len(pairs)))
    for batch in batches:
        assert len(batch) >= 1 and len(batch) * widest(src, tgt, batch) <= max_tokens


@FAST
@given(
    pairs=pair_lengths,
    max_tokens=st.integers(61, 400),
    world_size=st.integers(1, 5),
    epoch=st.integers(0, 20),
)
def test_sharding_drops_only_whole_batches_it_accounts_for(pairs, max_tokens, world_size, epoch):
    src = np.array([s for s, _ in pairs], dtype=np.int64)
    tgt = np.array([t for _, t in pairs], dtype=np.int64)
    batches = make_batches(src, tgt, max_tokens=max_tokens)
    shards = [
        batches_for_epoch(batches, seed=7, epoch=epoch, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert len({len(shard) for shard in shards}) == 1  # every rank runs the same steps
    used = [tuple(b.tolist()) for shard in shards for b in shard]
    assert len(used) == len(set(used)) == len(batches) - len(batches) % world_size
    dropped = Counter(tuple(b.tolist()) for b in batches) - Counter(used)
    examples = sorted(i for batch in used for i in batch)
    assert len(examples) == len(set(examples))  # no pair on two ranks
    assert len(examples) + sum(len(b) for b in dropped.elements()) == len(pairs)


@FAST
@given(lengths=st.lists(st.integers(0, 80), max_size=100), max_tokens=st.integers(1, 300))
def test_inference_batches_keep_every_line_longest_first(lengths, max_tokens):
    """Translation never drops a line: an over-budget one gets a batch of its own."""
    widths = np.array(lengths, dtype=np.int64) + 1
    batches = make_inference_batches(np.array(lengths, dtype=np.int64), max_tokens=max_tokens)
    order = np.concatenate(batches).tolist() if batches else []
    assert sorted(order) == list(range(len(lengths)))
    assert all(a >= b for a, b in zip(widths[order], widths[order][1:]))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * widths[batch].max() <= max_tokens


@SLOW_IO
@given(
    rows=st.lists(st.lists(st.integers(0, 65_535), max_size=6), max_size=8),
    vocab_size=st.sampled_from([65_536, 65_537, 1 << 20]),
)
def test_token_arrays_round_trip_at_the_uint16_boundary(rows, vocab_size, tmp_path):
    """The narrowest id dtype is chosen from the vocabulary, never truncating an id."""
    stem = tmp_path / "split.de"
    total = write_token_array(stem, rows, vocab_size=vocab_size)
    array = TokenArray(stem)
    assert total == sum(len(r) for r in rows) and len(array) == len(rows)
    assert [array[i].tolist() for i in range(len(rows))] == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "split.de.ids.npy",
        "split.de.offsets.npy",
    ]

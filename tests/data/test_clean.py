from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nmt.data.clean import CleanStats, FilterSettings, filter_pairs, normalize


def test_normalize_handles_multi30k_quirks_and_bad_bytes():
    assert normalize("  Ein Mann\tläuft.  ") == "Ein Mann läuft."
    assert normalize("\ufeffHallo\r") == "Hallo"
    assert normalize("a\x00b\x07c") == "abc"
    assert normalize("a\u2028b\u00a0c") == "a b c"
    # NFC: "e" + combining acute becomes the single code point U+00E9.
    assert normalize("e\u0301") == "\u00e9"
    assert normalize("e\u0301", nfc=False) == "e\u0301"


def test_filters_count_every_dropped_pair():
    pairs = [
        ("a b", "c d"),
        ("", "x"),
        ("same", "pair"),
        ("same", "pair"),
        ("x" * 50, "short one"),
        ("long" * 300, "long" * 300),
        ("Ja .", "Yes indeed ."),
    ]
    stats = CleanStats()
    kept = list(filter_pairs(pairs, FilterSettings(max_chars=1000, max_length_ratio=3.0), stats))
    assert kept == [("a b", "c d"), ("same", "pair"), ("Ja .", "Yes indeed .")]
    assert stats.as_dict() == {
        "read": 7,
        "kept": 3,
        "dropped": {"empty": 1, "duplicate": 1, "length_ratio": 1, "too_long": 1},
    }


@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=30)), max_size=60))
def test_no_pair_lost_or_duplicated_except_by_reported_filters(pairs):
    stats = CleanStats()
    kept = list(filter_pairs(pairs, FilterSettings(max_chars=20, max_length_ratio=2.0), stats))
    assert stats.read == len(pairs)
    assert stats.kept == len(kept) == len(pairs) - sum(stats.dropped.values())
    assert len(set(kept)) == len(kept)  # dedup on: no pair twice
    remaining = list(pairs)
    for pair in kept:  # every kept pair came from the input, in order
        index = remaining.index(pair)
        remaining = remaining[index + 1 :]

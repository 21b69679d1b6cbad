"""Target prefixes: each hypothesis starts with its sentence's forced prefix, and search goes
on from there (CTranslate2's `target_prefix`). Scripted tables give the beams by hand; the
session's tiny model and the command line show the text contract."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import SearchSettings, beam_search, greedy_search
from nmt.errors import DataError
from tests._cli import assert_clean_failure
from tests.decoding.test_search import EOS, IDS, UNK, A, B, src, table_model

# Unconstrained: A (0.6) then EOS. After a forced B: A (0.7) or EOS (0.3); after B A: EOS.
TABLE = {
    (): {A: 0.6, B: 0.3, UNK: 0.1},
    (A,): {EOS: 1.0},
    (B,): {A: 0.7, EOS: 0.3},
    (B, A): {EOS: 1.0},
    None: {EOS: 1.0},
}


def test_greedy_starts_with_the_prefix_and_an_empty_prefix_changes_nothing():
    model = table_model({None: TABLE})
    settings = SearchSettings(beam_size=1)
    hyps = greedy_search(model, src((7,), (7,)), settings, **IDS, prefixes=[[B], []])
    assert hyps[0][0].tokens == [B, A]  # B forced (0.3), then A (0.7), EOS (1)
    assert hyps[0][0].log_prob == pytest.approx(math.log(0.3 * 0.7), abs=1e-6)
    assert hyps[1][0].tokens == [A]  # unconstrained: A, EOS
    free = greedy_search(model, src((7,), (7,)), settings, **IDS)
    assert [h[0].tokens for h in free] == [[A], [A]]


def test_beam_search_continues_from_the_prefix():
    # Beam 2, prefix B: step 0 forces B; step 1 finishes [B] (0.3 * 0.3 = 0.09, score
    # log(0.09) / 2 = -1.204) and keeps B A (0.21); step 2 finishes [B, A] (0.21, score
    # log(0.21) / 3 = -0.520). Two finished: done; [B, A] first.
    model = table_model({None: TABLE})
    settings = SearchSettings(beam_size=2, n_best=2, length_penalty=1.0)
    hyps = beam_search(model, src((7,), (7,)), settings, **IDS, prefixes=[[B], []])
    assert [h.tokens for h in hyps[0]] == [[B, A], [B]]
    assert [h.score for h in hyps[0]] == pytest.approx(
        [math.log(0.21) / 3, math.log(0.09) / 2], abs=1e-6
    )
    assert hyps[1][0].tokens == [A]  # the empty prefix: the unconstrained best


def test_a_prefix_longer_than_max_len_still_fits():
    model = table_model({None: TABLE})
    settings = SearchSettings(beam_size=1, max_len_a=0.0, max_len_b=1)  # max_len 1: EOS only
    hyps = greedy_search(model, src((7,)), settings, **IDS, prefixes=[[B, A]])
    assert hyps[0][0].tokens == [B, A]
    assert model.cache_max_len == 3  # B, A, EOS


@pytest.fixture(scope="module")
def tiny(tiny_run):

    from nmt.decoding.engine import Engine

    return Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(device="cpu"))


def test_real_model_output_starts_with_its_prefix(tiny, tiny_run):
    lines = tiny_run.raw("val", "de").read_text(encoding="utf-8").splitlines()[:4] + [""]
    prefixes = ["A dog", "", "Two women are", "", "The cat"]
    free = tiny.translate(lines).best
    forced = tiny.translate(lines, prefixes=prefixes).best
    assert len(forced) == 5
    for prefix, text, unconstrained in zip(prefixes, forced, free):
        if prefix:
            assert text.startswith(prefix), (prefix, text)
        else:
            assert text == unconstrained  # an empty prefix is unconstrained
    assert free[0] != forced[0]  # the prefix changed what the model said
    with pytest.raises(DataError, match="prefix line 1 has .* pieces; the model's decoder"):
        tiny.translate(["Ein Hund."], prefixes=[" ".join(["dog"] * 2000)])


def test_translate_prefix_file_n_lines(tiny_run, nmt_inline, tmp_path):
    source, prefixes, out = tmp_path / "in.de", tmp_path / "prefix.en", tmp_path / "out.en"
    source.write_text("Ein Hund rennt.\n\nZwei Männer gehen.\n", encoding="utf-8")
    prefixes.write_text("A cat\nA\n\n", encoding="utf-8")
    result = nmt_inline(
        "translate", tiny_run.checkpoint, "-i", source, "-o", out, "--prefix-file", prefixes,
        "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[3] == ""  # three lines, each ending in \n
    assert lines[0].startswith("A cat")
    assert lines[1].startswith("A")  # an empty source with a prefix is still decoded
    assert lines[2]


def test_a_prefix_file_of_another_length_is_refused_in_one_line(tiny_run, tmp_path):
    from tests._cli import run_process

    source, prefixes, out = tmp_path / "in.de", tmp_path / "prefix.en", tmp_path / "out.en"
    source.write_text("Ein Hund.\nZwei Hunde.\n", encoding="utf-8")
    prefixes.write_text("A dog\n", encoding="utf-8")
    args = ("translate", tiny_run.checkpoint, "-o", out, "--prefix-file", prefixes)
    result = run_process(*args, "-i", source, cwd=tmp_path)
    assert_clean_failure(
        result, f"--prefix-file {prefixes} has 1 lines but the input ({source}) has 2"
    )
    assert not out.exists()
    # stdin is counted as it is read: the file output is never written
    code = "from nmt.cli import main\nmain()"
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args), "--device", "cpu"],
        input="Ein Hund.\nZwei Hunde.\nDrei.\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert_clean_failure(result, "has 1 lines but the input (stdin) has")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "prefix.en"]


def test_prefixes_and_input_both_from_stdin_are_refused(tiny_run, nmt_inline, tmp_path):
    """Before: the prefixes took every stdin line, and the error blamed the input for having
    none ("--prefix-file - has 3 lines but the input (stdin) has 0")."""
    result = nmt_inline("translate", tiny_run.checkpoint, "--prefix-file", "-", cwd=tmp_path)
    assert_clean_failure(
        result, "--input and --prefix-file are both - (stdin): only one input can be stdin"
    )

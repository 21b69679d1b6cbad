"""Ensembles (`nmt.decoding.ensemble`): the mean of the members' log-probs at every step.

A scripted pair gives beams worked out by hand; an ensemble of one, and of two copies of one
model, decode exactly like that model (scripted and the session's tiny model); members with
different SentencePiece models are refused in one line.
"""

from __future__ import annotations

import math

import pytest

from nmt.decoding.ensemble import Ensemble
from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import SearchSettings, beam_search, greedy_search, search
from tests._cli import assert_clean_failure
from tests.decoding.test_search import EOS, IDS, A, B, random_model, src, table_model

# Step 0: A 0.6 / 0.5, B 0.4 / 0.5. After A: EOS 0.5 / 0.2, A 0.5 / 0.8. After B: EOS 0.9 /
# 0.9, B 0.1 / 0.1. Anything longer: EOS.
FIRST = {(): {A: 0.6, B: 0.4}, (A,): {EOS: 0.5, A: 0.5}, (B,): {EOS: 0.9, B: 0.1}}
SECOND = {(): {A: 0.5, B: 0.5}, (A,): {EOS: 0.2, A: 0.8}, (B,): {EOS: 0.9, B: 0.1}}


def pair() -> Ensemble:
    return Ensemble([table_model({None: {**FIRST, None: {EOS: 1.0}}}),
                     table_model({None: {**SECOND, None: {EOS: 1.0}}})])  # fmt: skip


def mean_log(*probs: float) -> float:
    return sum(math.log(p) for p in probs) / len(probs)


def test_a_scripted_pair_gives_the_hand_computed_beams():
    # Ensemble step probabilities (geometric means): A sqrt(0.3) = 0.548, B sqrt(0.2) = 0.447;
    # after A: EOS sqrt(0.1) = 0.316, A sqrt(0.4) = 0.632; after B: EOS 0.9, B 0.1.
    # Beam 2, alpha 0. Step 1: B EOS 0.402 and A A 0.346 are the top 2: [B] finishes, A A
    # and B B (0.045) stay. Step 2: both end (EOS 1): [A, A] 0.346, [B, B] 0.045; done.
    settings = SearchSettings(beam_size=2, n_best=2, length_penalty=0.0)
    hyps = beam_search(pair(), src((7,)), settings, **IDS)[0]
    assert [h.tokens for h in hyps] == [[B], [A, A]]  # [B, B] is third
    expected = [mean_log(0.4, 0.5) + math.log(0.9), mean_log(0.6, 0.5) + mean_log(0.5, 0.8)]
    assert [h.log_prob for h in hyps] == pytest.approx(expected, abs=1e-6)
    # Greedy takes A (0.548), then A (0.632), then EOS: not the beam's best.
    greedy = greedy_search(pair(), src((7,)), SearchSettings(beam_size=1), **IDS)[0][0]
    assert greedy.tokens == [A, A]
    # Each member decoded every step on its own cache, rows alike.
    first, second = pair().members
    beam_search(Ensemble([first, second]), src((7,), (8,)), settings, **IDS)
    assert first.rows_per_step == second.rows_per_step == [2, 4, 4]


@pytest.mark.parametrize("beam", [1, 3])
def test_an_ensemble_of_one_or_of_copies_is_the_model(beam):
    sources = src((5, 6, 7), (4,), (7, 7, 6, 5))
    settings = SearchSettings(beam_size=beam, n_best=beam, max_len_b=6)

    def decode(model):
        return [[(h.tokens, round(h.log_prob, 5)) for h in nbest]
                for nbest in search(model, sources, settings, **IDS)]  # fmt: skip

    alone = decode(random_model(3))
    assert decode(Ensemble([random_model(3)])) == alone
    assert decode(Ensemble([random_model(3), random_model(3)])) == alone
    assert decode(Ensemble([random_model(3), random_model(4)])) != alone


def test_real_ensemble_of_copies_translates_like_the_model(tiny_run, tmp_path):
    import shutil

    from nmt.decoding.engine import Engine

    lines = tiny_run.raw("val", "de").read_text(encoding="utf-8").splitlines()[:6] + [""]
    one = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(device="cpu")).translate(lines)
    steps = tiny_run.step_checkpoints
    copy = shutil.copy(tiny_run.checkpoint, tmp_path / "copy.pt")  # one file twice is refused
    two = Engine.from_checkpoints([tiny_run.checkpoint, copy], DecodeOptions(device="cpu"))
    result = two.translate(lines)
    assert result.best == one.best
    got = [n[0].log_prob for n in result.hypotheses if n]
    want = [n[0].log_prob for n in one.hypotheses if n]
    assert got == pytest.approx(want, abs=1e-4)
    mixed = Engine.from_checkpoints([steps[0], tiny_run.checkpoint], DecodeOptions(device="cpu"))
    assert len(mixed.translate(lines).best) == len(lines)


def test_members_with_other_tokenizers_are_refused(
    tiny_run, other_tokenizer_checkpoint, nmt_inline, tmp_path
):
    source, out = tmp_path / "in.de", tmp_path / "out.en"
    source.write_text("Ein Hund.\n", encoding="utf-8")
    result = nmt_inline(
        "translate", tiny_run.checkpoint, other_tokenizer_checkpoint, "-i", source, "-o", out,
        "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_failure(
        result,
        f"cannot ensemble {tiny_run.checkpoint} and {other_tokenizer_checkpoint}: "
        "their SentencePiece models differ",
    )
    assert not out.exists()


def test_members_with_shorter_position_tables_cut_long_inputs(tiny_run, tmp_path):
    """A member that reads at most 40 source pieces (max_positions 42) beside one that reads
    1000: a 96-piece line is cut to 40 for both, with the usual truncation count (before:
    `ValueError: position 96 is beyond max_positions (42)` from the short member's encoder)."""
    from nmt.checkpoint import load_checkpoint, save_checkpoint
    from nmt.decoding.engine import Engine

    state = load_checkpoint(tiny_run.checkpoint)
    state["config"]["model"]["max_positions"] = 42
    state["config"]["data"]["max_tokens_per_sentence"] = 40
    state["config"]["decode"]["max_input_tokens"] = 40
    short = tmp_path / "short.pt"
    save_checkpoint(short, state)
    line = " ".join(["Ein Hund rennt über die Wiese."] * 12)
    for members in ([tiny_run.checkpoint, short], [short, tiny_run.checkpoint]):
        ensemble = Engine.from_checkpoints(members, DecodeOptions(device="cpu", beam_size=1))
        assert ensemble.max_input_tokens == 40
        result = ensemble.translate([line])
        assert result.stats.truncated == 1 and len(result.best) == 1


def test_one_file_twice_is_refused(tiny_run, nmt_inline, tmp_path):
    """`nmt translate last.pt last.pt` (or last.pt beside the step file it links to): the
    model ensembled with itself is that model at twice the cost, recorded as an ensemble
    (before: accepted silently); refused as `nmt average` refuses it."""
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\n", encoding="utf-8")
    for command in ("translate", "evaluate"):
        inputs = ("-i", source) if command == "translate" else ("--src", source, "--ref", source)
        result = nmt_inline(
            command, tiny_run.checkpoint, tiny_run.checkpoint, *inputs, "--device", "cpu",
            cwd=tmp_path,
        )  # fmt: skip
        assert_clean_failure(
            result,
            f"cannot ensemble {tiny_run.checkpoint} with {tiny_run.checkpoint}: they are the "
            "same file",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de"]

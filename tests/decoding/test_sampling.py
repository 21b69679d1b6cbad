"""Sampling: greedy search's step policy draws tokens (`nmt.decoding.sampling`).

Counts over many draws must match the scripted probabilities after temperature and top-k /
top-p truncation. Tolerance: 0.015 absolute per token at 20,000 draws (more than 4 standard
deviations, sqrt(0.25 / 20000) = 0.0035); truncated tokens are never drawn (count exactly 0).
"""

from __future__ import annotations

import math

import pytest
import torch

from nmt.decoding.options import DecodeOptions
from nmt.decoding.sampling import Sampling
from nmt.decoding.search import SearchSettings, greedy_search, search
from nmt.errors import NmtError
from tests._cli import assert_clean_failure
from tests.decoding.test_search import BOS, EOS, IDS, PAD, UNK, A, B, src, table_model

PROBS = [0.5, 0.3, 0.15, 0.05]  # tokens 0..3 of a 4-token vocabulary
DRAWS = 20_000
TOLERANCE = 0.015


def frequencies(sampling: Sampling) -> list[float]:
    log_probs = torch.tensor(PROBS).log().expand(DRAWS, -1).clone()
    model_log_probs, tokens = sampling.pick(log_probs, sampling.generator(torch.device("cpu")))
    # The hypothesis keeps the model's log-prob of the drawn token, not the tempered one.
    assert torch.equal(model_log_probs, log_probs[0].log_softmax(-1).gather(0, tokens).float())
    return (torch.bincount(tokens, minlength=len(PROBS)).float() / DRAWS).tolist()


def normalised(weights: list[float]) -> list[float]:
    return [w / sum(weights) for w in weights]


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (Sampling("random"), PROBS),
        (Sampling("topk", k=2), [0.625, 0.375, 0, 0]),  # 0.5 / 0.8, 0.3 / 0.8
        (Sampling("topk", k=1), [1, 0, 0, 0]),
        # nucleus 0.7: 0.5 and 0.3 (the token crossing 0.7 stays), 0.15 starts past it
        (Sampling("topp", p=0.7), [0.625, 0.375, 0, 0]),
        (Sampling("topp", p=0.85), normalised([0.5, 0.3, 0.15, 0])),
        (Sampling("topp", p=1.0), PROBS),
        # temperature 0.5 squares the probabilities: 0.25, 0.09, 0.0225, 0.0025 (sum 0.365)
        (Sampling("random", temperature=0.5), normalised([p**2 for p in PROBS])),
        (Sampling("topk", k=3, temperature=2.0), normalised([p**0.5 for p in PROBS[:3]] + [0])),
    ],
    ids=["random", "topk2", "topk1", "topp0.7", "topp0.85", "topp1", "T0.5", "topk3-T2"],
)
def test_draws_follow_the_scripted_distribution(sampling, expected):
    counts = frequencies(sampling)
    for got, want in zip(counts, expected):
        if want == 0:
            assert got == 0
        else:
            assert got == pytest.approx(want, abs=TOLERANCE)


FIRST = {(): {A: 0.5, B: 0.3, UNK: 0.2}, None: {EOS: 1.0}}  # one token, then EOS


def first_tokens(sampling: Sampling, *, rows: int = 4000, seed: int | None = None) -> list:
    model = table_model({None: FIRST})
    settings = SearchSettings(beam_size=1, sampling=sampling)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    hyps = search(model, src(*[(7,)] * rows), settings, **IDS, generator=generator)
    return [h[0] for h in hyps]


def test_search_draws_through_the_step_policy_and_scores_with_the_model():
    hyps = first_tokens(Sampling("topk", k=2, temperature=0.7))
    tokens = [h.tokens[0] for h in hyps]
    assert all(h.tokens[1:] == [] for h in hyps)  # EOS (probability 1) followed
    assert UNK not in tokens  # outside the top 2
    # p^(1/0.7): 0.5 -> 0.3715, 0.3 -> 0.1792; A's share 0.6746
    assert tokens.count(A) / len(tokens) == pytest.approx(0.6746, abs=0.03)
    for h in hyps:
        assert h.log_prob == pytest.approx(math.log(0.5 if h.tokens[0] == A else 0.3), abs=1e-6)
    assert BOS not in tokens and PAD not in tokens


def test_the_same_seed_gives_the_same_draws_and_other_seeds_differ():
    def draws(seed):
        return [h.tokens for h in first_tokens(Sampling("random", seed=seed), rows=200)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    # The generator given to search continues its stream: a second call draws anew.
    model = table_model({None: FIRST})
    settings = SearchSettings(beam_size=1, sampling=Sampling("random"))
    generator = torch.Generator().manual_seed(0)
    run = [greedy_search(model, src(*[(7,)] * 200), settings, **IDS, generator=generator)]
    run.append(greedy_search(model, src(*[(7,)] * 200), settings, **IDS, generator=generator))
    assert run[0] != run[1]


def test_sampling_needs_a_beam_of_one():
    with pytest.raises(ValueError, match="beam_size must be 1"):
        SearchSettings(beam_size=2, sampling=Sampling("random"))


@pytest.mark.parametrize(
    "text, temperature, seed, message",
    [
        ("topk:0", None, None, "--sampling topk:0: expected topk:K (K >= 1)"),
        ("topk:x", None, None, "--sampling topk:x: expected"),
        ("topk", None, None, "--sampling topk: expected"),
        ("topp:0", None, None, "--sampling topp:0: expected"),
        ("topp:1.5", None, None, "--sampling topp:1.5: expected"),
        ("topp:nan", None, None, "--sampling topp:nan: expected"),
        ("beam", None, None, "--sampling beam: expected"),
        ("random:3", None, None, "--sampling random:3: expected"),
        ("random", 0.0, None, "--temperature 0.0: expected a finite number > 0"),
        ("random", -1.0, None, "--temperature -1.0: expected"),
        ("random", float("nan"), None, "--temperature nan: expected"),
        ("random", float("inf"), None, "--temperature inf: expected"),
        ("random", None, -1, "--seed -1: expected an integer from 0 to 2\\*\\*63 - 1"),
        ("random", None, 2**70, "--seed 1180591620717411303424: expected"),
        (None, 0.5, None, "--temperature applies only with --sampling"),
        (None, None, 3, "--seed applies only with --sampling"),
    ],
)
def test_bad_sampling_options_are_refused_by_name(text, temperature, seed, message):
    expected = "invalid decoding options: " + message
    with pytest.raises(NmtError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        DecodeOptions(sampling=text, temperature=temperature, seed=seed, spelling="cli")


def sampling(text, *, temperature=None, seed=None):
    return DecodeOptions(sampling=text, temperature=temperature, seed=seed).sampling_policy()


def test_parsed_sampling():
    assert sampling("topk:40") == Sampling("topk", k=40)
    assert sampling("topp:0.9", temperature=0.7, seed=5) == Sampling(
        "topp", p=0.9, temperature=0.7, seed=5
    )
    assert sampling(None) is None


@pytest.mark.parametrize(
    "policy",
    [
        Sampling("random", temperature=1e-300),
        Sampling("random", temperature=1e300),
        Sampling("random", temperature=5e-324),
        Sampling("topp", p=1e-300),
        Sampling("topk", k=3, temperature=1e-45),
    ],
)
def test_every_accepted_value_draws_from_a_real_distribution(policy):
    """Temperatures and nucleus sizes at float32's edges: every row still has probabilities
    that sum to 1 over allowed tokens (a tiny temperature or nucleus keeps the best token, a
    huge temperature draws uniformly), never NaN; banned tokens stay at 0."""
    log_probs = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 1.0, 0.0, 0.5]]), -1)
    log_probs[1, 0] = float("-inf")  # banned by a length rule
    probs = policy.distribution(log_probs.clone())
    assert not probs.isnan().any()
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert probs[1, 0] == 0
    if policy.temperature >= 1e300:
        assert torch.allclose(probs[0], torch.full((4,), 0.25))
    elif policy.kind != "random" or policy.temperature < 1e-30:
        assert probs[0].argmax() == 2 and probs[0, 2] > 0.99


# --------------------------------------------------------------------------- real tiny model


@pytest.mark.parametrize(
    "options, message",
    [
        (["--sampling", "topk:5", "--beam-size", "4"], "give --beam-size 1 or leave it out"),
        (["--sampling", "random", "--n-best", "2"], "--n-best 2 cannot apply"),
        (["--sampling", "topp:2"], "--sampling topp:2: expected"),
        (["--temperature", "nan"], "--temperature applies only with --sampling"),
    ],
)
def test_translate_refuses_bad_combinations_in_one_line(
    tiny_run, nmt_inline, tmp_path, options, message
):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\n", encoding="utf-8")
    out = tmp_path / "out.en"
    result = nmt_inline(
        "translate", tiny_run.checkpoint, "-i", source, "-o", out, *options, cwd=tmp_path
    )
    assert_clean_failure(result, message)
    assert not out.exists()


def test_translate_samples_n_lines_for_n_seeded(tiny_run, nmt_inline, tmp_path):
    source = tmp_path / "in.de"
    lines = tiny_run.raw("val", "de").read_text(encoding="utf-8").splitlines()[:6]
    source.write_text("\n".join(lines[:3] + ["", "  "] + lines[3:]) + "\n", encoding="utf-8")
    outputs = []
    for seed in (1, 1, 2):
        out = tmp_path / f"out{len(outputs)}.en"
        args = ("--sampling", "random", "--seed", seed, "--temperature", "1.5", "--device", "cpu")
        result = nmt_inline("translate", tiny_run.checkpoint, "-i", source, "-o", out, *args,
                            cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_text(encoding="utf-8").split("\n"))
    assert len(outputs[0]) == 8 + 1 and outputs[0][-1] == ""  # 8 lines, each ending in \n
    assert outputs[0][3] == outputs[0][4] == ""  # empty in, empty out
    assert outputs[0] == outputs[1]  # the same seed
    assert outputs[0] != outputs[2]  # another seed


def test_evaluate_samples_and_records_how(tiny_run, nmt_inline, tmp_path):
    import json

    source, reference = tiny_run.raw("val", "de"), tiny_run.raw("val", "en")
    reports = []
    for seed in (4, 4):
        result = nmt_inline(
            "evaluate", tiny_run.checkpoint, "--src", source, "--ref", reference, "--json",
            "--sampling", "topp:0.9", "--seed", seed, "--device", "cpu", "-o", tmp_path,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        reports.append(json.loads(result.stdout))
    assert reports[0]["sampling"] == {
        "kind": "topp", "k": 0, "p": 0.9, "temperature": 1.0, "seed": 4,
    }  # fmt: skip
    assert reports[0]["beam_size"] == 1
    assert reports[0]["bleu"] == reports[1]["bleu"]  # the same seed, the same hypotheses

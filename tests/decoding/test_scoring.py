"""`nmt score`: forced decoding of given translations.

A scripted model (the next-token distribution is a table of the prefix, as in test_search.py)
gives hand-computed scores; the session's tiny trained model shows that the score of its own
greedy output is the log-prob greedy search reported, and the command line keeps N rows for N
pairs and refuses mismatched files in one line.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from nmt.decoding.options import DecodeOptions
from nmt.decoding.scoring import score_pair_ids
from tests._cli import assert_clean_failure

PAD, UNK, BOS, EOS, A, B = range(6)
VOCAB = 6

# p(next | prefix); the prefix starts at BOS. Every row sums to 1 over {A, B, EOS}.
TABLE = {
    (BOS,): {A: 0.6, B: 0.3, EOS: 0.1},
    (BOS, A): {A: 0.2, B: 0.5, EOS: 0.3},
    (BOS, A, B): {A: 0.1, B: 0.1, EOS: 0.8},
    (BOS, B): {A: 0.25, B: 0.25, EOS: 0.5},
}


class ScriptedForward(torch.nn.Module):
    """forward(src_ids, tgt_in) -> logits whose log_softmax is log TABLE[prefix]."""

    cfg = SimpleNamespace(max_positions=8)

    def forward(self, src_ids: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        assert ((src_ids == EOS).sum(dim=1) == 1).all()  # collate ends every source in EOS
        rows = []
        for prefix_row in tgt_in.tolist():
            steps = []
            for t in range(len(prefix_row)):
                prefix = tuple(prefix_row[: t + 1])
                probs = TABLE.get(prefix, {EOS: 1.0})
                logits = torch.full((VOCAB,), -1e9)
                for token, p in probs.items():
                    logits[token] = math.log(p)
                steps.append(logits)
            rows.append(torch.stack(steps))
        return torch.stack(rows)


@dataclass
class FakeTranslator:
    model: torch.nn.Module
    batch_tokens: int = 4
    device: torch.device = torch.device("cpu")
    max_input_tokens: int = 1000

    def autocast(self):
        return contextlib.nullcontext()


def test_scripted_scores_are_the_hand_computed_products():
    translator = FakeTranslator(ScriptedForward(), batch_tokens=3)  # several batches
    targets = [[A, B], [B], [], [A]]
    scores = score_pair_ids(translator, [[7], [7, 7], [7, 7, 7], [7]], targets)
    # A B EOS: 0.6 * 0.5 * 0.8;  B EOS: 0.3 * 0.5;  EOS: 0.1;  A EOS: 0.6 * 0.3
    expected = [(0.6, 0.5, 0.8), (0.3, 0.5), (0.1,), (0.6, 0.3)]
    for score, probs in zip(scores, expected):
        assert score.length == len(probs)
        assert score.tokens == pytest.approx([math.log(p) for p in probs], abs=1e-6)
        assert score.log_prob == pytest.approx(math.log(math.prod(probs)), abs=1e-6)
        assert score.mean == pytest.approx(score.log_prob / len(probs))
    assert scores[0].row(per_token=False) == f"{math.log(0.24):.6f}\t{math.log(0.24) / 3:.6f}\t3"
    assert len(scores[0].row(per_token=True).split("\t")[3].split(" ")) == 3


def test_a_target_longer_than_the_position_table_is_refused_by_line():
    from nmt.errors import DataError

    with pytest.raises(DataError, match="--tgt line 2 has 8 pieces; the model scores at most 7"):
        score_pair_ids(FakeTranslator(ScriptedForward()), [[7], [7]], [[A], [A] * 8])


@pytest.fixture(scope="module")
def greedy(tiny_run):
    from nmt.decoding.engine import Engine

    return Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(device="cpu")).with_options(
        DecodeOptions(beam_size=1)
    )


def test_the_score_of_greedy_output_is_the_log_prob_search_reported(greedy, tiny_run):
    lines = tiny_run.raw("val", "de").read_text(encoding="utf-8").splitlines()[:12]
    result = greedy.translate(lines)
    hyps = [nbest[0] for nbest in result.hypotheses]
    scores = score_pair_ids(greedy, greedy.tokenizer.encode_src(lines), [h.tokens for h in hyps])
    for hyp, score in zip(hyps, scores):
        assert score.length == len(hyp.tokens) + 1
        assert score.log_prob == pytest.approx(hyp.log_prob, abs=1e-4)


def test_score_command_writes_one_row_per_pair(tiny_run, nmt_inline, tmp_path):
    src, tgt = tmp_path / "s.de", tmp_path / "t.en"
    src.write_text("Ein Hund rennt.\n\nZwei Männer.\n", encoding="utf-8")
    tgt.write_text("A dog runs.\nA dog.\n\n", encoding="utf-8")
    out = tmp_path / "scores.tsv"
    result = nmt_inline(
        "score", tiny_run.checkpoint, "--src", src, "--tgt", tgt, "-o", out, "--per-token",
        "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3
    for total, mean, count, tokens in rows:
        values = [float(v) for v in tokens.split(" ")]
        assert len(values) == int(count) and all(v <= 0 for v in values)
        assert float(total) == pytest.approx(sum(values), abs=1e-5)
        assert float(mean) == pytest.approx(float(total) / int(count), abs=1e-5)
    assert rows[2][2] == "1"  # an empty translation is EOS alone


def test_score_refuses_files_of_different_lengths(tiny_run, tmp_path):
    from tests._cli import run_process

    src, tgt = tmp_path / "s.de", tmp_path / "t.en"
    src.write_text("Ein Hund.\nZwei Hunde.\n", encoding="utf-8")
    tgt.write_text("A dog.\n", encoding="utf-8")
    out = tmp_path / "scores.tsv"
    result = run_process(
        "score", tiny_run.checkpoint, "--src", src, "--tgt", tgt, "-o", out, cwd=tmp_path
    )
    assert_clean_failure(result, f"--src {src} has 2 lines but --tgt {tgt} has 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.de", "t.en"]  # nothing written
    both = run_process("score", tiny_run.checkpoint, "--src", "-", "--tgt", "-", cwd=tmp_path)
    assert_clean_failure(both, "--src and --tgt cannot both be stdin")

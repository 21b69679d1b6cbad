"""`--print-alignment`: hard alignments from the last decoder layer's cross-attention.

Known answers: a hand-written attention table gives hand-picked pairs (source EOS and padding
never chosen); `CrossAttention.weights` are the probabilities its forward applies; the
teacher-forced pass aligns as the attention that greedy search computed step by step. The
command line keeps N lines in, N lines out with a TAB and the pairs, and refuses an ensemble.
"""

from __future__ import annotations

import pytest
import torch

from nmt.decoding.alignment import _pairs, format_alignment, hard_alignments
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from tests._cli import assert_clean_failure


def test_a_hand_written_attention_gives_its_argmax_pairs():
    # 3 target pieces (+ EOS row) over 2 source pieces (+ EOS column, + one PAD column).
    attention = torch.tensor(
        [
            [0.1, 0.7, 0.1, 0.1],  # piece 0 -> source 1
            [0.5, 0.1, 0.4, 0.0],  # piece 1 -> source 0
            [0.2, 0.3, 0.5, 0.0],  # piece 2: EOS is largest, so source 1 (the best piece)
            [0.9, 0.0, 0.1, 0.0],  # the EOS row: not aligned
        ]
    )
    pairs = _pairs(attention, src_len=2, tgt_len=3)
    assert pairs == [(1, 0), (0, 1), (1, 2)]
    assert format_alignment(pairs) == "1-0 0-1 1-2"
    assert _pairs(attention, src_len=0, tgt_len=3) == []  # an empty source: nothing to name


@pytest.fixture(scope="module")
def greedy(tiny_run) -> Engine:
    return Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(device="cpu", beam_size=1))


def test_weights_are_what_cross_attention_applies(greedy):
    layer = greedy.model.decoder_layers[-1].cross_attn
    generator = torch.Generator().manual_seed(0)
    width, heads = greedy.model.cfg.d_model, layer.heads
    x = torch.randn(2, 3, width, generator=generator)
    states = torch.randn(2, 5, width, generator=generator)
    memory_kv = layer.project_memory(states)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    with torch.inference_mode():
        weights = layer.weights(x, memory_kv, mask=mask)  # [2, H, 3, 5]
        mixed = torch.matmul(weights, memory_kv[1])  # [2, H, 3, Dh]
        applied = layer.out(mixed.transpose(1, 2).reshape(2, 3, width))
        expected = layer(x, memory_kv, mask=mask)
    assert weights.shape == (2, heads, 3, 5)
    torch.testing.assert_close(applied, expected, rtol=1e-5, atol=1e-5)
    assert weights[1, :, :, 3:].abs().max() == 0  # padding gets nothing
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, 3))


def test_the_forced_pass_aligns_as_the_attention_search_computed(tiny_run, greedy):
    """Greedy search, one sentence: the cross-attention of each step, recorded as the
    decoder computed it, gives the same argmax pairs as the teacher-forced pass."""
    layer = greedy.model.decoder_layers[-1].cross_attn
    seen: list[torch.Tensor] = []
    step = layer.step

    def step_and_record(x, *, cache, layer: int):  # x [1, 1, D]: one sentence, beam 1
        attention = step.__self__.weights(x, cache.cross(layer), mask=cache.cross_mask)
        seen.append(attention[0].mean(dim=0))  # [H, 1, S+1] -> [1, S+1]
        return step(x, cache=cache, layer=layer)

    line = tiny_run.raw("val", "de").read_text(encoding="utf-8").splitlines()[0]
    layer.step = step_and_record
    try:
        result = greedy.translate([line])
    finally:
        del layer.step
    tokens = result.hypotheses[0][0].tokens
    source = greedy.encode_sources([line])[0]
    stepwise = torch.cat(seen)[: len(tokens), : len(source)]  # [L, S]: EOS row and column out
    expected = [(i, j) for j, i in enumerate(stepwise.argmax(dim=-1).tolist())]
    assert hard_alignments(greedy, [source], [tokens]) == [expected]
    assert len(expected) == len(tokens) > 1


def test_translate_prints_one_alignment_per_line_and_row(tiny_run, nmt_inline, tmp_path):
    source, prefixes, out = tmp_path / "in.de", tmp_path / "prefix.en", tmp_path / "out.en"
    source.write_text("Ein Hund rennt.\n\nZwei Männer gehen.\n", encoding="utf-8")
    prefixes.write_text("A dog\nA\n\n", encoding="utf-8")
    lines = source.read_text(encoding="utf-8").splitlines()
    translator = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(device="cpu"))
    cases = {  # options -> the hypotheses the same search finds
        (): translator.translate(lines),
        ("--n-best", "2"): translator.with_options(DecodeOptions(n_best=2)).translate(lines),
        ("--prefix-file", str(prefixes)): translator.translate(lines, prefixes=["A dog", "A", ""]),
    }
    for options, expected in cases.items():
        result = nmt_inline(
            "translate", tiny_run.checkpoint, "-i", source, "-o", out, "--print-alignment",
            "--device", "cpu", *options, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = out.read_text(encoding="utf-8").splitlines()
        per_line = 2 if "--n-best" in options else 1
        assert len(rows) == per_line * len(lines)
        for number, row in enumerate(rows):
            line, rank = divmod(number, per_line)
            alignment = row.rsplit("\t", 1)[1]
            pairs = [tuple(map(int, pair.split("-"))) for pair in alignment.split()]
            sources = len(translator.encode_sources([lines[line]])[0])
            if not sources:  # the empty line: nothing to point at
                assert pairs == []
                continue
            tokens = expected.hypotheses[line][rank].tokens
            assert [j for _, j in pairs] == list(range(len(tokens)))  # one per target piece
            assert all(0 <= i < sources for i, _ in pairs)


def test_an_ensemble_cannot_print_alignments(tiny_run, nmt_inline, tmp_path):
    source, out = tmp_path / "in.de", tmp_path / "out.en"
    source.write_text("Ein Hund.\n", encoding="utf-8")
    result = nmt_inline(
        "translate", tiny_run.checkpoint, tiny_run.step_checkpoints[0], "-i", source, "-o", out,
        "--print-alignment", "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_failure(result, "--print-alignment needs one checkpoint")
    assert not out.exists()

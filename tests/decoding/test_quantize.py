"""int8 decoding: every linear is quantized, scores stay close to float32, the CLI and the
config accept it, and a GPU device or an unknown mode is refused clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from nmt.checkpoint import load_trained_model
from nmt.config import load_config
from nmt.data.text import read_lines
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from nmt.decoding.quantize import quantize, quantize_int8
from nmt.errors import ConfigError, NmtError


@pytest.fixture(scope="module")
def sources(tiny_run) -> list[str]:
    return read_lines(tiny_run.raw("test_2016_flickr", "de"))[:16]


def test_every_linear_is_int8_and_the_float_model_is_untouched(tiny_run):
    model, _, _ = load_trained_model(tiny_run.checkpoint)
    q = quantize_int8(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is nn.Linear for m in linears)  # a copy was quantized
    assert [m for m in q.modules() if isinstance(m, nn.Linear)] == []
    assert sum(isinstance(m, DynamicLinear) for m in q.modules()) == len(linears)
    assert torch.equal(q.tgt_embed.tokens.weight, model.tgt_embed.tokens.weight)


def test_int8_scores_are_close_to_float32(tiny_run, sources):
    """Same hypotheses forced through both models: log-probs differ by quantization noise."""
    fp32 = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=1))
    int8 = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=1, quantize="int8"))
    a, b = fp32.translate(sources), int8.translate(sources)
    assert len(b.best) == len(sources)
    same = [
        i for i in range(len(sources)) if a.hypotheses[i][0].tokens == b.hypotheses[i][0].tokens
    ]
    assert len(same) >= len(sources) // 2  # greedy paths mostly agree
    for i in same:
        per_token = abs(a.hypotheses[i][0].log_prob - b.hypotheses[i][0].log_prob) / (
            len(a.hypotheses[i][0].tokens) + 1
        )
        assert per_token < 0.05


def test_unknown_mode_and_gpu_are_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    assert quantize(model, "none", device=torch.device("cpu")) is model
    # An unknown mode is refused where it enters: the decoding options, the config.
    with pytest.raises(
        NmtError, match="quantize: got 'int4' \\(str\\), expected one of 'none', 'int8'"
    ):
        DecodeOptions(quantize="int4")
    with pytest.raises(ConfigError, match="decode.quantize: got 'int4'"):
        load_config(None, ["decode.quantize=int4"])
    with pytest.raises(NmtError, match="CPU only"):
        quantize(model, "int8", device=torch.device("cuda"))


def test_translate_cli_with_int8_gives_one_line_per_input(tiny_run, nmt_inline, tmp_path, sources):
    src = tmp_path / "in.de"
    src.write_text("\n".join([*sources[:5], "", "   "]) + "\n", encoding="utf-8")
    out = tmp_path / "out.en"
    result = nmt_inline(
        "translate", tiny_run.checkpoint, "-i", src, "-o", out, "--quantize", "int8", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert " (cpu int8): " in result.stderr  # the summary says what ran
    assert len(out.read_text(encoding="utf-8").splitlines()) == 7


def test_config_rejects_an_unknown_quantization():
    from nmt.config import load_config
    from nmt.errors import ConfigError

    with pytest.raises(ConfigError, match="decode.quantize"):
        load_config(None, ["decode.quantize=int4"])

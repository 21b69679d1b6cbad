"""Decoding precision (decode.precision): bf16/fp16 weights on a GPU, float32 on the CPU.

The half-precision model is the GPU's; these tests run the same model on the CPU, where torch
computes bf16 too (slowly), so the code path is checked even without a GPU: every weight is
cast, log-probs and beam scores stay float32 and close to float32's, N lines give N results.
On the CPU the command line refuses bf16 clearly.
"""

from __future__ import annotations

import pytest
import torch

from nmt.checkpoint import load_trained_model
from nmt.config import load_config
from nmt.data.batching import collate
from nmt.data.clean import normalize
from nmt.data.text import read_lines
from nmt.decoding.engine import Engine, ListSequences, inference_model
from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import SearchSettings, beam_search
from nmt.errors import ConfigError, NmtError
from nmt.runtime import choose_precision

CPU = torch.device("cpu")
IDS = dict(bos_id=2, eos_id=3, pad_id=0)


@pytest.fixture(scope="module")
def sources(tiny_run) -> list[str]:
    return read_lines(tiny_run.raw("test_2016_flickr", "de"))[:12]


def _src_ids(tokenizer, sources: list[str]) -> torch.Tensor:
    ids = tokenizer.encode_src([normalize(s) for s in sources])
    return collate(ListSequences(ids), None, list(range(len(ids)))).src_ids


def test_device_auto_is_the_cpu_on_a_machine_without_a_gpu():
    from nmt.runtime import resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == CPU


def test_auto_is_fp32_on_the_cpu_and_half_precision_is_refused_there():
    assert choose_precision("auto", CPU, key="decode.precision") == "fp32"
    assert choose_precision("fp32", CPU, key="decode.precision") == "fp32"
    with pytest.raises(NmtError, match="decode.precision bf16 needs a GPU"):
        choose_precision("bf16", CPU, key="decode.precision")
    # An unknown precision is refused where it enters: the decoding options, the config.
    with pytest.raises(NmtError, match="precision: got 'half' \\(str\\), expected one of 'auto'"):
        DecodeOptions(precision="half")
    with pytest.raises(ConfigError, match="decode.precision: got 'half'"):
        load_config(None, ["decode.precision=half"])
    with pytest.raises(ConfigError, match="train.precision: got 'half'"):
        load_config(None, ["train.precision=half"])


def test_auto_on_a_gpu_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    """No GPU here: torch.cuda's answers are scripted, to check which question is asked (an
    emulated bf16, as on a V100 or T4, must give fp16)."""
    import contextlib

    asked = []

    def is_bf16_supported(*, including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # this GPU only emulates bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    gpu = torch.device("cuda", 1)
    assert choose_precision("auto", gpu, key="decode.precision") == "fp16"
    assert asked == [False]
    assert choose_precision("bf16", gpu) == "bf16"  # asked for: given, not second-guessed


def test_bf16_model_casts_every_weight_and_keeps_float32_log_probs(tiny_run, sources):
    model, tokenizer, _ = load_trained_model(tiny_run.checkpoint)
    fp32 = inference_model(model, "none", device=CPU, precision="fp32")
    bf16_model, _, _ = load_trained_model(tiny_run.checkpoint)
    bf16 = inference_model(bf16_model, "none", device=CPU, precision="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in bf16.buffers() if b.is_floating_point()} <= {torch.bfloat16}

    src = _src_ids(tokenizer, sources)
    with torch.inference_mode():
        steps = {}
        for name, m in (("fp32", fp32), ("bf16", bf16)):
            memory = m.encode(src)
            cache = m.init_cache(memory, max_len=4)
            prev = torch.full((len(src),), IDS["bos_id"], dtype=torch.long)
            steps[name] = m.decode_step(prev, memory, cache)
    assert steps["bf16"].dtype == torch.float32
    assert steps["bf16"].shape == steps["fp32"].shape
    # bf16 keeps 8 bits of mantissa: the first step's log-probs agree to a few hundredths
    # where it matters (the likely tokens; 0.04 measured), and both mostly pick the same
    # best token (all 12 measured).
    likely = steps["fp32"] > -5
    assert (steps["bf16"] - steps["fp32"])[likely].abs().max() < 0.1
    agree = (steps["bf16"].argmax(-1) == steps["fp32"].argmax(-1)).float().mean()
    assert agree >= 0.75


def test_bf16_beam_search_gives_one_result_per_sentence_with_float32_scores(tiny_run, sources):
    model, tokenizer, _ = load_trained_model(tiny_run.checkpoint)
    bf16 = inference_model(model, "none", device=CPU, precision="bf16")
    src = _src_ids(tokenizer, sources)
    hyps = beam_search(bf16, src, SearchSettings(beam_size=4), **IDS)
    assert len(hyps) == len(sources)
    assert all(len(h) == 1 and h[0].tokens for h in hyps)
    assert all(isinstance(h[0].score, float) and h[0].score < 0 for h in hyps)


def test_translate_cli_refuses_bf16_on_the_cpu_and_names_the_setting(
    tiny_run, nmt_inline, tmp_path, sources
):
    src = tmp_path / "in.de"
    src.write_text("\n".join(sources[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "out.en"
    refused = nmt_inline(
        "translate", tiny_run.checkpoint, "-i", src, "-o", out, "--precision", "bf16", cwd=tmp_path
    )
    assert refused.returncode != 0
    assert refused.stderr.strip() == "error: --precision bf16 needs a GPU; use fp32 or auto on CPU"
    assert not out.exists()
    fp32 = nmt_inline(
        "translate", tiny_run.checkpoint, "-i", src, "-o", out, "--precision", "fp32", cwd=tmp_path
    )
    assert fp32.returncode == 0, fp32.stderr
    assert "translated 3 lines in " in fp32.stderr and " (cpu fp32): " in fp32.stderr
    assert (
        out.read_text(encoding="utf-8").splitlines()
        == Engine.from_checkpoint(tiny_run.checkpoint).translate(sources[:3]).best
    )


def test_config_accepts_decode_precision_and_rejects_unknown_values():
    from nmt.config import load_config
    from nmt.errors import ConfigError

    assert load_config(None, ["decode.precision=bf16"]).decode.precision == "bf16"
    with pytest.raises(ConfigError, match="decode.precision"):
        load_config(None, ["decode.precision=half"])


def test_evaluate_cli_refuses_bf16_on_the_cpu_too(tiny_run, nmt_inline, tmp_path, sources):
    src, ref = tmp_path / "in.de", tmp_path / "ref.en"
    src.write_text("\n".join(sources[:2]) + "\n", encoding="utf-8")
    ref.write_text("a\nb\n", encoding="utf-8")
    args = ("evaluate", tiny_run.checkpoint, "--src", src, "--ref", ref, "--precision", "fp16")
    refused = nmt_inline(*args, cwd=tmp_path)
    assert refused.returncode != 0
    assert refused.stderr.strip() == "error: --precision fp16 needs a GPU; use fp32 or auto on CPU"


def test_a_checkpoint_saved_for_bf16_says_that_precision_overrides_it(tiny_run, tmp_path):
    from nmt.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_run.checkpoint, map_location="cpu")
    ckpt["config"]["decode"]["precision"] = "bf16"
    saved = tmp_path / "bf16.pt"
    torch.save(ckpt, saved)
    with pytest.raises(NmtError) as refused:
        Engine.from_checkpoint(saved)
    assert str(refused.value) == (
        f"decode.precision bf16 needs a GPU; use fp32 or auto on CPU ({saved} was saved "
        "with it; --precision overrides it)"
    )
    translator = Engine.from_checkpoint(saved, DecodeOptions(precision="fp32"))
    assert translator.numerics == "fp32"
    assert len(translator.translate(["ein Hund läuft."]).best) == 1

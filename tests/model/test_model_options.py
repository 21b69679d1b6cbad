"""The model options imported Marian models need (`nmt import huggingface`): the swish
activation and an output bias. Both default to nmt's own behaviour, which they leave
bit-identical, and checkpoints written before the keys existed still load."""

from __future__ import annotations

import dataclasses
import math

import torch

from nmt.checkpoint import (
    bytes_to_tensor,
    read_model_checkpoint,
    save_checkpoint,
    tokenizer_fingerprint,
)
from nmt.config import ExperimentConfig, ModelConfig, config_to_dict
from nmt.data.tokenizer import PAD_ID, SpmSettings, Tokenizer, train_sentencepiece
from nmt.model.layers import FeedForward
from nmt.model.transformer import Transformer

TINY = ModelConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=32)


def test_swish_is_x_times_sigmoid_x():
    ffn = FeedForward(d_model=1, ffn_dim=1, activation="swish", activation_dropout=0.0)
    with torch.no_grad():
        for linear in (ffn.fc1, ffn.fc2):
            linear.weight.fill_(1.0)
            linear.bias.zero_()
    x = torch.tensor([[1.0], [-2.0], [0.0]])
    expected = [1 / (1 + math.exp(-1)), -2 / (1 + math.exp(2)), 0.0]  # 0.7311, -0.2384, 0
    assert torch.allclose(ffn(x)[:, 0], torch.tensor(expected), atol=1e-7)


def test_output_bias_is_added_to_the_logits_and_off_by_default():
    torch.manual_seed(0)
    plain = Transformer(TINY, src_vocab_size=20, tgt_vocab_size=20, pad_id=PAD_ID)
    torch.manual_seed(0)
    biased = Transformer(
        dataclasses.replace(TINY, output_bias=True),
        src_vocab_size=20,
        tgt_vocab_size=20,
        pad_id=PAD_ID,
    )
    assert "output.bias" not in plain.state_dict()
    # the same draws: the bias changes no other initial weight (it starts at zero)
    extra = biased.state_dict()
    assert torch.equal(extra.pop("output.bias"), torch.zeros(20))
    assert all(torch.equal(t, extra[name]) for name, t in plain.state_dict().items())
    with torch.no_grad():
        biased.output.bias.copy_(torch.arange(20.0))
    src, tgt = torch.tensor([[5, 6, 3]]), torch.tensor([[2, 7]])
    plain.eval(), biased.eval()
    assert torch.allclose(biased(src, tgt), plain(src, tgt) + torch.arange(20.0), atol=1e-5)


def test_a_checkpoint_without_the_new_keys_loads_with_the_defaults(tmp_path, corpus_slice):
    lines = (corpus_slice / "multi30k" / "train.de").read_text(encoding="utf-8").splitlines()
    blob = train_sentencepiece(lines, SpmSettings(vocab_size=600))
    tokenizer = Tokenizer(blob)
    cfg = ExperimentConfig(model=TINY)
    model = Transformer(TINY, src_vocab_size=600, tgt_vocab_size=600, pad_id=PAD_ID)
    raw = config_to_dict(cfg)
    del raw["model"]["output_bias"]  # as written before the key existed
    path = tmp_path / "old.pt"
    save_checkpoint(
        path,
        {
            "config": raw,
            "spm": {"src": bytes_to_tensor(blob), "tgt": bytes_to_tensor(blob)},
            "vocab": {"src": 600, "tgt": 600, "joint": tokenizer.joint},
            "fingerprint": {"tokenizer": tokenizer_fingerprint(blob, blob), "data": None},
            "model": model.state_dict(),
        },
    )
    checkpoint = read_model_checkpoint(path)
    assert checkpoint.config.model.output_bias is False
    assert checkpoint.config.model.activation == "relu"


def test_fairseq_positions_and_offset():
    """D = 4: frequencies 1 and 10000^(-1/(2-1)) = 1e-4, interleaved as nmt's; row 0 is
    position 2 with offset 2. The defaults give nmt's own table."""
    from nmt.model.embedding import sinusoidal_positions

    table = sinusoidal_positions(3, 4, style="fairseq", offset=2)
    p = 2.0
    expected = [math.sin(p), math.cos(p), math.sin(p * 1e-4), math.cos(p * 1e-4)]
    assert torch.allclose(table[0], torch.tensor(expected), atol=1e-7)
    vaswani = sinusoidal_positions(5, 4)
    assert torch.equal(sinusoidal_positions(3, 4, offset=2), vaswani[2:])
    assert torch.allclose(
        vaswani[1], torch.tensor([math.sin(1), math.cos(1), math.sin(1e-2), math.cos(1e-2)])
    )


def _prefix_models():
    """The same weights with and without model.source_prefix_id / target_prefix_id."""
    cfg = dataclasses.replace(TINY, dropout=0.0, positions="fairseq", position_offset=2)
    torch.manual_seed(0)
    plain = Transformer(cfg, src_vocab_size=30, tgt_vocab_size=30, pad_id=PAD_ID).eval()
    prefixed = Transformer(
        dataclasses.replace(cfg, source_prefix_id=7, target_prefix_id=9),
        src_vocab_size=30,
        tgt_vocab_size=30,
        pad_id=PAD_ID,
    ).eval()
    prefixed.load_state_dict(plain.state_dict())
    return plain, prefixed


def test_prefix_tokens_are_put_before_the_source_and_after_bos():
    plain, prefixed = _prefix_models()
    src = torch.tensor([[5, 6, 3, 0], [11, 12, 13, 3]])
    tgt = torch.tensor([[2, 20, 21], [2, 22, 0]])
    src_7 = torch.cat([torch.full((2, 1), 7), src], dim=1)
    tgt_9 = torch.cat([tgt[:, :1], torch.full((2, 1), 9), tgt[:, 1:]], dim=1)
    with torch.no_grad():
        assert torch.equal(prefixed.encode(src).states, plain.encode(src_7).states)
        expected = plain(src_7, tgt_9)[:, 1:]  # the prediction at BOS (of 9) is dropped
        assert torch.allclose(prefixed(src, tgt), expected, atol=1e-6)


def test_decode_steps_with_a_target_prefix_equal_the_full_forward():
    """Cached == uncached: the first step reads BOS and the forced token."""
    _, prefixed = _prefix_models()
    src, tgt = torch.tensor([[5, 6, 3]]), torch.tensor([[2, 20, 21]])
    with torch.inference_mode():
        full = torch.log_softmax(prefixed(src, tgt).float(), -1)[0]  # [3, V]
        memory = prefixed.encode(src)
        cache = prefixed.init_cache(memory, max_len=3)
        steps = [prefixed.decode_step(tgt[:, t], memory, cache)[0] for t in range(3)]
    assert torch.allclose(torch.stack(steps), full, atol=1e-5)
    assert cache.length == 4  # BOS, the prefix token, 20, 21

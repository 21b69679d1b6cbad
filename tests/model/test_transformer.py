"""Transformer invariants: causality, padding, cached == uncached, sharing, a training step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from nmt.config import ModelConfig
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.model import Memory, Transformer

VOCAB = 50


def step_by_step(model, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    """decode_step log-probs at every target position, [B, T, V]."""
    memory = model.encode(src)
    cache = model.init_cache(memory, max_len=tgt_in.shape[1])
    steps = [model.decode_step(tgt_in[:, t], memory, cache) for t in range(tgt_in.shape[1])]
    return torch.stack(steps, dim=1)


# --------------------------------------------------------------------------- causality, padding


def test_a_later_target_token_never_changes_earlier_logits(make_model, make_batch):
    model = make_model()
    src, tgt = make_batch(src_lengths=[7, 4], tgt_len=6)
    with torch.no_grad():
        before = model(src, tgt)
        for t in range(5):
            changed = tgt.clone()
            changed[:, t + 1] = (changed[:, t + 1] - 4 + 1) % (VOCAB - 4) + 4  # another real id
            after = model(src, changed)
            assert torch.allclose(after[:, : t + 1], before[:, : t + 1], atol=1e-6)
            assert not torch.allclose(after[:, t + 1], before[:, t + 1], atol=1e-3)


def test_appended_padding_changes_no_real_position(make_model, make_batch):
    model = make_model()
    src, tgt = make_batch(src_lengths=[6, 3, 5], tgt_len=5)
    src_padded = F.pad(src, (0, 4), value=PAD_ID)
    tgt_padded = F.pad(tgt, (0, 3), value=PAD_ID)
    with torch.no_grad():
        expected = model(src, tgt)
        got = model(src_padded, tgt_padded)
    assert torch.allclose(got[:, :5], expected, atol=1e-5)


def test_a_padded_row_equals_the_same_row_alone_without_padding(make_model, make_batch):
    model = make_model()
    src, tgt = make_batch(src_lengths=[7, 3], tgt_len=5)
    with torch.no_grad():
        batched = model(src, tgt)
        alone = model(src[1:, :3], tgt[1:])
    assert torch.allclose(batched[1:], alone, atol=1e-5)


# --------------------------------------------------------------------------- incremental decoding


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"norm": "post"},
        {"activation": "gelu", "share_embeddings": False, "tie_output": False},
        {"encoder_layers": 1, "decoder_layers": 3, "heads": 4},
    ],
    ids=["pre-norm", "post-norm", "gelu-untied", "1+3-layers-4-heads"],
)
def test_cached_decoding_equals_full_sequence(make_model, make_batch, overrides):
    model = make_model(**overrides)
    src, tgt = make_batch(src_lengths=[8, 2, 5, 6], tgt_len=7)
    with torch.no_grad():
        expected = torch.log_softmax(model(src, tgt), dim=-1)
        got = step_by_step(model, src, tgt)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5)


def test_decode_step_works_under_inference_mode(make_model, make_batch):
    model = make_model()
    src, tgt = make_batch(src_lengths=[5, 3], tgt_len=4)
    with torch.no_grad():
        expected = step_by_step(model, src, tgt)
    with torch.inference_mode():
        got = step_by_step(model, src, tgt)
    assert torch.equal(got, expected)


def test_bf16_autocast_forward_and_decode(make_model, make_batch):
    """Under autocast the logits come in bf16, decode_step still returns float32, and the
    cache holds bf16; both paths stay close to the float32 results."""
    model = make_model()
    src, tgt = make_batch(src_lengths=[6, 4], tgt_len=5)
    with torch.no_grad():
        reference = torch.log_softmax(model(src, tgt), dim=-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(src, tgt)
            memory = model.encode(src)
            cache = model.init_cache(memory, max_len=5)
            steps = [model.decode_step(tgt[:, t], memory, cache) for t in range(5)]
    assert logits.dtype == torch.bfloat16
    assert cache.self_kv.dtype == cache.cross_mask.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in steps)
    assert torch.allclose(torch.log_softmax(logits.float(), -1), reference, atol=0.1)
    assert torch.allclose(torch.stack(steps, dim=1), reference, atol=0.1)


def test_memory_index_select_picks_rows():
    memory = Memory(torch.arange(6.0).view(3, 2, 1), torch.tensor([[0, 1], [0, 0], [1, 1]]) > 0)
    picked = memory.index_select(torch.tensor([2, 0, 0]))
    assert picked.states.flatten().tolist() == [4.0, 5.0, 0.0, 1.0, 0.0, 1.0]
    assert picked.pad_mask.tolist() == [[True, True], [False, True], [False, True]]


# --------------------------------------------------------------------------- structure


def test_shared_and_tied_matrices_are_one_storage(make_model):
    model = make_model()
    src, tgt = model.src_embed.tokens.weight, model.tgt_embed.tokens.weight
    assert src is tgt is model.output.weight
    assert src.data_ptr() == model.output.weight.data_ptr()


def test_tied_output_without_shared_embeddings_uses_the_target_matrix(make_model):
    model = make_model(share_embeddings=False)
    assert model.output.weight is model.tgt_embed.tokens.weight
    assert model.src_embed.tokens.weight.data_ptr() != model.output.weight.data_ptr()


def test_untied_model_has_three_matrices(make_model):
    model = make_model(share_embeddings=False, tie_output=False)
    pointers = {
        model.src_embed.tokens.weight.data_ptr(),
        model.tgt_embed.tokens.weight.data_ptr(),
        model.output.weight.data_ptr(),
    }
    assert len(pointers) == 3


def test_shared_embeddings_need_equal_vocabularies():
    with pytest.raises(ValueError, match="share_embeddings"):
        Transformer(
            ModelConfig(d_model=32, heads=2), src_vocab_size=50, tgt_vocab_size=60, pad_id=PAD_ID
        )


def test_ties_survive_a_state_dict_round_trip(make_model):
    source, target = make_model(seed=1), make_model(seed=2)
    target.load_state_dict(source.state_dict())
    assert target.output.weight is target.src_embed.tokens.weight
    assert torch.equal(target.output.weight, source.output.weight)


def expected_parameters(*, d: int, ffn: int, vocab: int, enc: int, dec: int) -> int:
    """Counted by hand: linear = in * out + out; LayerNorm = 2d."""

    def linear(i: int, o: int) -> int:
        return i * o + o

    ffn_block = linear(d, ffn) + linear(ffn, d)
    encoder_layer = linear(d, 3 * d) + linear(d, d) + ffn_block + 2 * 2 * d
    decoder_layer = (
        (linear(d, 3 * d) + linear(d, d) + linear(d, d) + linear(d, 2 * d) + linear(d, d))
        + ffn_block
        + 3 * 2 * d
    )
    return vocab * d + enc * encoder_layer + dec * decoder_layer


def test_num_parameters_counts_shared_matrices_once(make_model):
    base = expected_parameters(d=32, ffn=64, vocab=VOCAB, enc=2, dec=2)
    final_norms = 2 * 2 * 32
    assert base + final_norms == 44480
    assert make_model().num_parameters() == base + final_norms
    assert make_model(norm="post").num_parameters() == base  # no final LayerNorms
    untied = make_model(share_embeddings=False, tie_output=False)
    assert untied.num_parameters() == base + final_norms + 2 * VOCAB * 32


def test_post_norm_is_a_different_model(make_model, make_batch):
    pre, post = make_model(seed=0), make_model(seed=0, norm="post")
    src, tgt = make_batch(src_lengths=[5], tgt_len=4)
    with torch.no_grad():
        assert not torch.allclose(pre(src, tgt), post(src, tgt), atol=1e-3)
    assert isinstance(post.encoder_norm, torch.nn.Identity)
    assert isinstance(pre.encoder_norm, torch.nn.LayerNorm)


def test_initialisation_is_fairseq_style():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=256, heads=4, share_embeddings=False, tie_output=False)
    model = Transformer(cfg, src_vocab_size=1000, tgt_vocab_size=1000, pad_id=PAD_ID)
    for weight in (model.src_embed.tokens.weight, model.tgt_embed.tokens.weight):
        assert torch.count_nonzero(weight[PAD_ID]) == 0
        assert weight[1:].std().item() == pytest.approx(256**-0.5, rel=0.02)
    assert model.output.weight.std().item() == pytest.approx(256**-0.5, rel=0.02)
    fc1 = model.encoder_layers[0].ffn.fc1.weight  # Xavier-uniform: bound sqrt(6 / (in + out))
    bound = (6 / (256 + 1024)) ** 0.5
    assert bound * 0.99 < fc1.abs().max().item() <= bound
    assert torch.count_nonzero(model.encoder_layers[0].ffn.fc1.bias) == 0


# --------------------------------------------------------------------------- training


def copy_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copy task: src = ids + EOS, tgt_in = BOS + ids, tgt_out = ids + EOS."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (16, 6), generator=gen)
    eos = torch.full((16, 1), EOS_ID)
    bos = torch.full((16, 1), BOS_ID)
    return torch.cat([ids, eos], 1), torch.cat([bos, ids], 1), torch.cat([ids, eos], 1)


def test_a_training_step_lowers_the_loss(make_model):
    model = make_model(dropout=0.0).train()
    src, tgt_in, tgt_out = copy_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        logits = model(src, tgt_in)
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID)

    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item() - 0.01


def test_dropout_is_active_only_in_training(make_model, make_batch):
    model = make_model(dropout=0.3, attention_dropout=0.3, activation_dropout=0.3)
    src, tgt = make_batch(src_lengths=[5, 4], tgt_len=4)
    with torch.no_grad():
        assert torch.equal(model(src, tgt), model(src, tgt))
        model.train()
        assert not torch.equal(model(src, tgt), model(src, tgt))


def test_the_model_uses_the_pad_id_it_is_given():
    cfg = dataclasses.replace(ModelConfig(), d_model=32, heads=2, ffn_dim=64)
    model = Transformer(cfg, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, pad_id=PAD_ID)
    assert model.pad_id == PAD_ID
    assert model.src_embed.tokens.padding_idx == PAD_ID

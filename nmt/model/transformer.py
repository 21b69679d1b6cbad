"""The encoder-decoder Transformer: `encode`, `forward` (teacher forcing), `decode_step`.

Shape legend: see `nmt.model`. Source rows carry PAD only at their end; target inputs begin
with BOS and carry PAD only at their end (the causal decoder relies on it, see attention.py).

Initialisation follows fairseq: embeddings ~ normal(0, D^-0.5) with a zero PAD row (times the
sqrt(D) scale this gives unit-variance inputs), Xavier-uniform linear weights (q, k, v blocks
with gain 1/sqrt(2)), zero biases, and an untied output projection ~ normal(0, D^-0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import CrossAttention, SelfAttention, attention_mask
from nmt.model.cache import DecoderCache
from nmt.model.embedding import TransformerEmbedding
from nmt.model.layers import DecoderLayer, EncoderLayer


@dataclass(frozen=True)
class Memory:
    """The encoded source.

    states    [B, S, D]  encoder output (rows at PAD positions hold values nobody reads)
    pad_mask  [B, S]     bool, True at PAD
    """

    states: Tensor
    pad_mask: Tensor

    def index_select(self, index: Tensor) -> Memory:
        """Rows `index` (LongTensor [N]) in that order, e.g. repeated once per beam."""
        return Memory(self.states.index_select(0, index), self.pad_mask.index_select(0, index))


class Transformer(nn.Module):
    """Encoder-decoder Transformer (Vaswani et al. 2017), pre- or post-norm."""

    def __init__(
        self, cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, pad_id: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_id = pad_id
        src_tokens, tgt_tokens = self._token_embeddings(cfg, src_vocab_size, tgt_vocab_size)
        embed = dict(
            max_positions=cfg.max_positions,
            dropout=cfg.dropout,
            positions=cfg.positions,
            position_offset=cfg.position_offset,
        )
        self.src_embed = TransformerEmbedding(src_tokens, **embed)
        self.tgt_embed = TransformerEmbedding(tgt_tokens, **embed)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        # Pre-norm leaves the residual stream unnormalised: one LayerNorm closes each stack.
        pre = cfg.norm == "pre"
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.output = nn.Linear(cfg.d_model, tgt_vocab_size, bias=False)
        if cfg.output_bias:  # an imported Marian model's final_logits_bias
            # Zeros, set here rather than by nn.Linear, whose bias init would draw from the
            # RNG and so change every weight initialised after it.
            self.output.bias = nn.Parameter(torch.zeros(tgt_vocab_size))
        self.apply(_init_weights)
        if cfg.tie_output:
            self.output.weight = tgt_tokens.weight
        else:
            nn.init.normal_(self.output.weight, mean=0.0, std=cfg.d_model**-0.5)

    def _token_embeddings(
        self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int
    ) -> tuple[nn.Embedding, nn.Embedding]:
        src = nn.Embedding(src_vocab_size, cfg.d_model, padding_idx=self.pad_id)
        if not cfg.share_embeddings:
            return src, nn.Embedding(tgt_vocab_size, cfg.d_model, padding_idx=self.pad_id)
        if src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"model.share_embeddings needs one vocabulary, got src_vocab_size="
                f"{src_vocab_size} and tgt_vocab_size={tgt_vocab_size}"
            )
        return src, src

    # ------------------------------------------------------------------ training

    def encode(self, src_ids: Tensor) -> Memory:
        """src_ids [B, S] (PAD at the end of short rows) -> Memory(states [B, S', D], pad_mask).

        S' = S, or S + 1 with model.source_prefix_id (an imported M2M100 model's language
        token, put before every source here so that the data pipeline never sees it).
        """
        src_ids = _prefixed(src_ids, self.cfg.source_prefix_id, at=0)
        pad_mask = src_ids.eq(self.pad_id)
        mask = attention_mask(pad_mask)
        x = self.src_embed(src_ids)
        for layer in self.encoder_layers:
            x = layer(x, mask=mask)
        return Memory(self.encoder_norm(x), pad_mask)

    def forward(self, src_ids: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """Teacher forcing: src_ids [B, S], tgt_in_ids [B, T] (BOS first) -> logits [B, T, V].

        Logits come in the compute dtype (bf16 under bf16 autocast); the loss upcasts.
        With model.target_prefix_id the decoder reads BOS, that token, then the rest; the
        prediction made at BOS (of the forced token) is dropped.
        """
        memory = self.encode(src_ids)
        mask = attention_mask(memory.pad_mask)
        prefix = self.cfg.target_prefix_id
        x = self.tgt_embed(_prefixed(tgt_in_ids, prefix, at=1))
        for layer in self.decoder_layers:
            memory_kv = layer.cross_attn.project_memory(memory.states)
            x = layer(x, memory_kv=memory_kv, memory_mask=mask)
        if prefix is not None:
            x = x[:, 1:]
        return self.output(self.decoder_norm(x))

    # ------------------------------------------------------------------ search

    def init_cache(self, memory: Memory, *, max_len: int) -> DecoderCache:
        """A cache for the N = B rows of `memory`, with room for `max_len` decoded positions.

        The memory's keys/values are projected here, once per sentence, for every layer: the
        cache is then self-contained, so `reorder` (even before the first step, to expand
        into beams) keeps everything aligned. Call it under the same autocast state as
        `decode_step`.
        """
        if max_len + (self.cfg.target_prefix_id is not None) > self.cfg.max_positions:
            raise ValueError(
                f"max_len ({max_len}) exceeds model.max_positions ({self.cfg.max_positions})"
            )
        if self.cfg.target_prefix_id is not None:  # the forced token takes a position too
            max_len += 1
        cross_kv = torch.stack(
            [layer.cross_attn.project_memory(memory.states) for layer in self.decoder_layers]
        )
        mask = attention_mask(memory.pad_mask, dtype=cross_kv.dtype)
        return DecoderCache(cross_kv=cross_kv, cross_mask=mask, max_len=max_len)

    def decode_step(self, prev_tokens: Tensor, memory: Memory, cache: DecoderCache) -> Tensor:
        """prev_tokens [N]: the token at position cache.length (BOS first) -> log-probs [N, V].

        Returns float32 log-probabilities of the next token and advances `cache` by one (by
        two at the first step with model.target_prefix_id: BOS, then the forced token). The
        memory's keys/values and mask were already put in the cache by `init_cache`, so this
        model does not read `memory` here; it is part of the search protocol all the same.
        No step reads a value back from the device. Meant to run under
        `torch.inference_mode()`: the cache is written in place, which autograd cannot follow.
        """
        if cache.length == 0 and self.cfg.target_prefix_id is not None:
            self._step(prev_tokens, cache)  # BOS: its prediction is the forced token's
            prev_tokens = torch.full_like(prev_tokens, self.cfg.target_prefix_id)
        logits = self.output(self.decoder_norm(self._step(prev_tokens, cache)))
        return torch.log_softmax(logits.float(), dim=-1)

    def _step(self, prev_tokens: Tensor, cache: DecoderCache) -> Tensor:
        """prev_tokens [N] at position cache.length -> the decoder's last states [N, D]."""
        x = self.tgt_embed(prev_tokens[:, None], offset=cache.length)  # [N, 1, D]
        for i, layer in enumerate(self.decoder_layers):
            x = layer.step(x, cache=cache, layer=i)
        cache.advance()
        return x[:, 0]

    def num_parameters(self) -> int:
        """Trainable parameters, each shared matrix counted once."""
        return sum(p.numel() for p in self.parameters())


def _prefixed(ids: Tensor, token: int | None, *, at: int) -> Tensor:
    """ids [B, L] with a column of `token` inserted before column `at` ([B, L + 1]); ids
    themselves when `token` is None."""
    if token is None:
        return ids
    column = ids.new_full((ids.shape[0], 1), token)
    return torch.cat([ids[:, :at], column, ids[:, at:]], dim=1)


def _init_weights(module: nn.Module) -> None:
    """fairseq-style initialisation; `nn.Module.apply` visits children before parents, so an
    attention module's own fused-projection init overrides the generic Linear rule."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=module.embedding_dim**-0.5)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, (SelfAttention, CrossAttention)):
        module.reset_parameters()

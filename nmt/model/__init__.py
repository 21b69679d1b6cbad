"""The encoder-decoder Transformer (Vaswani et al. 2017) and its incremental-decoding cache.

Shape legend used in every docstring of this package:
    B batch, S source length, T target length, D model width, H heads, Dh = D / H head width,
    V vocabulary, N rows being decoded (sentences times beams), L decoder layers.

Data flow:
    encode(src_ids) -> Memory                     the source once
    forward(src_ids, tgt_in_ids) -> logits         training (teacher forcing)
    init_cache(memory, max_len) -> DecoderCache    search: once per batch
    decode_step(prev_tokens, memory, cache)        search: one position per call
"""

from nmt.model.cache import DecoderCache
from nmt.model.transformer import Memory, Transformer

__all__ = ["DecoderCache", "Memory", "Transformer"]

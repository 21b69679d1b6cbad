"""nmt's own decoding engine: from a checkpoint to text. Encode, sort by length, batch by
tokens, search, restore order.

Exactly one output per input line, always: an empty (or whitespace-only) input gives an
empty output without running the model; an input longer than `max_input_tokens` pieces is
truncated (and counted), never dropped. It implements `nmt.decoding.backend`'s interface.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nmt.checkpoint import load_trained_model
from nmt.config import DecodeConfig, ExperimentConfig
from nmt.data.batching import ListSequences, collate, make_inference_batches
from nmt.data.clean import normalize
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from nmt.decoding.backend import (
    Capabilities,
    Translation,
    TranslationStats,
    output_tokens,
    texts_of,
)
from nmt.decoding.options import SEARCH_FIELDS, DecodeOptions
from nmt.decoding.packing import pack_linears
from nmt.decoding.quantize import quantize as quantize_model
from nmt.decoding.sampling import Sampling
from nmt.decoding.search import Hypothesis, SearchSettings, search
from nmt.errors import DataError, NmtError
from nmt.model.transformer import Transformer
from nmt.runtime import choose_precision, resolve_device


def search_settings(
    decode: DecodeConfig, sampling: Sampling | None = None, *, max_len_cap: int | None = None
) -> SearchSettings:
    """The search a (resolved) decode section describes; `sampling` draws tokens instead
    (greedy search's step policy, beam 1)."""
    fields = {name: getattr(decode, name) for name in SEARCH_FIELDS}
    try:
        return SearchSettings(**fields, max_len_cap=max_len_cap, sampling=sampling)
    except ValueError as exc:  # a sampling engine given a beam by with_options
        raise NmtError(f"invalid decoding options: {exc}") from None


def decoder_length_cap(cfg) -> int:
    """Most tokens (EOS included) a hypothesis of a model with ModelConfig `cfg` can have: its
    decoder's position table, less the position of a forced target prefix token
    (model.target_prefix_id, an imported M2M100 model's language token)."""
    return cfg.max_positions - (cfg.target_prefix_id is not None)


class Engine:
    """A model (or an ensemble) and its tokenizer, searching with resolved decode settings."""

    capabilities = Capabilities(
        prefixes=True, n_best=True, alignment=True, sampling=True, ensembles=True
    )

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        *,
        decode: DecodeConfig,
        sampling: Sampling | None = None,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
        config: ExperimentConfig | None = None,
        numerics: str = "fp32",
        target_language: str | None = None,
    ):
        self.config = config  # the checkpoint's resolved config, when loaded from one
        # data.tgt_lang: how decoded text is detokenised (see backend.output_line)
        self.target_language = target_language or (config.data.tgt_lang if config else None)
        self.numerics = numerics  # what the weights compute in: fp32, bf16, fp16 or int8
        self.model = model
        self.tokenizer = tokenizer
        self.decode = decode
        # Outputs never outgrow the decoder's position table (1.2 * 1001 + 10 > 1024 with the
        # defaults): long inputs get max_len = max_positions, as in fairseq.
        self.settings = search_settings(decode, sampling, max_len_cap=decoder_length_cap(model.cfg))
        self.device = torch.device(device)
        self.batch_tokens = decode.batch_tokens
        self.max_input_tokens = decode.max_input_tokens
        self.amp_dtype = amp_dtype
        self._generator: torch.Generator | None = None  # sampling's, made on first use

    @classmethod
    def from_checkpoint(cls, path: Path, options: DecodeOptions = DecodeOptions()) -> Engine:
        """Model, tokenizer and decode settings of a checkpoint, with `options` applied."""
        target = resolve_device(options.device, key=options.name("device"))
        if options.precision is not None:  # a bad value is refused before the model is loaded
            chosen = choose_precision(options.precision, target, key=options.name("precision"))
        model, tokenizer, cfg = load_trained_model(Path(path), device=target)
        decode = options.resolve(cfg.decode)
        if options.precision is None:
            chosen = _checkpoint_precision(decode.precision, target, path)
        model = inference_model(model, decode.quantize, device=target, precision=chosen)
        return cls(
            model,
            tokenizer,
            decode=decode,
            sampling=options.sampling_policy(),
            device=target,
            config=cfg,
            numerics=chosen if decode.quantize == "none" else decode.quantize,
        )

    @classmethod
    def from_checkpoints(cls, paths: Sequence[Path], options: DecodeOptions = DecodeOptions()):
        """One checkpoint (`from_checkpoint`), or an ensemble of several
        (`nmt.decoding.ensemble`) decoding with the first one's settings, `options` applied
        to every member."""
        if len(paths) == 1:
            return cls.from_checkpoint(paths[0], options)
        from nmt.checkpoint import refuse_duplicates
        from nmt.decoding.ensemble import Ensemble, check_same_tokenizer

        refuse_duplicates(paths, verb="ensemble")
        members = [cls.from_checkpoint(path, options) for path in paths]
        check_same_tokenizer([m.tokenizer for m in members], paths)
        ensemble = copy.copy(members[0])
        ensemble.model = Ensemble([m.model for m in members])
        cap = min(decoder_length_cap(m.model.cfg) for m in members)
        ensemble.settings = dataclasses.replace(ensemble.settings, max_len_cap=cap)
        # Every member encodes the same source: longer inputs are cut to the shortest limit.
        ensemble.max_input_tokens = min(m.max_input_tokens for m in members)
        return ensemble

    def with_options(self, options: DecodeOptions) -> Engine:
        """The same model and tokenizer (shared, not copied) with `options` applied to this
        engine's decode settings."""
        twin = copy.copy(self)
        twin.decode = options.resolve(self.decode)
        sampling = options.sampling_policy() or self.settings.sampling
        twin.settings = search_settings(
            twin.decode, sampling, max_len_cap=self.settings.max_len_cap
        )
        twin.batch_tokens = twin.decode.batch_tokens
        twin._generator = None
        return twin

    # ------------------------------------------------------------------ text

    def translate(
        self, lines: Sequence[str], *, prefixes: Sequence[str] | None = None
    ) -> Translation:
        """Translate raw lines (normalised like the training data); one result per line.

        `prefixes`: one target text per line (may be empty) that its translation starts with;
        search continues from it (`nmt.decoding.search`, target prefixes)."""
        if isinstance(lines, str):  # else each character would be translated as a line
            raise TypeError("Engine.translate takes a list of lines; nmt.Translator takes a str")
        started = time.perf_counter()
        cleaned = [normalize(line) for line in lines]
        ids = self.tokenizer.encode_src(cleaned)
        prefix_ids = None
        if prefixes is not None:
            if len(prefixes) != len(lines):
                raise ValueError(f"{len(lines)} lines but {len(prefixes)} prefixes")
            prefix_ids = self.tokenizer.encode_tgt([normalize(p) for p in prefixes])
        result = self.translate_ids(ids, prefixes=prefix_ids)
        result.stats.seconds = time.perf_counter() - started
        return result

    def encode_sources(self, lines: Sequence[str]) -> list[list[int]]:
        """The source ids `translate` decodes for `lines`: normalised, encoded, truncated to
        max_input_tokens."""
        ids = self.tokenizer.encode_src([normalize(line) for line in lines])
        return self._truncate(ids)[0]

    def translate_ids(
        self, sources: Sequence[Sequence[int]], *, prefixes: Sequence[Sequence[int]] | None = None
    ) -> Translation:
        """Translate source id lists (without EOS); empty inputs give empty outputs, unless
        they have a non-empty target prefix (`prefixes`: one id list per source)."""
        stats = TranslationStats(sentences=len(sources))
        sources, stats.truncated = self._truncate(sources)
        self._check_prefixes(prefixes)
        hyps: list[list[Hypothesis]] = [[] for _ in sources]
        todo = [i for i, s in enumerate(sources) if len(s) > 0 or (prefixes and len(prefixes[i]))]
        stats.empty = len(sources) - len(todo)
        todo_prefixes = None if prefixes is None else [prefixes[i] for i in todo]
        for index, nbest in self._search_all([sources[i] for i in todo], todo_prefixes):
            hyps[todo[index]] = nbest
        texts = texts_of(hyps, self.tokenizer, self.target_language)
        stats.output_tokens = output_tokens(hyps)
        return Translation(hyps, texts, stats)

    def _truncate(self, sources: Sequence[Sequence[int]]) -> tuple[list, int]:
        limit = self.max_input_tokens
        over = sum(1 for s in sources if len(s) > limit)
        return [s[:limit] if len(s) > limit else s for s in sources], over

    def _check_prefixes(self, prefixes: Sequence[Sequence[int]] | None) -> None:
        """A prefix the decoder's position table cannot hold with EOS is refused by line."""
        limit = self.settings.max_len_cap - 1
        forced = self.model.cfg.target_prefix_id is not None
        why = f"model.max_positions {self.model.cfg.max_positions}" + (
            ", one taken by the target language token" if forced else ""
        )
        for line, prefix in enumerate(prefixes or (), start=1):
            if len(prefix) > limit:
                raise DataError(
                    f"prefix line {line} has {len(prefix)} pieces; the model's decoder holds "
                    f"at most {limit} ({why})"
                )

    @torch.inference_mode()
    def _search_all(
        self, sources: Sequence[Sequence[int]], prefixes: Sequence[Sequence[int]] | None = None
    ):
        """Yield (index in `sources`, n-best list), batch by batch, shortest work first."""
        if not sources:
            return
        self.model.eval()
        array = ListSequences(sources)
        lengths = np.fromiter((len(s) + 1 for s in sources), dtype=np.int64, count=len(sources))
        for indices in make_inference_batches(lengths, max_tokens=self.batch_tokens):
            batch = collate(array, None, indices)
            src = batch.src_ids.to(self.device, non_blocking=True)
            with self.autocast():
                results = search(
                    self.model,
                    src,
                    self.settings,
                    bos_id=BOS_ID,
                    eos_id=EOS_ID,
                    pad_id=PAD_ID,
                    generator=self._sampling_generator(),
                    prefixes=None if prefixes is None else [prefixes[i] for i in batch.indices],
                )
            _check_scores(results)
            yield from zip(batch.indices.tolist(), results)

    def _sampling_generator(self) -> torch.Generator | None:
        """One seeded generator for the whole run: every batch continues its stream."""
        sampling = self.settings.sampling
        if sampling is not None and self._generator is None:
            self._generator = sampling.generator(self.device)
        return self._generator

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def _check_scores(results: list[list[Hypothesis]]) -> None:
    """Search ends every sentence with a hypothesis (EOS is forced at the length limit), but
    not where the scores are NaN (NaN activations: no comparison holds): such a sentence has
    none, or a NaN score. Refused, not written out as an empty or arbitrary translation.
    (-inf is a score: a hypothesis ended by the length limit.)"""
    if any(not nbest or any(math.isnan(h.score) for h in nbest) for nbest in results):
        raise NmtError(
            "the model computed NaN scores while decoding (its numbers overflowed: decode in "
            "fp32 with --precision fp32, or check the weights); nothing was written for it"
        )


HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def inference_model(
    model: Transformer, quantize: str, *, device: torch.device, precision: str = "fp32"
) -> nn.Module:
    """A trained model made ready for decoding only, in place where it can be.

    int8 when `quantize` says so (CPU only); in bf16 or fp16 (`precision`, a GPU's choice) the
    weights themselves are cast, not autocast per operation: each step then reads half the
    bytes and casts nothing, while the log-probs and beam scores stay float32 (decode_step
    upcasts the logits). float32 on the CPU gets linears with packed weights
    (`nmt.decoding.packing`).
    """
    if quantize != "none":
        return quantize_model(model, quantize, device=device)
    if precision in HALF_DTYPES:
        return model.to(HALF_DTYPES[precision])
    if device.type == "cpu":
        return pack_linears(model)
    return model


def _checkpoint_precision(requested: str, device: torch.device, path: Path) -> str:
    """decode.precision as the checkpoint (or the decode config given) sets it, for `device`;
    a refusal says how to override it."""
    try:
        return choose_precision(requested, device, key="decode.precision")
    except NmtError as exc:
        raise NmtError(f"{exc} ({path} was saved with it; --precision overrides it)") from None

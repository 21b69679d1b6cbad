"""From a checkpoint to text: encode, sort by length, batch by tokens, search, restore order.

Exactly one output per input line, always: an empty (or whitespace-only) input gives an
empty output without running the model; an input longer than `max_input_tokens` pieces is
truncated (and counted), never dropped.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nmt.checkpoint import load_trained_model
from nmt.config import DecodeConfig, ExperimentConfig, replace_decode
from nmt.data.batching import collate, make_inference_batches
from nmt.data.clean import normalize
from nmt.data.languages import without_spurious_spaces
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from nmt.decoding.packing import pack_linears
from nmt.decoding.quantize import quantize as quantize_model
from nmt.decoding.sampling import Sampling
from nmt.decoding.search import Hypothesis, SearchSettings, search
from nmt.errors import ConfigError, DataError, NmtError
from nmt.model.transformer import Transformer
from nmt.runtime import choose_precision, resolve_device


@dataclass
class TranslationStats:
    sentences: int = 0
    truncated: int = 0
    empty: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: TranslationStats) -> None:
        for name in ("sentences", "truncated", "empty", "output_tokens", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Translation:
    """n-best hypotheses per input line (in input order), and their text."""

    hypotheses: list[list[Hypothesis]]
    texts: list[list[str]]
    stats: TranslationStats = field(default_factory=TranslationStats)

    @property
    def best(self) -> list[str]:
        return [t[0] if t else "" for t in self.texts]


def search_settings(decode: DecodeConfig, **options) -> SearchSettings:
    """Search settings of `decode`, with `options` (command-line values; None = not given)
    checked by the config's own rules: `--length-penalty nan` is refused as `decode:
    length_penalty: .nan` is, naming the option."""
    given = {name: value for name, value in options.items() if value is not None}
    try:
        decode = replace_decode(decode, given)
    except ConfigError as exc:
        problems = [_name_options(problem, given) for problem in exc.problems]
        raise NmtError(f"invalid decoding options: {'; '.join(problems)}") from None
    return SearchSettings(
        beam_size=decode.beam_size,
        n_best=decode.n_best,
        length_penalty=decode.length_penalty,
        max_len_a=decode.max_len_a,
        max_len_b=decode.max_len_b,
        min_len=decode.min_len,
    )


def check_sampling_options(sampling: Sampling | None, **options) -> None:
    """What sampling cannot combine with, refused by option: it draws one hypothesis."""
    if sampling is None:
        return
    if (options.get("beam_size") or 1) > 1:
        raise NmtError(
            "--sampling draws one token per step: give --beam-size 1 or leave it out "
            f"(got --beam-size {options['beam_size']})"
        )
    if (options.get("n_best") or 1) > 1:
        raise NmtError(
            f"--sampling gives one hypothesis per line: --n-best {options['n_best']} cannot apply"
        )


def with_sampling(settings: SearchSettings, sampling: Sampling | None) -> SearchSettings:
    """`settings` drawing tokens with `sampling`: greedy search's step policy, beam 1."""
    if sampling is None:
        return settings
    return replace(settings, beam_size=1, n_best=1, sampling=sampling)


def _name_options(problem: str, given: dict) -> str:
    """`decode.length_penalty: ...` -> `--length-penalty: ...` for the options given."""
    for name in given:
        problem = problem.replace(f"decode.{name}", "--" + name.replace("_", "-"))
    return problem


# Every character str.splitlines() breaks a line on (text-mode open() breaks on \n and \r).
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """A hypothesis as one line: byte-fallback pieces such as <0x0A> decode to real line
    breaks, which would split one output into two lines and shift all the following ones."""
    return _LINE_BREAKS.sub(" ", text)


def output_line(text: str, target_language: str | None) -> str:
    """Decoded text as an output line: one line, and no spaces between Chinese or Japanese
    characters (`nmt.data.languages.without_spurious_spaces`)."""
    return without_spurious_spaces(one_line(text), target_language)


class ListSequences:
    """Adapter giving lists of ids the TokenArray interface `collate` reads."""

    def __init__(self, sentences: Sequence[Sequence[int]]):
        self.sentences = sentences

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.sentences[i], dtype=np.int64)


def decoder_length_cap(cfg) -> int:
    """Most tokens (EOS included) a hypothesis of a model with ModelConfig `cfg` can have: its
    decoder's position table, less the position of a forced target prefix token
    (model.target_prefix_id, an imported M2M100 model's language token)."""
    return cfg.max_positions - (cfg.target_prefix_id is not None)


class Translator:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        *,
        settings: SearchSettings,
        device: torch.device | str = "cpu",
        batch_tokens: int = 4096,
        max_input_tokens: int = 1000,
        amp_dtype: torch.dtype | None = None,
        config: ExperimentConfig | None = None,
        numerics: str = "fp32",
        target_language: str | None = None,
    ):
        self.config = config  # the checkpoint's resolved config, when loaded from one
        # data.tgt_lang: how decoded text is detokenised (see output_line)
        self.target_language = target_language or (config.data.tgt_lang if config else None)
        self.numerics = numerics  # what the weights compute in: fp32, bf16, fp16 or int8
        self.model = model
        self.tokenizer = tokenizer
        # Outputs never outgrow the decoder's position table (1.2 * 1001 + 10 > 1024 with the
        # defaults): long inputs get max_len = max_positions, as in fairseq.
        self.settings = replace(settings, max_len_cap=decoder_length_cap(model.cfg))
        self.device = torch.device(device)
        self.batch_tokens = batch_tokens
        self.max_input_tokens = max_input_tokens
        self.amp_dtype = amp_dtype
        self._generator: torch.Generator | None = None  # sampling's, made on first use

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        *,
        device: str = "cpu",
        decode: DecodeConfig | None = None,
        quantize: str | None = None,
        precision: str | None = None,
        sampling: Sampling | None = None,
        **search,
    ) -> Translator:
        """Model, tokenizer and decoding settings of a checkpoint. `decode` defaults to the
        checkpoint's own; `quantize` ("none" | "int8"), `precision` ("auto" | "fp32" | "bf16" |
        "fp16") and `search` override it; `sampling` draws tokens instead of searching."""
        from nmt.interop.ctranslate2 import CTranslate2Translator, is_ctranslate2_dir

        check_sampling_options(sampling, **search)
        if is_ctranslate2_dir(path):  # an `nmt export --to ctranslate2` directory
            if sampling is not None:
                raise NmtError(f"--sampling needs a checkpoint; {path} is a CTranslate2 directory")
            return CTranslate2Translator.from_directory(
                path, device=device, decode=decode, quantize=quantize, precision=precision, **search
            )
        target = resolve_device(device, key="--device")
        if precision is not None:  # a bad value is refused before the model is loaded
            chosen = choose_precision(precision, target, key="--precision")
        model, tokenizer, cfg = load_trained_model(Path(path), device=target)
        decode = decode or cfg.decode
        if precision is None:
            chosen = _checkpoint_precision(decode.precision, target, path)
        quantize = quantize or decode.quantize
        model = inference_model(model, quantize, device=target, precision=chosen)
        return cls(
            model,
            tokenizer,
            settings=with_sampling(search_settings(decode, **search), sampling),
            device=target,
            batch_tokens=decode.batch_tokens,
            max_input_tokens=decode.max_input_tokens,
            config=cfg,
            numerics=chosen if quantize == "none" else quantize,
        )

    @classmethod
    def from_checkpoints(cls, paths: Sequence[Path], **options) -> Translator:
        """One checkpoint (`from_checkpoint`), or an ensemble of several
        (`nmt.decoding.ensemble`) decoding with the first one's settings; `options` as for
        `from_checkpoint`, applied to every member."""
        if len(paths) == 1:
            return cls.from_checkpoint(paths[0], **options)
        from nmt.checkpoint import refuse_duplicates
        from nmt.decoding.ensemble import Ensemble, check_same_tokenizer

        refuse_duplicates(paths, verb="ensemble")
        members = [cls.from_checkpoint(path, **options) for path in paths]
        for path, member in zip(paths, members):
            if not isinstance(member, Translator):
                raise NmtError(f"an ensemble needs checkpoints; {path} is a CTranslate2 directory")
        check_same_tokenizer([m.tokenizer for m in members], paths)
        ensemble = copy.copy(members[0])
        ensemble.model = Ensemble([m.model for m in members])
        cap = min(decoder_length_cap(m.model.cfg) for m in members)
        ensemble.settings = replace(ensemble.settings, max_len_cap=cap)
        # Every member encodes the same source: longer inputs are cut to the shortest limit.
        ensemble.max_input_tokens = min(m.max_input_tokens for m in members)
        return ensemble

    def with_search(self, **overrides) -> Translator:
        """The same model and tokenizer (shared, not copied) with other search settings, e.g.
        beam_size=4, n_best=2; None keeps a setting. Bad values are an NmtError."""
        values = {name: value for name, value in overrides.items() if value is not None}
        try:
            settings = replace(self.settings, **values)
        except (TypeError, ValueError) as exc:  # e.g. n_best 3 with a beam of 2
            raise NmtError(f"invalid search settings: {exc}") from None
        twin = copy.copy(self)
        twin.settings = settings
        return twin

    # ------------------------------------------------------------------ text

    def translate(
        self, lines: Sequence[str], *, prefixes: Sequence[str] | None = None
    ) -> Translation:
        """Translate raw lines (normalised like the training data); one result per line.

        `prefixes`: one target text per line (may be empty) that its translation starts with;
        search continues from it (`nmt.decoding.search`, target prefixes)."""
        if isinstance(lines, str):  # else each character would be translated as a line
            raise TypeError(
                "Translator.translate takes a list of lines; nmt.Translator takes a str"
            )
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
        self,
        sources: Sequence[Sequence[int]],
        *,
        prefixes: Sequence[Sequence[int]] | None = None,
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
        texts = [
            [
                output_line(t, self.target_language)
                for t in self.tokenizer.decode_tgt([h.tokens for h in nbest])
            ]
            if nbest
            else [""]
            for nbest in hyps
        ]
        stats.output_tokens = sum(len(n[0].tokens) + 1 for n in hyps if n)
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
        self,
        sources: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]] | None = None,
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

"""`nmt export --to ctranslate2`, and decoding such a directory with nmt's command line.

The export is CTranslate2's own converter machinery: a `Converter` subclass whose `_load`
fills a `ctranslate2.specs.TransformerSpec`; `Converter.convert` then validates, quantizes
(`--quantization`) and writes model.bin, config.json and the vocabularies. How nmt's model
maps onto the spec:

  nmt                                  CTranslate2 TransformerSpec
  model.norm pre / post                pre_norm=True / False (same residual placement)
  encoder_norm, decoder_norm (pre)     encoder.layer_norm, decoder.layer_norm
  tokens * sqrt(D)                     scale_embeddings = True
  sinusoidal PE, interleaved sin/cos   position_encodings.encodings = nmt's own table
                                       (CTranslate2's built-in table puts sines first)
  self_attn.qkv [3D, D] (fused)        self_attention.linear[0] (fused the same way)
  cross_attn.q, cross_attn.kv          attention.linear[0], attention.linear[1]
  relu / gelu (erf)                    Activation.RELU / Activation.GELU
  output (tied or not, no bias)        decoder.projection (identical tensors are aliased)
  LayerNorm eps 1e-5                   layer_norm_epsilon = 1e-5
  source + EOS, decoder starts at BOS  add_source_eos = True, decoder_start_token = "<s>"

Decoding (`CTranslate2Engine`, used by `nmt translate` / `nmt evaluate` when given an export
directory) asks CTranslate2 for nmt's search: beam search stops once beam_size hypotheses
have finished (patience 1), scores are log_prob / length**alpha with EOS counted
(return_end_token), PAD and BOS are never generated (suppress_sequences), min_len bans EOS
before that many tokens in both. nmt's max length a * src_len + b is per sentence where
CTranslate2 has one max_decoding_length per call: one call with the largest limit, then the
sentences whose search reached their own limit again, grouped by it.
At its last step nmt ends every live hypothesis with a forced EOS whose log-probability
counts, where CTranslate2 finishes its best beam_size extensions, EOS or not; each cut one
stands for its row ended by EOS and is rescored so (score_batch). One difference remains
there: a live row none of whose extensions is among CTranslate2's best beam_size is missing
from its candidates, so a beam search that reaches the limit can differ (greedy search
cannot: its one row is always there, tests/interop/test_equivalence.py). On the random
models of tests/interop, 200 sentences, with a limit most searches reach
(0.4 * src_len + 2), beam-5 best outputs differ in 0 to 39 sentences per variant; with a
trained Multi30k model, in 1 of 1000 lines (docs/benchmarks.md, "Export fidelity"). Where no
search reaches the limit, the n-best lists are nmt's too (tested), but see
`_check_one_best`.
Two more: with length_penalty 0 CTranslate2 stops as soon as its best hypothesis ends (nmt
waits for beam_size), and it masks tokens before its softmax where nmt masks after; the
first step's masked mass is taken off again (`_first_step_shifts`), later steps mask only
PAD and BOS, which a trained model leaves near zero.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from nmt.config import ExperimentConfig, config_from_dict, config_to_dict
from nmt.data.clean import normalize
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from nmt.decoding.backend import (
    Capabilities,
    Translation,
    TranslationStats,
    output_tokens,
    require,
    texts_of,
)
from nmt.decoding.engine import search_settings
from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import Hypothesis, SearchSettings
from nmt.errors import NmtError
from nmt.extras import require_extra
from nmt.interop.source import ExportSource, check_export_files, write_provenance

CONFIG_NAME = "nmt_config.json"  # the resolved nmt config, for decoding settings and data
SPM_NAMES = ("source.spm", "target.spm")
COMMAND = "nmt export --to ctranslate2"


# --------------------------------------------------------------------------- export


def export_ctranslate2(source: ExportSource, out_dir: Path, *, quantization: str | None) -> None:
    """Write a CTranslate2 model directory for `source` into `out_dir` (which must not exist)."""
    ctranslate2 = require_extra("ctranslate2", COMMAND)  # `quantization`: checked by the CLI

    class NmtConverter(ctranslate2.converters.Converter):
        def _load(self):
            return transformer_spec(source)

    NmtConverter().convert(str(out_dir), quantization=quantization, force=True)
    write_tokenizer(source.tokenizer, out_dir)
    (out_dir / CONFIG_NAME).write_text(json.dumps(config_to_dict(source.config), indent=2))
    write_provenance(source, out_dir)
    (out_dir / "README.md").write_text(_readme(source, quantization), encoding="utf-8")


def transformer_spec(source: ExportSource):
    """The filled `TransformerSpec` of an nmt model (see the module docstring)."""
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = source.config.model
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers),
        cfg.heads,
        pre_norm=cfg.norm == "pre",
        activation=getattr(common_spec.Activation, cfg.activation.upper()),
    )
    state = {k: v.detach().float().numpy() for k, v in source.model.state_dict().items()}
    if cfg.source_prefix_id is not None or cfg.target_prefix_id is not None:
        raise NmtError(
            "nmt export --to ctranslate2: model.source_prefix_id / model.target_prefix_id (an "
            "imported M2M100 model's language tokens) have no CTranslate2 model setting"
        )
    positions = source.model.src_embed.positions.numpy()  # the model's own table (offset)
    _set_embeddings(spec.encoder, state["src_embed.tokens.weight"], positions)
    _set_embeddings(spec.decoder, state["tgt_embed.tokens.weight"], positions)
    for i, layer in enumerate(spec.encoder.layer):
        _set_layer(layer, state, f"encoder_layers.{i}.", cross=False)
    for i, layer in enumerate(spec.decoder.layer):
        _set_layer(layer, state, f"decoder_layers.{i}.", cross=True)
    if cfg.norm == "pre":
        _set_norm(spec.encoder.layer_norm, state, "encoder_norm")
        _set_norm(spec.decoder.layer_norm, state, "decoder_norm")
    spec.decoder.projection.weight = state["output.weight"]
    if cfg.output_bias:
        spec.decoder.projection.bias = state["output.bias"]
    tokenizer = source.tokenizer
    spec.register_source_vocabulary(_pieces(tokenizer.src))
    spec.register_target_vocabulary(_pieces(tokenizer.tgt))
    pieces = _pieces(tokenizer.tgt)
    spec.config.unk_token = pieces[UNK_ID]
    spec.config.bos_token = pieces[BOS_ID]
    spec.config.eos_token = pieces[EOS_ID]
    spec.config.decoder_start_token = pieces[BOS_ID]
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = 1e-5
    return spec


def _set_embeddings(stack, weight, positions) -> None:
    embeddings = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
    embeddings.weight = weight
    stack.scale_embeddings = True  # times sqrt(D)
    stack.position_encodings.encodings = positions


def _set_layer(layer, state: dict, prefix: str, *, cross: bool) -> None:
    _set_linear(layer.self_attention.linear[0], state, prefix + "self_attn.qkv")
    _set_linear(layer.self_attention.linear[1], state, prefix + "self_attn.out")
    _set_norm(layer.self_attention.layer_norm, state, prefix + "self_attn_residual.norm")
    if cross:
        _set_linear(layer.attention.linear[0], state, prefix + "cross_attn.q")
        _set_linear(layer.attention.linear[1], state, prefix + "cross_attn.kv")
        _set_linear(layer.attention.linear[2], state, prefix + "cross_attn.out")
        _set_norm(layer.attention.layer_norm, state, prefix + "cross_attn_residual.norm")
    _set_linear(layer.ffn.linear_0, state, prefix + "ffn.fc1")
    _set_linear(layer.ffn.linear_1, state, prefix + "ffn.fc2")
    _set_norm(layer.ffn.layer_norm, state, prefix + "ffn_residual.norm")


def _set_linear(spec, state: dict, name: str) -> None:
    spec.weight = state[f"{name}.weight"]
    spec.bias = state[f"{name}.bias"]


def _set_norm(spec, state: dict, name: str) -> None:
    spec.gamma = state[f"{name}.weight"]
    spec.beta = state[f"{name}.bias"]


def _pieces(processor) -> list[str]:
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def write_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> None:
    """source.spm and target.spm (the same model twice for a joint vocabulary)."""
    for name, blob in zip(SPM_NAMES, (tokenizer.src_model, tokenizer.tgt_model)):
        (out_dir / name).write_bytes(blob)


def _readme(source: ExportSource, quantization: str | None) -> str:
    cfg = source.config
    beam = cfg.decode.beam_size
    return f"""# {cfg.name}: CTranslate2 model ({cfg.data.src_lang} -> {cfg.data.tgt_lang})

Exported by `nmt export --to ctranslate2` from `{source.path.name}`
(weights: {quantization or "as saved, float32"}). SentencePiece models: `source.spm`,
`target.spm`; the nmt config the model was trained with: `{CONFIG_NAME}`.

```python
import ctranslate2, sentencepiece as spm
src = spm.SentencePieceProcessor(model_file="source.spm")
tgt = spm.SentencePieceProcessor(model_file="target.spm")
translator = ctranslate2.Translator(".", device="cpu")
result = translator.translate_batch([src.encode("Ein Hund rennt.", out_type=str)], beam_size={beam})
print(tgt.decode(result[0].hypotheses[0]))
```

`nmt translate . -i input.txt` decodes this directory with nmt's settings (length rule
{cfg.decode.max_len_a} * source length + {cfg.decode.max_len_b}, length penalty
{cfg.decode.length_penalty}, beam {beam}).
"""


# --------------------------------------------------------------------------- decoding


def is_ctranslate2_dir(path: Path) -> bool:
    """A directory written by `nmt export --to ctranslate2`."""
    path = Path(path)
    return path.is_dir() and (path / "model.bin").is_file()


class CTranslate2Engine:
    """`nmt.decoding.backend`'s interface over a CTranslate2 directory: the best translation
    as nmt's search finds it, without nmt's extras (prefixes, n-best, sampling, alignment)."""

    capabilities = Capabilities(
        prefixes=False, n_best=False, alignment=False, sampling=False, ensembles=False
    )

    def __init__(self, translator, tokenizer: Tokenizer, *, config, decode, numerics: str):
        self.translator = translator
        self.tokenizer = tokenizer
        self.config = config
        self.decode = decode
        self.settings = search_settings(decode, max_len_cap=config.model.max_positions)
        _check_one_best(self.settings)
        self.batch_tokens = decode.batch_tokens
        self.max_input_tokens = decode.max_input_tokens
        self.numerics = numerics
        self.device = torch.device(translator.device)  # "cpu" or "cuda"
        self.src_pieces = _pieces(tokenizer.src)
        self.tgt_pieces = tgt_pieces = _pieces(tokenizer.tgt)
        self.tgt_ids = {piece: i for i, piece in enumerate(tgt_pieces)}
        self.suppressed = [[tgt_pieces[PAD_ID]], [tgt_pieces[BOS_ID]]]
        self.eos_piece = tgt_pieces[EOS_ID]

    @classmethod
    def from_directory(
        cls, path: Path, options: DecodeOptions = DecodeOptions(), *, threads: int | None = None
    ) -> CTranslate2Engine:
        """The export at `path`; `options.quantize` int8 or `options.precision` choose
        CTranslate2's compute type (default: the weights as exported). `threads` defaults to
        torch's intra-op threads, as nmt's own decoding uses (OMP_NUM_THREADS); CTranslate2's
        own default (4) oversubscribes a 2-core machine, where its waiting threads spin."""
        if options.sampling is not None:
            require(cls, "sampling", what=f"{path} is a CTranslate2 directory")
        ctranslate2 = require_extra("ctranslate2", f"decoding the CTranslate2 directory {path}")
        path = Path(path)
        check_export_files(path)
        config = _load_config(path)
        tokenizer = Tokenizer.from_files(*(path / n for n in SPM_NAMES))
        decode = options.resolve(config.decode)
        device = options.device
        device = "cuda" if device == "auto" and ctranslate2.get_cuda_device_count() else device
        device = "cpu" if device == "auto" else device
        compute_type = _compute_type(options.quantize, options.precision)
        try:
            translator = ctranslate2.Translator(
                str(path),
                device=device,
                compute_type=compute_type,
                intra_threads=threads or torch.get_num_threads(),
            )
        except (RuntimeError, ValueError) as exc:
            raise NmtError(f"cannot load the CTranslate2 model {path}: {exc}") from None
        numerics = f"ctranslate2 {translator.compute_type}"
        return cls(translator, tokenizer, config=config, decode=decode, numerics=numerics)

    def with_options(self, options: DecodeOptions) -> CTranslate2Engine:
        """The same engine (shared, not copied) with `options` applied: nmt serve's
        per-request beam size and length penalty."""
        if options.sampling is not None:
            require(self, "sampling", what="the model is a CTranslate2 directory")
        twin = copy.copy(self)
        twin.decode = options.resolve(self.decode)
        twin.settings = search_settings(twin.decode, max_len_cap=self.settings.max_len_cap)
        _check_one_best(twin.settings)
        twin.batch_tokens = twin.decode.batch_tokens
        return twin

    def translate(
        self, lines: Sequence[str], *, prefixes: Sequence[str] | None = None
    ) -> Translation:
        """Raw lines -> one result per line, as nmt's Engine.translate."""
        if prefixes is not None:
            require(self, "prefixes", what="the model is a CTranslate2 directory")
        started = time.perf_counter()
        ids = self.tokenizer.encode_src([normalize(line) for line in lines])
        stats = TranslationStats(sentences=len(ids))
        stats.truncated = sum(1 for s in ids if len(s) > self.max_input_tokens)
        ids = [s[: self.max_input_tokens] for s in ids]
        hyps: list[list[Hypothesis]] = [[] for _ in ids]
        for index, nbest in self._search_all(ids):
            hyps[index] = nbest
        stats.empty = sum(1 for s in ids if not s)
        texts = texts_of(hyps, self.tokenizer, self.config.data.tgt_lang)
        stats.output_tokens = output_tokens(hyps)
        stats.seconds = time.perf_counter() - started
        return Translation(hyps, texts, stats)

    def _search_all(self, sources: list[list[int]]):
        """Yield (index, n-best) for the non-empty sources (the module docstring): one call
        with the largest limit; a search that stopped before its own last step got nmt's
        result (`_ended_early`), the others (few, with a trained model) are decoded again, one
        call per limit, their cut rows rescored (`_rescore_cut`). max_len counts the source's
        EOS in src_len and the hypothesis' EOS in the length, as nmt's search does."""
        todo = [i for i, s in enumerate(sources) if s]
        if not todo:
            return
        tokens = {i: [self.src_pieces[t] for t in sources[i]] for i in todo}
        limits = {i: self.settings.max_len(len(sources[i]) + 1) for i in todo}
        shifts = dict(zip(todo, self._first_step_shifts([tokens[i] for i in todo])))
        again: dict[int, list[int]] = defaultdict(list)
        results = self._translate([tokens[i] for i in todo], max(limits.values()))
        for i, result in zip(todo, results):
            if self._ended_early(result, limits[i]):
                yield i, self._nbest(tokens[i], result, limits[i], shifts[i])
            else:
                again[limits[i]].append(i)
        for max_len, indices in sorted(again.items()):
            results = self._translate([tokens[i] for i in indices], max_len)
            for i, result in zip(indices, results):
                yield i, self._nbest(tokens[i], result, max_len, shifts[i])

    def _translate(self, tokens: list[list[str]], max_len: int):
        return self.translator.translate_batch(
            tokens,
            max_batch_size=self.batch_tokens,
            batch_type="tokens",
            beam_size=self.settings.beam_size,
            patience=1,
            num_hypotheses=self.settings.beam_size,  # all of them, re-ranked in _nbest
            length_penalty=self.settings.length_penalty,
            max_decoding_length=max_len,
            min_decoding_length=min(self.settings.min_len, max_len),
            suppress_sequences=self.suppressed,
            return_end_token=True,
            return_scores=True,
            max_input_length=0,
        )

    def _ended_early(self, result, max_len: int) -> bool:
        """Whether the search stopped before step max_len - 1, nmt's last (then nothing was
        cut or forced, and a longer limit changed nothing).

        It stops at the step where its beam_size-th hypothesis finishes. With beam_size
        hypotheses returned, all ending in EOS, the longest of them, L tokens, finished at
        step L - 1, and that is the stopping step: beam_size of them had finished by then.
        """
        hyps = result.hypotheses
        return (
            len(hyps) == self.settings.beam_size
            and all(h and h[-1] == self.eos_piece for h in hyps)
            and max(len(h) for h in hyps) <= max_len - 1
        )

    def _nbest(self, src: list[str], result, max_len: int, shift: float) -> list[Hypothesis]:
        hyps = [
            self._hypothesis(h, s, max_len, shift) for h, s in zip(result.hypotheses, result.scores)
        ]
        nbest = self._rescore_cut(src, hyps)
        nbest.sort(key=lambda h: h.score, reverse=True)
        return nbest[: self.settings.n_best]

    def _rescore_cut(self, src: list[str], nbest: list) -> list[Hypothesis]:
        """Hypotheses cut at the limit (`_hypothesis` returns them as token lists: the row,
        without the last token) get their exact nmt score, the log-probs of their tokens and
        of the EOS nmt forces after them (score_batch appends EOS and masks nothing). Two
        extensions of one row are one nmt hypothesis: duplicates are dropped."""
        cut = [h for h in nbest if isinstance(h, list)]
        if not cut:
            return nbest
        kept = [h for h in nbest if not isinstance(h, list)]
        seen = {tuple(h.tokens) for h in kept}
        rows = [list(r) for r in dict.fromkeys(tuple(h) for h in cut) if r not in seen]
        if not rows:
            return kept
        pieces = [[self.tgt_pieces[t] for t in row] for row in rows]
        scored = self.translator.score_batch([src] * len(rows), pieces, max_input_length=0)
        alpha = self.settings.length_penalty
        for row, result in zip(rows, scored):
            log_prob = sum(result.log_probs)
            kept.append(
                Hypothesis(tokens=row, score=log_prob / (len(row) + 1) ** alpha, log_prob=log_prob)
            )
        return kept

    def _first_step_shifts(self, tokens: list[list[str]]) -> list[float]:
        """Per sentence, what CTranslate2 adds to every hypothesis' log-prob at step 0.

        CTranslate2 masks tokens before its softmax, nmt after (no renormalisation). At the
        first step a sentence has one row, so the masked mass (PAD, BOS, and EOS under
        min_len) shifts all its hypotheses by the same c = -log(1 - p_masked): the search
        keeps the same candidates, but the length-normalised final ranking does not;
        `_hypothesis` takes c off. Later steps mask PAD and BOS only, whose probability a
        trained model leaves near zero.
        """
        masked = [[]] if self.settings.min_len > 0 else []  # [] scores EOS at step 0
        masked += self.suppressed
        if not tokens:
            return []
        rows = [t for t in tokens for _ in masked]
        targets = [m for _ in tokens for m in masked]
        scored = self.translator.score_batch(rows, targets, max_input_length=0)
        shifts = []
        for i in range(len(tokens)):
            group = scored[i * len(masked) : (i + 1) * len(masked)]
            mass = sum(math.exp(r.log_probs[0]) for r in group)
            shifts.append(-math.log1p(-min(mass, 1 - 1e-12)))
        return shifts

    def _hypothesis(self, pieces: list[str], score: float, max_len: int, shift: float):
        """CTranslate2's pieces and score -> nmt's Hypothesis when it ended with EOS (the
        first-step shift taken off), else its tokens, cut to max_len - 1, for rescoring."""
        if not (pieces and pieces[-1] == self.eos_piece):
            return [self.tgt_ids[p] for p in pieces][: max_len - 1]
        alpha = self.settings.length_penalty
        log_prob = score * len(pieces) ** alpha - shift
        tokens = [self.tgt_ids[p] for p in pieces[:-1]]
        return Hypothesis(tokens=tokens, score=log_prob / len(pieces) ** alpha, log_prob=log_prob)


_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _compute_type(quantize: str | None, precision: str | None) -> str:
    """The options' quantize / precision (validated) as a CTranslate2 compute type
    ("default": as exported)."""
    return "int8" if quantize == "int8" else _PRECISIONS.get(precision, "default")


def _check_one_best(settings: SearchSettings) -> None:
    """n-best is refused: where a search reaches its length limit, nmt forces EOS on every
    live row while CTranslate2 cuts its best extensions, and the rows it misses are mostly
    runners-up. With no search at the limit the 5-best lists are nmt's for every variant
    (test_ctranslate2_n_best_is_nmts_before_the_limit); in the measurement of the module
    docstring, where most searches reach it, 86 to 175 of the 200 lists per variant
    differed, against 0 to 39 best outputs. A user could not tell which lists are nmt's,
    so n-best is refused rather than returned different."""
    if settings.n_best > 1:
        raise NmtError(
            f"n-best {settings.n_best} with a CTranslate2 directory: only the best translation "
            "is decoded as nmt decodes it; use n-best 1, or the nmt checkpoint"
        )


def _load_config(path: Path) -> ExperimentConfig:
    file = path / CONFIG_NAME
    missing = [n for n in (CONFIG_NAME, *SPM_NAMES) if not (path / n).is_file()]
    if missing:
        raise NmtError(
            f"{path} is a CTranslate2 model but not an nmt export (missing {', '.join(missing)})"
        )
    try:
        return config_from_dict(json.loads(file.read_text(encoding="utf-8")), source=str(file))
    except json.JSONDecodeError as exc:
        raise NmtError(f"{file}: not valid JSON ({exc})") from None


def copy_tokenizer_files(src_dir: Path, out_dir: Path) -> None:
    """Carry the SentencePiece models and nmt config of one export into another directory."""
    for name in (*SPM_NAMES, CONFIG_NAME):
        if (src_dir / name).is_file():
            shutil.copyfile(src_dir / name, out_dir / name)

"""The experiment configuration: one frozen dataclass per section, each field with its type,
bounds (`Range`, `Pattern`), one-line description (`Doc`) and default. Defaults live only
here; `configs/reference.yaml` mirrors them and docs/configuration.md is generated from them.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field (of each item, for a tuple); None = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False  # hi itself is not allowed

    def contains(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def text(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_number(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_number(self.hi)}")
        return " and ".join(parts)


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class Pattern:
    """A string field's allowed shape (in `Annotated[str, Pattern(...)]`), checked in full."""

    regex: str
    allowed: str  # what the error says is allowed

    def matches(self, value: str) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None


@dataclass(frozen=True)
class Doc:
    """A field's one-line description (in `Annotated[...]`), for the configuration reference."""

    text: str


# Names that become parts of file names (runs/<name>, <split>.<lang>): a language code such
# as `../x` or `de/en` would write outside the directory or into a missing one.
FILE_NAME = Pattern(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
    "a name of 1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit",
)
DEVICE = Pattern(r"auto|cpu|cuda(:[0-9]{1,4})?", "auto, cpu, cuda or cuda:N")
Name = Annotated[str, FILE_NAME]


def file_name_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be a part of a file name (None when it can); `what` names it."""
    if FILE_NAME.matches(value):
        return None
    return f"{what}: {value!r} is not allowed; expected {FILE_NAME.allowed}"


# The choice sets, each named once: config fields, typer option types and checks use these.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Quantize = Literal["none", "int8"]
# sacreBLEU's tokenizers that work offline ("spm" and "flores*" download a model first).
BleuTokenize = Literal["auto", "13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "none"]
Activation = Literal["relu", "gelu", "swish"]
Norm = Literal["pre", "post"]
Positions = Literal["vaswani", "fairseq"]
SpmModelType = Literal["unigram", "bpe"]
BestMetric = Literal["bleu", "loss"]
# `nmt export`: what it writes, and CTranslate2's weight types (--to ctranslate2 --quantize).
ExportTarget = Literal["ctranslate2", "huggingface", "nmt"]
CTranslate2Quantize = Literal[
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
]


def choices(alias: Any) -> tuple[str, ...]:
    """The values of a choice set: `choices(Quantize)` is `("none", "int8")`."""
    return get_args(alias)


def choice_enum(alias: Any, name: str) -> type[enum.Enum]:
    """A str Enum whose members are the choices of `alias`: as a typer option type, typer
    refuses other values and `--help` lists the choices."""
    return enum.Enum(name, {choice: choice for choice in choices(alias)}, type=str)


# Upper bounds on sizes: far beyond any real model or batch, but low enough that a typo
# (an extra zero or three) is refused here, not found as an allocation failure later.
_SIZE = 1 << 20


@dataclass(frozen=True)
class CorpusWeight:
    """One training corpus of `data.corpora` and its weight, an upsampling factor: each epoch
    holds every pair of the corpus `weight` times (a fraction: that share of its pairs, drawn
    afresh each epoch), so corpus k's share of an epoch is w_k n_k / sum_j w_j n_j."""

    name: Annotated[str, Doc("A corpus in data.data_dir.")] = ""
    # An epoch holds weight x the corpus: a factor beyond 1000 is a typo, not a plan.
    weight: Annotated[float, Range(0, 1000, lo_open=True), Doc("Upsampling factor.")] = 1.0


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, which languages, how to clean and tokenize it. Cleaning drops training
    pairs only; dev and test lines are normalised, never dropped."""

    corpus: Annotated[str, Doc("The corpus; with corpora, of valid and test.")] = "multi30k"
    corpora: Annotated[
        tuple[CorpusWeight, ...] | None,
        Doc("Weighted training corpora, [{name, weight}, ...]; null: data.corpus alone."),
    ] = None
    src_lang: Annotated[Name, Doc("Source language code.")] = "de"
    tgt_lang: Annotated[Name, Doc("Target language code.")] = "en"
    train_split: Annotated[Name, Doc("The split trained on.")] = "train"
    valid_split: Annotated[Name, Doc("The dev split of validation and best.pt.")] = "val"
    test_splits: Annotated[tuple[Name, ...], Doc("Splits scored after training.")] = (
        "test_2016_flickr",
        "test_2017_flickr",
    )
    data_dir: Annotated[str, Doc("Where nmt download writes <corpus>/<split>.<lang>.")] = "data"
    mirror: Annotated[str | None, Doc("An offline mirror <dir>/<corpus>/<split>.<lang>.")] = None
    normalize_unicode: Annotated[bool, Doc("Unicode NFC normalisation of every line.")] = True
    max_chars: Annotated[int, Range(1, 10**8), Doc("Drop training pairs with a long side.")] = 1000
    max_length_ratio: Annotated[float, Range(0), Doc("Max length ratio of a pair (0: off).")] = 3.0
    dedup: Annotated[bool, Doc("Drop exact duplicate training pairs.")] = True
    joint_vocab: Annotated[bool, Doc("One SentencePiece model for both languages.")] = True
    vocab_size: Annotated[int, Range(8, 1_000_000), Doc("SentencePiece vocabulary size.")] = 8000
    spm_model_type: Annotated[SpmModelType, Doc("SentencePiece's algorithm.")] = "unigram"
    character_coverage: Annotated[
        float | None,
        Range(0, 1, lo_open=True),
        Doc("SentencePiece's; null: 0.9995 with Chinese, Japanese or Korean text, else 1.0."),
    ] = None
    byte_fallback: Annotated[bool, Doc("Unseen characters become bytes, not <unk>.")] = True
    spm_sample: Annotated[int, Range(1, 10**9), Doc("Lines SentencePiece trains on.")] = 2_000_000
    encode_workers: Annotated[int, Range(0, 256), Doc("Processes of nmt prepare (0: up to 4).")] = 0
    max_tokens_per_sentence: Annotated[int, Range(1, _SIZE), Doc("Longer pairs are dropped.")] = 250


@dataclass(frozen=True)
class ModelConfig:
    """Transformer sizes (Vaswani et al. 2017). `preset` fills the keys not set explicitly."""

    preset: Annotated[str | None, Doc("Fills unset sizes: tiny, small, iwslt, base or big.")] = None
    d_model: Annotated[int, Range(1, 1 << 16), Doc("Model width D.")] = 256
    heads: Annotated[int, Range(1, 1024), Doc("Attention heads (D / heads even).")] = 4
    encoder_layers: Annotated[int, Range(1, 1024), Doc("Encoder layers.")] = 3
    decoder_layers: Annotated[int, Range(1, 1024), Doc("Decoder layers.")] = 3
    ffn_dim: Annotated[int, Range(1, _SIZE), Doc("Feed-forward inner width.")] = 1024
    dropout: Annotated[float, Range(0, 1, hi_open=True), Doc("Residual, embedding dropout.")] = 0.1
    attention_dropout: Annotated[float, Range(0, 1), Doc("Dropout of attention weights.")] = 0.0
    activation_dropout: Annotated[float, Range(0, 1), Doc("Dropout after the activation.")] = 0.0
    activation: Annotated[Activation, Doc("Feed-forward activation (swish: SiLU).")] = "relu"
    norm: Annotated[Norm, Doc("Layer norm before (stable) or after (the paper) blocks.")] = "pre"
    share_embeddings: Annotated[bool, Doc("One embedding matrix (needs joint_vocab).")] = True
    tie_output: Annotated[bool, Doc("Output projection = target embedding.")] = True
    max_positions: Annotated[int, Range(1, _SIZE), Doc("Longest sequence, in tokens.")] = 1024
    output_bias: Annotated[bool, Doc("A bias on the output logits (Marian imports).")] = False
    positions: Annotated[Positions, Doc("Sinusoid frequencies (fairseq: M2M100's).")] = "vaswani"
    position_offset: Annotated[int, Range(0, _SIZE), Doc("The first position (M2M100: 2).")] = 0
    source_prefix_id: Annotated[
        int | None, Range(0, _SIZE), Doc("A token id put before every source (M2M100: `__src__`).")
    ] = None
    target_prefix_id: Annotated[
        int | None, Range(0, _SIZE), Doc("A token id forced right after BOS (M2M100: `__tgt__`).")
    ] = None


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=128),
    "small": dict(d_model=256, heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=1024),
    "iwslt": dict(d_model=512, heads=4, encoder_layers=6, decoder_layers=6, ffn_dim=1024),
    "base": dict(d_model=512, heads=8, encoder_layers=6, decoder_layers=6, ffn_dim=2048),
    "big": dict(
        d_model=1024, heads=16, encoder_layers=6, decoder_layers=6, ffn_dim=4096, dropout=0.3
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, precision, checkpointing and validation."""

    seed: Annotated[int, Range(0, 2**32 - 1), Doc("Random seed (numpy's range).")] = 1
    device: Annotated[str, DEVICE, Doc("auto: a GPU if there is one, else the CPU.")] = "auto"
    precision: Annotated[Precision, Doc("auto: bf16 or fp16 on a GPU, fp32 on the CPU.")] = "auto"
    compile: Annotated[bool, Doc("torch.compile the model.")] = False
    threads: Annotated[int, Range(0, 1024), Doc("CPU threads (0: torch's default).")] = 0
    max_tokens: Annotated[int, Range(1, 1 << 24), Doc("Padded tokens per process's batch.")] = 4096
    update_freq: Annotated[int, Range(1, 1 << 16), Doc("Batches per optimizer update.")] = 1
    max_updates: Annotated[int, Range(1), Doc("Stop after this many updates.")] = 100_000
    max_epochs: Annotated[int, Range(0), Doc("Stop after this many epochs (0: no limit).")] = 0
    max_minutes: Annotated[float, Range(0), Doc("Training time budget (0: no limit).")] = 0.0
    lr: Annotated[float, Range(0, lo_open=True), Doc("Peak learning rate.")] = 5e-4
    warmup_updates: Annotated[int, Range(0), Doc("Linear warmup's updates.")] = 4000
    warmup_init_lr: Annotated[float, Range(0), Doc("Learning rate of the first update.")] = 1e-7
    adam_betas: Annotated[
        tuple[float, float], Range(0, 1, hi_open=True), Doc("Adam's beta1 and beta2.")
    ] = (0.9, 0.98)
    adam_eps: Annotated[float, Range(0, lo_open=True), Doc("Adam's epsilon.")] = 1e-9
    weight_decay: Annotated[float, Range(0), Doc("AdamW's weight decay.")] = 0.0
    clip_norm: Annotated[float, Range(0), Doc("Gradient norm clipping (0: off).")] = 1.0
    label_smoothing: Annotated[float, Range(0, 1, hi_open=True), Doc("Label smoothing.")] = 0.1
    log_every: Annotated[int, Range(1), Doc("Updates between metrics.jsonl records.")] = 100
    valid_every: Annotated[int, Range(1), Doc("Updates between validations.")] = 1000
    save_every: Annotated[int, Range(1), Doc("Updates between checkpoints.")] = 1000
    keep_last: Annotated[int, Range(1), Doc("Step checkpoints kept (and last, best).")] = 3
    valid_bleu: Annotated[bool, Doc("BLEU on the dev split at each validation.")] = True
    valid_bleu_beam: Annotated[int, Range(1, 1024), Doc("Validation BLEU's beam (1: greedy).")] = 1
    valid_bleu_max_sentences: Annotated[int, Range(0), Doc("Validation BLEU's lines (0: all).")] = 0
    best_metric: Annotated[BestMetric, Doc("What best.pt and early stopping follow.")] = "bleu"
    patience: Annotated[int, Range(0), Doc("Validations without gain to stop (0: never).")] = 0
    max_nonfinite_in_row: Annotated[int, Range(1), Doc("Stop at N non-finite steps in a row.")] = 10
    average_last: Annotated[int, Range(0), Doc("nmt run scores the last N averaged (0: best).")] = 0
    tensorboard: Annotated[bool, Doc("Also write TensorBoard scalars.")] = False
    # The run takes the checkpoint's architecture and tokenizer (`inherited_from_init`).
    init_from: Annotated[str | None, Doc("Checkpoint whose weights start a new run.")] = None


@dataclass(frozen=True)
class DecodeConfig:
    """Beam search and translation batching."""

    beam_size: Annotated[int, Range(1, 1024), Doc("Beam size; 1 is greedy search.")] = 5
    n_best: Annotated[int, Range(1, 1024), Doc("Hypotheses per input (<= beam_size).")] = 1
    length_penalty: Annotated[float, Range(0), Doc("alpha in score / length**alpha.")] = 1.0
    max_len_a: Annotated[float, Range(0, 10**6), Doc("Longest output: a * source + b.")] = 1.2
    max_len_b: Annotated[int, Range(0, _SIZE), Doc("b of the longest output.")] = 10
    min_len: Annotated[int, Range(0, _SIZE), Doc("Shortest output, in tokens.")] = 1
    batch_tokens: Annotated[int, Range(1, 1 << 24), Doc("Source tokens per batch.")] = 4096
    max_input_tokens: Annotated[int, Range(1, _SIZE), Doc("Longer inputs are truncated.")] = 1000
    quantize: Annotated[Quantize, Doc("int8: dynamic int8 linears on the CPU.")] = "none"
    precision: Annotated[Precision, Doc("auto: bf16 or fp16 on a GPU, fp32 on the CPU.")] = "auto"


@dataclass(frozen=True)
class EvalConfig:
    """How decoded text is scored (test splits, `nmt evaluate`, and valid BLEU in training)."""

    bleu_tokenize: Annotated[BleuTokenize, Doc("auto: sacreBLEU's default for tgt_lang.")] = "auto"


@dataclass(frozen=True)
class ExperimentConfig:
    """The experiment root: one run directory holds prepared data, checkpoints and metrics."""

    name: Annotated[Name, Doc("The experiment; its run directory is runs/<name>.")] = "experiment"
    run_dir: Annotated[str | None, Doc("The run directory, if not runs/<name>.")] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


SECTIONS: dict[str, type] = {  # name -> class of every section of the root
    f.name: f.default_factory
    for f in dataclasses.fields(ExperimentConfig)
    if f.default_factory is not dataclasses.MISSING
}

# Model keys that do not change what the weights mean: a run started from a checkpoint may
# set them (fine-tuning often changes dropout), and averaging may mix them.
NOT_ARCHITECTURE = frozenset({"preset", "dropout", "attention_dropout", "activation_dropout"})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))

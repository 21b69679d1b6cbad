"""Typed experiment configuration: YAML + dotted overrides -> frozen dataclasses.

Defaults live only here. `configs/reference.yaml` mirrors them with comments (a test checks
that the two agree). Validation collects every problem and raises one `ConfigError`.

Loading order: YAML file -> `model.preset` fills model keys the user did not set ->
command-line overrides (`train.lr=5e-4`, values parsed as YAML) -> conversion and checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml

from nmt.errors import ConfigError


@dataclass(frozen=True)
class Pattern:
    """A string field's allowed shape (in `Annotated[str, Pattern(...)]`), checked in full."""

    regex: str
    allowed: str  # what the error says is allowed

    def matches(self, value: str) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None


# Names that become parts of file names (runs/<name>, <split>.<lang>): a language code such
# as `../x` or `de/en` would write outside the directory or into a missing one.
FILE_NAME = Pattern(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
    "a name of 1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit",
)
DEVICE = Pattern(r"auto|cpu|cuda(:[0-9]{1,4})?", "auto, cpu, cuda or cuda:N")
Name = Annotated[str, FILE_NAME]

# Choice sets, each named once: the fields below, the command line's option types and the
# checks of the modules that act on them all read these.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Quantize = Literal["none", "int8"]  # int8: CPU dynamic quantization of the linears
# CTranslate2's weight types (`nmt export --to ctranslate2 --quantize`).
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
ExportTarget = Literal["ctranslate2", "huggingface", "nmt"]


def file_name_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be a part of a file name (None when it can); `what` names it."""
    if FILE_NAME.matches(value):
        return None
    return f"{what}: {value!r} is not allowed; expected {FILE_NAME.allowed}"


@dataclass(frozen=True)
class CorpusWeight:
    """One training corpus of `data.corpora` and its weight, an upsampling factor: each epoch
    holds every pair of the corpus `weight` times (a fraction: that share of its pairs, drawn
    afresh each epoch), so corpus k's share of an epoch is w_k n_k / sum_j w_j n_j."""

    name: str = ""
    weight: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, which languages, how to clean and tokenize it."""

    # Without `corpora`: the one corpus of every split. With `corpora`: the listed corpus whose
    # valid_split and test_splits are used (it must be named explicitly).
    corpus: str = "multi30k"
    # Several training corpora, weighted (null = train on data.corpus alone).
    corpora: tuple[CorpusWeight, ...] | None = None
    src_lang: Name = "de"
    tgt_lang: Name = "en"
    train_split: Name = "train"
    valid_split: Name = "val"
    test_splits: tuple[Name, ...] = ("test_2016_flickr", "test_2017_flickr")
    data_dir: str = "data"  # where `nmt download` writes data/<corpus>/<split>.<lang>
    mirror: str | None = None  # offline mirror <dir>/<corpus>/<split>.<lang>; env NMT_DATA_MIRROR
    # Cleaning (train split only drops pairs; dev/test lines are normalised, never dropped).
    normalize_unicode: bool = True  # NFC
    max_chars: int = 1000  # drop training pairs with a side longer than this
    max_length_ratio: float = 3.0  # drop pairs whose char-length ratio exceeds this (0 = off)
    dedup: bool = True  # drop exact duplicate training pairs
    # SentencePiece
    joint_vocab: bool = True
    vocab_size: int = 8000
    spm_model_type: Literal["unigram", "bpe"] = "unigram"
    # null = by language: 0.9995 for a model with Chinese/Japanese/Korean text, else 1.0
    character_coverage: float | None = None
    byte_fallback: bool = True
    spm_sample: int = 2_000_000  # SPM trains on a seeded random sample of at most this many lines
    encode_workers: int = 0  # processes encoding ids in `prepare` (0 = min(4, CPUs))
    max_tokens_per_sentence: int = 250  # training pairs longer than this (in pieces) are dropped


@dataclass(frozen=True)
class ModelConfig:
    """Transformer sizes (Vaswani et al. 2017). `preset` fills the keys not set explicitly."""

    preset: str | None = None
    d_model: int = 256
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: Literal["relu", "gelu", "swish"] = "relu"  # swish = SiLU, x * sigmoid(x)
    norm: Literal["pre", "post"] = "pre"
    share_embeddings: bool = True  # requires data.joint_vocab
    tie_output: bool = True  # output projection shares the target embedding matrix
    max_positions: int = 1024
    # A learned bias on the output logits (transformers' final_logits_bias); imported
    # Marian models have one, nmt's own default is none.
    output_bias: bool = False
    # Conventions of imported M2M100 / NLLB models (nmt's own: the defaults):
    positions: Literal["vaswani", "fairseq"] = "vaswani"  # fairseq: frequencies 1e4^(-i/(D/2-1))
    position_offset: int = 0  # the first token's position (M2M100: 2, fairseq's pad id + 1)
    source_prefix_id: int | None = None  # a token id put before every source (__de__)
    target_prefix_id: int | None = None  # a token id forced right after BOS (__en__)


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

    seed: int = 1
    device: Annotated[str, DEVICE] = "auto"  # auto | cpu | cuda | cuda:N
    precision: Precision = "auto"
    compile: bool = False
    threads: int = 0  # torch intra-op threads on CPU (0 = torch's default)
    max_tokens: int = 4096  # per batch and process: padded source or target tokens
    update_freq: int = 1  # gradient accumulation steps per update
    max_updates: int = 100_000
    max_epochs: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget (0 = no limit)
    lr: float = 5e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0 = no clipping
    label_smoothing: float = 0.1
    log_every: int = 100
    valid_every: int = 1000
    save_every: int = 1000
    keep_last: int = 3
    valid_bleu: bool = True  # compute BLEU on the dev split at each validation
    valid_bleu_beam: int = 1  # 1 = greedy
    valid_bleu_max_sentences: int = 0  # 0 = the whole dev split
    best_metric: Literal["bleu", "loss"] = "bleu"
    patience: int = 0  # validations without improvement before stopping (0 = never)
    max_nonfinite_in_row: int = 10
    average_last: int = 0  # `nmt run` averages the last N checkpoints (0 = use best)
    tensorboard: bool = False  # also write metrics.jsonl's numbers as TensorBoard scalars
    # A checkpoint whose weights start this new run (fresh optimizer, schedule and data
    # position); the run takes its architecture and tokenizer (`inherited_from_init`).
    init_from: str | None = None


@dataclass(frozen=True)
class DecodeConfig:
    """Beam search and translation batching."""

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0  # alpha in score / length**alpha
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 1
    batch_tokens: int = 4096
    max_input_tokens: int = 1000  # longer inputs are truncated (with a warning), never dropped
    quantize: Quantize = "none"
    # auto: bf16 weights on a GPU that supports it (else fp16), fp32 on the CPU
    precision: Precision = "auto"


# sacreBLEU's tokenizers that work offline ("spm" and "flores*" download a model first).
BleuTokenize = Literal["auto", "13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "none"]


@dataclass(frozen=True)
class EvalConfig:
    """How decoded text is scored (test splits, `nmt evaluate`, and valid BLEU in training)."""

    # auto = sacreBLEU's own default for data.tgt_lang: zh for Chinese, ja-mecab for
    # Japanese, ko-mecab for Korean, 13a for every other language
    bleu_tokenize: BleuTokenize = "auto"


@dataclass(frozen=True)
class ExperimentConfig:
    """The experiment root: one run directory holds prepared data, checkpoints and metrics."""

    name: Name = "experiment"
    run_dir: str | None = None  # default: runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "decode": DecodeConfig,
    "eval": EvalConfig,
}

# Model keys that do not change what the weights mean: a run started from a checkpoint may
# set them (fine-tuning often changes dropout), and averaging may mix them.
NOT_ARCHITECTURE = frozenset({"preset", "dropout", "attention_dropout", "activation_dropout"})
# Data keys that describe the SentencePiece models: a run started from a checkpoint reuses
# that checkpoint's models (`nmt prepare` copies them instead of training new ones).
TOKENIZER_KEYS = (
    "joint_vocab",
    "vocab_size",
    "spm_model_type",
    "character_coverage",
    "byte_fallback",
    "spm_sample",
)


def inherited_from_init() -> list[str]:
    """The dotted keys a run with `train.init_from` takes from that checkpoint's config: the
    architecture (every model key but `NOT_ARCHITECTURE`, so that a new model option counts
    as architecture) and the tokenizer (`TOKENIZER_KEYS`). A config that sets one of them to
    another value is refused; one that leaves it unset gets the checkpoint's."""
    model = [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)]
    return [k for k in model if k.split(".")[1] not in NOT_ARCHITECTURE] + [
        f"data.{name}" for name in TOKENIZER_KEYS
    ]


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Read a YAML config (or start from defaults when `path` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else None
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    overrides_map = parse_overrides(overrides)
    init = _init_checkpoint_config(_merge_overrides(raw, overrides_map, []), source)
    try:
        return config_from_dict(raw, overrides=overrides_map, source=source, init=init)
    except ConfigError as exc:
        marked = _mark_override_problems(exc.problems, overrides_map)
        raise ConfigError(marked, exc.source) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping; errors name the file, line and column."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)  # bounded: a config is never a large file
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror}"], str(path)) from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(
            [f"config file is larger than {MAX_YAML_BYTES // 1024} KiB; is it a config?"],
            str(path),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"config file is not valid UTF-8 (byte {exc.start})"], str(path)
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"malformed YAML at {_yaml_problem(exc)}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"the top level must be a mapping, got {type(data).__name__}"], str(path)
        )
    return data


def _init_checkpoint_config(tree: dict[str, Any], source: str | None) -> ExperimentConfig | None:
    """The config stored in the checkpoint `train.init_from` names (schema-checked), or None
    when the key is unset or not a usable string (then `_build` reports its type). A file
    that is missing or no valid checkpoint is a problem of that key."""
    train = tree.get("train")
    value = train.get("init_from") if isinstance(train, dict) else None
    if not isinstance(value, str) or "\0" in value:
        return None
    # Imported here: nmt.checkpoint builds on this module.
    from nmt.checkpoint import read_model_checkpoint
    from nmt.errors import CheckpointError

    try:
        return read_model_checkpoint(Path(value)).config
    except CheckpointError as exc:
        raise ConfigError([f"train.init_from: {exc}"], source) from None
    except OSError as exc:  # a name too long for the file system, say (before any read)
        raise ConfigError(
            [f"train.init_from: cannot read {value}: {exc.strerror}"], source
        ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(exc, "problem", None) or str(exc))


# Bounds on YAML input. A config is a few KiB; nesting deeper than a few levels is no config
# (and PyYAML composes nodes recursively); 40 digits is far beyond any setting, and Python
# refuses to convert more than 4300 digits at all (a ValueError from inside PyYAML).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_INT_DIGITS = 40


def load_yaml(text: str) -> Any:
    """The one YAML reader of nmt (config files and command-line override values): plain
    data only, no aliases, no duplicate keys, bounded size, depth and integers. Every
    problem is a `yaml.YAMLError`; a `RefusedYAML` is one of these bounds."""
    if len(text) > MAX_YAML_BYTES:
        raise RefusedYAML(None, None, f"more than {MAX_YAML_BYTES} characters of YAML")
    return yaml.load(text, Loader=StrictLoader)


class RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that nmt refuses: an alias, nesting too deep, an integer too long."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one, so a
    second `train:` section would erase the first without a word) and aliases: nested
    aliases expand exponentially (a 438-byte "billion laughs" config is gigabytes once
    copied), and a config has no need for them. Values that no constructor can build
    (`!!int abc`) are YAML errors here, not stray ValueErrors; dates stay text."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise RefusedYAML(
                None,
                None,
                f"alias *{event.anchor} is not allowed: write the value out",
                event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise RefusedYAML(
                None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            shown = node.value if isinstance(node.value, str) else node.id
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} as {node.tag}", node.start_mark
            ) from None


def _construct_mapping_once(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: SafeLoader reports it below
            continue
        if seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {first_line[key] + 1})",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


def _construct_bounded_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    digits = len(node.value.lstrip("+-").replace("_", ""))
    if digits > MAX_INT_DIGITS:
        raise RefusedYAML(
            None,
            None,
            f"an integer of {digits} digits; at most {MAX_INT_DIGITS} are read",
            node.start_mark,
        )
    return loader.construct_yaml_int(node)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_once
)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)
# A date (`name: 2024-01-01`) stays the text it is: no setting is a date.
StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["train.lr=5e-4", "model.layers=3"]` -> `{"train.lr": 0.0005, ...}` (values as YAML;
    a value that is not YAML stays a string, but an alias or an oversized value is refused)."""
    parsed: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not all(part.strip() for part in key.split(".")):
            problems.append(f"override {item!r} must look like section.key=value")
            continue
        try:
            parsed[key.strip()] = load_yaml(value) if value.strip() else None
        except RefusedYAML as exc:
            problems.append(f"override {key.strip()}: {exc.problem}")
        except yaml.YAMLError:
            parsed[key.strip()] = value
    if problems:
        raise ConfigError(problems, "command-line overrides")
    return parsed


# Keys that were renamed: old dotted key -> new one. Configs, checkpoints and exports written
# before the rename store the old name; it keeps working (one value: giving both is refused).
RENAMED_KEYS: dict[str, str] = {"data.spm_input_sentence_size": "data.spm_sample"}


def config_from_dict(
    raw: dict[str, Any],
    *,
    overrides: dict[str, Any] | None = None,
    source: str | None = None,
    init: ExperimentConfig | None = None,
) -> ExperimentConfig:
    """Build and validate an `ExperimentConfig`; every problem is reported in one error.

    `init` is the config of the checkpoint `train.init_from` names: the keys of
    `inherited_from_init` that the config leaves unset are taken from it."""
    problems: list[str] = []
    tree = _merge_overrides(raw, overrides or {}, problems)
    _rename_old_keys(tree, problems)
    _apply_model_preset(tree, problems)
    cfg = _build(ExperimentConfig, tree, "", problems)
    if init is not None and not problems:
        cfg = _take_from_init(cfg, tree, init, problems)
    if not problems:
        problems.extend(cross_field_problems(cfg))
        problems.extend(corpora_problems(cfg.data, named_corpus="corpus" in _section(tree, "data")))
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _section(tree: dict[str, Any], name: str) -> dict[str, Any]:
    section = tree.get(name)
    return section if isinstance(section, dict) else {}


def _take_from_init(
    cfg: ExperimentConfig, tree: dict[str, Any], init: ExperimentConfig, problems: list[str]
) -> ExperimentConfig:
    """`cfg` with the architecture and tokenizer keys it leaves unset taken from `init` (and
    its model.preset name, if the config names none); keys it sets to other values are one
    problem, each shown as config vs checkpoint value."""
    conflicts = init_conflicts(cfg, init, only=lambda key: _is_set(tree, key))
    if conflicts:
        problems.append(
            f"train.init_from: {cfg.train.init_from} fixes the model's architecture and "
            f"tokenizer, and the config sets other values: {'; '.join(conflicts)}; remove "
            "these keys from the config (the run takes them from the checkpoint)"
        )
        return cfg
    taken: dict[str, dict[str, Any]] = {"data": {}, "model": {}}
    for key in [*inherited_from_init(), "model.preset"]:
        section, name = key.split(".")
        if not _is_set(tree, key):
            taken[section][name] = getattr(getattr(init, section), name)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **taken["data"]),
        model=dataclasses.replace(cfg.model, **taken["model"]),
    )


def init_conflicts(
    cfg: ExperimentConfig, init: ExperimentConfig, *, only: Any = lambda key: True
) -> list[str]:
    """`key <config value> (config) vs <checkpoint value> (checkpoint)` for every key of
    `inherited_from_init` (passing `only`) on which `cfg` and the checkpoint's `init` differ."""
    shown = []
    for key in inherited_from_init():
        section, name = key.split(".")
        ours, theirs = getattr(getattr(cfg, section), name), getattr(getattr(init, section), name)
        if only(key) and ours != theirs:
            shown.append(f"{key} {ours!r} (config) vs {theirs!r} (checkpoint)")
    return shown


def _is_set(tree: dict[str, Any], key: str) -> bool:
    """Whether the merged YAML and overrides (model preset applied) give dotted `key`."""
    section, name = key.split(".")
    return isinstance(tree.get(section), dict) and name in tree[section]


def decode_option_problems(values: dict[str, Any]) -> list[str]:
    """Problems of decode settings given one at a time (decoding options): types, finite
    numbers, ranges and choices, each named `decode.<key>`; the rules between settings are
    `decode_problems`'."""
    problems: list[str] = []
    _build(DecodeConfig, values, "decode.", problems)
    return problems


def _mark_override_problems(problems: list[str], overrides: dict[str, Any]) -> list[str]:
    """Say which problems come from the command line: the YAML file does not hold those keys.

    A problem names its key first (`model.nope: unknown key`); an override `nope.x=1` is to
    blame for a problem with its own key or a section above it (`nope: unknown key`).
    """
    marked = []
    for problem in problems:
        key = problem.split(":", 1)[0]
        from_override = any(
            dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "[")
            for dotted in overrides
        )  # `data.corpora[1].weight` comes from an override `data.corpora=[...]`
        marked.append(f"{problem} (command-line override)" if from_override else problem)
    return marked


def _merge_overrides(raw: dict[str, Any], overrides: dict[str, Any], problems: list[str]) -> dict:
    tree = _deep_copy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override {dotted}: {part} is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    return tree


def _rename_old_keys(tree: dict[str, Any], problems: list[str]) -> None:
    """Move the value of every key in `RENAMED_KEYS` (in `tree`, in place) to its new name."""
    for old, new in RENAMED_KEYS.items():
        (section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        node, target = tree.get(section), tree.get(new_section)
        if not isinstance(node, dict) or old_name not in node or not isinstance(target, dict):
            continue
        value = node.pop(old_name)
        if new_name in target:
            problems.append(f"{old}: renamed {new}; give only {new}")
        else:
            target[new_name] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_model_preset(tree: dict[str, Any], problems: list[str]) -> None:
    model = tree.get("model")
    if not isinstance(model, dict) or model.get("preset") is None:
        return
    name = model["preset"]
    if not isinstance(name, str):
        return  # a list or a number: `_build` reports the type
    if name not in MODEL_PRESETS:
        problems.append(
            f"model.preset: unknown preset {name!r}; allowed: {', '.join(MODEL_PRESETS)}"
        )
        return
    for key, value in MODEL_PRESETS[name].items():
        model.setdefault(key, value)


def _build(cls: type, values: Any, prefix: str, problems: list[str]) -> Any:
    """Convert a mapping into dataclass `cls`, appending problems instead of raising."""
    where = prefix.rstrip(".") or "the top level"
    if values is None:
        values = {}
    if not isinstance(values, dict):
        problems.append(f"{where}: expected a mapping, got {_describe(values)}")
        return cls()
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            problems.append(_unknown_key_message(prefix, str(key), list(fields)))
    kwargs = {}
    for name in fields:
        if name not in values:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, values[name], f"{prefix}{name}.", problems)
            continue
        item_type = _section_list_item(hint)
        if item_type is not None:
            kwargs[name] = _build_list(item_type, values[name], f"{prefix}{name}", problems)
            continue
        ok, converted, allowed = _convert(values[name], hint)
        if ok:
            kwargs[name] = converted
        else:
            problems.append(f"{prefix}{name}: got {_describe(values[name])}, expected {allowed}")
    try:
        instance = cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        problems.append(f"{where}: {exc}")
        return cls()
    problems.extend(range_problems(instance, prefix))
    return instance


def _section_list_item(hint: Any) -> type | None:
    """The item class of a list of sub-sections (`tuple[CorpusWeight, ...] | None`), else None."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    lists = [o for o in options if get_origin(o) is tuple]
    if len(lists) == 1 and dataclasses.is_dataclass(get_args(lists[0])[0]):
        return get_args(lists[0])[0]
    return None


def _build_list(cls: type, values: Any, key: str, problems: list[str]) -> tuple | None:
    """A YAML list of mappings -> a tuple of `cls`; items' problems are named `key[i].field`."""
    if values is None:
        return None
    if not isinstance(values, list):
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        problems.append(f"{key}: got {_describe(values)}, expected a list of mappings ({names})")
        return None
    return tuple(_build(cls, item, f"{key}[{i}].", problems) for i, item in enumerate(values))


def _unknown_key_message(prefix: str, key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"{prefix}{key}: unknown key{hint} (valid keys: {', '.join(valid)})"


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """Check `value` against a type hint; returns (ok, converted value, what is allowed)."""
    origin = get_origin(hint)
    if origin is Annotated:
        return _convert_annotated(value, hint)
    if origin is Literal:
        options = get_args(hint)
        return value in options, value, "one of " + ", ".join(repr(o) for o in options)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return True, None, "null"
        ok, converted, allowed = _convert(value, args[0])
        return ok, converted, f"{allowed} or null"
    if origin is tuple:
        return _convert_tuple(value, get_args(hint))
    if hint is bool:
        return isinstance(value, bool), value, "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if hint is float:
        if isinstance(value, str):
            value = _yaml11_float(value)  # YAML 1.1 reads `5e-4` (no dot) as a string
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):  # .nan passes every range check; .inf is no size
            return False, value, "a finite number"
        return ok, float(value) if ok else value, "a number"
    if hint is str:  # a NUL cannot be in a path, or in any text a setting holds
        if isinstance(value, str) and "\0" in value:
            return False, value, "a string without NUL characters"
        return isinstance(value, str), value, "a string"
    raise TypeError(f"unsupported config type {hint}")  # pragma: no cover


def _convert_annotated(value: Any, hint: Any) -> tuple[bool, Any, str]:
    base, *extras = get_args(hint)
    ok, converted, allowed = _convert(value, base)
    for pattern in (e for e in extras if isinstance(e, Pattern)):
        allowed = pattern.allowed
        ok = ok and pattern.matches(converted)
    return ok, converted, allowed


def _yaml11_float(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _convert_tuple(value: Any, args: tuple) -> tuple[bool, Any, str]:
    variadic = len(args) == 2 and args[1] is Ellipsis
    if isinstance(value, str) and variadic:
        value = [value]  # `test_splits: test_2016_flickr` is a one-item list
    item_types = [args[0]] * (len(value) if isinstance(value, list) else 0) if variadic else args
    allowed = f"a list of {_type_name(args[0])}" if variadic else f"a list of {len(args)} numbers"
    if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
        return False, value, allowed
    out = []
    for item, item_type in zip(value, item_types):
        ok, converted, _ = _convert(item, item_type)
        if not ok:
            return False, value, allowed
        out.append(converted)
    return True, tuple(out), allowed


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Annotated:
        patterns = [e for e in get_args(hint)[1:] if isinstance(e, Pattern)]
        return f"strings, each {patterns[0].allowed}" if patterns else _type_name(get_args(hint)[0])
    return {str: "strings", int: "integers", float: "numbers"}.get(hint, str(hint))


# --------------------------------------------------------------------------- validation


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


# Upper bounds on sizes: far beyond any real model or batch, but low enough that a typo
# (an extra zero or three) is refused here, not found as an allocation failure later. An
# integer setting without a bound of its own must still fit the int64 torch and numpy use.
INT64_MAX = 2**63 - 1
_SIZE = 1 << 20
_RANGES: dict[str, Range] = {
    "data.max_chars": Range(1, 10**8),
    "data.max_length_ratio": Range(0),
    "data.vocab_size": Range(8, 1_000_000),
    "data.character_coverage": Range(0, 1, lo_open=True),
    "data.spm_sample": Range(1, 10**9),
    "data.encode_workers": Range(0, 256),
    "data.max_tokens_per_sentence": Range(1, _SIZE),
    # An epoch holds weight x the corpus: a factor beyond 1000 is a typo, not a plan.
    "data.corpora.weight": Range(0, 1000, lo_open=True),
    "model.d_model": Range(1, 1 << 16),
    "model.heads": Range(1, 1024),
    "model.encoder_layers": Range(1, 1024),
    "model.decoder_layers": Range(1, 1024),
    "model.ffn_dim": Range(1, _SIZE),
    "model.dropout": Range(0, 1, hi_open=True),
    "model.attention_dropout": Range(0, 1),
    "model.activation_dropout": Range(0, 1),
    "model.max_positions": Range(1, _SIZE),
    "model.position_offset": Range(0, _SIZE),
    "model.source_prefix_id": Range(0, _SIZE),
    "model.target_prefix_id": Range(0, _SIZE),
    "train.seed": Range(0, 2**32 - 1),  # numpy's seed range
    "train.threads": Range(0, 1024),
    "train.max_tokens": Range(1, 1 << 24),
    "train.update_freq": Range(1, 1 << 16),
    "train.max_updates": Range(1),
    "train.max_epochs": Range(0),
    "train.max_minutes": Range(0),
    "train.lr": Range(0, lo_open=True),
    "train.warmup_updates": Range(0),
    "train.warmup_init_lr": Range(0),
    "train.adam_betas": Range(0, 1, hi_open=True),
    "train.adam_eps": Range(0, lo_open=True),
    "train.weight_decay": Range(0),
    "train.clip_norm": Range(0),
    "train.label_smoothing": Range(0, 1, hi_open=True),
    "train.log_every": Range(1),
    "train.valid_every": Range(1),
    "train.save_every": Range(1),
    "train.keep_last": Range(1),
    "train.valid_bleu_beam": Range(1, 1024),
    "train.valid_bleu_max_sentences": Range(0),
    "train.patience": Range(0),
    "train.max_nonfinite_in_row": Range(1),
    "train.average_last": Range(0),
    "decode.beam_size": Range(1, 1024),
    "decode.n_best": Range(1, 1024),
    "decode.length_penalty": Range(0),
    "decode.max_len_a": Range(0, 10**6),
    "decode.max_len_b": Range(0, _SIZE),
    "decode.min_len": Range(0, _SIZE),
    "decode.batch_tokens": Range(1, 1 << 24),
    "decode.max_input_tokens": Range(1, _SIZE),
}


_INT64 = Range(-INT64_MAX - 1, INT64_MAX)


def _within_int64(allowed: Range) -> Range:
    lo = _INT64.lo if allowed.lo is None else max(allowed.lo, _INT64.lo)
    hi = _INT64.hi if allowed.hi is None else min(allowed.hi, _INT64.hi)
    return dataclasses.replace(allowed, lo=lo, hi=hi)


def range_problems(section: Any, prefix: str) -> list[str]:
    """Every number of `section` (every item of a tuple of numbers) against its range."""
    problems = []
    for f in dataclasses.fields(section):
        key = prefix + f.name
        value = getattr(section, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            allowed = _RANGES.get(re.sub(r"\[\d+\]", "", key), _INT64)  # list items share one
            if isinstance(item, int) and not _INT64.contains(item):
                allowed = _within_int64(allowed)  # torch and numpy hold int64 at most
            if not allowed.contains(item):
                where = f"{key}[{i}]" if isinstance(value, tuple) else key
                problems.append(f"{where}: {item!r} is out of range; allowed {allowed.text()}")
    return problems


def decode_problems(dec: DecodeConfig) -> list[str]:
    """Rules between decode settings (also checked for command-line decoding options)."""
    if dec.n_best > dec.beam_size:
        return [f"decode.n_best ({dec.n_best}) must be <= decode.beam_size ({dec.beam_size})"]
    return []


def cross_field_problems(cfg: ExperimentConfig) -> list[str]:
    """Rules that involve more than one key."""
    problems = []
    m, d, t, dec = cfg.model, cfg.data, cfg.train, cfg.decode
    if m.d_model % m.heads:
        problems.append(f"model.d_model ({m.d_model}) must be divisible by model.heads ({m.heads})")
    elif (m.d_model // m.heads) % 2:
        problems.append(f"model.d_model / model.heads ({m.d_model // m.heads}) must be even")
    if m.share_embeddings and not d.joint_vocab:
        problems.append("model.share_embeddings: true requires data.joint_vocab: true")
    problems.extend(decode_problems(dec))
    if d.src_lang == d.tgt_lang:
        problems.append(f"data.src_lang and data.tgt_lang are both {d.src_lang!r}")
    problems.extend(_model_size_problems(cfg))
    if dec.max_input_tokens + 2 > m.max_positions:
        problems.append(
            f"decode.max_input_tokens ({dec.max_input_tokens}) + 2 must be <= model.max_positions "
            f"({m.max_positions})"
        )
    if d.max_tokens_per_sentence + 2 > m.max_positions:
        problems.append(
            f"data.max_tokens_per_sentence ({d.max_tokens_per_sentence}) + 2 must be <= "
            f"model.max_positions ({m.max_positions})"
        )
    if d.max_tokens_per_sentence + 2 > t.max_tokens:
        problems.append(
            f"train.max_tokens ({t.max_tokens}) must hold one sentence of "
            f"data.max_tokens_per_sentence + 2 ({d.max_tokens_per_sentence + 2}) tokens"
        )
    return problems


def corpora_problems(d: DataConfig, *, named_corpus: bool) -> list[str]:
    """`data.corpora` rules: a non-empty list, each corpus named once, and `data.corpus` set
    (`named_corpus`: written in the config) to one of them, the corpus of the validation and
    test splits. A resolved config (config.yaml, a checkpoint's) always writes data.corpus."""
    if d.corpora is None:
        return []
    if not d.corpora:
        return [
            "data.corpora: an empty list; list the training corpora ({name, weight} each), or "
            "leave data.corpora out (null) to train on data.corpus alone"
        ]
    problems, first = [], {}
    for i, c in enumerate(d.corpora):
        if not c.name:
            problems.append(f"data.corpora[{i}].name: missing; name a corpus of data.data_dir")
        elif c.name in first:
            problems.append(
                f"data.corpora[{i}].name: {c.name!r} is listed twice (also data.corpora"
                f"[{first[c.name]}]); list each corpus once and give it the weight wanted"
            )
        first.setdefault(c.name, i)
    listed = ", ".join(first)
    if not named_corpus:
        problems.append(
            f"data.corpus: not set; with data.corpora, name the listed corpus whose "
            f"data.valid_split and data.test_splits validate and test the model (one of: {listed})"
        )
    elif d.corpus not in first:
        problems.append(
            f"data.corpus: {d.corpus!r} is not in data.corpora ({listed}); with data.corpora, "
            "data.corpus names the listed corpus whose data.valid_split and data.test_splits "
            "validate and test the model (to train on it too, list it in data.corpora)"
        )
    return problems


def estimated_parameters(cfg: ExperimentConfig) -> int:
    """Parameters of the Transformer `cfg` builds (weights and biases; LayerNorms left out),
    counting the position tables, which take memory as parameters do. D = d_model,
    F = ffn_dim, V = data.vocab_size per side:
        encoder layer 4 D^2 + 2 D F, decoder layer 8 D^2 + 2 D F (self and cross attention),
        one V x D matrix per embedding not shared and per output projection not tied."""
    m, v = cfg.model, cfg.data.vocab_size
    d, f = m.d_model, m.ffn_dim
    matrices = 1 + (not m.share_embeddings) + (not m.tie_output)
    layers = m.encoder_layers * (4 * d * d + 2 * d * f) + m.decoder_layers * (8 * d * d + 2 * d * f)
    return matrices * v * d + layers + 2 * m.max_positions * d


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _model_size_problems(cfg: ExperimentConfig) -> list[str]:
    """Sizes this machine cannot allocate at all: float32 weights beyond its memory (training
    needs about four times as much: gradients and two Adam moments), or the float32 logits
    of one full training batch (train.max_tokens x data.vocab_size) beyond it."""
    memory = _physical_memory_bytes()
    if memory is None:
        return []
    have = f"more than this machine's {memory / 2**30:.1f} GiB of memory"
    problems = []
    weights = 4 * estimated_parameters(cfg)
    if weights > memory:
        m = cfg.model
        problems.append(
            f"model sizes (d_model {m.d_model}, ffn_dim {m.ffn_dim}, {m.encoder_layers}+"
            f"{m.decoder_layers} layers, max_positions {m.max_positions}, data.vocab_size "
            f"{cfg.data.vocab_size}) give about {estimated_parameters(cfg):.3g} parameters, "
            f"{weights / 2**30:.1f} GiB of float32 weights: {have}"
        )
    logits = 4 * cfg.train.max_tokens * cfg.data.vocab_size
    if logits > memory:
        problems.append(
            f"train.max_tokens ({cfg.train.max_tokens}) x data.vocab_size "
            f"({cfg.data.vocab_size}) float32 logits of one batch take "
            f"{logits / 2**30:.1f} GiB: {have}"
        )
    return problems


# --------------------------------------------------------------------------- output


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def write_resolved_config(cfg: ExperimentConfig, directory: Path | None = None) -> Path:
    """Write the resolved config as `config.yaml` in the run directory (atomically)."""
    from nmt.files import atomic_write

    path = Path(directory or cfg.run_path) / "config.yaml"
    with atomic_write(path) as f:
        f.write(config_to_yaml(cfg))
    return path

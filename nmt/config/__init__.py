"""Typed experiment configuration: YAML + dotted overrides -> frozen dataclasses.

`schema` holds the sections, their fields' bounds and descriptions and the choice sets;
`yaml_io` the hardened YAML reader; `overrides` the command line's dotted keys, renamed keys
and presets; `inheritance` what `train.init_from` takes from its checkpoint; `validation` the
conversion and every check, all problems reported in one `ConfigError`.
"""

from nmt.config.inheritance import init_conflicts  # noqa: F401 - the package's public names
from nmt.config.schema import (  # noqa: F401
    DEVICE,
    MODEL_PRESETS,
    NOT_ARCHITECTURE,
    SECTIONS,
    BleuTokenize,
    CorpusWeight,
    CTranslate2Quantize,
    DataConfig,
    DecodeConfig,
    ExperimentConfig,
    ExportTarget,
    ModelConfig,
    Precision,
    Quantize,
    SpmModelType,
    TrainConfig,
    choice_enum,
    choices,
    config_to_dict,
    file_name_problem,
)
from nmt.config.validation import (  # noqa: F401
    config_from_dict,
    decode_option_problems,
    decode_problems,
    load_config,
)
from nmt.config.yaml_io import read_yaml_mapping, write_resolved_config  # noqa: F401
from nmt.errors import ConfigError  # noqa: F401

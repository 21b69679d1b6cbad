from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nmt.checkpoint import load_run_config
from nmt.config import (
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    read_yaml_mapping,
    write_resolved_config,
)
from nmt.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def problems_of(raw: dict, overrides: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, overrides=overrides)
    return info.value.problems


def test_reference_config_mirrors_the_defaults():
    assert load_config(REPO / "configs" / "reference.yaml") == ExperimentConfig()


def test_reference_config_names_every_key():
    text = (REPO / "configs" / "reference.yaml").read_text()
    for section in ("data", "model", "train", "decode", "eval"):
        for f in dataclasses.fields(getattr(ExperimentConfig(), section)):
            assert f"  {f.name}:" in text, f"{section}.{f.name} missing from reference.yaml"


def test_every_shipped_config_loads():
    """A config with train.init_from reads that checkpoint when it loads (the run takes its
    architecture): the checkpoint is step 1 of a recipe, absent from a clone, so those load
    without it here, and its absence is the one config problem."""
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if (read_yaml_mapping(path).get("train") or {}).get("init_from") is None:
            load_config(path)
            continue
        load_config(path, ["train.init_from=null"])
        with pytest.raises(ConfigError, match="train.init_from: checkpoint not found") as caught:
            load_run_config(path)
        assert len(caught.value.problems) == 1


def test_init_from_is_refused_by_a_loader_that_reads_no_checkpoint():
    """Loaded without a reader, a config would miss the checkpoint's architecture: refused."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.init_from=x.pt"])
    assert caught.value.problems == [
        "train.init_from: x.pt: no checkpoint is read here; load the config with "
        "nmt.checkpoint.load_run_config"
    ]
    read = load_config(None, ["train.init_from=x.pt"], init_config=lambda p: ExperimentConfig())
    assert read.train.init_from == "x.pt"


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(
        None,
        [
            "train.lr=5e-4",
            "model.encoder_layers=2",
            "train.compile=true",
            "data.test_splits=[val]",
            "train.adam_betas=[0.9, 0.99]",
        ],
    )
    assert cfg.train.lr == 5e-4
    assert cfg.model.encoder_layers == 2
    assert cfg.train.compile is True
    assert cfg.data.test_splits == ("val",)
    assert cfg.train.adam_betas == (0.9, 0.99)


def test_preset_fills_only_keys_not_given():
    cfg = config_from_dict({"model": {"preset": "base", "ffn_dim": 1024}})
    assert (cfg.model.d_model, cfg.model.heads, cfg.model.ffn_dim) == (512, 8, 1024)
    cfg = load_config(None, ["model.preset=tiny", "model.d_model=32"])
    assert (cfg.model.d_model, cfg.model.encoder_layers) == (32, 2)


def test_unknown_key_suggests_the_closest_name():
    [problem] = problems_of({"train": {"learning_rate": 1e-3, "lr": 1e-3}})
    assert problem.startswith("train.learning_rate: unknown key")
    [problem] = problems_of({"train": {"lrr": 1e-3}})
    assert "did you mean train.lr?" in problem


def test_every_problem_is_reported_at_once():
    problems = problems_of(
        {
            "model": {"d_model": "big", "dropout": 1.5, "activation": "tanh"},
            "train": {"max_tokens": -5},
            "bogus": 1,
        },
    )
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "model.d_model: got 'big' (str), expected an integer" in text
    assert "model.dropout: 1.5 is out of range; allowed >= 0 and < 1" in text
    assert "model.activation: got 'tanh' (str), expected one of 'relu', 'gelu'" in text
    assert "train.max_tokens: -5 is out of range" in text
    assert "bogus: unknown key" in text


def test_cross_field_rules():
    problems = problems_of(
        {"model": {"d_model": 100, "heads": 3}, "decode": {"beam_size": 2, "n_best": 3}}
    )
    assert any("must be divisible by model.heads" in p for p in problems)
    assert any("decode.n_best (3) must be <= decode.beam_size (2)" in p for p in problems)
    problems = problems_of({"data": {"joint_vocab": False}})
    assert problems == ["model.share_embeddings: true requires data.joint_vocab: true"]
    problems = problems_of({"train": {"label_smoothing": 1.0}})
    assert problems == ["train.label_smoothing: 1.0 is out of range; allowed >= 0 and < 1"]


def test_override_for_missing_key_or_bad_form():
    assert "did you mean model.heads?" in problems_of({}, {"model.head": 4})[0]
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["train.lr"])
    assert problems_of({}, {"model.d_model.x": 1}) == [
        "model.d_model: got {'x': 1} (dict), expected an integer"
    ]
    assert problems_of({"model": {"d_model": 8}}, {"model.d_model.x": 1}) == [
        "override model.d_model.x: d_model is not a section"
    ]


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  lr: [1, 2\n  seed: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "line 4, column" in message


def test_missing_and_non_mapping_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["train.lr=1e-3"])
    path = write_resolved_config(cfg, tmp_path)
    again = load_config(path)
    assert again == cfg
    assert config_to_dict(again)["train"]["lr"] == 1e-3

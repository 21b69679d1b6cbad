"""Starting a new run from a trained model (`train.init_from`, `--init-from`): fine-tuning.

The source model is the session's 3-update tiny run (tests/plugins/tiny_corpus.py); the new
runs either reuse its prepared corpus or a second corpus of other Multi30k lines, registered
as user data, as a fine-tuning corpus would be.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _cli import assert_clean_failure, run_process
from _shared import assert_equal_tree

from nmt.checkpoint import load_checkpoint, load_run_config, save_checkpoint
from nmt.data.download import register_files
from nmt.data.prepare import load_prepared, prepare, prepared_dir
from nmt.data.tokenizer import Tokenizer
from nmt.errors import ConfigError, TrainingError
from nmt.evaluation.results import identify_checkpoint
from nmt.pipeline.run import init_from_tokenizer
from nmt.runtime import Runtime
from nmt.training.checkpoints import average_checkpoints
from nmt.training.trainer import Trainer

CPU = Runtime(torch.device("cpu"), "fp32")
QUIET = {"log": lambda message: None}


def source_checkpoint(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "step_3.pt"


def started(cfg) -> Trainer:
    """A trainer of `cfg` that has resumed or initialised, before its first update."""
    trainer = Trainer(cfg, CPU, **QUIET)
    trainer._resume_if_possible()
    return trainer


@pytest.fixture(scope="module")
def second_corpus(tmp_path_factory, corpus_slice: Path) -> Path:
    """A data directory with corpus `captions2`: Multi30k lines that the source model never
    saw (train 1000..1099, val 40..79), registered as user files."""
    root = tmp_path_factory.mktemp("second_corpus")
    for split, (start, stop) in {"train": (1000, 1100), "val": (40, 80)}.items():
        files = {}
        for lang in ("de", "en"):
            lines = (corpus_slice / "multi30k" / f"{split}.{lang}").read_text("utf-8")
            files[lang] = root / f"{split}.{lang}"
            files[lang].write_text("".join(lines.splitlines(True)[start:stop]), "utf-8")
        register_files(
            "captions2",
            src=files["de"],
            tgt=files["en"],
            src_lang="de",
            tgt_lang="en",
            split=split,
            data_dir=root / "data",
        )
    return root / "data"


def second_config(tiny_corpus, second_corpus: Path, run: Path, *extra: str):
    return tiny_corpus.config(
        run, f"data.data_dir={second_corpus}", "data.corpus=captions2", *extra
    )


# --------------------------------------------------------------------------- the weights


@pytest.mark.parametrize("kind", ["trained", "averaged"])
def test_a_new_run_starts_with_the_checkpoints_weights_bitwise(
    kind, tiny_corpus, trained_run, tmp_path
):
    source = source_checkpoint(trained_run)
    if kind == "averaged":  # no optimizer, scheduler or progress in it
        source = tmp_path / "avg.pt"
        steps = [trained_run / "checkpoints" / f"step_{n}.pt" for n in (2, 3)]
        save_checkpoint(source, average_checkpoints(steps))
    run = tiny_corpus.new_run(tmp_path / "ft")
    trainer = started(tiny_corpus.config(run, f"train.init_from={source}"))
    assert_equal_tree(trainer.model.state_dict(), load_checkpoint(source)["model"])
    # Everything else is a fresh run's.
    assert trainer.state.step == trainer.state.epoch == trainer.state.position == 0
    assert trainer.optimizer.state_dict()["state"] == {}
    assert trainer.scheduler.last_epoch == 0
    assert trainer.init_source["sha256"] == identify_checkpoint(source).sha256


def test_fine_tuning_has_a_fresh_optimizer_schedule_and_records_its_source(
    tiny_corpus, trained_run, tmp_path
):
    source = source_checkpoint(trained_run)
    run = tiny_corpus.new_run(tmp_path / "ft")
    cfg = tiny_corpus.config(
        run, f"train.init_from={source}", "train.max_updates=1", "train.save_every=1"
    )
    Trainer(cfg, CPU, **QUIET).fit()
    saved = load_checkpoint(run / "checkpoints" / "step_1.pt")
    assert saved["train_state"]["step"] == 1  # the source was at update 3
    assert (saved["train_state"]["epoch"], saved["train_state"]["position"]) == (0, 1)
    assert {int(s["step"]) for s in saved["optimizer"]["state"].values()} == {1}
    assert saved["scheduler"]["last_epoch"] == 1
    expected = {"path": str(source.resolve()), "step": 3, "sha256": saved["init_from"]["sha256"]}
    assert saved["init_from"] == expected
    assert expected["sha256"] == identify_checkpoint(source).sha256
    # Evaluation results name the checkpoint the run started from.
    assert identify_checkpoint(run / "checkpoints" / "step_1.pt").as_dict()["init_from"] == expected


# --------------------------------------------------------------------------- the config


def test_architecture_and_tokenizer_come_from_the_checkpoint(tiny_corpus, trained_run, tmp_path):
    source = source_checkpoint(trained_run)
    data = f"data.data_dir={tiny_corpus.data_dir}"
    # No config file: every architecture and tokenizer key is the checkpoint's, not a default.
    cfg = load_run_config(None, [data, f"train.init_from={source}", "model.dropout=0.3"])
    assert (cfg.model.d_model, cfg.model.ffn_dim, cfg.model.preset) == (64, 128, "tiny")
    assert cfg.data.vocab_size == 400
    assert cfg.model.dropout == 0.3  # not architecture: fine-tuning may change it


def test_a_source_with_a_nan_weight_is_refused_naming_the_tensor(
    tiny_corpus, trained_run, tmp_path
):
    """Before: training started from it and failed later with advice to lower train.lr."""
    state = load_checkpoint(source_checkpoint(trained_run))
    state["model"]["encoder_norm.weight"][3] = float("nan")
    poisoned = tmp_path / "poisoned.pt"
    save_checkpoint(poisoned, state)
    data = f"data.data_dir={tiny_corpus.data_dir}"
    with pytest.raises(ConfigError, match="train.init_from: .*encoder_norm.weight holds 1 non-fin"):
        load_run_config(None, [data, f"train.init_from={poisoned}"])


def test_a_config_that_contradicts_the_checkpoint_is_refused_in_one_line(
    tiny_corpus, trained_run, tmp_path
):
    source = source_checkpoint(trained_run)
    run = tmp_path / "ft"
    args = tiny_corpus.cli_args(run, "model.d_model=128", "model.norm=post", "data.vocab_size=500")
    result = run_process("train", *args, "--init-from", source, cwd=tmp_path)
    assert_clean_failure(
        result,
        "train.init_from",
        "model.d_model 128 (config) vs 64 (checkpoint); model.norm 'post' (config) vs 'pre' "
        "(checkpoint); data.vocab_size 500 (config) vs 400 (checkpoint)",
    )
    assert not run.exists()


def test_a_missing_init_checkpoint_is_one_error_line(tiny_corpus, tmp_path):
    run = tmp_path / "ft"
    args = tiny_corpus.cli_args(run, f"train.init_from={tmp_path / 'nope.pt'}")
    result = run_process("train", *args, cwd=tmp_path)
    assert_clean_failure(result, "train.init_from: checkpoint not found", "nope.pt")
    assert not run.exists()


def test_a_corrupt_init_checkpoint_is_refused_naming_the_key(tiny_corpus, trained_run, tmp_path):
    data = bytearray(source_checkpoint(trained_run).read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as error:
        tiny_corpus.config(tmp_path / "ft", f"train.init_from={bad}")
    assert error.value.problems == [
        f"train.init_from: checkpoint {bad} is corrupt: "
        + error.value.problems[0].split(" is corrupt: ")[1]
    ]
    assert "does not match its CRC-32 checksum" in error.value.problems[0]
    with pytest.raises(ConfigError, match="train.init_from: cannot read a+: File name too long"):
        tiny_corpus.config(tmp_path / "ft", "train.init_from=" + "a" * 300)


# --------------------------------------------------------------------------- the tokenizer


def test_prepare_writes_the_checkpoints_sentencepiece_model(
    tiny_corpus, second_corpus, trained_run, tmp_path
):
    source = source_checkpoint(trained_run)
    cfg = second_config(tiny_corpus, second_corpus, tmp_path / "ft", f"train.init_from={source}")
    result = prepare(cfg, reused=init_from_tokenizer(cfg))
    written = prepared_dir(cfg) / "spm.model"  # the source's vocabulary is joint
    assert written.read_bytes() == (trained_run / "data" / "spm.model").read_bytes()
    assert sorted(p.name for p in prepared_dir(cfg).glob("spm*")) == ["spm.model"]
    assert result.stats["tokenizer_from"] == str(source.resolve())
    # The new corpus is encoded with it: its ids decode back to its cleaned text.
    tokenizer = Tokenizer.load(prepared_dir(cfg))
    src, _ = load_prepared(cfg, "train")
    first = (prepared_dir(cfg) / "train.de").read_text("utf-8").splitlines()[0]
    assert tokenizer.decode_src([src[0].tolist()]) == [first]
    # Training on it starts from the source's weights.
    trainer = started(cfg)
    assert_equal_tree(trainer.model.state_dict(), load_checkpoint(source)["model"])


def test_data_prepared_with_another_tokenizer_is_refused(
    tiny_corpus, second_corpus, trained_run, tmp_path
):
    run = tmp_path / "ft"
    prepare(second_config(tiny_corpus, second_corpus, run))  # trains its own SentencePiece
    cfg = second_config(
        tiny_corpus, second_corpus, run, f"train.init_from={source_checkpoint(trained_run)}"
    )
    with pytest.raises(TrainingError, match="not encoded with the SentencePiece models of"):
        started(cfg)
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


# --------------------------------------------------------------------------- resuming


def test_resuming_a_fine_tuning_run_continues_from_its_own_checkpoint(
    tiny_corpus, trained_run, tmp_path
):
    source = tmp_path / "source.pt"
    shutil.copyfile(source_checkpoint(trained_run), source)

    def fine_tune(run: Path, updates: int, *extra: str):
        cfg = tiny_corpus.config(
            run, f"train.init_from={source}", f"train.max_updates={updates}", *extra
        )
        return Trainer(cfg, CPU, **QUIET).fit()

    whole = tiny_corpus.new_run(tmp_path / "whole")
    fine_tune(whole, 4)
    parts = tiny_corpus.new_run(tmp_path / "parts")
    fine_tune(parts, 2)
    # Other weights under the init path: a resume that re-initialised would differ.
    shutil.copyfile(trained_run / "checkpoints" / "step_1.pt", source)
    assert fine_tune(parts, 4).state.step == 4
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (whole, parts))
    for key in ("model", "optimizer", "scheduler", "rng"):
        assert_equal_tree(a[key], b[key], key)
    for key in ("step", "epoch", "position"):  # not the time, nor the extra validation's best
        assert a["train_state"][key] == b["train_state"][key]
    assert a["init_from"]["sha256"] == b["init_from"]["sha256"]  # the first run's source
    # Resuming it from another checkpoint is refused, naming the key.
    with pytest.raises(TrainingError, match=r"train\.init_from '.*source\.pt' -> '.*step_2\.pt'"):
        fine_tune(parts, 5, f"train.init_from={trained_run / 'checkpoints' / 'step_2.pt'}")


def test_the_resume_refusal_of_a_changed_lr_points_to_init_from(tiny_corpus, trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    with pytest.raises(TrainingError) as error:
        Trainer(tiny_corpus.config(run, "train.lr=1e-4"), CPU, **QUIET).fit()
    last = run / "checkpoints" / "last.pt"
    assert f"train.init_from={last} (or --init-from {last})" in str(error.value)

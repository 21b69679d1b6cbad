"""Several training corpora, weighted (data.corpora): the config's refusals, `prepare`
cleaning each corpus on its own and training SentencePiece on the union, fingerprints, and
the trainer drawing each epoch by weight, resumable mid-epoch.

The corpora are the committed Multi30k slice: `multi30k` (its first 64 training pairs, 40
dev pairs) and `mydomain`, 32 other pairs of the slice (lines 1001-1032) registered under
another name, as a user registers a corpus of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import assert_clean_failure, run_process
from _shared import assert_equal_tree
from plugins.tiny_corpus import BASE_OVERRIDES

from nmt import __version__
from nmt.checkpoint import load_checkpoint
from nmt.config import load_config
from nmt.data.download import download, register_files
from nmt.data.prepare import (
    _fingerprint,
    _raw_files,
    corpora_file,
    data_fingerprint,
    load_prepared,
    prepare,
    prepared_dir,
)
from nmt.data.text import read_lines, sha256_of
from nmt.data.tokenizer import Tokenizer
from nmt.errors import ConfigError, DataError, TrainingError
from nmt.runtime import Runtime
from nmt.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
CPU = Runtime(torch.device("cpu"), "fp32")
MIX = "data.corpora=[{name: multi30k, weight: 1}, {name: mydomain, weight: 2.5}]"
BASE = BASE_OVERRIDES  # tiny, CPU-only, single-threaded


def lines_of(path: Path, start: int, n: int) -> str:
    with open(path, encoding="utf-8") as f:
        return "".join(f.readlines()[start : start + n])


@dataclass(frozen=True)
class Corpora:
    data_dir: Path

    def config(self, run_dir: Path, *extra: str):
        return load_config(
            TINY_CONFIG, [f"run_dir={run_dir}", f"data.data_dir={self.data_dir}", *BASE, *extra]
        )


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, corpus_slice: Path) -> Corpora:
    root = tmp_path_factory.mktemp("corpora")
    mirror = root / "mirror" / "multi30k"
    mirror.mkdir(parents=True)
    for split, n in {"train": 64, "val": 40}.items():
        for lang in ("de", "en"):
            text = lines_of(corpus_slice / "multi30k" / f"{split}.{lang}", 0, n)
            (mirror / f"{split}.{lang}").write_text(text, encoding="utf-8")
    data_dir = root / "data"
    download("multi30k", languages=["de", "en"], data_dir=data_dir, mirror=mirror.parent)
    for lang in ("de", "en"):
        text = lines_of(corpus_slice / "multi30k" / f"train.{lang}", 1000, 32)
        (root / f"mine.{lang}").write_text(text, encoding="utf-8")
    register_files(
        "mydomain", src=root / "mine.de", tgt=root / "mine.en", src_lang="de", tgt_lang="en",
        data_dir=data_dir,
    )  # fmt: skip
    return Corpora(data_dir)


@pytest.fixture(scope="module")
def prepared(corpora, tmp_path_factory) -> Path:
    """A run directory with the mix prepared (copied by the tests that train)."""
    run = tmp_path_factory.mktemp("prepared") / "run"
    prepare(corpora.config(run, MIX))
    return run


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            ["data.corpora=[{name: a}, {name: b}, {name: a, weight: 2}]"],
            "data.corpora[2].name: 'a' is listed twice (also data.corpora[0])",
        ),
        (["data.corpora=[{name: a, weight: 0}]"], "data.corpora[0].weight: 0.0 is out of range"),
        (["data.corpora=[{name: a, weight: -1}]"], "data.corpora[0].weight: -1.0 is out of range"),
        (["data.corpora=[{name: a, weight: .nan}]"], "data.corpora[0].weight: got nan"),
        (["data.corpora=[{name: a, weight: .inf}]"], "data.corpora[0].weight: got inf"),
        (["data.corpora=[]"], "data.corpora: an empty list"),
        (["data.corpora=[{weight: 2}]"], "data.corpora[0].name: missing"),
        (["data.corpora=a"], "data.corpora: got 'a' (str), expected a list of mappings"),
        (["data.corpora=[{name: a, wieght: 2}]"], "did you mean data.corpora[0].weight?"),
        (["data.corpora=[{name: a}]"], "data.corpus: not set; with data.corpora, name the"),
        (
            ["data.corpus=multi30k", "data.corpora=[{name: a}, {name: b}]"],
            "data.corpus: 'multi30k' is not in data.corpora (a, b)",
        ),
    ],
)
def test_refusals_name_the_key(overrides, problem):
    with pytest.raises(ConfigError) as refused:
        load_config(None, overrides)
    assert [p for p in refused.value.problems if problem in p], refused.value.problems


def test_the_resolved_config_loads_again_and_one_corpus_is_unchanged(corpora, tmp_path):
    cfg = corpora.config(tmp_path, MIX)
    assert [(c.name, c.weight) for c in cfg.data.corpora] == [("multi30k", 1.0), ("mydomain", 2.5)]
    from nmt.config import config_from_dict, config_to_dict

    assert config_from_dict(config_to_dict(cfg)) == cfg  # a checkpoint's, config.yaml's
    assert corpora.config(tmp_path).data.corpora is None


def test_the_cli_refuses_with_one_error_line(tmp_path):
    result = run_process(
        "prepare", TINY_CONFIG, "data.corpora=[{name: multi30k}, {name: multi30k}]", cwd=tmp_path
    )
    assert_clean_failure(result, "data.corpora[1].name: 'multi30k' is listed twice")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- prepare


def test_prepare_cleans_each_corpus_and_trains_on_the_union(corpora, prepared):
    out = prepared / "data"
    stats = json.loads((out / "prepare.json").read_text())
    per_corpus = stats["corpora"]
    assert list(per_corpus) == ["multi30k", "mydomain"]
    assert [per_corpus[c]["read"] for c in per_corpus] == [64, 32]
    assert [per_corpus[c]["weight"] for c in per_corpus] == [1.0, 2.5]
    train = stats["splits"]["train"]
    for key in ("read", "kept", "pairs", "dropped_too_many_tokens"):
        assert train[key] == sum(s[key] for s in per_corpus.values()), key
    assert train["tokens"]["src"] == sum(s["tokens"]["src"] for s in per_corpus.values())
    runs = json.loads(corpora_file(out, corpora.config(prepared, MIX).data).read_text())
    assert runs == {
        "corpora": [
            {"name": name, "weight": s["weight"], "pairs": s["pairs"]}
            for name, s in per_corpus.items()
        ]
    }
    assert not (out / "corpora").exists()  # the per-corpus staging is gone
    # The training arrays hold corpus after corpus, exactly the cleaned text encoded.
    cfg = corpora.config(prepared, MIX)
    tok = Tokenizer.load(out)
    src, tgt = load_prepared(cfg, "train")
    assert len(src) == per_corpus["multi30k"]["pairs"] + per_corpus["mydomain"]["pairs"]
    text = read_lines(out / "train.de")
    kept = per_corpus["multi30k"]["kept"]
    assert text[kept:] == read_lines(corpora.data_dir / "mydomain" / "train.de")  # clean already
    assert tok.decode_src([src[i].tolist() for i in range(len(src))]) == text
    assert tok.decode_tgt([tgt[i].tolist() for i in range(len(tgt))]) == read_lines(
        out / "train.en"
    )
    assert len(load_prepared(cfg, "val")[0]) == 40  # from data.corpus


def test_one_corpus_keeps_its_fingerprints(corpora, tmp_path):
    """data.corpus alone prepares as before data.corpora existed: the same prepare.json
    fingerprint (the formula of the code before it, written out here) and data fingerprint."""
    cfg = corpora.config(tmp_path / "run")
    raw = _raw_files(cfg)
    # encode_workers changes nothing prepare writes, so it was never part of the formula
    unused = {"corpora", "encode_workers"}
    settings = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in unused}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(__version__.encode())
    for split in sorted(raw):
        for path in raw[split]:
            digest.update(f"{split}:{path.name}:{sha256_of(path)}".encode())
    assert _fingerprint(cfg.data, raw) == digest.hexdigest()
    prepare(cfg)
    out = prepared_dir(cfg)
    arrays = [f"train.{lang}.{p}.npy" for lang in ("de", "en") for p in ("ids", "offsets")]
    before = hashlib.sha256()
    for name in ["spm.model", *arrays]:
        before.update(f"{name}:{sha256_of(out / name)}\n".encode())
    assert data_fingerprint(cfg) == before.hexdigest()
    assert not corpora_file(out, cfg.data).exists()


def test_the_data_fingerprint_changes_with_the_corpus_list(corpora, prepared, tmp_path):
    mix = corpora.config(prepared, MIX)
    swapped = "data.corpora=[{name: mydomain, weight: 2.5}, {name: multi30k, weight: 1}]"
    reweighted = "data.corpora=[{name: multi30k, weight: 1}, {name: mydomain, weight: 3}]"
    prints = {data_fingerprint(mix)}
    for i, overrides in enumerate([[swapped], [reweighted], []]):
        cfg = corpora.config(tmp_path / str(i), *overrides)
        prepare(cfg)
        prints.add(data_fingerprint(cfg))
    assert None not in prints and len(prints) == 4
    assert prepare(corpora.config(prepared, MIX)).skipped  # unchanged inputs: nothing to do


def test_a_corpus_without_the_languages_is_refused_naming_it(corpora, tmp_path):
    fr = tmp_path / "x.fr"
    fr.write_text("Un chien.\n", encoding="utf-8")
    register_files(
        "french", src=fr, tgt=fr, src_lang="fr", tgt_lang="en", data_dir=corpora.data_dir
    )
    listed = "data.corpora=[{name: multi30k}, {name: french}]"
    with pytest.raises(DataError, match=r"^data.corpora\[1\] \(french\): no .*french/train.de "
                       r"for data.src_lang 'de' \(it has train.en, train.fr\)"):  # fmt: skip
        prepare(corpora.config(tmp_path / "a", listed))
    known = "data.corpora=[{name: multi30k}, {name: wmt_newstest}]"
    with pytest.raises(DataError, match=r"^data.corpora\[1\] \(wmt_newstest\): corpus "
                       r"'wmt_newstest' has no split 'train'"):  # fmt: skip
        prepare(corpora.config(tmp_path / "b", known))
    same_directory = "data.corpora=[{name: multi30k}, {name: 'hf:x'}, {name: hf_x}]"
    with pytest.raises(DataError, match=r"data.corpora\[2\] \(hf_x\): the same corpus directory"):
        prepare(corpora.config(tmp_path / "c", same_directory))
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- training


def train(corpora, prepared: Path, run: Path, *extra: str) -> Trainer:
    if not run.exists():
        shutil.copytree(prepared / "data", run / "data")
    trainer = Trainer(corpora.config(run, MIX, *extra), CPU, log=lambda message: None)
    trainer.fit()
    return trainer


def test_each_epoch_draws_the_corpora_by_weight(corpora, prepared, tmp_path):
    """Over an epoch the trainer's batches hold corpus k's pairs floor(w) times each plus
    round(frac(w) n) more: exact counts, so the shares are the weights' within rounding."""
    trainer = Trainer(corpora.config(prepared, MIX), CPU, log=lambda message: None)
    sizes = trainer.mix.sizes
    for epoch in (0, 1):
        pairs = np.concatenate(trainer._epoch_batches(epoch))
        counts = np.bincount(pairs >= sizes[0], minlength=2).tolist()
        assert counts == [sizes[0], 2 * sizes[1] + round(0.5 * sizes[1])]
        copies = np.bincount(pairs, minlength=sum(sizes))
        assert set(copies[sizes[0] :].tolist()) == {2, 3} and (copies[: sizes[0]] == 1).all()
    first, second = (np.concatenate(trainer._epoch_batches(e)) for e in (0, 1))
    assert not np.array_equal(np.sort(first), np.sort(second))  # another half drawn


def test_resumed_mid_epoch_equals_uninterrupted(corpora, prepared, tmp_path):
    resume = ("model.dropout=0.1", "train.update_freq=2", "train.save_every=1")
    reference = train(corpora, prepared, tmp_path / "reference", *resume, "train.max_updates=18")
    per_epoch = -(-len(reference._epoch_batches(0)) // 2)
    assert per_epoch < 9 < 2 * per_epoch  # the first leg stops inside the second epoch
    run = tmp_path / "run"
    first = train(corpora, prepared, run, *resume, "train.max_updates=9")
    assert first.state.epoch == 1 and first.state.position > 0
    resumed = train(corpora, prepared, run, *resume, "train.max_updates=18")
    assert resumed.state.epoch == reference.state.epoch == 2
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (run, tmp_path / "reference"))
    for key in ("model", "optimizer", "scheduler", "rng"):
        assert_equal_tree(a[key], b[key], key)
    progress = ("step", "epoch", "position")
    assert [a["train_state"][k] for k in progress] == [b["train_state"][k] for k in progress]


def test_a_resume_with_other_weights_is_refused_naming_the_key(corpora, prepared, tmp_path):
    """Weights are fixed for a run (the data order depends on them): a resume with others
    is refused, naming data.corpora old -> new (after `prepare --force`: without it, prepare
    refuses to replace the data the checkpoints were trained on)."""
    run = tmp_path / "run"
    train(corpora, prepared, run, "train.max_updates=1", "train.valid_every=1")
    other = corpora.config(run, MIX.replace("2.5", "3"))
    with pytest.raises(DataError, match="has checkpoints"):
        prepare(other)
    prepare(other, force=True)
    trainer = Trainer(other, CPU, log=lambda message: None)
    with pytest.raises(TrainingError, match=r"data.corpora .*'weight': 2.5.* -> .*'weight': 3"):
        trainer.fit()


def test_prepared_data_of_another_corpus_list_is_refused(corpora, prepared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(prepared / "data", run / "data")
    with pytest.raises(DataError, match="not data.corpora"):
        Trainer(corpora.config(run, MIX.replace("2.5", "2")), CPU, log=lambda message: None)
    with pytest.raises(DataError, match="was prepared from data.corpora"):
        Trainer(corpora.config(run), CPU, log=lambda message: None)


def test_a_weight_that_draws_no_pair_is_refused_naming_the_key(corpora, tmp_path):
    """Weight 0.01 of 32 pairs rounds to none an epoch: the corpus would be prepared and
    listed but never trained on (before: silently; a lone such corpus gave "no batch to
    this process; use fewer processes or a smaller train.max_tokens")."""
    weak = "data.corpora=[{name: multi30k, weight: 1}, {name: mydomain, weight: 0.01}]"
    cfg = corpora.config(tmp_path / "run", weak)
    prepare(cfg)
    with pytest.raises(DataError, match=r"^data.corpora\[1\].weight: 0.01 draws none of the 32 "
                       r"pairs of 'mydomain' an epoch .* at least 0.016"):  # fmt: skip
        Trainer(cfg, CPU, log=lambda message: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_one_corpus_under_two_names_by_a_symlink_is_refused(corpora, tmp_path):
    """`data/alias -> data/multi30k`: two entries, one set of files; its pairs would be seen
    twice as often as listed (before: prepared and trained silently, 128 pairs of 64)."""
    alias = corpora.data_dir / "alias"
    alias.symlink_to(corpora.data_dir / "multi30k", target_is_directory=True)
    try:
        both = "data.corpora=[{name: multi30k}, {name: alias}]"
        with pytest.raises(DataError, match=r"^data.corpora\[1\] \(alias\): .*train.de is the "
                           r"file of data.corpora\[0\] \(multi30k\); list it once"):  # fmt: skip
            prepare(corpora.config(tmp_path / "run", both))
    finally:
        alias.unlink()
    assert not (tmp_path / "run").exists()

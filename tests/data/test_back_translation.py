"""The back-translation recipe of docs/data.md, end to end with the command line and the tiny model:
train a reverse (en->de) model, translate monolingual English by sampling, register the
result as a corpus, and train de->en on the union with data.corpora.

Only the mechanics are checked (not quality): N lines in and N out, the same seed gives the
same synthetic text, the synthetic corpus is cleaned and counted on its own, and the forward
model trains on both corpora by their weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import run_process

from nmt.checkpoint import load_checkpoint
from nmt.interop.huggingface import model_card
from nmt.interop.source import load_source

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
MONO_LINES = 60
SMALL = (
    "data.vocab_size=400",
    "data.test_splits=[]",
    "train.device=cpu",
    "train.threads=1",
    "train.max_updates=4",
    "train.valid_every=4",
    "train.save_every=4",
    "train.valid_bleu=false",
)

pytestmark = pytest.mark.slow


def nmt(*args, cwd: Path) -> str:
    result = run_process(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_back_translation_recipe(tmp_path: Path, corpus_slice: Path):
    mirror = f"data.mirror={corpus_slice}"
    # 1. A reverse model, en -> de, on Multi30k.
    nmt("run", TINY, "name=en_de", "data.src_lang=en", "data.tgt_lang=de", mirror, *SMALL,
        cwd=tmp_path)  # fmt: skip
    reverse = tmp_path / "runs" / "en_de" / "checkpoints" / "best.pt"
    # 2. Monolingual English (training lines the models never see), translated by sampling.
    with open(corpus_slice / "multi30k" / "train.en", encoding="utf-8") as f:
        mono = f.readlines()[1500 : 1500 + MONO_LINES]
    (tmp_path / "mono.en").write_text("".join(mono), encoding="utf-8")
    sample = ("translate", reverse, "--sampling", "topk:10", "--seed", "1", "-i", "mono.en")
    nmt(*sample, "-o", "mono.de", cwd=tmp_path)
    nmt(*sample, "-o", "again.de", cwd=tmp_path)
    synthetic = (tmp_path / "mono.de").read_text(encoding="utf-8")
    assert synthetic.count("\n") == MONO_LINES  # N lines in, N out
    assert synthetic == (tmp_path / "again.de").read_text(encoding="utf-8")  # seeded
    # 3. The synthetic pairs become a corpus of their own.
    nmt("download", "bt", "--src", "mono.de", "--tgt", "mono.en", "--src-lang", "de",
        "--tgt-lang", "en", "--split", "train", cwd=tmp_path)  # fmt: skip
    # 4. de -> en on the union: real pairs once, synthetic ones at half weight.
    corpora = "data.corpora=[{name: multi30k, weight: 1}, {name: bt, weight: 0.5}]"
    out = nmt("run", TINY, "name=de_en", corpora, mirror, *SMALL, cwd=tmp_path)
    assert "bt (weight 0.5)" in out and "multi30k (weight 1)" in out  # prepare's summary
    run = tmp_path / "runs" / "de_en"
    stats = json.loads((run / "data" / "prepare.json").read_text())
    assert stats["corpora"]["bt"]["read"] == MONO_LINES
    assert stats["corpora"]["multi30k"]["read"] == 2000
    pairs = {name: s["pairs"] for name, s in stats["corpora"].items()}
    assert stats["splits"]["train"]["pairs"] == pairs["multi30k"] + pairs["bt"]
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["train_state"]["step"] == 4
    assert saved["config"]["data"]["corpora"] == [
        {"name": "multi30k", "weight": 1.0},
        {"name": "bt", "weight": 0.5},
    ]
    card = model_card(load_source(run / "checkpoints" / "last.pt"))  # `nmt export`'s README
    assert "datasets:\n- multi30k\n- bt\n" in card
    assert "Corpora `multi30k` (weight 1), `bt` (weight 0.5), de -> en" in card

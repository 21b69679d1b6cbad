"""`nmt run CONFIG` end to end on the tiny settings: download from a mirror, prepare, train,
average the last checkpoints, translate and score every test split."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 400, "val": 40, "test_2016_flickr": 40, "test_2017_flickr": 40}
TEST_SPLITS = ("test_2016_flickr", "test_2017_flickr")  # configs/tiny.yaml's (the default)
# configs/tiny.yaml, shorter: 40 updates, step checkpoints at 20 and 40, averaged at the end.
OVERRIDES = [
    "train.device=cpu",
    "train.threads=1",
    "train.max_tokens=512",
    "train.max_updates=40",
    "train.warmup_updates=10",
    "train.log_every=10",
    "train.valid_every=20",
    "train.save_every=20",
    "train.valid_bleu_max_sentences=10",
    "train.average_last=2",
]


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, corpus_slice) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    (root / "multi30k").mkdir()
    for split, n in SIZES.items():
        for lang in ("de", "en"):
            lines = read(corpus_slice / "multi30k" / f"{split}.{lang}")[:n]
            (root / "multi30k" / f"{split}.{lang}").write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8"
            )
    return root


@pytest.mark.slow
def test_run_goes_from_nothing_to_scored_test_sets(tmp_path, mirror):
    env = {**os.environ, "NMT_DATA_MIRROR": str(mirror), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "run", str(REPO / "configs" / "tiny.yaml"), *OVERRIDES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert (tmp_path / "data" / "multi30k" / "train.de").is_file()  # downloaded
    assert "averaged 2 checkpoints" in result.stderr

    results = json.loads((run_dir / "eval" / "results.json").read_text())
    averaged = run_dir / "checkpoints" / "averaged.pt"
    for record in results["results"]:
        assert record["checkpoint"]["path"] == str(averaged.resolve())
        assert record["checkpoint"]["sha256"] == hashlib.sha256(averaged.read_bytes()).hexdigest()
        assert len(record["checkpoint"]["averaged_from"]) == 2
        assert record["beam_size"] == 2  # decode.beam_size of configs/tiny.yaml
        assert (record["device"], record["numerics"]) == ("cpu", "fp32")
    assert [r["split"] for r in results["results"]] == list(TEST_SPLITS)

    printed = {}
    for line in result.stdout.splitlines():
        found = re.match(r"(\S+): BLEU (\d+\.\d\d) \(lowercased (\d+\.\d\d)\) chrF ", line)
        if found:
            printed[found[1]] = (float(found[2]), float(found[3]))
            assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in line
    assert sorted(printed) == sorted(TEST_SPLITS)
    assert "update " not in result.stdout and "update " in result.stderr  # logs: stderr

    for record in results["results"]:
        split = record["split"]
        hyp_path = tmp_path / record["hypotheses"]  # relative to the run's cwd
        hyps = read(hyp_path)
        refs = read(tmp_path / "data" / "multi30k" / f"{split}.en")  # the raw reference
        assert hyp_path.parent == run_dir / "eval"
        step = record["checkpoint"]["step"]
        assert re.fullmatch(rf"{split}\.step{step}-[0-9a-f]{{8}}\.hyp\.en", hyp_path.name)
        assert len(hyps) == len(refs) == SIZES[split]
        bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
        lower = sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score
        assert record["cased"]["bleu"]["score"] == bleu
        assert record["lowercased"]["bleu"]["score"] == lower
        assert record["cased"]["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs]).score > 0
        assert printed[split] == (round(bleu, 2), round(lower, 2))

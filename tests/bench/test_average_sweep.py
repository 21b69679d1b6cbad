"""bench/average_sweep.py on the session's tiny run: averages of the last N checkpoints are
scored on the dev split, the best on dev is chosen, and only that choice (and best.pt) is
scored on the test split."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import sacrebleu

REPO = Path(__file__).resolve().parents[2]


def test_the_choice_is_made_on_dev_and_only_it_and_best_are_tested(tiny_run, tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import average_sweep

    # A copy: `nmt evaluate` records its scores in the run's eval/, and the session's tiny
    # run is shared with tests that expect only their own records there.
    run_dir = tmp_path / "tiny"
    shutil.copytree(tiny_run.run_dir, run_dir, symlinks=True)
    out = tmp_path / "sweep.json"
    average_sweep.main(
        [str(run_dir), "--data-root", str(tiny_run.root / "data"), "--output", str(out)]
    )
    record = json.loads(out.read_text())
    assert not (tiny_run.run_dir / "eval").exists() or all(
        "val" not in p.name for p in (tiny_run.run_dir / "eval").iterdir()
    )
    steps = [p.name for p in tiny_run.step_checkpoints]
    assert set(record["dev"]) == {"best.pt"} | {f"last {n}" for n in range(1, len(steps) + 1)}
    assert record["dev"][f"last {len(steps)}"]["averaged"] == steps
    averages = {name: row["bleu"] for name, row in record["dev"].items() if name != "best.pt"}
    assert record["choice"] == max(averages, key=averages.get)
    assert set(record["test"]) == {"best.pt", record["choice"]}
    assert record["isa"] in ("AVX-512", "AVX2", "neither AVX2 nor AVX-512")
    # Each score is sacreBLEU's on the written hypotheses: here, best.pt's on dev.
    dev = record["dev"]["best.pt"]
    refs = tiny_run.raw("val", "en").read_text(encoding="utf-8").splitlines()
    hyps = Path(dev["hypotheses"]).read_text(encoding="utf-8").splitlines()
    assert dev["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score

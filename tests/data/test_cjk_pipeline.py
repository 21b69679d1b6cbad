"""The whole pipeline on Chinese, both ways: newstest2017 zh-en registered as a user corpus
(docs/data.md, "Your own data"), a tiny model trained for a few dozen updates, the test split
translated and scored. Checks the pipeline, not quality: BLEU computed with the right
tokenizer (tok:zh for output in Chinese, 13a for English, in training's validation too),
SentencePiece coverage by language, no spaces inserted between Chinese characters, as many
output lines as input lines. Skipped where ../shared/data is absent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import sacrebleu
import yaml
from _cli import run_process

from nmt.decoding.options import DecodeOptions

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("NMT_SHARED_DATA", REPO.parent / "shared" / "data"))
ZH_EN = SHARED_DATA / "wmt_newstest" / "zh-en"
SPACE_IN_CHINESE = re.compile(
    r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef] +[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"
)
HAN = re.compile(r"[\u4e00-\u9fff]")
DEV, TEST = 20, 60  # newstest2018 lines for the dev and test splits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Path:
    """A root whose data/zhen holds train (newstest2017), val and test (parts of 2018),
    registered with `nmt download zhen --src ... --tgt ...`."""
    if not ZH_EN.is_dir():
        pytest.skip(f"needs {ZH_EN} (absent; set NMT_SHARED_DATA to the shared corpora)")
    root = tmp_path_factory.mktemp("zhen")
    parts = {"train": ("newstest2017", 0, None), "val": ("newstest2018", 0, DEV)}
    parts["test"] = ("newstest2018", DEV, DEV + TEST)
    for split, (name, start, stop) in parts.items():
        files = {}
        for lang in ("zh", "en"):
            lines = (ZH_EN / f"{name}.{lang}").read_text("utf-8").split("\n")[:-1][start:stop]
            files[lang] = root / f"{split}.{lang}"
            files[lang].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        result = run_process(
            *("download", "zhen", "--src", files["zh"], "--tgt", files["en"]),
            *("--src-lang", "zh", "--tgt-lang", "en", "--split", split),
            cwd=root,
        )
        assert result.returncode == 0, result.stderr
    return root


def write_config(root: Path, src: str, tgt: str) -> Path:
    """The tiny model for a few dozen updates; en->zh with a vocabulary per language."""
    joint = src == "zh"
    config = {
        "name": f"{src}-{tgt}",
        "data": {
            "corpus": "zhen",
            "src_lang": src,
            "tgt_lang": tgt,
            "test_splits": ["test"],
            "vocab_size": 3000,  # 0.9995 of newstest2017's Han characters need ~2600
            "joint_vocab": joint,
        },
        "model": {"preset": "tiny", "share_embeddings": joint},
        "train": {
            "device": "cpu",
            "threads": 1,
            "max_tokens": 1024,
            "max_updates": 30,
            "warmup_updates": 10,
            "lr": 3e-3,
            "log_every": 10,
            "valid_every": 30,
            "save_every": 30,
            "valid_bleu_max_sentences": DEV,
        },
        "decode": {"beam_size": 2},
    }
    path = root / f"{src}-{tgt}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def coverage_of(model: Path) -> float:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    return round(proto.trainer_spec.character_coverage, 6)


@pytest.mark.parametrize(("src", "tgt", "tok"), [("zh", "en", "13a"), ("en", "zh", "zh")])
def test_tiny_model_trains_translates_and_scores_chinese(registered, src, tgt, tok):
    from nmt.decoding.engine import Engine

    result = run_process("run", write_config(registered, src, tgt), cwd=registered)
    assert result.returncode == 0, result.stderr
    run_dir = registered / "runs" / f"{src}-{tgt}"

    # prepare: the length-ratio filter kept the ordinary pairs; coverage by language
    stats = json.loads((run_dir / "data" / "prepare.json").read_text())
    train = stats["splits"]["train"]
    assert train["read"] == 2001 and train["kept"] == 2000, train
    prepared = run_dir / "data"
    if src == "zh":
        assert coverage_of(prepared / "spm.model") == 0.9995  # joint, with Chinese
    else:
        assert coverage_of(prepared / "spm.src.model") == 1.0  # English
        assert coverage_of(prepared / "spm.tgt.model") == 0.9995  # Chinese

    # evaluation: N lines in, N out, scored with the target language's tokenizer
    (record,) = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    hyps = read(registered / record["hypotheses"])  # relative to the working directory
    refs = read(registered / "data" / "zhen" / f"test.{tgt}")
    assert len(hyps) == len(refs) == TEST
    bleu = record["cased"]["bleu"]
    assert f"tok:{tok}" in bleu["signature"]
    assert bleu["score"] == sacrebleu.corpus_bleu(hyps, [refs], tokenize=tok).score
    if tgt == "zh":
        assert sum(bool(HAN.search(h)) for h in hyps) > TEST // 2  # it does write Chinese
        assert not [h for h in hyps if SPACE_IN_CHINESE.search(h)]

    assert result.stdout.count(f"tok:{tok}") == 1, result.stdout  # nmt run's summary line

    # validation during training (at the last update, greedy): BLEU under the same rule
    (valid,) = [r for r in map(json.loads, read(run_dir / "metrics.jsonl")) if "bleu" in r]
    translator = Engine.from_checkpoint(
        run_dir / "checkpoints" / "last.pt", DecodeOptions(beam_size=1)
    )
    dev_hyps = translator.translate(read(prepared / f"val.{src}")).best
    dev_refs = read(prepared / f"val.{tgt}")
    assert valid["bleu"] == sacrebleu.corpus_bleu(dev_hyps, [dev_refs], tokenize=tok).score

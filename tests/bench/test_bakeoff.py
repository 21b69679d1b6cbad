"""bench/bakeoff.py's pure parts against known answers: the vocabulary files made from nmt's
SentencePiece model, the committed configs stating one model and schedule, the log readers
and the results table. No peer is installed or run here."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bakeoff  # noqa: E402

from nmt.data.text import iter_lines  # noqa: E402
from nmt.data.tokenizer import SpmSettings, Tokenizer, train_sentencepiece  # noqa: E402
from nmt.training.schedule import InverseSqrtMultiplier  # noqa: E402


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory, corpus_slice: Path) -> Path:
    """A joint 600-piece model of the committed Multi30k slice, as `nmt prepare` trains it."""
    m30k = corpus_slice / "multi30k"
    lines = itertools.chain(iter_lines(m30k / "train.de"), iter_lines(m30k / "train.en"))
    path = tmp_path_factory.mktemp("spm") / "spm.model"
    path.write_bytes(train_sentencepiece(lines, SpmSettings(vocab_size=600)))
    return path


@pytest.mark.parametrize("toolkit", ["joeynmt", "eole"])
def test_vocab_file_holds_every_piece_in_id_order(spm_model, corpus_slice, tmp_path, toolkit):
    pieces = bakeoff.spm_pieces(spm_model)
    assert len(pieces) == 600
    assert pieces[:4] == ["<pad>", "<unk>", "<s>", "</s>"]  # nmt's ids 0-3, named as the
    # peers' configs name their specials
    path = tmp_path / "vocab.txt"
    bakeoff.write_lines(path, bakeoff.vocab_lines(pieces, toolkit))
    # Both toolkits read a count-free vocabulary file as its lines, whole and in order.
    read_back = path.read_text(encoding="utf-8").splitlines()
    assert read_back == pieces
    # Every piece nmt's tokenizer makes of real text is in the file: no peer sees <unk>.
    tokenizer = Tokenizer(spm_model.read_bytes())
    text = list(iter_lines(corpus_slice / "multi30k" / "val.de"))
    ids = {i for row in tokenizer.encode_src(text) for i in row}
    assert {pieces[i] for i in ids} <= set(read_back)
    assert 1 not in ids or pieces[1] == "<unk>"


def test_vocab_lines_refuses_what_a_vocabulary_file_cannot_hold():
    with pytest.raises(ValueError, match="whitespace"):
        bakeoff.vocab_lines(["<pad>", "a b"], "eole")
    with pytest.raises(ValueError, match="duplicate"):
        bakeoff.vocab_lines(["<pad>", "x", "x"], "joeynmt")
    with pytest.raises(ValueError, match="no vocabulary format"):
        bakeoff.vocab_lines(["x"], "marian")


def _config(name: str) -> dict:
    return yaml.safe_load((bakeoff.CONFIGS / f"{name}.yaml").read_text())


def test_the_three_configs_state_one_model_batch_and_optimiser():
    nmt, joey, eole = _config("nmt"), _config("joeynmt"), _config("eole")
    assert nmt["model"]["preset"] == "small"  # d256, 4 heads, 3+3 layers, ffn 1024
    for side in ("encoder", "decoder"):
        part = joey["model"][side]
        sizes = (part["hidden_size"], part["num_heads"], part["num_layers"], part["ff_size"])
        assert sizes == (256, 4, 3, 1024)
        assert part["layer_norm"] == "pre" and part["dropout"] == 0.1
    model = eole["model"]
    sizes = (model["hidden_size"], model["heads"], model["layers"], model["transformer_ff"])
    assert sizes == (256, 4, 3, 1024)
    assert joey["model"]["tied_embeddings"] and joey["model"]["tied_softmax"]
    assert model["share_embeddings"] and model["share_decoder_embeddings"]
    train, jt, et = nmt["train"], joey["training"], eole["training"]
    assert train["max_tokens"] == jt["batch_size"] == et["batch_size"] == 2048
    assert train["label_smoothing"] == jt["label_smoothing"] == et["label_smoothing"] == 0.1
    assert train["clip_norm"] == jt["clip_grad_norm"] == et["max_grad_norm"] == 1.0
    assert jt["adam_betas"] == [et["adam_beta1"], et["adam_beta2"]] == [0.9, 0.98]
    assert train["valid_every"] == jt["validation_freq"] == et["valid_steps"] == 300
    assert nmt["data"]["vocab_size"] == eole["src_vocab_size"] == 8000


def test_eoles_noam_settings_give_nmts_learning_rate_schedule():
    nmt, eole = _config("nmt")["train"], _config("eole")["training"]
    ours = InverseSqrtMultiplier(nmt["lr"], nmt["warmup_updates"], 0.0)
    d = _config("eole")["model"]["hidden_size"]
    warmup, scale = eole["warmup_steps"], eole["learning_rate"]
    for step in (1, 100, 400, 1000, 5000):
        # eole's noam_decay times its learning_rate
        noam = scale * d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert noam == pytest.approx(ours.lr_at(step), rel=1e-9)
    joey = _config("joeynmt")["training"]
    assert (joey["learning_rate"], joey["learning_rate_warmup"]) == (1e-3, 400)


def test_with_validation_every_rewrites_each_toolkits_keys(tmp_path):
    for name, keys in [
        ("joeynmt", [("training", "validation_freq"), ("training", "logging_freq")]),
        (
            "eole",
            [("training", "valid_steps"), ("", "report_every")],
        ),
    ]:
        copy = tmp_path / f"{name}.yaml"
        copy.write_text((bakeoff.CONFIGS / f"{name}.yaml").read_text())
        bakeoff.with_validation_every(copy, name, 7)
        tree = yaml.safe_load(copy.read_text())
        assert [(tree[s] if s else tree)[k] for s, k in keys] == [7] * len(keys)
        assert tree["model"] == _config(name)["model"]  # nothing else changed
    # eole's saves stay frequent: they bound what is lost when it is stopped at the limit.
    assert tree["training"]["save_checkpoint_steps"] == 50


def _finished(lines: list[tuple[float, str]], *, loop: float, interrupted: float):
    return bakeoff.Finished(
        seconds=200.0,
        returncode=0,
        peak_rss_mb=1.0,
        lines=lines,
        loop_started_s=loop,
        interrupted_s=interrupted,
    )


def test_joey_log_reader():
    log = [
        (10.0, "... - INFO - joeynmt.training - EPOCH 1"),
        (
            40.0,
            "Epoch   1, Step:       50, Batch Loss:     1.0, Batch Acc: 0.1, "
            "Tokens per Sec:     1000, Lr: 0.000125",
        ),
        (
            70.0,
            "Epoch   1, Step:      100, Batch Loss:     1.0, Batch Acc: 0.1, "
            "Tokens per Sec:     1200, Lr: 0.000250",
        ),
        (
            100.0,
            "... Evaluation result (greedy): bleu:  12.50, loss: 4.1, ppl: 60.3, "
            "acc:   0.30, 3.1[sec]",
        ),
        (
            130.0,
            "Epoch   1, Step:      150, Batch Loss:     1.0, Batch Acc: 0.1, "
            "Tokens per Sec:     1400, Lr: 0.000375",
        ),
        (131.0, "... Interrupt at epoch 1, step 151."),
    ]
    outcome = bakeoff.Outcome(toolkit="joeynmt", versions={})
    bakeoff.read_joey_training(_finished(log, loop=10.0, interrupted=130.0), outcome)
    assert outcome.tgt_tokens_per_s == 1200
    assert outcome.updates == 151
    assert outcome.train_minutes == 2.0
    assert outcome.dev_curve == [{"update": 100, "minutes": 1.5, "bleu": 12.5}]


JOEY_STEP = (
    "Epoch   1, Step: {:8d}, Batch Loss:     1.0, Batch Acc: 0.1, Tokens per Sec: {:8d}, "
    "Lr: 0.000125"
)


def test_joey_updates_after_an_ignored_sigint_do_not_count():
    log = [
        (10.0, "... - INFO - joeynmt.training - EPOCH 1"),
        (40.0, JOEY_STEP.format(50, 1000)),
        (70.0, JOEY_STEP.format(100, 1200)),
        (160.0, JOEY_STEP.format(150, 5000)),  # trained on after the signal, then SIGKILL
    ]
    outcome = bakeoff.Outcome(toolkit="joeynmt", versions={})
    bakeoff.read_joey_training(_finished(log, loop=10.0, interrupted=130.0), outcome)
    assert (outcome.updates, outcome.tgt_tokens_per_s) == (100, 1100)


def test_reread_recomputes_the_peers_training_fields_from_their_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [
        (4.0, "... - INFO - joeynmt.training - EPOCH 1"),
        (64.0, JOEY_STEP.format(50, 1000)),
        (119.0, JOEY_STEP.format(100, 1200)),
        (150.0, JOEY_STEP.format(150, 9000)),  # after the limit (4 s + 2 min)
    ]
    (logs / "joeynmt.train.log").write_text("".join(f"{t:9.2f} {x}\n" for t, x in lines))
    joey = asdict(bakeoff.Outcome(toolkit="joeynmt", versions={"joeynmt": "2.3.0"}))
    joey |= {"updates": 150, "tests": {"test_2016_flickr": {"bleu": 30.0}}}
    nmt = asdict(bakeoff.Outcome(toolkit="nmt", versions={}, updates=7))
    path = tmp_path / "bakeoff.json"
    settings = {"minutes": 2.0, "dev_lines": 500}
    machine = {"cpu": "test CPU", "date": "then"}
    path.write_text(json.dumps({"settings": settings, "toolkits": [nmt, joey], "machine": machine}))
    bakeoff.reread_record(path, tmp_path)
    result = json.loads(path.read_text())
    nmt_after, joey_after = result["toolkits"]
    assert nmt_after == nmt
    assert (joey_after["updates"], joey_after["tgt_tokens_per_s"]) == (100, 1100)
    assert joey_after["train_minutes"] == 2.0
    assert joey_after["tests"] == joey["tests"]  # what was not re-read stays
    assert "--reread" in result["reread"]


def test_results_table_renders_known_rows_and_says_what_a_peer_cannot():
    nmt = {
        "toolkit": "nmt",
        "updates": 1387,
        "train_minutes": 30.0,
        "tgt_tokens_per_s": 1507.4,
        "train_peak_rss_mb": 1121.2,
        "dev_curve": [
            {"update": 300, "minutes": 7.0, "bleu": 15.5},
            {"update": 600, "minutes": 13.6, "bleu": 27.26},
        ],
        "tests": {
            "test_2016_flickr": {
                "bleu": 37.06,
                "lines": 1000,
                "seconds": 30.0,
                "peak_rss_mb": 800.0,
            },
            "test_2017_flickr": {
                "bleu": 31.99,
                "lines": 1000,
                "seconds": 50.0,
                "peak_rss_mb": 900.4,
            },
        },
    }
    broken = {
        "toolkit": "eole",
        "updates": None,
        "train_minutes": None,
        "tgt_tokens_per_s": None,
        "train_peak_rss_mb": None,
        "dev_curve": [],
        "tests": {},
    }
    lines = bakeoff.results_table([nmt, broken]).splitlines()
    assert lines[0] == (
        "| toolkit | updates | training min | tgt tok/s | best dev BLEU | "
        "test_2016_flickr BLEU | test_2017_flickr BLEU | translate sent/s | "
        "peak MB train / translate |"
    )
    assert lines[2] == "| nmt | 1387 | 30.0 | 1507 | 27.26 | 37.06 | 31.99 | 25.0 | 1121 / 900 |"
    assert lines[3] == "| eole | - | - | - | - | - | - | - | - / - |"
    assert (
        "| checkpoint translated | best.pt (dev BLEU) | last step saved before the limit "
        "(no best kept) |" in lines
    )


def test_eole_log_reader():
    step = (
        "[2026-12-02 12:50:01,000 INFO] Step {:2d}/100000; acc: 5.0; ppl: 900.00; xent: 6.80; "
        "aux: 0.000; mtp: 0.000; attn_ent: 0.000; lr: 1.25e-04; sents:    1500; "
        "bsz: 1900/2000/30; {}/{} tok/s;     60 sec;"
    )
    log = [
        (5.0, "[...] Start training loop and validate every 300 steps..."),
        (65.0, step.format(50, 990, 1100)),
        (94.0, "[...] UPDATING VALIDATION BLEU"),
        (95.0, "[...] validation BLEU: 3.25"),
        (125.0, step.format(100, 1010, 900)),
        (126.0, step.format(7, 10, 30)),  # a short line: step 7 of a smoke run
        (131.0, step.format(150, 10, 5000)),  # after the stop signal: not counted
    ]
    outcome = bakeoff.Outcome(toolkit="eole", versions={})
    bakeoff.read_eole_training(_finished(log, loop=5.0, interrupted=127.0), outcome)
    assert outcome.tgt_tokens_per_s == 900  # the target side (median of 1100, 900, 30)
    assert outcome.updates == 7
    assert outcome.train_minutes == 2.0 + 2 / 60
    assert outcome.dev_curve == [{"update": 50, "minutes": 1.5, "bleu": 3.25}]


def test_eole_checkpoint_is_its_last_complete_save_before_the_stop_signal():
    def saving(step):
        return [
            (float(step), f"[...] Saving optimizer and weights to step_{step}, and symlink"),
            (step + 0.1, f"[...] Saving transforms artifacts, if any, to model/step_{step}"),
            (step + 0.2, "[...] Saving config and vocab to model"),
        ]

    cut_short = saving(150)[:2]  # the signal came in the middle of this save
    log = saving(50) + saving(100) + cut_short + saving(200)
    run = _finished(log, loop=5.0, interrupted=150.5)
    assert bakeoff.eole_saved_steps(run) == [50, 100]
    assert bakeoff.eole_saved_steps(_finished(log, loop=5.0, interrupted=None)) == [50, 100, 200]


def test_score_is_sacrebleus_corpus_bleu_against_the_first_lines(tmp_path):
    hyp, ref = tmp_path / "hyp", tmp_path / "ref"
    bakeoff.write_lines(hyp, ["a cat sits on the mat .", "two dogs run"])
    bakeoff.write_lines(ref, ["a cat sits on the mat .", "two dogs run", "never read"])
    scores = bakeoff.score(hyp, ref)
    assert scores["bleu"] == pytest.approx(100.0)  # identical to the first two references
    assert scores["chrf"] == pytest.approx(100.0)
    assert scores["lines"] == 2
    assert scores["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


def test_nmt_log_and_metrics_reader(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 50, "tgt_tokens_per_s": 1500.0}\n'
        '{"kind": "train", "step": 100, "tgt_tokens_per_s": 1400.0}\n'
        '{"kind": "valid", "step": 100, "elapsed_s": 80.0, "bleu": 9.0}\n'
    )
    log = [
        (
            12.0,
            "training bakeoff_nmt: 7.58M parameters on cpu fp32; 28995 pairs in 245 "
            "batches of <= 2048 tokens; from update 0",
        ),
        (102.0, "validation at update 100: loss 4.100, nll 3.300, ppl 27.650, bleu 9.000"),
        (132.0, "training stopped at update 120: max_minutes"),
    ]
    run = _finished(log, loop=12.0, interrupted=None)
    outcome = bakeoff.Outcome(toolkit="nmt", versions={})
    bakeoff.read_nmt_training(run, tmp_path, outcome)
    assert outcome.tgt_tokens_per_s == 1450.0
    assert outcome.dev_curve == [{"update": 100, "minutes": 1.5, "bleu": 9.0}]
    assert (outcome.updates, outcome.train_minutes) == (120, 2.0)

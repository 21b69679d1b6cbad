"""The batcher in-process, around the real model of the server tests: budgets, order, a failing
batch, cancelled requests, and the drain on stop."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from nmt.backends import load_backend
from nmt.decoding.options import DecodeOptions
from nmt.serve.batcher import Batcher
from nmt.serve.model import ServedModel

LINES = [
    "Ein Hund rennt über die Wiese.",
    "Zwei Männer stehen vor einem Haus.",
    "Eine Frau liest ein Buch.",
    "Kinder spielen im Park.",
    "Ein Mann fährt Fahrrad.",
    "Die Sonne scheint.",
]


@pytest.fixture(scope="module")
def model(serve_checkpoint: Path) -> ServedModel:
    options = DecodeOptions(device="cpu")
    return ServedModel(load_backend(serve_checkpoint, options), name=serve_checkpoint.name)


class Recorder:
    """The model's translate, recording each batch's lines; raises on a line "BOOM"."""

    def __init__(self, model: ServedModel):
        self.model = model
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, lines, options):
        with self.lock:
            self.batches.append(list(lines))
        if "BOOM" in lines:
            raise RuntimeError("decoding failed on purpose")
        return self.model.translate(lines, options)


def texts(results) -> list[str]:
    return [r.texts[0] for r in results]


def test_a_request_over_the_budget_spans_batches_and_keeps_its_order(model):
    recorder = Recorder(model)
    tokens = model.measure(LINES)
    batcher = Batcher(recorder, model.measure, max_batch_tokens=max(tokens) + 1, max_wait_ms=0)
    batcher.start()
    try:
        results = batcher.submit(LINES).future.result(60)
    finally:
        batcher.stop()
    assert texts(results) == texts(model.translate(LINES, DecodeOptions()))
    assert len(recorder.batches) >= 3
    assert [line for batch in recorder.batches for line in batch] == LINES
    assert all(sum(model.measure(b)) <= max(tokens) + 1 for b in recorder.batches)


def test_a_failing_batch_fails_only_its_own_requests(model):
    recorder = Recorder(model)
    batcher = Batcher(recorder, model.measure, max_batch_tokens=4096, max_wait_ms=300)
    good = batcher.submit(LINES[:1])
    bad = batcher.submit(["BOOM"])
    other = batcher.submit(LINES[1:2], DecodeOptions(beam_size=1))  # batched apart
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="on purpose"):
            good.future.result(60)
        with pytest.raises(RuntimeError, match="on purpose"):
            bad.future.result(60)
        assert texts(other.future.result(60)) == texts(
            model.translate(LINES[1:2], DecodeOptions(beam_size=1))
        )
        after = batcher.submit(LINES[2:3]).future.result(60)  # the thread lives on
    finally:
        batcher.stop()
    assert sorted(map(len, recorder.batches)) == [1, 1, 2]
    assert texts(after) == texts(model.translate(LINES[2:3], DecodeOptions()))


def test_a_cancelled_request_is_never_decoded(model):
    recorder = Recorder(model)
    batcher = Batcher(recorder, model.measure, max_batch_tokens=4096, max_wait_ms=200)
    gone = batcher.submit(LINES[:3])
    assert gone.future.cancel()  # what the route does when its client disconnects
    kept = batcher.submit(LINES[3:4])
    batcher.start()
    try:
        kept.future.result(60)
    finally:
        batcher.stop()
    assert recorder.batches == [LINES[3:4]]
    with pytest.raises(CancelledError):
        gone.future.result(0)


def test_stop_drains_every_queued_request(model):
    recorder = Recorder(model)
    batcher = Batcher(recorder, model.measure, max_batch_tokens=32, max_wait_ms=10_000)
    jobs = [batcher.submit([line]) for line in LINES]
    batcher.start()
    batcher.stop(timeout=120)  # no waiting out the 10 s: stopping flushes at once
    assert [texts(j.future.result(0)) for j in jobs] == [
        texts(model.translate([line], DecodeOptions())) for line in LINES
    ]
    with pytest.raises(RuntimeError, match="stopping"):
        batcher.submit(["Noch einer."])


def test_blank_requests_are_answered_without_waiting_for_a_batch(model):
    batcher = Batcher(Recorder(model), model.measure, max_batch_tokens=4096, max_wait_ms=60_000)
    batcher.start()
    try:
        assert texts(batcher.submit(["", ""]).future.result(10)) == ["", ""]
    finally:
        batcher.stop()

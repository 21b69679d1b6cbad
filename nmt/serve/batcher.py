"""Concurrent requests merged into batches, decoded in one worker thread.

Requests arrive on the event loop; the model lives in one thread that takes lines from the
queue in arrival order until the batch holds `max_batch_tokens` source tokens, or until
`max_wait_ms` has passed since the oldest waiting request arrived, whichever comes first.
A request longer than the budget spans several batches; each request gets exactly its own
lines back, in its own order, whatever it was batched with. Requests batch together only
when they ask for the same decoding options (`nmt.decoding.options`).

A failed batch fails only the requests that had lines in it. A request whose future was
cancelled (its client went away, or it timed out) has its remaining lines dropped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import Hypothesis


@dataclass
class LineResult:
    """One line's translation: the n-best texts and their hypotheses (same order)."""

    texts: list[str]
    hypotheses: list[Hypothesis]


@dataclass
class Job:
    """One request's lines on their way through the queue; `future` gets its LineResults."""

    lines: list[str]
    tokens: list[int]  # source tokens per line, for the batch budget
    options: DecodeOptions
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    taken: int = 0  # lines handed to a batch so far
    results: list[LineResult | None] = field(default_factory=list)
    remaining: int = 0  # lines not yet translated

    def __post_init__(self) -> None:
        self.results = [None] * len(self.lines)
        self.remaining = len(self.lines)

    @property
    def abandoned(self) -> bool:
        return self.future.done()  # cancelled by its client, or failed in an earlier batch


@dataclass(frozen=True)
class Piece:
    """Lines [start, end) of one job, placed in a batch."""

    job: Job
    start: int
    end: int


@dataclass(frozen=True)
class BatchReport:
    lines: int
    tokens: int
    seconds: float
    failed: bool


class Batcher:
    """Owns the decoding thread. `translate(lines, options)` is the decoding function (one
    call per batch); `measure(lines)` gives source tokens per line for the budget, 0 for a
    line that needs no model (blank)."""

    def __init__(
        self,
        translate: Callable[[list[str], DecodeOptions], list[LineResult]],
        measure: Callable[[Sequence[str]], list[int]],
        *,
        max_batch_tokens: int = 2048,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[BatchReport], None] = lambda report: None,
    ):
        self._translate = translate
        self._measure = measure
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self._on_batch = on_batch
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="nmt-decoder", daemon=True)

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        self._thread.start()

    def submit(self, lines: Sequence[str], options: DecodeOptions = DecodeOptions()) -> Job:
        """Queue `lines`; the job's future gets one LineResult per line, in order."""
        job = Job(list(lines), self._measure(lines), options)
        if not job.lines:
            job.future.set_result([])
            return job
        with self._wake:
            if self._stopping:
                raise RuntimeError("the batcher is stopping")
            self._queue.append(job)
            self._wake.notify()
        return job

    def queued_lines(self) -> int:
        with self._wake:
            return sum(len(job.lines) - job.taken for job in self._queue)

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued job (drain), then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker side

    def _run(self) -> None:
        while True:
            pieces = self._next_batch()
            if pieces is None:
                return
            if pieces:
                self._decode(pieces)

    def _next_batch(self) -> list[Piece] | None:
        """Wait for work, then for a full budget or the oldest job's wait to run out; None
        once stopping with nothing left."""
        with self._wake:
            while not self._queue:
                if self._stopping:
                    return None
                self._wake.wait()
            while not self._stopping and self._worth_waiting():
                left = self._queue[0].arrived + self.max_wait - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            return self._take()

    def _worth_waiting(self) -> bool:
        """The budget is not full yet, and the oldest job needs the model (a job of blank
        lines, 0 tokens each, is answered without it: no reason to make it wait)."""
        head = self._queue[0]
        needs_model = any(head.tokens[head.taken :])
        return needs_model and self._queued_tokens() < self.max_batch_tokens

    def _queued_tokens(self) -> int:
        options = self._queue[0].options
        return sum(sum(job.tokens[job.taken :]) for job in self._queue if job.options == options)

    def _take(self) -> list[Piece]:
        """Lines in arrival order, with the first job's options, up to the token budget (one
        line at least, however long)."""
        while self._queue and self._queue[0].abandoned:
            self._queue.popleft()
        if not self._queue:
            return []
        options, budget, pieces = self._queue[0].options, self.max_batch_tokens, []
        for job in list(self._queue):
            if job.abandoned:
                self._queue.remove(job)
                continue
            if job.options != options:
                continue
            start = job.taken
            while job.taken < len(job.lines) and (
                job.tokens[job.taken] <= budget or (not pieces and job.taken == start)
            ):
                budget -= job.tokens[job.taken]
                job.taken += 1
            if job.taken > start:
                pieces.append(Piece(job, start, job.taken))
            if job.taken == len(job.lines):
                self._queue.remove(job)
            if budget <= 0 or job.taken < len(job.lines):
                break
        return pieces

    def _decode(self, pieces: list[Piece]) -> None:
        lines = [line for p in pieces for line in p.job.lines[p.start : p.end]]
        tokens = sum(sum(p.job.tokens[p.start : p.end]) for p in pieces)
        started = time.perf_counter()
        try:
            results = self._translate(lines, pieces[0].job.options)
        except Exception as exc:  # noqa: BLE001 - reported to exactly this batch's requests
            for piece in pieces:
                _fail(piece.job, exc)
            self._on_batch(BatchReport(len(lines), tokens, time.perf_counter() - started, True))
            return
        self._on_batch(BatchReport(len(lines), tokens, time.perf_counter() - started, False))
        offset = 0
        for piece in pieces:
            count = piece.end - piece.start
            _deliver(piece.job, piece.start, results[offset : offset + count])
            offset += count


def _deliver(job: Job, start: int, results: list[LineResult]) -> None:
    job.results[start : start + len(results)] = results
    job.remaining -= len(results)
    if job.remaining == 0:
        # The event loop may cancel the future at any moment (client gone, timeout).
        with contextlib.suppress(InvalidStateError):
            job.future.set_result(job.results)


def _fail(job: Job, exc: Exception) -> None:
    with contextlib.suppress(InvalidStateError):
        job.future.set_exception(exc)

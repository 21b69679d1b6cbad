"""Training metrics: a running window of update statistics and the metrics.jsonl log."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

from nmt.errors import DataError, OutputError, TrainingError
from nmt.extras import require_extra
from nmt.files import atomic_write


class Window:
    """Accumulates update statistics between two log records."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.nll = 0.0
        self.tgt_tokens = self.src_tokens = self.slots = self.updates = 0
        self.grad_norm = 0.0
        self.seconds = 0.0

    def add(self, stats) -> None:
        if not stats.finite:
            return
        for key in ("loss", "nll", "tgt_tokens", "src_tokens", "slots", "grad_norm", "seconds"):
            setattr(self, key, getattr(self, key) + getattr(stats, key))
        self.updates += 1

    def summary(self) -> dict:
        """Per-token loss/nll (nats), perplexity = exp(nll), throughput and padding."""
        seconds = max(self.seconds, 1e-9)  # update time only: validation is not throughput
        tokens = max(self.tgt_tokens, 1)
        nll = self.nll / tokens
        real = self.tgt_tokens + self.src_tokens
        return {
            "loss": self.loss / tokens,
            "nll": nll,
            "ppl": math.exp(min(nll, 50.0)),
            "tgt_tokens_per_s": self.tgt_tokens / seconds,
            "tokens_per_s": real / seconds,
            "padding": 1.0 - real / self.slots if self.slots else 0.0,
            "grad_norm": self.grad_norm / max(self.updates, 1),
            "updates": self.updates,
        }


class MetricsLog:
    """Appends one JSON record per line: {"kind": "train"|"valid"|"resume", "time": ..., ...}.

    With `tensorboard` (a directory), the numbers of every train and valid record are also
    TensorBoard scalars (`TensorBoardLog`). Use it as a context manager: leaving closes the
    TensorBoard writer.
    """

    def __init__(self, path: Path, *, enabled: bool = True, tensorboard: Path | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.tensorboard_dir = Path(tensorboard) if tensorboard is not None else None
        self._tensorboard: TensorBoardLog | None = None
        self._continues_after = 0  # the step truncate_after kept the log up to
        if enabled and tensorboard is not None:
            require_extra("tensorboard", "train.tensorboard: true")  # refused before training

    def write(self, kind: str, record: dict) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "time": round(time.time(), 3)} | record
        with _stop_on_os_error(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.tensorboard_dir is not None and kind in SCALAR_KINDS:
            self._scalars().write(record)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from);
        TensorBoard hides its events past `step` too (`TensorBoardLog`'s purge step)."""
        self._continues_after = step
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        try:
            with atomic_write(self.path) as f:
                f.write("".join(json.dumps(r) + "\n" for r in kept))
        except OutputError as exc:
            raise TrainingError(str(exc)) from exc

    def _scalars(self) -> TensorBoardLog:
        if self._tensorboard is None:
            self._tensorboard = TensorBoardLog(
                self.tensorboard_dir, purge_step=self._continues_after + 1
            )
        return self._tensorboard

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# The record kinds whose numbers are TensorBoard scalars; a "resume" record marks an event.
SCALAR_KINDS = ("train", "valid")
# Record fields that are no measurement: the x axis, and the wall clock TensorBoard has.
_NOT_SCALARS = ("kind", "step", "time")


class TensorBoardLog:
    """metrics.jsonl's numbers as TensorBoard scalars, tag `<kind>/<key>` (train/loss,
    valid/bleu, ...) at global step `step`, through `torch.utils.tensorboard`.

    A resumed run writes a new event file in the same directory, starting with
    `purge_step` = the resumed update + 1: TensorBoard's readers drop the events an earlier
    session wrote at or past it (updates the run redoes after a crash), as `truncate_after`
    drops those records from metrics.jsonl, so no step is shown twice.
    """

    def __init__(self, log_dir: Path, *, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        with _stop_on_os_error(log_dir):
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, record: dict) -> None:
        kind, step = record["kind"], record["step"]
        with _stop_on_os_error(Path(self.writer.log_dir)):
            for key, value in record.items():
                if key not in _NOT_SCALARS and _is_number(value):
                    self.writer.add_scalar(
                        f"{kind}/{key}", value, global_step=step, walltime=record["time"]
                    )
            self.writer.flush()  # once per record: a crash loses no logged scalar

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def _stop_on_os_error(path: Path):
    """A full disk (or a read-only run directory) stops training with one clear message
    instead of a traceback; the last checkpoint is intact and a rerun resumes from it."""
    try:
        yield
    except OSError as exc:
        raise TrainingError(f"cannot write {path}: {exc.strerror or exc}") from exc


# Keys whose values `nmt plot` and resume compute with: numbers when present.
_NUMERIC_KEYS = ("time", "elapsed_s", "loss", "nll", "ppl", "bleu")


def read_metrics(path: Path) -> list[dict]:
    """The well-formed records of a metrics.jsonl, in order.

    A malformed line (cut short by a crash, not JSON, not UTF-8, not an object, a step that
    is no integer, a non-numeric loss) is skipped and counted in one warning on stderr, for
    `nmt plot` and for resume alike: the log is a record of training, not its state (the
    checkpoint is), so a torn line must cost neither the plot of every other record nor the
    training that resuming continues. Resume rewrites the log without the skipped lines.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    records, skipped = [], []
    for number, raw in enumerate(data.splitlines(), start=1):
        record = _parse_record(raw)
        if record is None:
            if raw.strip():
                skipped.append(number)
            continue
        records.append(record)
    if skipped:
        print(
            f"warning: {path}: skipped {len(skipped)} malformed lines "
            f"(the first is line {skipped[0]})",
            file=sys.stderr,
        )
    return records


def _parse_record(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        return None
    step = record.get("step")
    if type(step) is not int or step < 0:
        return None
    for key in _NUMERIC_KEYS:
        value = record.get(key, 0)
        if not _is_number(value):
            return None
    return record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

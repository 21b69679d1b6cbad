"""Where and how computation runs: device, precision, seeding, threads, distributed set-up.

Distributed runs are launched with `torchrun`; its environment variables (RANK, WORLD_SIZE,
LOCAL_RANK) switch on DistributedDataParallel. The same config runs on 1 or N processes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import resource
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from nmt.errors import DistributedError, NmtError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def choose_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NmtError(
            f"train.device is {requested!r} but no CUDA GPU is available; use cpu or auto"
        )
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def choose_precision(requested: str, device: torch.device, *, key: str = "train.precision") -> str:
    """auto: bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU.

    `key` names the setting in errors (train.precision, or decode.precision for translation).
    """
    if requested not in PRECISIONS:
        raise NmtError(f"{key} {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            raise NmtError(f"{key} {requested} needs a GPU; use fp32 or auto on CPU")
        return "fp32"
    if requested == "auto":
        return "bf16" if _native_bf16(device) else "fp16"
    return requested


def _native_bf16(device: torch.device) -> bool:
    """Whether the GPU `device` computes bf16 in hardware (Ampere and newer). torch's check
    says yes by default where bf16 is only emulated (V100, T4), slower there than fp16."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def setup_runtime(*, device: str = "auto", precision: str = "auto", threads: int = 0) -> Runtime:
    """Pick device and precision; join the process group when launched by torchrun."""
    if threads > 0:
        torch.set_num_threads(threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = choose_device(device)
    if chosen.type == "cuda" and world_size > 1:
        chosen = torch.device("cuda", local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        # TF32 matmuls for the fp32 parts: same convergence, several times faster on Ampere+.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world_size > 1 and not dist.is_initialized():
        _join_process_group("nccl" if chosen.type == "cuda" else "gloo", rank, world_size)
    return Runtime(chosen, choose_precision(precision, chosen), rank, world_size, local_rank)


def _join_process_group(backend: str, rank: int, world_size: int) -> None:
    """init_process_group, with a failed rendezvous (the port taken, rank 0 unreachable or
    never started) reported as one DistributedError line instead of torch's traceback."""
    try:
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=dist_timeout_seconds())
        )
    except (RuntimeError, ValueError) as exc:  # torch.distributed.DistError is a RuntimeError
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(
            f"rank {rank} of {world_size} could not join the other training processes at "
            f"{where} (MASTER_ADDR:MASTER_PORT): {_first_line(str(exc))}; start every "
            f"process with the same address and a free port, e.g. torchrun "
            f"--nproc-per-node {world_size} --master-port <free port> ..."
        ) from None


def dist_timeout_seconds() -> float:
    """How long a collective waits for the other processes before failing (NMT_DIST_TIMEOUT,
    default 10 min). A dead peer is noticed at once (its sockets close); this bounds the wait
    for a frozen one. It must exceed the longest legitimate wait, e.g. rank 0 validating."""
    text = os.environ.get("NMT_DIST_TIMEOUT", "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise NmtError(f"NMT_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return seconds


# How gloo and NCCL report, as plain RuntimeErrors, that a peer's connection closed or that a
# collective timed out.
_BACKEND_MARKERS = ("gloo", "NCCL", "ProcessGroup", "c10d")
_TIMEOUT_MARKERS = ("timed out", "timeout")


@contextlib.contextmanager
def peer_failures_reported(runtime: Runtime):
    """Turn a collective that failed because another process died or froze into one
    DistributedError line, instead of a long gloo/NCCL traceback from every survivor."""
    try:
        yield
    except RuntimeError as exc:
        if not (runtime.distributed and _is_collective_failure(exc)):
            raise
        # torchrun SIGTERMs the survivors of a dead worker, racing this error: the process is
        # stopping anyway, so the signal must not kill it before its one-line message is out.
        if threading.current_thread() is threading.main_thread():  # else signal() raises
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise DistributedError(_peer_failure_message(runtime, exc)) from None


def _is_collective_failure(exc: RuntimeError) -> bool:
    return isinstance(exc, dist.DistError) or any(m in str(exc) for m in _BACKEND_MARKERS)


def _peer_failure_message(runtime: Runtime, exc: RuntimeError) -> str:
    reason = _backend_reason(str(exc))
    who = f"rank {runtime.rank} of {runtime.world_size}"
    resume = "run the same command again to resume from the last checkpoint"
    if any(m in reason.lower() for m in _TIMEOUT_MARKERS):
        return (
            f"{who}: another training process stopped responding (no answer in "
            f"{dist_timeout_seconds():g} s, NMT_DIST_TIMEOUT); it may be hung or stopped: "
            f"see its log; {resume} ({reason})"
        )
    return (
        f"{who} lost contact with another training process, which probably died or was "
        f"killed: see its log; {resume} ({reason})"
    )


def _backend_reason(text: str) -> str:
    """The first sentence of a backend message, without its `[source.cc:123] ` prefix."""
    return _first_line(text).split(". ", 1)[0].rstrip(".")


def _first_line(text: str) -> str:
    """The first line of a backend message, without its `[source.cc:123] ` prefix."""
    first = text.strip().splitlines()[0] if text.strip() else "no details"
    if first.startswith("[") and "] " in first:
        first = first.split("] ", 1)[1]
    return first.rstrip(".")


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

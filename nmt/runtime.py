"""Where and how computation runs: device, precision, seeding, threads, distributed set-up.

Distributed runs are launched with `torchrun`; its environment variables (RANK, WORLD_SIZE,
LOCAL_RANK) switch on DistributedDataParallel. The same config runs on 1 or N processes.

The one home of device and precision choice: `train.device`, `--device` of translate and
evaluate, and anything else that takes a device resolve it here (`resolve_device`).
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

from nmt.config import DEVICE, ExperimentConfig
from nmt.errors import ConfigError, DistributedError, NmtError


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


def resolve_device(requested: str | torch.device, *, key: str = "device") -> torch.device:
    """The device named by a setting (`key` names it in errors): `auto` is the GPU where
    there is one, else the CPU; `cpu`, `cuda` and `cuda:N` must be usable on this machine.
    torch knows more device types (meta, mps, xpu, ...) that nmt's models never run on:
    refused here, as names that are not devices are."""
    text = str(requested)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE.matches(text):
        raise NmtError(f"{key} {text!r}: expected {DEVICE.allowed}")
    device = torch.device(text)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise NmtError(f"{key} {text!r}: {_no_gpu_reason()}; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise NmtError(f"{key} {text!r}: there are {count} GPUs, cuda:0 to cuda:{count - 1}")
    return device


def _no_gpu_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is built without CUDA"
    return "no CUDA GPU is available"


def choose_precision(requested: str, device: torch.device, *, key: str = "train.precision") -> str:
    """auto: bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU. `requested` is
    one of `Precision`, checked where it entered; `key` names the setting in errors
    (train.precision, or decode.precision for translation)."""
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
    launch = launch_from_environment()
    chosen = resolve_device(device, key="train.device")
    if chosen.type == "cuda" and launch.world_size > 1:
        chosen = _local_gpu(launch.local_rank)
    precision = choose_precision(precision, chosen)
    if threads > 0:
        torch.set_num_threads(threads)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        # TF32 matmuls for the fp32 parts: same convergence, several times faster on Ampere+.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if launch.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        _join_process_group(backend, launch.rank, launch.world_size)
    return Runtime(chosen, precision, launch.rank, launch.world_size, launch.local_rank)


@dataclass(frozen=True)
class Launch:
    """Where this process is in a torchrun launch (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def launch_from_environment(env: dict[str, str] | None = None) -> Launch:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT), checked before anything uses them: one line per bad one, in one error."""
    env = os.environ if env is None else env
    problems: list[str] = []
    world = _env_int(env, "WORLD_SIZE", 1, 1, problems)
    rank = _env_int(env, "RANK", 0, 0, problems)
    local_rank = _env_int(env, "LOCAL_RANK", 0, 0, problems)
    local_world = _env_int(env, "LOCAL_WORLD_SIZE", None, 1, problems)
    if world is not None and rank is not None and rank >= world:
        problems.append(f"RANK={rank} must be below WORLD_SIZE={world}")
    if local_world is not None and local_rank is not None and local_rank >= local_world:
        problems.append(f"LOCAL_RANK={local_rank} must be below LOCAL_WORLD_SIZE={local_world}")
    if (world or 1) > 1:
        port = _env_int(env, "MASTER_PORT", None, 1, problems)
        if port is not None and port > 65535:
            problems.append(f"MASTER_PORT={port} is not a port; expected 1 to 65535")
        if "MASTER_ADDR" in env and not env["MASTER_ADDR"].strip():
            problems.append("MASTER_ADDR is empty; expected a host name or address")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DistributedError(f"invalid torchrun environment variables:\n{lines}")
    return Launch(rank or 0, world or 1, local_rank or 0)


def _env_int(env, name: str, default: int | None, lo: int, problems: list[str]) -> int | None:
    text = env.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip()) if len(text) < 20 else None
    except ValueError:
        value = None
    if value is None or value < lo:
        problems.append(f"{name}={text[:40]!r}: expected an integer >= {lo}")
        return None
    return value


def _local_gpu(local_rank: int) -> torch.device:
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(
            f"LOCAL_RANK={local_rank} but this machine has {count} GPUs; start at most "
            f"{count} processes per node (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", local_rank)


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
    if not 0 < seconds <= 10**9:  # NaN, inf (timedelta overflows) and negatives refused
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


def estimated_parameters(cfg: ExperimentConfig) -> int:
    """Parameters of the Transformer `cfg` builds (weights and biases; LayerNorms left out),
    counting the position tables, which take memory as parameters do. D = d_model,
    F = ffn_dim, V = data.vocab_size per side:
        encoder layer 4 D^2 + 2 D F, decoder layer 8 D^2 + 2 D F (self and cross attention),
        one V x D matrix per embedding not shared and per output projection not tied."""
    m, v = cfg.model, cfg.data.vocab_size
    d, f = m.d_model, m.ffn_dim
    matrices = 1 + (not m.share_embeddings) + (not m.tie_output)
    layers = m.encoder_layers * (4 * d * d + 2 * d * f) + m.decoder_layers * (8 * d * d + 2 * d * f)
    return matrices * v * d + layers + 2 * m.max_positions * d


def check_fits_in_memory(cfg: ExperimentConfig, *, source: str | None = None) -> None:
    """Refuse (`ConfigError`, the config file named by `source`) sizes this machine cannot
    allocate at all: float32 weights beyond its memory (training needs about four times as
    much: gradients and two Adam moments), or the float32 logits of one full training batch
    (train.max_tokens x data.vocab_size) beyond it. Called before prepare and training."""
    memory = _physical_memory_bytes()
    if memory is None:
        return
    have = f"more than this machine's {memory / 2**30:.1f} GiB of memory"
    problems = []
    weights = 4 * estimated_parameters(cfg)
    if weights > memory:
        m = cfg.model
        problems.append(
            f"model sizes (d_model {m.d_model}, ffn_dim {m.ffn_dim}, {m.encoder_layers}+"
            f"{m.decoder_layers} layers, max_positions {m.max_positions}, data.vocab_size "
            f"{cfg.data.vocab_size}) give about {estimated_parameters(cfg):.3g} parameters, "
            f"{weights / 2**30:.1f} GiB of float32 weights: {have}"
        )
    logits = 4 * cfg.train.max_tokens * cfg.data.vocab_size
    if logits > memory:
        problems.append(
            f"train.max_tokens ({cfg.train.max_tokens}) x data.vocab_size "
            f"({cfg.data.vocab_size}) float32 logits of one batch take "
            f"{logits / 2**30:.1f} GiB: {have}"
        )
    if problems:
        raise ConfigError(problems, source)


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None

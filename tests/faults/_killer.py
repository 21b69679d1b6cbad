"""Run the `nmt` CLI with one fault injected, for the fault tests (no hook in nmt itself).

    python tests/faults/_killer.py train CONFIG OVERRIDES...     (the arguments of `nmt`)

`NMT_TEST_FAULT` says what goes wrong, counting events from the start of this process:

    update:K          SIGKILL right after the K-th update's optimizer step (before its
                      logging, validation and saving)
    write:K:B         SIGKILL while the K-th checkpoint file is written, after B bytes of it
                      have reached the disk (its temporary file is left half-written)
    rename:K          SIGKILL just before the K-th rename of a complete temporary file onto
                      a checkpoint name (step_<N>.pt, last.pt, best.pt)
    link:K            SIGKILL just before the K-th hard link of a step file as last.pt/best.pt
    metrics:K         SIGKILL in the middle of the K-th metrics.jsonl record (half a line)
    enospc:K:B        the K-th checkpoint write fails with ENOSPC after B bytes (a full disk)
    enospc-metrics:K  the K-th metrics.jsonl record fails with ENOSPC
    fsize:N           no file may grow past N bytes (RLIMIT_FSIZE): a real error of the
                      kernel (EFBIG, "File too large") on every write past it, no patching

The faults are installed by patching what nmt calls (the module-global `open` of the
checkpoint and metrics modules, `os.replace`, `os.link`, `Trainer._after_update`), so the
product code runs unchanged. SIGKILL is what a crash, the OOM killer or a lost machine does:
no handler, no `finally`, no flush.

    python tests/faults/_killer.py --serve

is a fork server for the tests: it imports torch and nmt once (seconds on a busy machine),
then for each JSON request on stdin ({"args", "cwd", "env", "fault", "stdout", "stderr"})
forks a child that runs `nmt ARGS` with that fault, and answers {"pid": ...} at once and
{"returncode": ...} (negative: the signal) when the child is gone. A child is a real,
separate process running the real CLI, which a test can SIGKILL; it only skips the imports.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path

from nmt import checkpoint as checkpoint_module
from nmt.training import metrics as metrics_module
from nmt.training.trainer import Trainer


def die() -> None:
    """What a crash does: the process is gone at once, buffers and all."""
    os.kill(os.getpid(), signal.SIGKILL)


def no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class Countdown:
    """Counts events of one kind; `hit()` is true exactly at the K-th."""

    def __init__(self, k: int):
        self.k = k
        self.seen = 0

    def hit(self) -> bool:
        self.seen += 1
        return self.seen == self.k


class FaultyFile:
    """A file whose writes stop after `budget` bytes: then `fail` runs (it kills or raises).

    The bytes before the fault are flushed to the OS first, so a killed writer leaves the
    partly written file a real crash would.
    """

    def __init__(self, f, budget: int, fail):
        self._f = f
        self._budget = budget
        self._fail = fail

    def write(self, data) -> int:
        data = bytes(data) if not isinstance(data, str) else data
        if len(data) < self._budget:
            self._budget -= len(data)
            return self._f.write(data)
        self._f.write(data[: self._budget])
        self._f.flush()
        self._fail()
        raise AssertionError("unreachable: the fault kills or raises")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def fault_on_open(module, k: int, budget: int, fail) -> None:
    """The K-th file that `module` opens fails after `budget` bytes: `fail(path)` runs."""
    countdown = Countdown(k)

    def faulty_open(path, *args, **kwargs):
        f = open(path, *args, **kwargs)  # noqa: SIM115 (the caller closes it)
        if countdown.hit():
            return FaultyFile(f, budget, lambda: fail(path))
        return f

    module.open = faulty_open  # found before the builtin by the module's own code


def kill_before(name: str, k: int, wanted) -> None:
    """SIGKILL before the K-th call of `os.<name>(src, dst)` for which `wanted(dst)` holds."""
    original = getattr(os, name)
    countdown = Countdown(k)

    def patched(src, dst, *args, **kwargs):
        if wanted(Path(dst)) and countdown.hit():
            die()
        return original(src, dst, *args, **kwargs)

    setattr(os, name, patched)


def is_checkpoint_temporary(path: Path) -> bool:
    """`os.replace(tmp, <checkpoint>)`: the destination is a checkpoint name."""
    return path.suffix == ".pt"


def kill_after_update(k: int) -> None:
    """SIGKILL after the optimizer step of this process's K-th update, before its logging,
    validation and saving."""
    original = Trainer._after_update
    countdown = Countdown(k)

    def after_update(self, stats, window, validations):
        if countdown.hit():
            die()
        original(self, stats, window, validations)

    Trainer._after_update = after_update


def raise_(error: Exception) -> None:
    raise error


def install(spec: str) -> None:
    kind, *args = spec.split(":")
    numbers = [int(a) for a in args]
    if kind == "update":
        kill_after_update(numbers[0])
    elif kind == "write":
        fault_on_open(checkpoint_module, numbers[0], numbers[1], lambda path: die())
    elif kind == "enospc":
        fault_on_open(checkpoint_module, numbers[0], numbers[1], lambda p: raise_(no_space(p)))
    elif kind == "rename":
        kill_before("replace", numbers[0], is_checkpoint_temporary)
    elif kind == "link":
        kill_before("link", numbers[0], lambda dst: True)
    elif kind == "metrics":
        # A record is ~300 bytes: 40 is well inside the line.
        fault_on_open(metrics_module, numbers[0], 40, lambda path: die())
    elif kind == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of the process
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (numbers[0], hard))
    elif kind == "enospc-metrics":
        fault_on_open(metrics_module, numbers[0], 0, lambda p: raise_(no_space(p)))
    else:
        raise SystemExit(f"_killer.py: unknown fault {spec!r}")


def run_nmt(args: list[str], fault: str) -> int:
    """`nmt ARGS` in this process, with `fault` installed; returns the exit status."""
    if fault:
        install(fault)
    from nmt.cli import main as nmt_main

    sys.argv = ["nmt", *args]
    try:
        nmt_main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def warm_up() -> None:
    """Import what `nmt train` / `nmt translate` import, without running any kernel (so no
    thread pool exists yet and forking stays safe)."""
    import torch._dynamo  # noqa: F401  (imported lazily by the first optimizer: seconds)

    import nmt.cli  # noqa: F401
    import nmt.decoding.stream  # noqa: F401
    import nmt.pipeline.run  # noqa: F401


def redirect(fd: int, path: str, flags: int) -> None:
    target = os.open(path, flags, 0o644)
    os.dup2(target, fd)
    os.close(target)


def child(request: dict) -> None:
    """The forked child: becomes `nmt ARGS` in request["cwd"]; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        redirect(0, os.devnull, os.O_RDONLY)  # never read the server's requests
        redirect(1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        redirect(2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        code = run_nmt(request["args"], request["fault"])
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    warm_up()
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        reply({"returncode": os.waitstatus_to_exitcode(status)})


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        raise SystemExit(run_nmt(sys.argv[1:], os.environ.get("NMT_TEST_FAULT", "")))


if __name__ == "__main__":
    main()

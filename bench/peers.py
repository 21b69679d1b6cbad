"""The peers' virtual environment (transformers, CTranslate2) and how to run code inside it.

Peers are what users would pick instead of nmt; they are never dependencies of nmt. They live
in their own venv, `bench/.venvs/peers` (git-ignored), created on first use with the same torch
version as nmt's venv, so that both sides run the same kernels. Code for a peer runs in that
venv's Python, in a subprocess that speaks JSON, one object per line:

    python bench/peers.py                  # create or update the venv, print its versions

    with PeerWorker(BENCH / "marian_peer.py") as peer:     # long-lived, for A B A B timing
        peer.call("versions")                              # -> {"torch": ..., ...}
    run_peer_script(BENCH / "some_script.py", {"x": 1})    # one-shot: payload in, JSON out

This module uses only the standard library: the peer side imports `serve` from it as well.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".venvs" / "peers"
PEER_PACKAGES = ("transformers", "ctranslate2", "sentencepiece", "protobuf")
# nmt.memory's THP_VARIABLE and KEEP_FREED_MEMORY_ENV, spelled out: this module also runs in
# the peer venv, without nmt (tests/bench checks that they agree).
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"
KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**64 - 1)}
_STAMP = "nmt-bench-stamp.json"  # what the venv was built with; a change rebuilds it


class PeerError(RuntimeError):
    """The peer venv could not be built, or a peer call failed (the message says which)."""


# --------------------------------------------------------------------------- the venv


def torch_requirement() -> str:
    """`torch==X.Y.Z` for nmt's torch, without the local label (+cpu, +cu124).

    pip then prefers the local wheel of the same version (a local label sorts higher), so on a
    machine with a wheelhouse nothing large is downloaded.
    """
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def peer_python(venv_dir: Path = PEER_VENV) -> Path:
    return venv_dir / "bin" / "python"


def ensure_peer_venv(
    venv_dir: Path = PEER_VENV,
    *,
    packages: tuple[str, ...] = PEER_PACKAGES,
    log: TextIO = sys.stderr,
) -> Path:
    """Create (or reuse) a peer venv; returns its Python. Installs torch first, then `packages`
    (requirement strings; bakeoff.py pins whole toolkits into venvs of their own).

    Reused when its stamp records the same torch requirement and package list; otherwise
    (re)installed. Raises PeerError with pip's last output lines if an install fails.
    """
    python = peer_python(venv_dir)
    wanted = {"torch": torch_requirement(), "packages": list(packages)}
    stamp = venv_dir / _STAMP
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    if not python.exists():
        print(f"creating the peer venv {venv_dir}", file=log)
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    # torch alone first: the peers' own torch requirement must not pull another build.
    _pip(python, [wanted["torch"]], log=log)
    _pip(python, [*packages, wanted["torch"]], log=log)
    stamp.write_text(json.dumps(wanted))
    return python


def _pip(python: Path, requirements: list[str], *, log: TextIO) -> None:
    print(f"pip install {' '.join(requirements)}", file=log)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PeerError(f"pip install {' '.join(requirements)} failed in the peer venv:\n{tail}")


# --------------------------------------------------------------------------- nmt's side


class PeerWorker:
    """A peer script kept running in the peer venv; `call` sends one request, waits, returns.

    The script must call `serve(handlers)`. Its stderr goes to ours (logs, warnings); its
    replies come on stdout. Timing is done inside the peer, so the pipe costs nothing.
    """

    def __init__(self, script: Path, *, python: Path | None = None, env: dict | None = None):
        self.script = Path(script)
        self.python = python or ensure_peer_venv()
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> PeerWorker:
        self.process = subprocess.Popen(
            [str(self.python), str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=str(BENCH),
        )
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is None:
            return
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def call(self, op: str, **args: Any) -> dict:
        """Run handler `op` with keyword arguments `args` in the peer; returns its dict."""
        assert self.process is not None, "use PeerWorker as a context manager"
        try:
            self.process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.process.stdin.flush()
        except OSError:  # the worker is gone (e.g. killed by a library it loaded)
            raise PeerError(
                f"{self.script.name} exited (code {self.process.poll()}) before {op}"
            ) from None
        line = self.process.stdout.readline()
        if not line:
            raise PeerError(f"{self.script.name} exited (code {self.process.poll()}) during {op}")
        reply = json.loads(line)
        if "error" in reply:
            raise PeerError(f"{self.script.name} {op} failed:\n{reply['error']}")
        return reply["result"]


def peer_allocator_env(as_nmt: bool) -> dict[str, str]:
    """The peer worker's CPU memory settings: PyTorch's and glibc's defaults, as the peers'
    users run them, or (a control run, `as_nmt`) those nmt's command line sets
    (nmt/memory.py): freed memory kept by glibc for reuse (no huge pages: on glibc nmt
    uses them only where it cannot keep freed memory)."""
    if not as_nmt:
        return {THP_VARIABLE: "0"}
    return {THP_VARIABLE: "0", **KEEP_FREED_MEMORY_ENV}


def allocator_record(nmt_settings: dict, *, peers_as_nmt: bool) -> dict:
    """What each side of a benchmark ran with (for the JSON record): `nmt_settings` is what
    nmt.memory.configure_cpu_memory returned."""
    return {"nmt": nmt_settings, "peers": peer_allocator_env(peers_as_nmt)}


def add_peer_arguments(parser: argparse.ArgumentParser, *, packages: str) -> None:
    """The peer options every benchmark with peers takes: --no-peers, --peers-python (an
    interpreter that has `packages`), --peers-nmt-allocator. See `open_peer_for`."""
    parser.add_argument("--no-peers", action="store_true", help="nmt alone (no peer venv)")
    parser.add_argument(
        "--peers-python",
        type=Path,
        default=None,
        help=f"an interpreter that has {packages}, instead of the peer venv (needed on a GPU "
        "machine, which cannot build it)",
    )
    parser.add_argument(
        "--peers-nmt-allocator",
        "--peers-huge-pages",  # its name before glibc's settings joined the huge pages
        dest="peers_nmt_allocator",
        action="store_true",
        help="control run: the peers also get the memory settings nmt's CLI makes "
        "(nmt/memory.py: glibc keeps freed memory)",
    )


def open_peer_for(args: argparse.Namespace, device: str) -> tuple[PeerWorker | None, str | None]:
    """`open_marian_peer` as the options of `add_peer_arguments` ask, for `device`."""
    return open_marian_peer(
        disabled="--no-peers" if args.no_peers else None,
        allocator_as_nmt=args.peers_nmt_allocator,
        python=args.peers_python,
        device=device,
    )


def open_marian_peer(
    *,
    disabled: str | None = None,
    allocator_as_nmt: bool = False,
    python: Path | None = None,
    device: str = "cpu",
) -> tuple[PeerWorker | None, str | None]:
    """The running marian_peer.py worker, or (None, why not): benchmarks then measure nmt
    alone and record the reason instead of failing.

    `disabled` is the reason to run no peer (e.g. "--no-peers"). `python` is an interpreter
    that already has the peers (`--peers-python`), used instead of building the peer venv:
    a GPU machine without the package registry has transformers but cannot build a venv,
    so on a GPU (`device` cuda) the peers run only with it.

    The peers run as their users run them, with PyTorch's and glibc's default memory
    settings, unless `allocator_as_nmt` (a control run: nmt's, see `peer_allocator_env`).
    """
    if disabled is None and device != "cpu" and python is None:
        disabled = "on a GPU the peers need --peers-python (no peer venv is built there)"
    if disabled is not None:
        return None, disabled
    env = peer_allocator_env(allocator_as_nmt)
    if python is not None and os.sep in str(python):
        # The worker starts in bench/: a path given from elsewhere is made absolute first (a
        # bare name such as python3 is looked up on PATH). Not resolved: a venv's python is a
        # link that must keep its own path to find its venv.
        python = Path(python).absolute()
    try:
        return PeerWorker(BENCH / "marian_peer.py", python=python, env=env).__enter__(), None
    except (PeerError, OSError) as exc:  # OSError: no such --peers-python
        print(f"peers unavailable, measuring nmt alone: {exc}", file=sys.stderr)
        return None, str(exc)


def run_peer_script(script: Path, payload: dict, *, python: Path | None = None) -> dict:
    """Run `script` once in the peer venv: `payload` as JSON on stdin, a JSON dict back.

    The script reads stdin and prints its result as the last line of stdout.
    """
    done = subprocess.run(
        [str(python or ensure_peer_venv()), str(script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=str(BENCH),
    )
    if done.returncode != 0:
        raise PeerError(f"{Path(script).name} failed (code {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the peer's side


def serve(handlers: dict[str, Callable[..., dict]]) -> None:
    """The peer's request loop: one JSON request per stdin line, one JSON reply per line.

    Libraries may print to stdout; the real stdout is kept for replies and `print` goes to
    stderr, so a stray line can never be taken for a reply.
    """
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": handlers[request["op"]](**request["args"])}
        except Exception:  # noqa: BLE001 - reported to the caller, who raises PeerError
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    python = ensure_peer_venv()
    code = (
        "import json, torch, transformers, ctranslate2, sentencepiece\n"
        "print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__,"
        " 'ctranslate2': ctranslate2.__version__, 'sentencepiece': sentencepiece.__version__}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    print(done.stdout.strip() or done.stderr)


if __name__ == "__main__":
    main()

"""Start the server: bind the port, load the model, run uvicorn until SIGTERM or Ctrl-C.

The port is bound before the model loads, so a port in use is refused at once; connections
are accepted only once uvicorn listens. On SIGTERM uvicorn stops accepting, lets the
requests in flight finish, and the app's shutdown drains the decoding thread.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable

from nmt.errors import NmtError
from nmt.serve.model import ServedModel


def bind(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NmtError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror})"
        ) from None
    return sock


def run_server(load: Callable[[], ServedModel], *, host: str, port: int, settings) -> None:
    """Bind, then `load()` the model, then serve until SIGTERM or Ctrl-C."""
    import uvicorn

    from nmt.serve.app import create_app

    sock = bind(host, port)
    model = load()
    app = create_app(model, settings)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=None
    )
    bound_port = sock.getsockname()[1]
    print(
        f"serving {model.name} ({model.source} -> {model.target}) on "
        f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}/",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn raises the signal it handled again once it has shut down gracefully, so that
    # the default action (death by SIGTERM) follows; a drained server exits 0 instead.
    signal.signal(signal.SIGTERM, _exit_after_drain)
    uvicorn.Server(config).run(sockets=[sock])
    print("stopped", file=sys.stderr, flush=True)


def _exit_after_drain(signum, frame) -> None:
    """SIGTERM once uvicorn has restored the handlers: the drain is done, nothing to do."""

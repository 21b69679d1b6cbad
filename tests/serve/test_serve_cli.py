"""`nmt serve` refusals: one `error:` line, exit 2, before anything listens."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from _cli import assert_clean_failure

pytest.importorskip("fastapi", reason="nmt serve needs the serve extra")


def test_a_missing_checkpoint_is_refused(cli_inline, tmp_path: Path):
    result = cli_inline("serve", tmp_path / "nope.pt", "--port", "0", "--device", "cpu")
    assert_clean_failure(result, "nope.pt")


def test_a_directory_is_refused_with_what_is_expected(cli_inline, tmp_path: Path):
    result = cli_inline("serve", tmp_path, "--port", "0", "--device", "cpu")
    assert_clean_failure(result, "is a directory", "checkpoint file", "--to ctranslate2")


def test_a_port_in_use_is_refused_before_the_model_loads(cli_inline, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The checkpoint does not even exist: the port is checked first, at once.
        result = cli_inline("serve", tmp_path / "x.pt", "--port", port, "--device", "cpu")
    assert_clean_failure(result, f"--port {port}", "Address already in use")


def test_an_empty_api_key_is_refused(cli_inline, tmp_path: Path):
    result = cli_inline("serve", tmp_path / "x.pt", "--api-key", "", "--port", "0")
    assert_clean_failure(result, "--api-key")


@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_an_unbounded_batch_wait_is_refused(cli_inline, tmp_path: Path, value):
    """Found broken: `--max-wait-ms inf` was accepted, the decoder thread died at its first
    wait (OverflowError: timestamp out of range) and every request then hung."""
    result = cli_inline("serve", tmp_path / "x.pt", "--max-wait-ms", value, "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "--max-wait-ms" in result.stderr and "Traceback" not in result.stderr

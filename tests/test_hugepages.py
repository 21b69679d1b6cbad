"""PyTorch's huge-page CPU allocation: on by default for the command line, set before torch
is imported (torch reads it once), and a user's own setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

from nmt.hugepages import THP_VARIABLE, enable_huge_pages


def test_on_by_default_and_the_users_value_wins(monkeypatch):
    monkeypatch.delenv(THP_VARIABLE, raising=False)
    enable_huge_pages()
    assert os.environ[THP_VARIABLE] == "1"
    monkeypatch.setenv(THP_VARIABLE, "0")
    enable_huge_pages()
    assert os.environ[THP_VARIABLE] == "0"


def test_the_command_line_sets_it_before_importing_torch():
    code = (
        "import os, sys; import nmt.cli; "
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != THP_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["1", "False"]

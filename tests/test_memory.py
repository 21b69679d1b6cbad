"""nmt's CPU memory settings (nmt/memory.py): PyTorch's huge-page allocation, on by default for
the command line and set before torch is imported (torch reads it once); glibc keeping freed
memory for reuse; and a user's own setting winning over both."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nmt.memory import (
    GLIBC_MALLOC_VARIABLES,
    KEEP_FREED_MEMORY_ENV,
    THP_VARIABLE,
    enable_huge_pages,
    keep_freed_memory,
)

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")

# A 64 MiB float32 tensor, freed, then one of the same size: the resident memory the free gave
# back to the kernel (MiB), and the page faults that touching the second one took. 64 MiB is
# above glibc's largest mmap threshold (32 MiB): by default it is unmapped when freed, and the
# next one arrives as fresh pages, each faulted in on first touch.
REFILL = textwrap.dedent(
    """
    import resource
    {setup}
    import torch

    def rss_mib():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS"))
        return int(line.split()[1]) / 1024

    x = torch.ones(16 * 2**20)
    before = rss_mib()
    del x
    returned = before - rss_mib()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.ones(16 * 2**20)
    print(returned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    """
)


def _refill(setup: str, **env: str) -> tuple[float, int]:
    """(MiB returned to the kernel by the free, faults of the refill) in a fresh process with
    the command line's huge-page setting, glibc's defaults unless `setup` or `env` say so."""
    clean = {k: v for k, v in os.environ.items() if k not in GLIBC_MALLOC_VARIABLES}
    clean.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", REFILL.format(setup=setup)],
        capture_output=True,
        text=True,
        env={**clean, THP_VARIABLE: "1", **env},
        check=True,
    )
    returned, faults = done.stdout.split()[-2:]
    return float(returned), int(faults)


def test_huge_pages_on_by_default_and_the_users_value_wins(monkeypatch):
    monkeypatch.delenv(THP_VARIABLE, raising=False)
    enable_huge_pages()
    assert os.environ[THP_VARIABLE] == "1"
    monkeypatch.setenv(THP_VARIABLE, "0")
    enable_huge_pages()
    assert os.environ[THP_VARIABLE] == "0"


def test_the_command_line_sets_huge_pages_before_importing_torch():
    code = (
        "import os, sys; import nmt.cli; "
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != THP_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["1", "False"]


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_freed_memory_is_kept_and_reused_without_faults():
    returned, faults = _refill("")
    assert returned > 60  # glibc's default: unmapped when freed...
    assert faults > 100  # ...and faulted in afresh (32 huge pages + 512 small, or 16384 small)
    returned, faults = _refill("from nmt.memory import keep_freed_memory\nkeep_freed_memory()")
    assert returned < 4 and faults < 100


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_the_command_line_keeps_freed_memory():
    returned, faults = _refill("import nmt.cli")
    assert returned < 4 and faults < 100


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_the_environment_form_is_the_same_policy():
    """KEEP_FREED_MEMORY_ENV (given to child processes such as a benchmark's peers) keeps
    freed memory as keep_freed_memory() does."""
    returned, faults = _refill("", **KEEP_FREED_MEMORY_ENV)
    assert returned < 4 and faults < 100


@pytest.mark.parametrize(
    "env",
    [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=8"}],
)
def test_a_users_own_malloc_setting_wins(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert keep_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_a_user_setting_leaves_glibc_as_configured():
    returned, _ = _refill("import nmt.cli", MALLOC_MMAP_THRESHOLD_=str(2**20))
    assert returned > 60

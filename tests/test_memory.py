"""nmt's CPU memory settings (nmt/memory.py): glibc keeping freed memory for reuse, PyTorch's
huge-page allocation as the fallback where it cannot (set before torch is imported: torch
reads it once), and a user's own setting winning over both."""

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

# A 64 MiB float32 tensor, freed, then a 60 MiB one (as the next batch's activations may be):
# the resident memory the free gave back to the kernel (MiB), and the page faults that touching
# the second one took. 64 MiB is above glibc's largest mmap threshold (32 MiB): by default it
# is unmapped when freed, and the next one arrives as fresh pages, each faulted in on first
# touch. (An exactly equal size can miss the freed block by the few bytes of slack an aligned
# allocation asks for.)
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
    y = torch.ones(15 * 2**20)
    print(returned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    """
)


def _refill(setup: str, **env: str) -> tuple[float, int]:
    """(MiB returned to the kernel by the free, faults of the refill) in a fresh process
    without huge pages, with glibc's defaults unless `setup` or `env` say otherwise."""
    clean = {k: v for k, v in os.environ.items() if k not in GLIBC_MALLOC_VARIABLES}
    clean.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", REFILL.format(setup=setup)],
        capture_output=True,
        text=True,
        env={**clean, THP_VARIABLE: "0", **env},
        check=True,
    )
    returned, faults = done.stdout.split()[-2:]
    return float(returned), int(faults)


def test_enable_huge_pages_sets_one_unless_the_user_set_a_value(monkeypatch):
    monkeypatch.delenv(THP_VARIABLE, raising=False)
    enable_huge_pages()
    assert os.environ[THP_VARIABLE] == "1"
    monkeypatch.setenv(THP_VARIABLE, "0")
    enable_huge_pages()
    assert os.environ[THP_VARIABLE] == "0"


def _cli_settings(**env: str) -> list[str]:
    """THP_MEM_ALLOC_ENABLE after `import nmt.cli`, and whether that imported torch."""
    code = (
        "import os, sys; import nmt.cli; "
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in GLIBC_MALLOC_VARIABLES}
    clean = {k: v for k, v in clean.items() if k not in (THP_VARIABLE, "GLIBC_TUNABLES")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_the_command_line_keeps_freed_memory_instead_of_huge_pages():
    assert _cli_settings() == ["None", "False"]


def test_huge_pages_are_the_fallback_set_before_torch_is_imported():
    """Where glibc is configured by the user (or is not glibc), huge pages are turned on, and
    before torch is imported, since torch reads the variable once."""
    assert _cli_settings(MALLOC_TRIM_THRESHOLD_="131072") == ["1", "False"]
    assert _cli_settings(MALLOC_TRIM_THRESHOLD_="131072", THP_MEM_ALLOC_ENABLE="0")[0] == "0"


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_freed_memory_is_kept_and_reused_without_faults():
    returned, faults = _refill("")
    assert returned > 60  # glibc's default: unmapped when freed...
    assert faults > 10_000  # ...and faulted in afresh: 15360 pages of 4 KiB
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

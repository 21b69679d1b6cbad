"""How nmt's process allocates CPU memory: glibc keeps freed memory for reuse, or, where it
cannot, PyTorch backs large tensors with huge pages. Set once, before torch allocates
(`configure_cpu_memory`).

Every training update allocates the same large tensors again (activations of tens of MB, the
[tokens x V] logits of a hundred or more) and frees them at its end. By default glibc gives
each allocation above 32 MiB (its largest mmap threshold) fresh pages from the kernel and
unmaps them when freed, and trims the heap's freed top back to the kernel: every update then
faults in and zeroes its activations again: on the 2-core benchmark machine a `base` update
took 136,082 page faults that way and 2 with freed memory kept (`bench/memory_settings.py`,
in docs/benchmarks.md).

* Freed memory kept: glibc serves every allocation from its heap (M_MMAP_MAX = 0, no mmap)
  and never trims the heap (M_TRIM_THRESHOLD = -1), so the next update reuses the pages the
  last one freed, already faulted in. The process then holds its peak memory until it exits,
  which a training or decoding process reaches at every update anyway.
* Huge pages, the fallback: with THP_MEM_ALLOC_ENABLE=1 PyTorch aligns allocations of 2 MiB
  and more to 2 MiB and advises the kernel to back them with huge pages (MADV_HUGEPAGE), so
  fresh memory takes 512 times fewer faults. torch reads the variable once, at its first CPU
  allocation. With freed memory kept they bring no further speed and hold more memory
  (fragments of 2 MiB alignment), so they are only the fallback where glibc cannot keep it.

Measured on CPU training: see docs/benchmarks.md. A user's own setting wins: with any of
glibc's MALLOC_*_ variables or malloc tunables (GLIBC_TUNABLES=glibc.malloc...) set, glibc is
left as configured; THP_MEM_ALLOC_ENABLE, when set, is never changed. Where the C library is
not glibc, or the kernel has no transparent huge pages, that part changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"
# glibc's mallopt parameters (malloc.h) and the environment variables that set them at startup.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
GLIBC_MALLOC_VARIABLES = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
)
# A trim threshold of -1 turns trimming off (mallopt(3)); glibc stores it as SIZE_MAX.
NEVER_TRIM = -1
# The same policy as environment variables, for a child process (e.g. a benchmark's peer).
KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**64 - 1)}


def configure_cpu_memory() -> dict[str, str | bool | None]:
    """Freed memory kept, else huge pages, as the command line runs; call before torch
    allocates.

    Returns the settings in effect (for benchmark records): whether glibc keeps freed memory,
    and THP_MEM_ALLOC_ENABLE's value (None: unset, PyTorch's default, no huge pages).
    """
    kept = keep_freed_memory()
    if not kept:
        enable_huge_pages()
    return {"keep_freed_memory": kept, THP_VARIABLE: os.environ.get(THP_VARIABLE)}


def enable_huge_pages() -> None:
    """Ask PyTorch to back large CPU tensors with huge pages, unless the user said otherwise."""
    os.environ.setdefault(THP_VARIABLE, "1")


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring). Returns whether the
    policy is now in effect: False off Linux, off glibc, or where the user set their own."""
    if _user_configured_malloc() or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (e.g. musl has no such symbol to find)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; set the trim threshold first, so that a libc refusing
    # it never leaves mmap switched off alone.
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)) and bool(mallopt(M_MMAP_MAX, 0))


def _user_configured_malloc() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc.malloc." in tunables or any(v in os.environ for v in GLIBC_MALLOC_VARIABLES)

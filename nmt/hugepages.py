"""Transparent huge pages for PyTorch's CPU tensors, switched on before torch allocates.

PyTorch's CPU allocator gets large tensors from glibc, which maps every allocation above
32 MiB afresh from the kernel and unmaps it when freed. Each training step's activations and
logits thus arrive as new 4 KiB pages, each faulted in and zeroed on first touch: on the
2-core benchmark machine, `x - c` into a new [4096, 10000] float32 tensor took 72 ms, and 22
ms with huge pages (in place, with no allocation: 9 ms). With THP_MEM_ALLOC_ENABLE=1
PyTorch aligns allocations of 2 MiB and more to 2 MiB and advises the kernel to back them
with huge pages (MADV_HUGEPAGE): 512 times fewer faults. Measured on CPU training: see
docs/benchmarks.md.

torch reads the variable once, at its first CPU allocation, so `enable_huge_pages` must
run before that: the command line calls it before it imports torch, and so do the
benchmarks. A value the user set (THP_MEM_ALLOC_ENABLE=0 turns it off) is kept. Where the
kernel has no transparent huge pages the advice is ignored.
"""

from __future__ import annotations

import os

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> None:
    """Ask PyTorch to back large CPU tensors with huge pages, unless the user said otherwise."""
    os.environ.setdefault(THP_VARIABLE, "1")

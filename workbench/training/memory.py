"""Keeps a CPU training run's resident memory near what it really holds.

glibc serves allocations under its mmap threshold from the heap, and that threshold grows by
itself (up to 32 MiB) as large blocks are freed.  A training step allocates and frees thousands
of activation buffers of a few MiB each; once they live in the heap they fragment it and are
never given back, so the process kept 4-5 GiB resident for 1.5 GiB of live tensors (measured
on a 4,096-token conversation with SmolLM2-135M).  Fixing the threshold makes every buffer of
1 MiB or more its own mapping, returned to the system when freed.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter (malloc.h)
THRESHOLD = 1 << 20            # buffers from 1 MiB up: mapped, and unmapped when freed


def return_freed_buffers(threshold: int = THRESHOLD) -> bool:
    """Ask glibc to map large buffers on their own (fixed threshold); False where the C library
    is not glibc or refuses (nothing changes then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1


def available_bytes(device: str) -> int:
    """Memory a training run can take here: free GPU memory on CUDA, else the system's available
    memory (what can be had without swapping)."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)

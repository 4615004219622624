"""Allocator tuning for the application (the CLI and the benchmarks call it; libraries never do).

PyTorch on the CPU allocates every temporary with ``malloc``. With glibc's defaults, blocks
above the dynamic mmap threshold are mapped fresh from the kernel and unmapped on free, and the
heap top is trimmed back to the kernel, so an iterative solver whose temporaries are a few MB to
tens of MB pays page faults on every iteration: measured here, one Wirtinger-flow iteration on
``(8, 4, 256, 256)`` complex64 stacks took ≈ 3× the bare ``fft2``+``ifft2`` pair, ≈ 1.6× with the
settings below (``benchmarks/solvers.py``). :func:`tune_allocator` raises the mmap threshold to
its glibc maximum (32 MiB on 64-bit) and the trim threshold to 512 MiB, so freed blocks are
reused. The cost: the process keeps up to that much freed memory instead of returning it.

No-op off glibc; ``PHASEFORGE_MALLOC_TUNING=0`` disables it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 * 2 ** 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_TRIM_THRESHOLD_BYTES = 512 * 2 ** 20
_done = None


def tune_allocator() -> bool:
    """Apply the glibc malloc thresholds once per process; returns whether they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("PHASEFORGE_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
    return _done

"""Process setting for the CLI's large numpy runs: keep freed large blocks in glibc's heap for reuse.

Scoring a million candidates makes thousands of 8 MB temporaries, one per array operation. By default glibc
serves blocks above its mmap threshold with mmap and returns them to the kernel on free, and trims the top of
the heap once more than M_TRIM_THRESHOLD of it is free, so the next temporary page-faults its ~2,000 pages
back in: on the 2-core development machine that is about a quarter of the scoring time
(`python benchmarks/bench_cost_model.py` prints the time with the default allocator and with this setting).

mallopt(3), glibc malloc/malloc.c: M_MMAP_THRESHOLD set to its largest value (DEFAULT_MMAP_THRESHOLD_MAX,
4 MiB x sizeof(long) = 32 MiB on 64-bit) puts arrays below it on the heap; M_TRIM_THRESHOLD of 1 GiB keeps up
to that much freed heap for the next temporaries. The cost is memory the process keeps until it exits (at most
the trim threshold beyond its peak). Only the CLI calls this, for its own process: importing planner as a
library changes nothing. Other C libraries (musl, macOS, Windows) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Apply the setting where the C library is glibc; True when it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has mallopt as a no-op stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))

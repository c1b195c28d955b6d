"""Allocator settings for the ``headend`` process (glibc ``mallopt``).

The pipeline works on column arrays of millions of rows: a 2 M-row batch's key column
alone is 16 MB, and each stage makes a few such temporaries. glibc serves allocations
above its mmap threshold (at most 32 MB, adjusted dynamically) with a fresh ``mmap`` and
returns them with ``munmap`` when freed, so every temporary costs a page fault per
4 KiB page, paid as system time: about a third of the CPU time of a default
``headend ingest`` of a week of reads (docs/benchmarks.md). Raising the mmap and trim
thresholds to 1 GiB makes freed blocks stay in the heap and be reused by the next batch.
The process keeps up to the trim threshold of free heap (its resident memory stays near
its peak instead of shrinking between batches).

Set ``HEADEND_MALLOC_TUNING=0`` to keep glibc's defaults. Elsewhere than glibc (musl,
macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Final

__all__ = ["THRESHOLD_BYTES", "tune"]

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
#: mmap and trim threshold [bytes]
THRESHOLD_BYTES: Final = 1 << 30


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds; whether it was done."""
    if os.environ.get("HEADEND_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, THRESHOLD_BYTES))

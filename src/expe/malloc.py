"""glibc's allocator, tuned for training loops that free and reallocate the same large tensors.

By default glibc serves blocks above its mmap threshold (128 KiB, raised dynamically up to 32 MiB)
with fresh mmap()s and gives the top of the heap back to the system above its trim threshold; each
step's multi-megabyte activations and logits then return as new pages that the kernel must fault in
and zero again. Holding freed memory in the heap instead made a cpu-small training step about 1.3x
faster (bench/train_speed.py, docs/performance.md). Torch-free; a no-op where the C library is not
glibc, and when EXPE_MALLOC_TUNE=0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # never trim (an int); the memory is reused by the next step


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds for this process. True if applied."""
    if os.environ.get("EXPE_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))

"""Keep the process's memory near what it really holds while it ingests batch files.

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so after
the first few multi-MB lines every later one comes from the heap, which rarely shrinks:
the resident size then keeps the high-water mark of several lines at once. A fixed
threshold makes blocks above it mmapped and returned to the system when freed. Measured
with bench --only batch_ingest (docs/batch-mode.md). Linux/glibc only; a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024


def return_large_blocks() -> bool:
    """Fix glibc's mmap and trim thresholds; False where that is not possible."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    ok = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and ok
    log.debug("malloc thresholds fixed: %s", ok, extra={"action": "malloc_thresholds"})
    return ok

"""Process-wide allocator setting for CPU inference: keep freed memory instead of unmapping it.

glibc serves allocations above its mmap threshold (at most 32 MB) with fresh ``mmap`` calls and
returns them with ``munmap`` on free. A CPU forward pass allocates and frees activations of that
size for every batch, so each batch page-faults its working set in again: on 2 cores with the
packaged backbone at batch 16 (320x240 frames) 44 % of the CPU time went to the kernel and the
Inspector ran at 30 frames/s; with mmap off and trimming off it ran at 76-79 frames/s
(docs/benchmarks.md). Threads other than the main one allocate from their own mmap-backed
arenas by default, so the setting also keeps to one arena. GPU memory is managed by PyTorch's
caching allocator and is not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve everything from the heap and never give it back (idempotent).

    Returns False where the C library is not glibc (musl, macOS): nothing changes there.

    Call it before other threads allocate: arenas made earlier stay, and threads started later
    are spread over them. In a script whose OpenCV thread pool had allocated first, every second
    thread then inspected 12-25 % slower than the main thread (docs/benchmarks.md); a worker
    process creates its Inspector before any such thread, so its threads are all equal.
    """
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # one arena: threads started later (asyncio.to_thread runs the worker's model) share the main
    # heap instead of per-thread arenas, which are mmap-backed and page-fault the same way
    ok = all(
        mallopt(option, value) == 1
        for option, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))
    )
    _applied = ok
    if not ok:
        logger.debug("mallopt refused the settings; the allocator keeps its defaults")
    return ok

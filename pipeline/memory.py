"""How the stages that make many short-lived arrays of millions of rows (ingest, featurize) ask the
C library and the kernel for memory: both context managers change process-wide settings only while
the stage runs and restore them afterwards (Linux / glibc; no-ops elsewhere). Outputs never depend on
them (tests compare with and without)."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """Transparent huge pages off for this process while ingest or featurize runs (Linux; a no-op
    elsewhere).

    Both make dozens of short-lived arrays of millions of rows; numpy and Arrow's allocator ask for
    huge pages for them, and the kernel zeroes each fresh 2 MB page on first touch. On the reference
    machine that zeroing was a quarter of ingest's CPU time (``perf``: ``clear_page_erms``
    under ``do_huge_pmd_anonymous_page``); with 4 KB pages only what is touched is zeroed. Featurize at
    100,000 patients (two alternated rounds of 4 runs each, idle machine): median 4.98 s with huge pages,
    4.75 s without. The previous setting is restored afterwards."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        previous = prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0)
    except (AttributeError, OSError):
        previous = -1
    if previous < 0 or prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        yield
        return
    try:
        yield
    finally:
        prctl(_PR_SET_THP_DISABLE, previous, 0, 0, 0)


#: glibc ``mallopt`` parameters and their defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """While featurize runs, glibc's malloc serves every array from its heap and keeps what is freed
    for the next array, instead of mapping each array of more than 32 MB afresh and unmapping it when
    freed (glibc only; a no-op elsewhere).

    Featurize makes dozens of short-lived arrays of millions of rows (per-row codes, the cuts at each
    landmark, the gathered values of the drift summary); each fresh mapping is zeroed page by page on
    first touch. At 100,000 patients (bench_featurize, 3 repeats, alternated, load 2-3): median run
    9.8 and 10.9 s with it against 10.7 and 12.4 s without, peak RSS the same (3.3 GB). Afterwards the
    defaults are set again and the free heap is given back (``malloc_trim``), so a later run starts
    as cold as the first. Not re-entrant: leaving an inner one restores the defaults."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (AttributeError, OSError):
        mallopt = malloc_trim = None
    if mallopt is None or mallopt(_M_MMAP_MAX, 0) != 1:
        yield
        return
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # the largest int: free heap is not given back meanwhile
    try:
        yield
    finally:
        mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        malloc_trim(0)

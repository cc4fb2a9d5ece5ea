"""The process's memory as the operating system sees it (glibc only; elsewhere a no-op)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - glibc only
            _LIBC.mallopt  # noqa: B018
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def tune_allocator(
    arenas: int = 2, mmap_threshold: int = 4 << 20, trim_threshold: int = 8 << 20
) -> None:
    """Makes glibc's malloc give memory back. Call before threads start.

    Arenas: by default each thread that allocates may get its own (gRPC's pollers, the
    decision-log writer, the metrics server), and every arena keeps memory it once used; two
    are plenty for one event loop. Large blocks: glibc raises its mmap threshold (up to 32 MiB)
    each time a mapped block is freed, so after a few large requests every later one is carved
    from an arena that keeps the memory; a fixed threshold keeps blocks of 4 MiB and more (large
    request buffers) in mappings of their own, returned to the system when freed. Not lower:
    gRPC allocates blocks of a few hundred KiB on every call, and mapping them afresh each time
    costs two page faults and about 40 us per call (measured). Fixing the mmap threshold also
    fixes the trim threshold, at 128 KiB unless set: 8 MiB keeps the heap's top from being
    handed back and taken again call after call; Reclaimer trims after large requests."""
    libc = _libc()
    if libc:
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


def release_memory() -> None:
    """Hands the memory freed after parsing a bundle back to the system (glibc keeps it
    otherwise), so a worker's resident size reflects what it holds, not what it once parsed."""
    gc.collect()
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


class Reclaimer:
    """Hands memory back to the system after large requests.

    gRPC receives a request into buffers that glibc keeps once they are freed: a few requests
    of some MiB each (or callers who send them without a token, to be refused) would leave the
    process that much larger for good. Calls only report their request sizes; a task trims at
    most once per `every` seconds, and only after a request of `threshold` bytes or more."""

    def __init__(self, threshold: int = 1 << 20, every: float = 1.0) -> None:
        self.threshold = threshold
        self.every = every
        self.pending = False
        self.trims = 0

    def saw(self, size: int) -> None:
        if size >= self.threshold:
            self.pending = True

    def trim(self) -> None:
        if self.pending:
            self.pending = False
            self.trims += 1
            libc = _libc()
            if libc:
                libc.malloc_trim(0)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every)
            # In a thread: trimming a large heap takes milliseconds the calls should not wait.
            await asyncio.to_thread(self.trim)

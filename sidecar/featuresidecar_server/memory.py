"""The process's memory as the operating system sees it (glibc only; elsewhere a no-op)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any

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


def limit_arenas(count: int = 2) -> None:
    """Caps glibc's malloc arenas. By default each thread that allocates may get its own
    (gRPC's pollers, the decision-log writer, the metrics server), and every arena keeps memory
    it once used; two are plenty for one event loop. Call before threads start."""
    libc = _libc()
    if libc:
        libc.mallopt(_M_ARENA_MAX, count)


def release_memory() -> None:
    """Hands the memory freed after parsing a bundle back to the system (glibc keeps it
    otherwise), so a worker's resident size reflects what it holds, not what it once parsed."""
    gc.collect()
    libc = _libc()
    if libc:
        libc.malloc_trim(0)

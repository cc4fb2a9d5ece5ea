"""An optional local cache of entity hashes read from Redis (off by default).

A hot entity asked for many times a second is read once per `ttl`: the cache holds Redis's reply
for (the fields asked, the entity key), in an LRU of `max_entries`. Concurrent misses of the same
entry share one read (single flight). Served values may be up to `ttl` older than Redis; status
and staleness are still computed from the event time stored with them, at serving time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .layout import Group, hmget

Key = tuple[tuple[bytes, ...], bytes]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # misses that waited for another call's read of the same entry
    listeners: list[Callable[[str, int], None]] = field(default_factory=list)

    def count(self, kind: str, n: int) -> None:
        if not n:
            return
        setattr(self, kind, getattr(self, kind) + n)
        for listener in self.listeners:
            listener(kind, n)


class EntityCache:
    def __init__(
        self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self.stats = CacheStats()
        self._entries: OrderedDict[Key, tuple[float, Any]] = OrderedDict()
        self._inflight: dict[Key, asyncio.Future[Any]] = {}

    async def fetch(
        self,
        read: Callable[[bytes, int], Any],
        groups: Sequence[Group],
        keys: Sequence[Sequence[bytes]],
    ) -> list[Any]:
        """Replies for every (group, key), in command order; `read(payload, count)` reads the
        missing ones from Redis in one round trip."""
        now = self.clock()
        entries = self._entries
        replies: list[Any] = []
        missing: list[tuple[int, Key, Group, bytes]] = []
        waiting: list[tuple[int, asyncio.Future[Any]]] = []
        hits = 0
        for group, group_keys in zip(groups, keys, strict=True):
            for key in group_keys:
                cache_key = (group.fields, key)
                entry = entries.get(cache_key)
                if entry is not None and entry[0] > now:
                    entries.move_to_end(cache_key)
                    replies.append(entry[1])
                    hits += 1
                    continue
                replies.append(None)
                future = self._inflight.get(cache_key)
                if future is not None:
                    waiting.append((len(replies) - 1, future))
                else:
                    missing.append((len(replies) - 1, cache_key, group, key))
        self.stats.count("hits", hits)
        self.stats.count("shared", len(waiting))
        self.stats.count("misses", len(missing))
        if missing:
            await self._read(read, missing, replies)
        for index, future in waiting:
            replies[index] = await asyncio.shield(future)
        return replies

    async def _read(
        self,
        read: Callable[[bytes, int], Any],
        missing: list[tuple[int, Key, Group, bytes]],
        replies: list[Any],
    ) -> None:
        loop = asyncio.get_running_loop()
        futures = []
        for _, cache_key, _, _ in missing:
            future: asyncio.Future[Any] = loop.create_future()
            self._inflight[cache_key] = future
            futures.append(future)
        try:
            payload = b"".join(hmget(group, key) for _, _, group, key in missing)
            fetched = await read(payload, len(missing))
        except BaseException as exc:
            for (_, cache_key, _, _), future in zip(missing, futures, strict=True):
                self._inflight.pop(cache_key, None)
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved here: the waiters get it through await
            raise
        expires = self.clock() + self.ttl
        entries = self._entries
        for (index, cache_key, _, _), future, reply in zip(missing, futures, fetched, strict=True):
            replies[index] = reply
            entries[cache_key] = (expires, reply)
            entries.move_to_end(cache_key)
            self._inflight.pop(cache_key, None)
            future.set_result(reply)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

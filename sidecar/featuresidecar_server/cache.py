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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import DeadlineExceeded
from .layout import Group, hmget

Key = tuple[tuple[bytes, ...], bytes]
_Read = asyncio.Future[list[Any]]


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
        # Entries being read: the read's task and the entry's place in its replies.
        self._inflight: dict[Key, tuple[_Read, int]] = {}
        # Reads run as tasks that no caller owns; held here so they are not collected.
        self._reads: set[_Read] = set()

    async def fetch(
        self,
        read: Callable[[bytes, int], Awaitable[list[Any]]],
        groups: Sequence[Group],
        keys: Sequence[Sequence[bytes]],
        timeout: float | None = None,
    ) -> list[Any]:
        """Replies for every (group, key), in command order; `read(payload, count)` reads the
        missing ones from Redis in one round trip.

        A read is shared by every call that misses the same entries while it runs, so it runs
        as a task of its own, under the store's timeout: no caller's deadline or cancellation
        reaches the others. Each caller waits at most `timeout` seconds (what is left of its
        own deadline)."""
        now = self.clock()
        entries = self._entries
        replies: list[Any] = []
        missing: list[tuple[int, Key, Group, bytes]] = []
        waiting: list[tuple[int, _Read, int]] = []
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
                inflight = self._inflight.get(cache_key)
                if inflight is not None:
                    waiting.append((len(replies) - 1, *inflight))
                else:
                    missing.append((len(replies) - 1, cache_key, group, key))
        self.stats.count("hits", hits)
        self.stats.count("shared", len(waiting))
        self.stats.count("misses", len(missing))
        if not (missing or waiting):
            return replies
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("the call's deadline passed before Redis was asked")
        if missing:
            own = self._start_read(read, missing)
            waiting.extend((index, own, n) for n, (index, _, _, _) in enumerate(missing))
        reads = {id(task): task for _, task, _ in waiting}
        # asyncio.wait never cancels what it waits for: leaving early touches no shared read.
        _, late = await asyncio.wait(reads.values(), timeout=timeout)
        if late:
            raise DeadlineExceeded("the call's deadline passed while waiting for Redis")
        for index, task, position in waiting:
            replies[index] = task.result()[position]
        return replies

    def _start_read(
        self,
        read: Callable[[bytes, int], Awaitable[list[Any]]],
        missing: list[tuple[int, Key, Group, bytes]],
    ) -> _Read:
        payload = b"".join(hmget(group, key) for _, _, group, key in missing)
        task = asyncio.ensure_future(read(payload, len(missing)))
        for position, (_, cache_key, _, _) in enumerate(missing):
            self._inflight[cache_key] = (task, position)
        self._reads.add(task)
        task.add_done_callback(lambda done: self._finished(done, missing))
        return task

    def _finished(self, task: _Read, missing: list[tuple[int, Key, Group, bytes]]) -> None:
        self._reads.discard(task)
        for _, cache_key, _, _ in missing:
            if self._inflight.get(cache_key, (None,))[0] is task:
                del self._inflight[cache_key]
        if task.cancelled() or task.exception() is not None:
            return  # the waiters get the error; nothing is cached
        expires = self.clock() + self.ttl
        entries = self._entries
        for (_, cache_key, _, _), reply in zip(missing, task.result(), strict=True):
            entries[cache_key] = (expires, reply)
            entries.move_to_end(cache_key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

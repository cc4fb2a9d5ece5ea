"""Redis access for serving: one pipelined round trip per request, a deadline on every call.

Commands arrive packed (RESP) from the read plan; `resp.RespPool` sends them over a few
pipelining connections. This module owns the time limit, the error vocabulary the caller sees,
and the report of every round trip to health and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import DeadlineExceeded, ServiceError, Unavailable
from .resp import RedisAddress, RespConnectionError, RespPool, RespReplyError, pack

# (ok, error kind or "", seconds): health and metrics listen to every round trip.
Listener = Callable[[bool, str, float], None]


_PING = pack(b"PING")

# Error replies by which Redis says it cannot serve reads for now (loading its data after a
# restart, running a long script, a replica that lost its master, a cluster that is down): the
# caller should retry, as when Redis is unreachable, and health turns NOT_SERVING meanwhile.
_NOT_READY = frozenset({"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"})


class StoreError(ServiceError):
    """Redis answered with an error (e.g. a key of the wrong type): not retryable."""


def redact_url(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username or ''}:***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        timeout: float = 0.5,
        max_connections: int = 2,
        listener: Listener | None = None,
    ) -> None:
        try:
            address = RedisAddress.parse(url, password)
        except ValueError as exc:
            raise ValueError(f"--redis: {exc}") from None
        self.url = redact_url(url)
        self.timeout = timeout
        self._listener = listener
        self._pool = RespPool(address, size=max_connections, connect_timeout=timeout)

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    async def fetch(self, payload: bytes, count: int, timeout: float | None = None) -> list[Any]:
        """The replies of `count` packed HMGET commands, in order.

        `timeout` (what is left of the caller's deadline) shortens the store's own timeout. A
        reply that is not an array is garbage from the server: Unavailable, like a lost
        connection, never handed on.
        """
        return await self._round_trip(payload, count, timeout, arrays=True)

    async def _round_trip(
        self, payload: bytes, count: int, timeout: float | None, *, arrays: bool
    ) -> list[Any]:
        limit = self.timeout if timeout is None else min(self.timeout, timeout)
        if limit <= 0:
            raise DeadlineExceeded("the call's deadline passed before Redis was asked")
        start = time.perf_counter()
        try:
            replies = await self._pool.execute(payload, count, limit, arrays=arrays)
        except TimeoutError:
            if limit < self.timeout:
                # The caller's own short deadline says nothing about Redis's health.
                raise DeadlineExceeded(
                    "the call's deadline passed while waiting for Redis"
                ) from None
            self._notify(False, "timeout", start)
            raise Unavailable(f"Redis did not answer within {self.timeout * 1000:.0f} ms") from None
        except RespConnectionError as exc:
            self._notify(False, "connection", start)
            raise Unavailable(f"Redis at {self.url} is unavailable: {_reason(exc)}") from None
        for reply in replies:
            if isinstance(reply, RespReplyError):
                reason = _reason(reply)
                if reason.split(" ", 1)[0] in _NOT_READY:
                    self._notify(False, "connection", start)
                    raise Unavailable(f"Redis at {self.url} is unavailable: {reason}")
                self._notify(False, "response", start)
                raise StoreError(f"Redis answered with an error: {reason}")
        self._notify(True, "", start)
        return replies

    async def ping(self) -> None:
        await self._round_trip(_PING, 1, None, arrays=False)

    async def close(self) -> None:
        await self._pool.close()

    def _notify(self, ok: bool, kind: str, start: float) -> None:
        if self._listener is not None:
            self._listener(ok, kind, time.perf_counter() - start)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]

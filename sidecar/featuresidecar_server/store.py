"""Redis access: one pipelined round trip per request, a deadline on every call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import DeadlineExceeded, ServiceError, Unavailable

# (ok, error kind or "", seconds): health and metrics listen to every round trip.
Listener = Callable[[bool, str, float], None]

Reply = list[bytes | None]


class StoreError(ServiceError):
    """Redis answered with an error (e.g. a key of the wrong type): not retryable."""


def redact_url(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        timeout: float = 0.5,
        max_connections: int = 64,
        listener: Listener | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"--redis: unsupported URL scheme {scheme!r} (use redis://, rediss:// or unix://)"
            )
        kwargs: dict[str, Any] = {}
        if password and urlsplit(url).password is None:
            kwargs["password"] = password
        self.url = redact_url(url)
        self.timeout = timeout
        self._listener = listener
        # One immediate retry replaces a pooled connection that died with a restarted Redis;
        # anything slower would eat the caller's deadline.
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            max_connections=max_connections,
            **kwargs,
        )

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    async def hmget_many(
        self, commands: Sequence[tuple[bytes, Sequence[bytes]]], timeout: float | None = None
    ) -> list[Reply]:
        """HMGET for every (key, fields) in one pipeline; replies in the same order.

        `timeout` (what is left of the caller's deadline) shortens the store's own timeout.
        """
        if not commands:
            return []
        limit = self.timeout if timeout is None else min(self.timeout, timeout)
        if limit <= 0:
            raise DeadlineExceeded("the call's deadline passed before Redis was asked")
        start = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, fields in commands:
                        pipe.hmget(key, fields)
                    replies: list[Reply] = await pipe.execute()
        except BaseException as exc:
            caller_deadline = limit < self.timeout and _kind(exc) == "timeout"
            if not caller_deadline:
                # The caller's own short deadline says nothing about Redis's health.
                self._failed(exc, start)
            raise self._convert(exc, caller_deadline=caller_deadline) from exc
        self._notify(True, "", start)
        return replies

    async def ping(self) -> None:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.ping()
        except BaseException as exc:
            self._failed(exc, start)
            raise self._convert(exc) from exc
        self._notify(True, "", start)

    async def close(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------------------------------

    def _failed(self, exc: BaseException, start: float) -> None:
        if isinstance(exc, asyncio.CancelledError):
            return
        self._notify(False, _kind(exc), start)

    def _notify(self, ok: bool, kind: str, start: float) -> None:
        if self._listener is not None:
            self._listener(ok, kind, time.perf_counter() - start)

    def _convert(self, exc: BaseException, caller_deadline: bool = False) -> BaseException:
        if isinstance(exc, asyncio.CancelledError):
            return exc
        kind = _kind(exc)
        if kind == "timeout" and caller_deadline:
            return DeadlineExceeded("the call's deadline passed while waiting for Redis")
        if kind == "timeout":
            return Unavailable(f"Redis did not answer within {self.timeout * 1000:.0f} ms")
        if kind == "connection":
            return Unavailable(f"Redis at {self.url} is unavailable: {_reason(exc)}")
        return StoreError(f"Redis answered with an error: {_reason(exc)}")


def _kind(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, RedisTimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connection"
    if isinstance(exc, ResponseError):
        return "response"
    if isinstance(exc, RedisError):
        return "connection"
    return "other"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]

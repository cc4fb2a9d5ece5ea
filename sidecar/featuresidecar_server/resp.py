"""A small asyncio Redis client for the hot path: pre-packed pipelines over RESP2, read by hiredis.

Commands of concurrent calls share a few connections and go out as soon as they are packed;
replies come back in order, so each call waits only for its own. A call that gives up (timeout)
leaves its place in the queue and its replies are dropped when they arrive, so the connection
stays usable; a connection that keeps stalling is closed and opened again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

_CRLF = b"\r\n"


class RespConnectionError(ConnectionError):
    """Redis cannot be reached, or the connection broke."""


class RespReplyError(Exception):
    """Redis answered a command with an error reply."""


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> RedisAddress:
        """redis://[user[:password]@]host[:port][/db], rediss://..., unix:///path[?db=N]."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"unsupported Redis URL scheme {parts.scheme!r} (use redis://, rediss:// or unix://)"
            )
        username = unquote(parts.username) if parts.username else None
        secret = unquote(parts.password) if parts.password is not None else password
        if parts.scheme == "unix":
            db_text = query.get("db", "0")
        else:
            db_text = query.get("db") or parts.path.lstrip("/") or "0"
        try:
            db = int(db_text or 0)
        except ValueError:
            raise ValueError(f"Redis database {db_text!r} is not a number") from None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// Redis URL needs a socket path")
            return cls(unix_path=parts.path, db=db, username=username, password=secret)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            username=username or None,
            password=secret or None,
            tls=parts.scheme == "rediss",
            ca_file=query.get("ssl_ca_certs"),
            cert_file=query.get("ssl_certfile"),
            key_file=query.get("ssl_keyfile"),
            verify=query.get("ssl_cert_reqs", "required") != "none",
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def pack(*args: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(_CRLF)
    return b"".join(out)


def pack_args(args: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Bulk strings without the array header: the shared tail of many commands."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class _Waiter:
    __slots__ = ("count", "deadline", "future", "replies", "sent")

    def __init__(
        self, future: asyncio.Future[list[Any]], count: int, sent: float, deadline: float
    ) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.sent = sent
        self.deadline = deadline


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=RespReplyError)
        self.waiters: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.loop = asyncio.get_running_loop()
        self.outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        while waiters:
            head = waiters[0]
            while len(head.replies) < head.count:
                reply = reader.gets()
                if reply is False:
                    return
                head.replies.append(reply)
            waiters.popleft()
            if not head.future.done():
                head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RespConnectionError("Redis closed the connection")
        error = RespConnectionError(f"connection to Redis lost: {self.lost}")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def send(
        self, payload: bytes, count: int, timeout: float = 3600.0
    ) -> asyncio.Future[list[Any]]:
        assert self.transport is not None
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        now = self.loop.time()
        self.waiters.append(_Waiter(future, count, now, now + timeout))
        if len(self.waiters) == 1:
            # Alone: written at once, no turn of the loop lost.
            self.transport.write(payload)
        else:
            # Concurrent calls: those that send within one turn of the loop share one write.
            if not self.outgoing:
                self.loop.call_soon(self._flush)
            self.outgoing.append(payload)
        return future

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(outgoing))

    def expire(self, now: float) -> bool:
        """Fails the waiters whose deadline passed (their replies are dropped when they come);
        whether any waiter is still pending."""
        pending = False
        for waiter in self.waiters:
            if waiter.future.done():
                continue
            if waiter.deadline <= now:
                waiter.future.set_exception(TimeoutError())
            else:
                pending = True
        return pending

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    def stalled(self, now: float, patience: float) -> bool:
        """Whether the oldest unanswered command waited longer than `patience` seconds."""
        return bool(self.waiters) and now - self.waiters[0].sent > patience

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class RespPool:
    """A few pipelining connections to one Redis, opened lazily and replaced when broken."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        size: int = 2,
        connect_timeout: float = 1.0,
        tick: float = 0.005,
    ) -> None:
        self.address = address
        self.tick = tick
        self._watchdog: asyncio.Task[None] | None = None
        self.size = max(1, size)
        self.connect_timeout = connect_timeout
        self._slots: list[_Protocol | None] = [None] * self.size
        self._opening: list[asyncio.Future[_Protocol] | None] = [None] * self.size
        self._next = 0
        self._ssl = address.ssl_context()
        self._closed = False

    async def execute(self, payload: bytes, count: int, timeout: float) -> list[Any]:
        """Sends `count` packed commands and returns their replies in order.

        `timeout` covers everything, connecting included; TimeoutError when it runs out. Time
        limits are kept by one watchdog per pool rather than a timer per call.
        """
        index = self._next
        self._next = (index + 1) % self.size
        protocol = self._slots[index]
        if protocol is None or not protocol.usable:
            protocol = await self._connection(index, timeout)
        elif protocol.stalled(protocol.loop.time(), max(2.0, 5 * timeout)):
            protocol.close()
            protocol = await self._connection(index, timeout)
        future = protocol.send(payload, count, timeout)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = protocol.loop.create_task(self._watch())
        return await future

    async def _watch(self) -> None:
        """Fails calls past their deadline, every `tick` seconds while any call is pending."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(self.tick)
            now = loop.time()
            pending = False
            for protocol in self._slots:
                if protocol is not None and protocol.expire(now):
                    pending = True
            if not pending:
                return

    async def _connection(self, index: int, timeout: float) -> _Protocol:
        opening = self._opening[index]
        if opening is None:
            opening = asyncio.ensure_future(self._open())
            self._opening[index] = opening
        try:
            async with asyncio.timeout(timeout):
                protocol = await asyncio.shield(opening)
        finally:
            if self._opening[index] is opening and opening.done():
                self._opening[index] = None
        self._slots[index] = protocol
        return protocol

    async def _open(self) -> _Protocol:
        if self._closed:
            raise RespConnectionError("the Redis client is closed")
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.unix_path:
                    _, protocol = await loop.create_unix_connection(_Protocol, address.unix_path)
                else:
                    _, protocol = await loop.create_connection(
                        _Protocol,
                        address.host,
                        address.port,
                        ssl=self._ssl,
                        server_hostname=address.host if self._ssl else None,
                    )
                await self._handshake(protocol)
        except TimeoutError:
            raise RespConnectionError(
                f"no connection within {self.connect_timeout * 1000:.0f} ms"
            ) from None
        except ssl.SSLError as exc:
            raise RespConnectionError(f"TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise RespConnectionError(exc.strerror or str(exc)) from None
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        address = self.address
        commands = []
        if address.password:
            if address.username:
                commands.append(pack(b"AUTH", address.username.encode(), address.password.encode()))
            else:
                commands.append(pack(b"AUTH", address.password.encode()))
        if address.db:
            commands.append(pack(b"SELECT", str(address.db).encode()))
        if not commands:
            return
        replies = await protocol.send(b"".join(commands), len(commands))
        for reply in replies:
            if isinstance(reply, RespReplyError):
                protocol.close()
                # Redis's own message (e.g. WRONGPASS ...) never contains the password.
                raise RespConnectionError(f"Redis refused the connection setup: {reply}")

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        for protocol in self._slots:
            if protocol is not None:
                protocol.close()
        self._slots = [None] * self.size

"""A small asyncio Redis client for the hot path: pre-packed pipelines over RESP2, read by hiredis.

Commands of concurrent calls share a few connections and go out as soon as they are packed;
replies come back in order, so each call waits only for its own. A call that gives up (timeout)
leaves its place in the queue and its replies are dropped when they arrive, so the connection
stays usable; a connection that keeps stalling is closed and opened again.

A server that is not a sound Redis (bytes that are not RESP, a reply too many or too few, a
reply that never ends) cannot be trusted with the rest of the stream: the connection is closed,
its calls fail with RespConnectionError saying why, and the next call opens a new one. Each
batch of commands ends with a PING of its own token, so that replies out of step with their
commands are noticed instead of being handed to another call.
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

# An unfinished reply holding more bytes than this is not a feature value but garbage (say a
# huge length header followed by a stream): without a bound it would be buffered until memory
# runs out. Redis itself allows 512 MiB per string; one feature value is kilobytes.
MAX_PENDING_BYTES = 16 << 20


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
    __slots__ = ("arrays", "count", "deadline", "future", "replies", "sent", "token")

    def __init__(
        self,
        future: asyncio.Future[list[Any]],
        count: int,
        sent: float,
        deadline: float,
        arrays: bool,
        token: bytes | None,
    ) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.sent = sent
        self.deadline = deadline
        # Whether every reply must be an array (or an error), as HMGET's are.
        self.arrays = arrays
        # What the PING after the commands must answer; None once it did (or with no PING).
        self.token = token


_OUT_OF_STEP = "its replies do not match the commands sent (one is missing or repeated)"


def _kind(reply: Any) -> str:
    if isinstance(reply, bytes):
        return "a string"
    if isinstance(reply, int):
        return "an integer"
    return "nil" if reply is None else type(reply).__name__


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=RespReplyError)
        self.waiters: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        # Why the connection is no longer usable: what its calls fail with.
        self.lost: RespConnectionError | None = None
        self.loop = asyncio.get_running_loop()
        self.outgoing: list[bytes] = []
        self.tokens = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        try:
            while waiters:
                head = waiters[0]
                while len(head.replies) < head.count:
                    reply = reader.gets()
                    if reply is False:
                        self._wait_for_more()
                        return
                    if (
                        head.arrays
                        and type(reply) is not list
                        and not isinstance(reply, RespReplyError)
                    ):
                        self.abandon(
                            _OUT_OF_STEP
                            if reply == head.token
                            else f"HMGET was answered with {_kind(reply)}, not an array"
                        )
                        return
                    head.replies.append(reply)
                if head.token is not None:
                    reply = reader.gets()
                    if reply is False:
                        self._wait_for_more()
                        return
                    # An error (e.g. LOADING) answers the PING too: the stream is in step.
                    if reply != head.token and not isinstance(reply, RespReplyError):
                        self.abandon(_OUT_OF_STEP)
                        return
                    head.token = None
                waiters.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)
            if reader.has_data():
                self.abandon("it sent a reply no command asked for")
        except hiredis.ProtocolError as exc:
            self.abandon(f"its reply is not RESP ({exc})")
        except MemoryError:
            # hiredis allocates an array's slots when it reads the header.
            self.abandon("a reply announced more elements than fit in memory")

    def _wait_for_more(self) -> None:
        if self.reader.len() > MAX_PENDING_BYTES:
            self.abandon(f"a reply grew past {MAX_PENDING_BYTES >> 20} MiB without ending")

    def abandon(self, reason: str) -> None:
        """The rest of the byte stream cannot be matched to commands any more: every waiter
        fails with `reason` and the connection closes (the pool opens a new one)."""
        self.lost = RespConnectionError(reason)
        self._fail_waiters(self.lost)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            reason = exc or "Redis closed the connection"
            self.lost = RespConnectionError(f"connection to Redis lost: {reason}")
        self._fail_waiters(self.lost)
        # Failed calls' tracebacks keep this object alive until a garbage collection; what
        # the reader buffered (up to MAX_PENDING_BYTES) is released now.
        self.reader = hiredis.Reader(replyError=RespReplyError)

    def _fail_waiters(self, error: Exception) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def send(
        self,
        payload: bytes,
        count: int,
        timeout: float = 3600.0,
        *,
        arrays: bool = False,
        checked: bool = True,
    ) -> asyncio.Future[list[Any]]:
        """Sends `count` packed commands; the future gets their replies. `checked` adds a PING
        with a token of its own, which must come back right after the replies: RESP2 replies
        carry nothing that names their command, and a reply too many or too few (a broken
        proxy, a server that is not Redis) would otherwise hand every later call the replies
        of another call, silently."""
        assert self.transport is not None
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if self.lost is not None:
            # Given up while this call waited for the connection to open: nothing will answer.
            future.set_exception(self.lost)
            return future
        token = None
        if checked:
            self.tokens += 1
            token = b"%x" % self.tokens
            payload += b"*2\r\n$4\r\nPING\r\n$%d\r\n%s\r\n" % (len(token), token)
        now = self.loop.time()
        self.waiters.append(_Waiter(future, count, now, now + timeout, arrays, token))
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

    async def execute(
        self, payload: bytes, count: int, timeout: float, *, arrays: bool = False
    ) -> list[Any]:
        """Sends `count` packed commands and returns their replies in order.

        `timeout` covers everything, connecting included; TimeoutError when it runs out. Time
        limits are kept by one watchdog per pool rather than a timer per call. With `arrays`,
        a reply that is neither an array nor an error breaks the connection
        (RespConnectionError): the stream no longer matches the commands.
        """
        index = self._next
        self._next = (index + 1) % self.size
        protocol = self._slots[index]
        patience = max(2.0, 5 * timeout)
        if protocol is None or not protocol.usable:
            protocol = await self._connection(index, timeout)
        elif protocol.stalled(protocol.loop.time(), patience):
            protocol.abandon(f"no complete reply within {patience:g} s")
            protocol = await self._connection(index, timeout)
        future = protocol.send(payload, count, timeout, arrays=arrays)
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
        # Unchecked: after a refused AUTH, Redis would refuse the PING as well.
        replies = await protocol.send(b"".join(commands), len(commands), checked=False)
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

"""Getting bundle bytes: HTTP(S) with ETag polling, or a watched local path.

Fetchers only move bytes and report what happened; `BundleSync` hands what they bring to the
activator and decides when to look again (interval with jitter, exponential backoff on errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .activation import Activator
from .bundle_format import BundleError

log = logging.getLogger("featuresidecar.bundle")

_CHUNK = 65536
# How long a stopping BundleSync.run waits for an aborted download's thread to end.
_ABORT_WAIT = 0.25


@dataclass(frozen=True)
class Fetched:
    """New bytes (data is not None) or "unchanged since `etag`" (data is None)."""

    data: bytes | None
    etag: str | None


class DownloadAborted(Exception):
    """The fetcher was aborted (the sidecar is stopping): no failure of the source."""


class _Exchange:
    """One request and its answer, ended by shutting its socket down when the deadline passes
    or when the fetcher is aborted.

    Socket timeouts bound each operation, not the whole: a server that trickles one byte at a
    time would keep every read alive. A shutdown makes whatever blocks on the socket (connect,
    TLS handshake, send, receive) return at once, in whatever stage the exchange is.
    """

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock
        self.answered = False  # the status line and every header arrived
        self.ended: str | None = None  # "timeout" or "aborted"
        self._lock = threading.Lock()
        self._finished = threading.Event()
        # A duplicate of the connection's descriptor: shutting it down ends the connection,
        # also after TLS has taken the original over, and it is never a reused number.
        self._handle: socket.socket | None = None
        self._watchdog = threading.Thread(
            target=self._watch, name="bundle-download-deadline", daemon=True
        )

    def start(self) -> None:
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._finished.wait(max(0.0, self.deadline - self.clock())):
            if self.clock() >= self.deadline:
                self.end("timeout")
                return

    def end(self, why: str) -> None:
        with self._lock:
            if self.ended is not None or self._finished.is_set():
                return
            self.ended = why
            if self._handle is not None:
                _shut(self._handle)

    def finish(self) -> str | None:
        """Stops the watchdog; returns why the exchange was ended early, if it was."""
        with self._lock:
            self._finished.set()
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            return self.ended

    def open(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A connected socket, watched from before its first packet (a host that drops SYNs
        stalls the connect)."""
        error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            try:
                self._hold(sock)
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
                if self.ended is not None:
                    break
        raise error or OSError(f"no address for {host}")

    def _hold(self, sock: socket.socket) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
            self._handle = sock.dup()
            if self.ended is not None:
                _shut(self._handle)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected (yet): the connect then fails
        sock.shutdown(socket.SHUT_RDWR)


class _Connection(http.client.HTTPConnection):
    """http.client's connection over a socket that the exchange opens and watches."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        exchange: _Exchange,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.exchange = exchange
        self.tls = tls

    def connect(self) -> None:
        sock = self.exchange.open(self.host, self.port, self.timeout)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


class HttpFetcher:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        max_bytes: int = 32 * 1024 * 1024,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--bundle: {url!r} is not an http(s) URL")
        self.url = url
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.clock = clock
        self._parts = parts
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_file)
        self._lock = threading.Lock()
        self._aborted = False
        # Tests poll by hand while a sidecar's own loop polls too: abort() ends them all.
        self._exchanges: set[_Exchange] = set()

    def describe(self) -> str:
        return self.url

    def abort(self) -> None:
        """Ends the download in progress at once, and refuses later ones: for shutdown."""
        with self._lock:
            self._aborted = True
            exchanges = list(self._exchanges)
        for exchange in exchanges:
            exchange.end("aborted")

    def fetch(self, etag: str | None) -> Fetched:
        """Blocking; raises BundleError with reason http, timeout or size, and DownloadAborted
        after abort(). The whole exchange, from connect to the last byte, ends within
        `timeout` seconds."""
        exchange = _Exchange(self.clock() + self.timeout, self.clock)
        with self._lock:
            if self._aborted:
                raise DownloadAborted("the bundle download was aborted")
            self._exchanges.add(exchange)
        exchange.start()
        outcome: Fetched | Exception
        try:
            outcome = self._exchange(exchange, etag)
        except (OSError, http.client.HTTPException, BundleError) as exc:
            outcome = exc
        finally:
            ended = exchange.finish()
            with self._lock:
                self._exchanges.discard(exchange)
        # Once the socket was shut down, any outcome (an error, an empty read that looks like
        # the end of the body) comes from that, not from the server.
        if ended == "aborted":
            raise DownloadAborted("the bundle download was aborted")
        if ended == "timeout" or isinstance(outcome, TimeoutError):
            raise self._timeout(exchange)
        if isinstance(outcome, Fetched):
            return outcome
        if isinstance(outcome, BundleError):
            raise outcome
        if isinstance(outcome, ssl.SSLError):
            raise BundleError("http", f"TLS failed: {outcome.reason or outcome}")
        raise BundleError("http", f"cannot reach the bundle server: {_reason(outcome)}")

    def _exchange(self, exchange: _Exchange, etag: str | None) -> Fetched:
        parts = self._parts
        port = parts.port or (443 if parts.scheme == "https" else 80)
        connection = _Connection(parts.hostname or "", port, self.timeout, exchange, self._ssl)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {"Accept": "application/json, */*", "User-Agent": "feature-sidecar"}
        if etag:
            headers["If-None-Match"] = etag
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            exchange.answered = True
            if response.status == 304:
                return Fetched(None, etag)
            if response.status != 200:
                raise BundleError(
                    "http", f"the bundle server answered HTTP {response.status} {response.reason}"
                )
            # http.client's reading of Content-Length: None when absent, chunked or not a
            # number (str.isdigit() accepts "²", which int() refuses).
            declared = response.length
            if declared is not None and declared > self.max_bytes:
                raise BundleError(
                    "size", f"the bundle is {declared} bytes, over the limit of {self.max_bytes}"
                )
            chunks: list[bytes] = []
            received = 0
            while True:
                if self.clock() > exchange.deadline:
                    raise self._timeout(exchange)
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > self.max_bytes:
                    raise BundleError(
                        "size", f"the bundle is over the limit of {self.max_bytes} bytes"
                    )
                chunks.append(chunk)
            if declared is not None and received != declared:
                raise BundleError("http", "the bundle download was cut short")
            return Fetched(b"".join(chunks), response.getheader("ETag"))
        finally:
            connection.close()

    def _timeout(self, exchange: _Exchange) -> BundleError:
        if exchange.answered:
            return BundleError("timeout", f"the download took longer than {self.timeout:g} s")
        return BundleError("timeout", f"the bundle server did not answer within {self.timeout:g} s")


class PathFetcher:
    """A local file; a change of target, inode, size or mtime counts as new (this covers the
    atomic symlink swap of a Kubernetes ConfigMap mount)."""

    def __init__(self, path: str, *, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def describe(self) -> str:
        return self.path

    def abort(self) -> None:
        """Nothing to end: a local read does not wait on anyone."""

    def fetch(self, etag: str | None) -> Fetched:
        try:
            real = os.path.realpath(self.path)
            info = os.stat(real)
            tag = f"{real}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
            if tag == etag:
                return Fetched(None, etag)
            if info.st_size > self.max_bytes:
                raise BundleError(
                    "size",
                    f"the bundle is {info.st_size} bytes, over the limit of {self.max_bytes}",
                )
            with open(real, "rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError as exc:
            raise BundleError("io", f"cannot read {self.path}: {exc.strerror}") from None
        if len(data) > self.max_bytes:
            raise BundleError("size", f"the bundle is over the limit of {self.max_bytes} bytes")
        return Fetched(data, tag)


Fetcher = HttpFetcher | PathFetcher


def make_fetcher(source: str, *, timeout: float, max_bytes: int, ca_file: str | None) -> Fetcher:
    if source.startswith(("http://", "https://")):
        return HttpFetcher(source, timeout=timeout, max_bytes=max_bytes, ca_file=ca_file)
    return PathFetcher(source, max_bytes=max_bytes)


class BundleSync:
    """Polls one source and feeds the activator."""

    def __init__(
        self,
        fetcher: Fetcher,
        activator: Activator,
        *,
        interval: float,
        backoff_max: float = 60.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.fetcher = fetcher
        self.activator = activator
        self.interval = interval
        self.backoff_max = max(backoff_max, interval)
        self.rng = rng
        self.etag: str | None = None
        self.failures = 0

    def poll_once(self) -> None:
        """One fetch and, when there is something new, one activation attempt (blocking)."""
        self.activator.attempt()
        try:
            fetched = self.fetcher.fetch(self.etag)
        except DownloadAborted:
            return  # stopping: no verdict on the source
        except BundleError as exc:
            self.activator.failed(exc.reason, exc.message)
            self.failures += 1
            return
        if fetched.data is None:
            self.activator.not_modified()
        else:
            # The ETag of a rejected bundle is not kept, so the next poll fetches again.
            self.etag = None
            try:
                self.activator.offer(fetched.data, self.fetcher.describe())
            except BundleError:
                self.failures += 1  # offer() recorded why
                return
            self.etag = fetched.etag
        self.failures = 0

    def next_delay(self) -> float:
        """Seconds to the next poll: the interval +-10 % jitter, or backoff after failures."""
        jitter = 0.9 + 0.2 * float(self.rng())
        if self.failures:
            base = min(self.interval, 1.0) * float(2 ** (self.failures - 1))
            return min(self.backoff_max, base) * jitter
        return self.interval * jitter

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._poll(stop)
            except Exception as exc:
                # A bug on this path must not end bundle updates for the life of the process:
                # it is logged, recorded like any failure, and the next poll comes after backoff.
                log.error("bundle poll failed unexpectedly", exc_info=exc)
                self.activator.failed("internal", f"unexpected error: {_reason(exc)}")
                self.failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.next_delay())

    async def _poll(self, stop: asyncio.Event) -> None:
        """`poll_once` in a thread; `stop` aborts its download and returns at once."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return  # abandoned at shutdown
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def work() -> None:
            error: BaseException | None = None
            try:
                self.poll_once()
            except BaseException as exc:  # raised again by run(), as asyncio.to_thread would
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, error)

        # Not the loop's executor: asyncio.run() and the interpreter join its threads at exit,
        # so a download that cannot be interrupted (a name lookup) would hold up the shutdown.
        threading.Thread(target=work, name="bundle-poll", daemon=True).start()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((done, stopping), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.fetcher.abort()
            done.cancel()
            raise
        finally:
            stopping.cancel()
        if not done.done():
            self.fetcher.abort()
            # The socket is shut down, so the thread ends within milliseconds and its last
            # events land before the sidecar closes; it is not waited for beyond that.
            await asyncio.wait((done,), timeout=_ABORT_WAIT)
            if not done.done():
                done.cancel()
                return
        done.result()


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:160]

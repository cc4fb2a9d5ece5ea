"""Getting bundle bytes: HTTP(S) with ETag polling, or a watched local path.

Fetchers only move bytes and report what happened; `BundleSync` hands what they bring to the
activator and decides when to look again (interval with jitter, exponential backoff on errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .activation import Activator
from .bundle_format import BundleError

_CHUNK = 65536


@dataclass(frozen=True)
class Fetched:
    """New bytes (data is not None) or "unchanged since `etag`" (data is None)."""

    data: bytes | None
    etag: str | None


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

    def describe(self) -> str:
        return self.url

    def fetch(self, etag: str | None) -> Fetched:
        """Blocking; raises BundleError with reason http, timeout or size."""
        parts = self._parts
        port = parts.port or (443 if parts.scheme == "https" else 80)
        connection: http.client.HTTPConnection
        if self._ssl is not None:
            connection = http.client.HTTPSConnection(
                parts.hostname or "", port, timeout=self.timeout, context=self._ssl
            )
        else:
            connection = http.client.HTTPConnection(
                parts.hostname or "", port, timeout=self.timeout
            )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {"Accept": "application/json, */*", "User-Agent": "feature-sidecar"}
        if etag:
            headers["If-None-Match"] = etag
        deadline = self.clock() + self.timeout
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status == 304:
                return Fetched(None, etag)
            if response.status != 200:
                raise BundleError(
                    "http", f"the bundle server answered HTTP {response.status} {response.reason}"
                )
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise BundleError(
                    "size", f"the bundle is {length} bytes, over the limit of {self.max_bytes}"
                )
            chunks: list[bytes] = []
            received = 0
            while True:
                if self.clock() > deadline:
                    raise BundleError(
                        "timeout", f"the download took longer than {self.timeout:g} s"
                    )
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > self.max_bytes:
                    raise BundleError(
                        "size", f"the bundle is over the limit of {self.max_bytes} bytes"
                    )
                chunks.append(chunk)
            if length and length.isdigit() and received != int(length):
                raise BundleError("http", "the bundle download was cut short")
            return Fetched(b"".join(chunks), response.getheader("ETag"))
        except TimeoutError:
            raise BundleError(
                "timeout", f"the bundle server did not answer within {self.timeout:g} s"
            ) from None
        except ssl.SSLError as exc:
            raise BundleError("http", f"TLS failed: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise BundleError("http", f"cannot reach the bundle server: {_reason(exc)}") from None
        finally:
            connection.close()


class PathFetcher:
    """A local file; a change of target, inode, size or mtime counts as new (this covers the
    atomic symlink swap of a Kubernetes ConfigMap mount)."""

    def __init__(self, path: str, *, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def describe(self) -> str:
        return self.path

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
            await asyncio.to_thread(self.poll_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.next_delay())


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:160]

"""A misbehaving bundle server, byte by byte: the active bundle never changes to a bad one, every
failure is recorded with its reason, and a later good bundle is still picked up.

The server is a raw socket on loopback, so that any stage of the exchange can be stalled,
trickled or cut: connect, status line, headers, body.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import EXAMPLE_POLICY

from featuresidecar_server.activation import Activator
from featuresidecar_server.bundle_fetch import BundleSync, HttpFetcher
from featuresidecar_server.bundle_format import build, public_key_pem, trusted_keys
from featuresidecar_server.snapshot import ActivePolicy

POLICY = EXAMPLE_POLICY.read_text()
RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
TIMEOUT = 0.5
MAX_BYTES = 64 * 1024
# Time from the deadline to the recorded failure: the watchdog's shutdown and the unwinding.
MARGIN = 0.4
NO_ANSWER = f"the bundle server did not answer within {TIMEOUT:g} s"
TOO_LONG = f"the download took longer than {TIMEOUT:g} s"


class Peer:
    """One accepted connection, as an answer script sees it."""

    def __init__(self, conn: socket.socket, head: bytes, released: threading.Event) -> None:
        self.conn = conn
        self.head = head
        self.released = released

    def header(self, name: str) -> str | None:
        return header_of(self.head, name)

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def trickle(self, data: bytes, interval: float) -> None:
        for at in range(len(data)):
            if self.released.wait(interval):
                return
            self.send(data[at : at + 1])

    def hold(self) -> None:
        """Answers nothing more until the server closes."""
        self.released.wait()


Answer = Callable[[Peer], None]


def header_of(request: bytes, name: str) -> str | None:
    for line in request.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


class FaultServer:
    """Answers the n-th request with the n-th answer of `answers` (the last one repeats)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.heads: list[bytes] = []
        self.peers: list[Peer] = []
        self.released = threading.Event()
        self._arrived = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/ml/bundle.json"

    def wait_requests(self, count: int, timeout: float = 5.0) -> None:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.heads) >= count, timeout), self.heads

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            with self._arrived:
                index = len(self.heads)
                self.heads.append(head)
                peer = Peer(conn, head, self.released)
                self.peers.append(peer)
                self._arrived.notify_all()
            answer = self.answers[min(index, len(self.answers) - 1)]
            with contextlib.suppress(OSError):  # the client hung up, as it does after a verdict
                answer(peer)

    def close(self) -> None:
        self.released.set()
        # A shutdown, not only a close, wakes the accept() blocked in the server's thread.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


def head(
    status: str = "200 OK", *, length: int | None = None, etag: str | None = None, **extra: str
) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if etag is not None:
        lines.append(f"ETag: {etag}")
    lines.extend(f"{name.replace('_', '-')}: {value}" for name, value in extra.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def bundle(data: bytes, etag: str | None = None) -> Answer:
    def answer(peer: Peer) -> None:
        if etag is not None and peer.header("If-None-Match") == etag:
            peer.send(head("304 Not Modified", etag=etag))
        else:
            peer.send(head(length=len(data), etag=etag) + data)

    return answer


def status(line: str) -> Answer:
    return lambda peer: peer.send(head(line, length=0))


def stalled_after(prefix: bytes) -> Answer:
    def answer(peer: Peer) -> None:
        peer.send(prefix)
        peer.hold()

    return answer


def endless(prefix: bytes, chunk: bytes) -> Answer:
    """The prefix, then `chunk` again and again until the client hangs up."""

    def answer(peer: Peer) -> None:
        peer.send(prefix)
        while not peer.released.is_set():
            peer.send(chunk)

    return answer


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    return {"a": Ed25519PrivateKey.generate(), "stranger": Ed25519PrivateKey.generate()}


@pytest.fixture(scope="module")
def bundles(keys: dict[str, Ed25519PrivateKey]) -> dict[int, bytes]:
    return {r: build(POLICY + f"\n# r{r}\n", r, keys["a"]) for r in (1, 2, 3, 4)}


@pytest.fixture
def serve() -> Iterator[Callable[[list[Answer]], FaultServer]]:
    servers: list[FaultServer] = []

    def start(answers: list[Answer]) -> FaultServer:
        servers.append(FaultServer(answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@contextlib.contextmanager
def _full_accept_queue() -> Iterator[int]:
    """A port whose listener's accept queue is full: Linux drops further SYNs, so a connect
    to it stalls."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(OSError):
                    filler.connect(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


def _activator(keys: dict[str, Ed25519PrivateKey]) -> Activator:
    return Activator(
        ActivePolicy(),
        source="faults",
        trusted=trusted_keys([keys["a"].public_key()]),
        mask_secret=b"the sidecar's own secret, 32 B.",  # the policy masks by hash
    )


def _sync(url: str, activator: Activator) -> BundleSync:
    return BundleSync(
        HttpFetcher(url, timeout=TIMEOUT, max_bytes=MAX_BYTES), activator, interval=1.0
    )


def _revision(activator: Activator) -> int | None:
    current = activator.active.current
    return None if current is None else current.revision


def _error(activator: Activator) -> tuple[str, str] | None:
    error = activator.status.last_error
    return None if error is None else (error["reason"], error["message"])


def _timed_poll(sync: BundleSync) -> float:
    started = time.monotonic()
    sync.poll_once()
    return time.monotonic() - started


def _good_then(bad: Answer, bundles: dict[int, bytes]) -> list[Answer]:
    """Revision 1, then the bad answer, then revision 2."""
    return [bundle(bundles[1], '"r1"'), bad, bundle(bundles[2], '"r2"')]


def _check_bad_answer_is_survived(
    server: FaultServer, activator: Activator, sync: BundleSync, reason: str, message: str
) -> float:
    """Polls through _good_then's answers; returns the seconds the bad poll took."""
    sync.poll_once()
    assert _revision(activator) == 1
    took = _timed_poll(sync)
    assert _revision(activator) == 1
    assert _error(activator) == (reason, message)
    assert (activator.status.failures, activator.status.consecutive_failures) == ({reason: 1}, 1)
    sync.poll_once()
    assert _revision(activator) == 2
    assert (activator.status.failures, activator.status.consecutive_failures) == ({reason: 1}, 0)
    assert len(server.heads) == 3
    return took


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("500 Internal Server Error", "the bundle server answered HTTP 500 Internal Server Error"),
        ("503 Slow Down", "the bundle server answered HTTP 503 Slow Down"),
        ("404 Not Found", "the bundle server answered HTTP 404 Not Found"),
    ],
)
def test_an_error_status_is_a_failure_of_reason_http(
    serve: Any, keys: Any, bundles: Any, line: str, message: str
) -> None:
    server = serve(_good_then(status(line), bundles))
    activator = _activator(keys)
    _check_bad_answer_is_survived(server, activator, _sync(server.url, activator), "http", message)


# A head long enough to outlast the timeout at one byte per 0.1 s.
LONG_HEAD = head(length=10, X_Padding="p" * 40)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (stalled_after(b""), NO_ANSWER),
        (stalled_after(b"HTTP/1.1 20"), NO_ANSWER),
        (lambda peer: peer.trickle(LONG_HEAD, 0.1), NO_ANSWER),
        (stalled_after(head(length=10)), TOO_LONG),
        (lambda peer: (peer.send(head(length=100)), peer.trickle(b"x" * 100, 0.1)), TOO_LONG),
    ],
    ids=[
        "no-answer",
        "partial-status-line",
        "headers-trickled",
        "body-never-starts",
        "body-trickled",
    ],
)
def test_a_stall_at_any_stage_fails_at_the_timeout(
    serve: Any, keys: Any, bundles: Any, bad: Answer, message: str
) -> None:
    server = serve(_good_then(bad, bundles))
    activator = _activator(keys)
    took = _check_bad_answer_is_survived(
        server, activator, _sync(server.url, activator), "timeout", message
    )
    assert TIMEOUT <= took < TIMEOUT + MARGIN


def test_a_listener_that_never_accepts_fails_at_the_timeout(keys: Any) -> None:
    # The kernel completes the handshake and takes the request; nobody ever reads it.
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/ml/bundle.json"
        activator = _activator(keys)
        took = _timed_poll(_sync(url, activator))
    assert TIMEOUT <= took < TIMEOUT + MARGIN
    assert _error(activator) == ("timeout", NO_ANSWER)
    assert activator.active.current is None


def test_a_tls_handshake_that_never_completes_fails_at_the_timeout(keys: Any) -> None:
    # The TCP connection is accepted by the kernel; no ServerHello ever comes.
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/ml/bundle.json"
        activator = _activator(keys)
        took = _timed_poll(_sync(url, activator))
    assert TIMEOUT <= took < TIMEOUT + MARGIN
    assert _error(activator) == ("timeout", NO_ANSWER)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux drops SYNs on a full accept queue")
def test_a_connect_that_never_completes_fails_at_the_timeout(keys: Any) -> None:
    activator = _activator(keys)
    with _full_accept_queue() as port:
        took = _timed_poll(_sync(f"http://127.0.0.1:{port}/ml/bundle.json", activator))
    assert TIMEOUT <= took < TIMEOUT + MARGIN
    assert _error(activator) == ("timeout", NO_ANSWER)


def test_a_body_cut_short_of_its_content_length_is_a_failure_of_reason_http(
    serve: Any, keys: Any, bundles: Any
) -> None:
    cut = bundles[3]
    server = serve(_good_then(lambda peer: peer.send(head(length=len(cut) + 100) + cut), bundles))
    activator = _activator(keys)
    _check_bad_answer_is_survived(
        server, activator, _sync(server.url, activator), "http", "the bundle download was cut short"
    )


def test_a_connection_closed_without_an_answer_is_a_failure_of_reason_http(
    serve: Any, keys: Any, bundles: Any
) -> None:
    server = serve(_good_then(lambda peer: None, bundles))
    activator = _activator(keys)
    _check_bad_answer_is_survived(
        server,
        activator,
        _sync(server.url, activator),
        "http",
        "cannot reach the bundle server: Remote end closed connection without response",
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            endless(head(length=10 * 2**30), b"x" * 65536),
            f"the bundle is {10 * 2**30} bytes, over the limit of {MAX_BYTES}",
        ),
        (endless(head(), b"x" * 65536), f"the bundle is over the limit of {MAX_BYTES} bytes"),
        (
            endless(head(Transfer_Encoding="chunked"), b"10000\r\n" + b"x" * 65536 + b"\r\n"),
            f"the bundle is over the limit of {MAX_BYTES} bytes",
        ),
    ],
    ids=["declared", "until-close", "chunked"],
)
def test_an_endless_body_fails_with_reason_size_without_being_read(
    serve: Any, keys: Any, bundles: Any, bad: Answer, message: str
) -> None:
    server = serve(_good_then(bad, bundles))
    activator = _activator(keys)
    sync = _sync(server.url, activator)
    sync.poll_once()
    tracemalloc.start()
    try:
        sync.poll_once()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _error(activator) == ("size", message)
    # The body never ends: the download stopped at the limit, holding about that much.
    assert peak < 8 * MAX_BYTES
    assert _revision(activator) == 1
    sync.poll_once()
    assert _revision(activator) == 2
    assert activator.status.failures == {"size": 1}


def test_bad_bodies_never_replace_the_active_bundle(serve: Any, keys: Any, bundles: Any) -> None:
    stranger = next(iter(trusted_keys([keys["stranger"].public_key()])))
    answers = [
        bundle(bundles[2], '"r2"'),
        bundle(b"\x00\x01 not a bundle", '"garbage"'),
        bundle(build(POLICY, 3, keys["stranger"]), '"stranger"'),
        bundle(bundles[1], '"r1"'),
        bundle(bundles[3], '"r3"'),
    ]
    server = serve(answers)
    activator = _activator(keys)
    sync = _sync(server.url, activator)
    seen = []
    for _ in answers:
        sync.poll_once()
        seen.append((_revision(activator), _error(activator)))
    garbage = ("parse", "not a signed bundle (build one with `feature-sidecar bundle build`)")
    untrusted = ("signature", f"the bundle is signed by an untrusted key ({stranger})")
    rollback = ("rollback", "revision 1 is lower than the active revision 2")
    assert seen == [(2, None), (2, garbage), (2, untrusted), (2, rollback), (3, rollback)]
    assert activator.status.failures == {"parse": 1, "signature": 1, "rollback": 1}
    assert activator.status.consecutive_failures == 0
    # A rejected bundle's ETag is not kept: each poll after one asked without If-None-Match.
    asked = [header_of(request, "If-None-Match") for request in server.heads]
    assert asked == [None, '"r2"', None, None, None]


def test_a_flapping_server_only_ever_activates_good_bundles(
    serve: Any, keys: Any, bundles: Any
) -> None:
    answers = [
        bundle(bundles[1], '"r1"'),
        status("500 Internal Server Error"),
        bundle(bundles[2], '"r2"'),
        stalled_after(b"HTTP/1.1 200 OK\r\n"),
        bundle(bundles[2], '"r2"'),
        bundle(b"{}", '"junk"'),
        bundle(bundles[3], '"r3"'),
        endless(head(), b"y" * 65536),
        bundle(bundles[3], '"r3"'),
        bundle(bundles[1], '"r1"'),
        bundle(bundles[4], '"r4"'),
    ]
    server = serve(answers)
    activator = _activator(keys)
    activated: list[int] = []
    activator.listeners.append(
        lambda event, detail: activated.append(detail.revision) if event == "activated" else None
    )
    sync = _sync(server.url, activator)
    outcomes = []
    for _ in answers:
        sync.poll_once()
        error = _error(activator)
        failed = activator.status.consecutive_failures > 0 and error is not None
        outcomes.append((_revision(activator), error[0] if failed else None))
    assert activated == [1, 2, 3, 4]
    assert outcomes == [
        (1, None), (1, "http"), (2, None), (2, "timeout"), (2, None), (2, "parse"), (3, None),
        (3, "size"), (3, None), (3, "rollback"), (4, None),
    ]  # fmt: skip
    assert activator.status.failures == {
        "http": 1,
        "timeout": 1,
        "parse": 1,
        "size": 1,
        "rollback": 1,
    }
    assert (_revision(activator), activator.status.consecutive_failures) == (4, 0)


def test_a_sidecar_counts_each_failure_by_reason_and_serves_only_good_bundles(
    serve: Any, keys: Any, bundles: Any, tmp_path: Path, redis_server: Any, sidecar_factory: Any
) -> None:
    go = threading.Event()

    def first(peer: Peer) -> None:
        go.wait(5)  # until the test listens to the activator (within the sidecar's timeout)
        bundle(bundles[1], '"r1"')(peer)

    answers = [
        first,
        status("502 Bad Gateway"),
        stalled_after(b""),
        bundle(b"garbage", '"junk"'),
        bundle(bundles[3], '"r3"'),
        bundle(bundles[2], '"r2"'),
        endless(head(length=2 * MAX_BYTES), b"z" * 4096),
        bundle(bundles[4], '"r4"'),
    ]
    server = serve(answers)
    public = tmp_path / "a.pub"
    public.write_bytes(public_key_pem(keys["a"].public_key()))
    sidecar = sidecar_factory(
        ready=False,
        redis=redis_server.url,
        bundle=server.url,
        bundle_public_key=[str(public)],
        allow_unsigned=False,
        workload_principal=RANKER,
        bundle_poll_interval=0.05,
        bundle_timeout=1.0,
        bundle_max_bytes=MAX_BYTES,
    )
    activator = sidecar.sidecar.activator
    activated: list[int] = []
    activator.listeners.append(
        lambda event, detail: activated.append(detail.revision) if event == "activated" else None
    )
    go.set()
    # The listener hears of an activation after the status shows it.
    sidecar.wait_for(lambda: activated[-1:] == [4], timeout=15)
    assert activated == [1, 3, 4]
    registry = sidecar.sidecar.metrics.registry
    counted = {
        reason: registry.get_sample_value(
            "feature_sidecar_bundle_failures_total", {"reason": reason}
        )
        for reason in ("signature", "parse", "rollback", "size", "http", "timeout", "io")
    }
    expected = {"http": 1, "timeout": 1, "parse": 1, "rollback": 1, "size": 1}
    assert counted == {reason: float(expected.get(reason, 0)) for reason in counted}
    assert activator.status.failures == expected
    sidecar.wait_ready()


@pytest.mark.parametrize(
    "value", ["\u00b2", "12abc", "-5"], ids=["superscript", "junk", "negative"]
)
def test_a_malformed_content_length_is_read_to_the_end_not_a_crash(
    serve: Any, keys: Any, bundles: Any, value: str
) -> None:
    # str.isdigit() accepts "²" and int() refuses it: the ValueError used to escape the poll.
    body = bundles[3]
    server = serve(_good_then(lambda peer: peer.send(head(Content_Length=value) + body), bundles))
    activator = _activator(keys)
    sync = _sync(server.url, activator)
    sync.poll_once()
    sync.poll_once()
    assert (_revision(activator), activator.status.failures) == (3, {})


@pytest.mark.skipif(sys.platform != "linux", reason="Linux drops SYNs on a full accept queue")
def test_abort_ends_a_stalled_connect_at_once(keys: Any) -> None:
    activator = _activator(keys)
    with _full_accept_queue() as port:
        fetcher = HttpFetcher(f"http://127.0.0.1:{port}/ml/bundle.json", timeout=30.0)
        sync = BundleSync(fetcher, activator, interval=1.0)
        poller = threading.Thread(target=sync.poll_once)
        poller.start()
        time.sleep(0.2)  # nothing marks a SYN that the kernel dropped
        aborted_at = time.monotonic()
        fetcher.abort()
        poller.join(timeout=5)
        took = time.monotonic() - aborted_at
    assert not poller.is_alive() and took < 0.2
    assert (activator.status.last_error, activator.status.failures) == (None, {})

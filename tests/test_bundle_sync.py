"""Pulling, verifying, activating and persisting bundles, against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import EXAMPLE_POLICY, column_values, put_entity, request, settings, stub

from featuresidecar_server import app
from featuresidecar_server.activation import Activator
from featuresidecar_server.bundle_fetch import (
    BundleSync,
    DownloadAborted,
    HttpFetcher,
    PathFetcher,
)
from featuresidecar_server.bundle_format import BundleError, build, public_key_pem, trusted_keys
from featuresidecar_server.config import ConfigError
from featuresidecar_server.logs import JsonFormatter, PlainFormatter
from featuresidecar_server.snapshot import ActivePolicy

POLICY = EXAMPLE_POLICY.read_text()
RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
MASK_SECRET = b"the sidecar's own secret, 32 B."


class BundleServer:
    """A real HTTP server whose answer each test sets: body, ETag, status, delays, cuts."""

    def __init__(self) -> None:
        self.body = b""
        self.etag: str | None = None
        self.status = 200
        self.delay = 0.0  # before the headers
        self.chunk_delay = 0.0  # between 1 KiB chunks of the body
        self.header_interval = 0.0  # before each byte of the status line and headers
        self.stall = False  # take the request, then answer nothing until close()
        self.stalled = threading.Event()  # a request is being stalled
        self.released = threading.Event()  # close() ends every stall and trickle
        self.declared_length: int | None = None
        self.requests: list[dict[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append({"if_none_match": self.headers.get("If-None-Match")})
                if server.stall:
                    server.stalled.set()
                    server.released.wait()
                    return
                if server.delay:
                    time.sleep(server.delay)
                if server.header_interval:
                    self.trickle_head()
                    return
                if server.status != 200:
                    self.send_response(server.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.etag and self.headers.get("If-None-Match") == server.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                length = server.declared_length or len(server.body)
                self.send_header("Content-Length", str(length))
                if server.etag:
                    self.send_header("ETag", server.etag)
                self.end_headers()
                for start in range(0, len(server.body), 1024):
                    if server.chunk_delay:
                        time.sleep(server.chunk_delay)
                    try:
                        self.wfile.write(server.body[start : start + 1024])
                        self.wfile.flush()
                    except OSError:
                        return

            def trickle_head(self) -> None:
                etag = f"ETag: {server.etag}\r\n" if server.etag else ""
                head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(server.body)}\r\n{etag}\r\n"
                for byte in head.encode():
                    if server.released.wait(server.header_interval):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                    except OSError:
                        return
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/bundles/demo.json"

    def serve(self, body: bytes, etag: str | None = None) -> None:
        self.body, self.etag = body, etag

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[BundleServer]:
    server = BundleServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    return {
        "a": Ed25519PrivateKey.generate(),
        "b": Ed25519PrivateKey.generate(),
        "stranger": Ed25519PrivateKey.generate(),
    }


def _activator(
    keys: dict[str, Any], *names: str, state_dir: Path | None = None, allow_unsigned: bool = False
) -> Activator:
    trusted = trusted_keys([keys[n].public_key() for n in names or ("a",)])
    return Activator(
        ActivePolicy(),
        source="test",
        trusted=trusted,
        allow_unsigned=allow_unsigned,
        state_dir=str(state_dir) if state_dir else None,
        mask_secret=MASK_SECRET,  # the policy masks by hash
    )


def _sync(server: BundleServer, activator: Activator, **fetcher: Any) -> BundleSync:
    return BundleSync(HttpFetcher(server.url, **fetcher), activator, interval=1.0)


def _flip(data: bytes, text: bytes) -> bytes:
    """The bundle with one byte of its payload flipped to another valid base64 character."""
    at = data.index(b'"payload": "') + len(b'"payload": "') + 40
    replacement = b"A" if data[at : at + 1] != b"A" else b"B"
    return data[:at] + replacement + data[at + 1 :]


def _revision(activator: Activator) -> int | None:
    current = activator.active.current
    return None if current is None else current.revision


def test_a_signed_bundle_is_activated_and_status_says_so(
    http_server: BundleServer, keys: Any
) -> None:
    http_server.serve(build(POLICY, 3, keys["a"]), etag='"r3"')
    activator = _activator(keys)
    _sync(http_server, activator).poll_once()
    assert _revision(activator) == 3
    status = activator.status.as_dict()
    assert status["active"]["revision"] == 3
    assert status["active"]["signed"] is True
    assert status["active"]["from"] == http_server.url
    assert status["last_successful_download"] is not None
    assert status["last_activation"] is not None
    assert status["last_error"] is None and status["consecutive_failures"] == 0


@pytest.mark.parametrize(
    ("make", "reason", "message"),
    [
        (
            lambda k: _flip(build(POLICY, 4, k["a"]), b""),
            "signature",
            "the signature by key {a} does not verify",
        ),
        (lambda k: build(POLICY, 4, None), "signature", "the bundle is unsigned"),
        (
            lambda k: build(POLICY, 4, k["stranger"]),
            "signature",
            "the bundle is signed by an untrusted key ({stranger})",
        ),
        (
            lambda k: build(POLICY, 2, k["a"]),
            "rollback",
            "revision 2 is lower than the active revision 3",
        ),
        (
            lambda k: b"\x00\x01garbage",
            "parse",
            "not a signed bundle (build one with `feature-sidecar bundle build`)",
        ),
        (lambda k: build(POLICY, 4, k["a"])[:300], "parse", None),
        (
            lambda k: build(POLICY.replace("type: int64}", "type: integer}", 1), 4, k["a"]),
            "parse",
            "bundle r4:14: catalog.entities[0].join_keys[0].type: unknown type 'integer'",
        ),
    ],
    ids=[
        "tampered",
        "unsigned",
        "unknown-key",
        "lower-revision",
        "corrupt",
        "truncated",
        "invalid-policy",
    ],
)
def test_a_bad_bundle_never_replaces_the_active_one(
    http_server: BundleServer, keys: Any, make: Any, reason: str, message: str | None
) -> None:
    activator = _activator(keys)
    sync = _sync(http_server, activator)
    http_server.serve(build(POLICY, 3, keys["a"]), etag='"good"')
    sync.poll_once()
    assert _revision(activator) == 3
    http_server.serve(make(keys), etag='"bad"')
    sync.poll_once()
    assert _revision(activator) == 3
    error = activator.status.last_error
    assert error is not None and error["reason"] == reason
    if message is not None:
        ids = {
            name: trusted
            for name, trusted in (
                (n, next(iter(trusted_keys([k.public_key()])))) for n, k in keys.items()
            )
        }
        assert error["message"].startswith(message.format(**ids))
    assert activator.status.consecutive_failures == 1
    # The rejected bundle's ETag was not kept: the next poll asks again without it.
    sync.poll_once()
    assert http_server.requests[-1]["if_none_match"] is None
    assert activator.status.consecutive_failures == 2


def test_a_rotated_key_is_trusted_next_to_the_old_one(http_server: BundleServer, keys: Any) -> None:
    activator = _activator(keys, "a", "b")
    sync = _sync(http_server, activator)
    http_server.serve(build(POLICY, 1, keys["a"]))
    sync.poll_once()
    http_server.serve(build(POLICY + "\n# rotated\n", 2, keys["b"]))
    sync.poll_once()
    assert _revision(activator) == 2
    assert activator.status.active_key_id == next(iter(trusted_keys([keys["b"].public_key()])))


def test_etag_gives_304_and_nothing_is_downloaded_again(
    http_server: BundleServer, keys: Any
) -> None:
    activator = _activator(keys)
    sync = _sync(http_server, activator)
    http_server.serve(build(POLICY, 5, keys["a"]), etag='"v5"')
    sync.poll_once()
    sync.poll_once()
    sync.poll_once()
    assert [r["if_none_match"] for r in http_server.requests] == [None, '"v5"', '"v5"']
    assert _revision(activator) == 5
    assert activator.status.consecutive_failures == 0


@pytest.mark.parametrize(
    ("setup", "reason", "message"),
    [
        (
            lambda s: setattr(s, "status", 500),
            "http",
            "the bundle server answered HTTP 500 Internal Server Error",
        ),
        (
            lambda s: setattr(s, "delay", 1.0),
            "timeout",
            "the bundle server did not answer within 0.3 s",
        ),
        (
            lambda s: setattr(s, "chunk_delay", 0.2),
            "timeout",
            "the download took longer than 0.3 s",
        ),
        (
            lambda s: setattr(s, "body", b"x" * 50000),
            "size",
            "the bundle is 50000 bytes, over the limit of 20000",
        ),
        (
            lambda s: setattr(s, "declared_length", 10**6),
            "size",
            "the bundle is 1000000 bytes, over the limit of 20000",
        ),
    ],
    ids=["http-500", "no-answer", "slow-body", "oversized", "oversized-declared"],
)
def test_download_failures_are_recorded_with_their_reason(
    http_server: BundleServer, keys: Any, setup: Any, reason: str, message: str
) -> None:
    http_server.serve(build(POLICY, 1, keys["a"]))
    setup(http_server)
    activator = _activator(keys)
    _sync(http_server, activator, timeout=0.3, max_bytes=20000).poll_once()
    assert activator.active.current is None
    assert activator.status.last_error is not None
    assert (activator.status.last_error["reason"], activator.status.last_error["message"]) == (
        reason,
        message,
    )


def test_a_cut_download_is_rejected(http_server: BundleServer, keys: Any) -> None:
    body = build(POLICY, 1, keys["a"])
    http_server.serve(body)
    http_server.declared_length = len(body) + 100
    activator = _activator(keys)
    _sync(http_server, activator, timeout=2.0).poll_once()
    assert activator.status.last_error is not None
    assert activator.status.last_error["reason"] in ("http", "timeout")
    assert activator.active.current is None


def test_trickled_headers_fail_the_attempt_at_the_timeout_and_a_later_poll_succeeds(
    http_server: BundleServer, keys: Any
) -> None:
    # One byte every 0.5 s keeps each read within its own timeout: only a limit on the whole
    # exchange ends it.
    http_server.serve(build(POLICY, 2, keys["a"]), etag='"r2"')
    http_server.header_interval = 0.5
    activator = _activator(keys)
    sync = _sync(http_server, activator, timeout=1.0)
    started = time.monotonic()
    sync.poll_once()
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.4
    assert activator.active.current is None
    assert activator.status.last_error is not None
    assert (activator.status.last_error["reason"], activator.status.last_error["message"]) == (
        "timeout",
        "the bundle server did not answer within 1 s",
    )
    assert (activator.status.failures, activator.status.consecutive_failures) == (
        {"timeout": 1},
        1,
    )
    http_server.header_interval = 0.0
    sync.poll_once()
    assert _revision(activator) == 2
    assert activator.status.consecutive_failures == 0


def test_a_stalled_server_fails_the_attempt_at_the_timeout(
    http_server: BundleServer, keys: Any
) -> None:
    http_server.serve(build(POLICY, 2, keys["a"]))
    http_server.stall = True
    activator = _activator(keys)
    sync = _sync(http_server, activator, timeout=0.5)
    started = time.monotonic()
    sync.poll_once()
    assert 0.5 <= time.monotonic() - started < 0.9
    assert activator.status.last_error is not None
    assert (activator.status.last_error["reason"], activator.status.last_error["message"]) == (
        "timeout",
        "the bundle server did not answer within 0.5 s",
    )
    http_server.stall = False
    sync.poll_once()
    assert _revision(activator) == 2


def test_abort_ends_a_stalled_download_at_once_and_records_no_failure(
    http_server: BundleServer, keys: Any
) -> None:
    http_server.serve(build(POLICY, 2, keys["a"]))
    http_server.stall = True
    activator = _activator(keys)
    sync = _sync(http_server, activator, timeout=30.0)
    poller = threading.Thread(target=sync.poll_once)
    poller.start()
    assert http_server.stalled.wait(timeout=5)
    aborted_at = time.monotonic()
    sync.fetcher.abort()
    poller.join(timeout=5)
    assert not poller.is_alive()
    assert time.monotonic() - aborted_at < 0.2
    # Stopping says nothing about the source.
    assert activator.status.last_error is None
    assert (activator.status.failures, sync.failures) == ({}, 0)
    with pytest.raises(DownloadAborted):
        sync.fetcher.fetch(None)


def test_a_stop_during_a_stalled_download_ends_the_sync_promptly(
    http_server: BundleServer, keys: Any
) -> None:
    http_server.serve(build(POLICY, 2, keys["a"]))
    http_server.stall = True
    activator = _activator(keys)
    sync = _sync(http_server, activator, timeout=30.0)

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(sync.run(stop))
        while not http_server.stalled.is_set():
            await asyncio.sleep(0.01)
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        return time.monotonic() - stopped_at

    assert asyncio.run(scenario()) < 0.3
    assert (activator.status.last_error, activator.status.failures) == (None, {})


def test_sigterm_during_a_stalled_download_exits_within_the_grace_period(
    http_server: BundleServer, keys: Any, tmp_path: Path, redis_server: Any
) -> None:
    from test_cli_serve import _serve, _wait_serving

    public = tmp_path / "a.pub"
    public.write_bytes(public_key_pem(keys["a"].public_key()))
    http_server.serve(build(POLICY, 1, keys["a"]), etag='"1"')
    sock = tmp_path / "s.sock"
    process = _serve(
        ["--listen", f"unix:{sock}", "--redis", redis_server.url, "--bundle", http_server.url,
         "--bundle-public-key", str(public), "--workload-principal", RANKER,
         "--bundle-poll-interval", "200ms", "--bundle-timeout", "30s", "--grace-period", "1s"]
    )  # fmt: skip
    try:
        _wait_serving(f"unix:{sock}", process)
        http_server.stall = True
        assert http_server.stalled.wait(timeout=5), "the sidecar did not poll again"
        signalled_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        elapsed = time.monotonic() - signalled_at
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert elapsed < 2.0, err
    assert "feature sidecar stopped" in err
    assert "bundle rejected or not fetched" not in err


SIGNED_QUERY = "?X-Amz-Credential=AKIA%2F20261129&X-Amz-Signature=5e1f0c9d7a#part"


@pytest.mark.parametrize("formatter", [PlainFormatter(), JsonFormatter()], ids=["plain", "json"])
def test_a_signed_url_is_logged_without_its_query_string(formatter: logging.Formatter) -> None:
    url = "https://user:pw@bundles.example/ml/bundle.json"
    record = logging.LogRecord(
        "featuresidecar.bundle",
        logging.WARNING,
        __file__,
        1,
        "cannot fetch %s.",
        (url + SIGNED_QUERY,),
        None,
    )
    record.source = url + SIGNED_QUERY
    line = formatter.format(record)
    shown = "https://user:***@bundles.example/ml/bundle.json"
    if isinstance(formatter, JsonFormatter):
        entry = json.loads(line)
        assert (entry["msg"], entry["source"]) == (f"cannot fetch {shown}.", shown)
    else:
        assert line.split(" ", 1)[1] == (
            f"WARNING featuresidecar.bundle: cannot fetch {shown}. source={shown}"
        )


def test_a_failed_poll_of_a_signed_url_logs_no_signature(
    http_server: BundleServer, keys: Any
) -> None:
    http_server.status = 500
    url = http_server.url + SIGNED_QUERY
    activator = Activator(
        ActivePolicy(), source=url, trusted=trusted_keys([keys["a"].public_key()])
    )
    streams = {"plain": io.StringIO(), "json": io.StringIO()}
    handlers = [logging.StreamHandler(streams["plain"]), logging.StreamHandler(streams["json"])]
    handlers[0].setFormatter(PlainFormatter())
    handlers[1].setFormatter(JsonFormatter())
    logger = logging.getLogger("featuresidecar.bundle")
    for handler in handlers:
        logger.addHandler(handler)
    try:
        BundleSync(HttpFetcher(url, timeout=2), activator, interval=1).poll_once()
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    assert activator.status.last_error is not None
    assert activator.status.last_error["reason"] == "http"
    plain, text = streams["plain"].getvalue(), streams["json"].getvalue()
    assert f"source={http_server.url}\n" in plain
    assert json.loads(text)["source"] == http_server.url
    for output in (plain, text):
        assert "X-Amz" not in output and "5e1f0c9d7a" not in output and "#part" not in output


def test_backoff_grows_on_failures_and_jitter_stays_within_ten_percent(keys: Any) -> None:
    sync = BundleSync(
        PathFetcher("/nonexistent"),
        _activator(keys),
        interval=30.0,
        backoff_max=60.0,
        rng=lambda: 1.0,
    )
    assert sync.next_delay() == pytest.approx(33.0)
    sync.rng = lambda: 0.0
    assert sync.next_delay() == pytest.approx(27.0)
    delays = []
    for _ in range(9):
        sync.poll_once()
        delays.append(round(sync.next_delay(), 3))
    assert delays == [0.9, 1.8, 3.6, 7.2, 14.4, 28.8, 54.0, 54.0, 54.0]


def test_persisted_bundle_serves_a_restart_while_the_server_is_down(
    http_server: BundleServer, keys: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = _activator(keys, state_dir=state)
    http_server.serve(build(POLICY, 7, keys["a"]))
    _sync(http_server, first).poll_once()
    persisted = state / "bundle.json"
    assert stat.S_IMODE(persisted.stat().st_mode) == 0o600
    assert persisted.read_bytes() == http_server.body
    http_server.close()

    second = _activator(keys, state_dir=state)
    assert second.load_persisted() is True
    assert _revision(second) == 7
    sync = _sync(http_server, second, timeout=0.5)
    sync.poll_once()  # the server is gone: the persisted bundle stays active
    assert _revision(second) == 7
    assert second.status.last_error is not None and second.status.last_error["reason"] == "http"


def test_a_tampered_persisted_bundle_is_not_loaded(keys: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "bundle.json").write_bytes(_flip(build(POLICY, 7, keys["a"]), b""))
    activator = _activator(keys, state_dir=state)
    assert activator.load_persisted() is False
    assert activator.active.current is None
    assert activator.status.last_error is not None
    assert activator.status.last_error["reason"] == "signature"


def test_a_configmap_style_symlink_swap_is_picked_up(keys: Any, tmp_path: Path) -> None:
    # Kubernetes mounts ConfigMaps as name -> ..data/name, ..data -> ..<timestamp>; an update
    # writes a new timestamped directory and swaps ..data atomically.
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_11_29_01"
    first.mkdir()
    (first / "bundle.json").write_bytes(build(POLICY, 1, keys["a"]))
    os.symlink(first.name, mount / "..data")
    os.symlink("..data/bundle.json", mount / "bundle.json")
    activator = _activator(keys)
    sync = BundleSync(PathFetcher(str(mount / "bundle.json")), activator, interval=1.0)
    sync.poll_once()
    assert _revision(activator) == 1
    sync.poll_once()
    assert activator.status.consecutive_failures == 0
    second = mount / "..2026_11_29_02"
    second.mkdir()
    (second / "bundle.json").write_bytes(build(POLICY + "\n# v2\n", 2, keys["a"]))
    os.symlink(second.name, mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    sync.poll_once()
    assert _revision(activator) == 2


def _serve_http(
    sidecar_factory: Any,
    server: BundleServer,
    keys: Any,
    tmp_path: Path,
    redis_url: str,
    **extra: Any,
) -> Any:
    public = tmp_path / "a.pub"
    public.write_bytes(public_key_pem(keys["a"].public_key()))
    return sidecar_factory(
        redis=redis_url,
        bundle=server.url,
        bundle_public_key=[str(public)],
        allow_unsigned=False,
        workload_principal=RANKER,
        **extra,
    )


def test_a_new_revision_takes_effect_within_one_poll_interval(
    http_server: BundleServer, keys: Any, tmp_path: Path, redis_server: Any, sidecar_factory: Any
) -> None:
    put_entity(
        redis_server.url, EXAMPLE_POLICY, "user_profile", {"user_id": 1}, {"age": 9}, time.time_ns()
    )
    http_server.serve(build(POLICY, 1, keys["a"]), etag='"1"')
    sidecar = _serve_http(
        sidecar_factory, http_server, keys, tmp_path, redis_server.url, bundle_poll_interval=0.5
    )
    _, client = stub(sidecar.address)
    message = request(["user_profile:age"], {"user_id": [1]})
    assert client.GetFeatures(message, timeout=5).policy_revision == 1
    revoked = POLICY.replace('allow: ["service:ranking_v3"]', 'allow: ["user_item:*"]')
    http_server.serve(build(revoked, 2, keys["a"]), etag='"2"')
    changed_at = time.monotonic()
    sidecar.wait_for(lambda: sidecar.sidecar.activator.status.active_revision == 2, timeout=5)
    assert time.monotonic() - changed_at < 0.5 * 1.1 + 0.3
    with pytest.raises(grpc.RpcError) as denied:
        client.GetFeatures(message, timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_calls_in_flight_finish_on_the_policy_they_started_with(
    http_server: BundleServer, keys: Any, tmp_path: Path, redis_server: Any, sidecar_factory: Any
) -> None:
    put_entity(
        redis_server.url, EXAMPLE_POLICY, "user_profile", {"user_id": 1}, {"age": 9}, time.time_ns()
    )
    http_server.serve(build(POLICY, 1, keys["a"]))
    sidecar = _serve_http(
        sidecar_factory,
        http_server,
        keys,
        tmp_path,
        redis_server.url,
        bundle_poll_interval=0.2,
        redis_timeout=5.0,
    )
    _, client = stub(sidecar.address)
    message = request(["user_profile:age"], {"user_id": [1]})
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    future = client.GetFeatures.future(message, timeout=10)
    time.sleep(0.3)  # the call is now waiting for Redis, decided under revision 1
    revoked = POLICY.replace('allow: ["service:ranking_v3"]', 'allow: ["user_item:*"]')
    http_server.serve(build(revoked, 2, keys["a"]))
    sidecar.wait_for(lambda: sidecar.sidecar.activator.status.active_revision == 2, timeout=5)
    os.kill(redis_server.process.pid, signal.SIGCONT)
    response = future.result(timeout=10)
    assert response.policy_revision == 1
    assert column_values(response.columns[0]) == [9]
    with pytest.raises(grpc.RpcError) as denied:
        client.GetFeatures(message, timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_restart_with_the_bundle_server_down_serves_the_persisted_bundle(
    http_server: BundleServer, keys: Any, tmp_path: Path, redis_server: Any, sidecar_factory: Any
) -> None:
    put_entity(
        redis_server.url, EXAMPLE_POLICY, "user_profile", {"user_id": 1}, {"age": 9}, time.time_ns()
    )
    state = tmp_path / "state"
    http_server.serve(build(POLICY, 4, keys["a"]))
    first = _serve_http(
        sidecar_factory,
        http_server,
        keys,
        tmp_path,
        redis_server.url,
        state_dir=str(state),
        listen=[f"unix:{tmp_path}/one.sock"],
    )
    first.stop()
    http_server.close()
    second = _serve_http(
        sidecar_factory,
        http_server,
        keys,
        tmp_path,
        redis_server.url,
        state_dir=str(state),
        listen=[f"unix:{tmp_path}/two.sock"],
    )
    _, client = stub(second.address)
    response = client.GetFeatures(request(["user_profile:age"], {"user_id": [1]}), timeout=5)
    assert response.policy_revision == 4
    assert column_values(response.columns[0]) == [9]


def test_any_one_trusted_signature_that_verifies_is_enough(keys: Any) -> None:
    import json as _json

    good = _json.loads(build(POLICY, 1, keys["b"]))
    bad = _json.loads(build(POLICY + "# other", 1, keys["a"]))["signatures"][0]
    good["signatures"].insert(0, bad)  # a's signature is over another payload
    activator = _activator(keys, "a", "b")
    assert activator.offer(_json.dumps(good).encode(), "test") is True
    assert activator.status.active_key_id == next(iter(trusted_keys([keys["b"].public_key()])))


def test_the_same_policy_under_a_higher_revision_moves_the_revision(keys: Any) -> None:
    activator = _activator(keys)
    assert activator.offer(build(POLICY, 1, keys["a"]), "test") is True
    assert activator.offer(build(POLICY, 1, keys["a"]), "test") is False
    assert activator.offer(build(POLICY, 2, keys["a"]), "test") is True
    assert _revision(activator) == 2


def test_the_parsed_copy_in_the_bundle_gives_the_same_policy_as_the_source(keys: Any) -> None:
    from featuresidecar_server.bundle_format import verify
    from featuresidecar_server.policy_yaml import parse_policy, parse_policy_data

    bundle = verify(build(POLICY, 1, keys["a"]), trusted_keys([keys["a"].public_key()]))
    assert bundle.policy_data is not None
    assert parse_policy_data(bundle.policy_data, "b") == parse_policy(POLICY, "b")


def test_an_https_bundle_server_is_verified_against_the_given_ca(
    http_server: BundleServer, keys: Any, tmp_path: Path
) -> None:
    import ssl

    from test_redis_connections import _certificates

    cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    http_server.httpd.socket = context.wrap_socket(http_server.httpd.socket, server_side=True)
    http_server.serve(build(POLICY, 3, keys["a"]))
    url = http_server.url.replace("http://", "https://")

    trusted = _activator(keys)
    BundleSync(HttpFetcher(url, ca_file=str(cert), timeout=5), trusted, interval=1).poll_once()
    assert _revision(trusted) == 3

    untrusted = _activator(keys)
    BundleSync(HttpFetcher(url, timeout=5), untrusted, interval=1).poll_once()
    assert untrusted.active.current is None
    error = untrusted.status.last_error
    assert error is not None and error["reason"] == "http"
    assert error["message"].startswith("TLS failed: CERTIFICATE_VERIFY_FAILED")


def test_reading_a_bundle_unverified_checks_its_digest_and_lists_the_claimed_keys(
    keys: Any,
) -> None:
    import json as _json

    from featuresidecar_server.bundle_format import BundleError, read_unverified

    data = build(POLICY, 7, keys["a"])
    bundle, claimed = read_unverified(data)
    assert (bundle.revision, bundle.policy_source, bundle.key_id, bundle.signed) == (
        7,
        POLICY,
        "",
        False,
    )
    assert claimed == tuple(trusted_keys([keys["a"].public_key()]))
    document = _json.loads(data)
    changed = {"revision": 7, "policy": POLICY + "# changed", "digest": bundle.digest}
    document["payload"] = base64.b64encode(_json.dumps(changed).encode()).decode()
    with pytest.raises(BundleError) as raised:
        read_unverified(_json.dumps(document).encode())
    assert (raised.value.reason, raised.value.message) == (
        "parse",
        "the bundle's digest does not match its content",
    )


def test_a_policy_that_masks_by_hash_is_refused_without_a_mask_secret(keys: Any) -> None:
    activator = Activator(
        ActivePolicy(), source="test", trusted=trusted_keys([keys["a"].public_key()])
    )
    with pytest.raises(BundleError) as error:
        activator.offer(build(POLICY, 1, keys["a"]), "test")
    assert error.value.reason == "mask_secret"
    assert error.value.message == (
        "rule 1 masks features by hash, which needs a key of the sidecar's own: start it with "
        "--mask-key-file (or FEATURE_SIDECAR_MASK_KEY_FILE); the bundle must not carry the key"
    )
    assert activator.active.current is None
    assert activator.status.failures == {"mask_secret": 1}
    # Redaction needs no secret.
    redacting = POLICY.replace("mask: hash ", "mask: redact")
    assert activator.offer(build(redacting, 2, keys["a"]), "test") is True


def test_a_sidecar_without_a_mask_secret_never_serves_a_hash_mask(
    sidecar_factory: Any, redis_server: Any, tmp_path: Path
) -> None:
    sidecar = sidecar_factory(
        redis=redis_server.url, bundle=str(EXAMPLE_POLICY), mask_key_file=None, ready=False
    )
    sidecar.wait_for(lambda: sidecar.sidecar.activator.status.failures.get("mask_secret", 0) >= 1)
    assert not sidecar.sidecar.readiness.serving
    assert sidecar.sidecar.activator.status.as_dict()["last_error"]["reason"] == "mask_secret"
    short = tmp_path / "short.key"
    short.write_bytes(b"guessable\n")
    with pytest.raises(ConfigError) as error:
        app.build(
            settings(redis=redis_server.url, bundle=str(EXAMPLE_POLICY), mask_key_file=str(short))
        )
    assert str(error.value) == (
        f"--mask-key-file {short}: holds 9 bytes; a mask secret needs at least 16 (e.g. "
        "`head -c 32 /dev/urandom | base64`)"
    )


class _Exploding:
    """A source whose fetch fails in a way no fetcher anticipates (a bug), then recovers."""

    def __init__(self, good: bytes) -> None:
        self.good = good
        self.calls = 0

    def describe(self) -> str:
        return "exploding"

    def abort(self) -> None:
        pass

    def fetch(self, etag: str | None) -> Any:
        from featuresidecar_server.bundle_fetch import Fetched

        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("an unexpected failure")
        return Fetched(self.good, "v1")


def test_an_unexpected_error_in_a_poll_is_recorded_and_polling_goes_on(keys: Any) -> None:
    activator = _activator(keys)
    source = _Exploding(build(POLICY, 1, keys["a"]))
    sync = BundleSync(source, activator, interval=0.01)  # type: ignore[arg-type]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sync.run(stop))
        while activator.active.current is None:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert activator.status.failures == {"internal": 1}
    assert _revision(activator) == 1

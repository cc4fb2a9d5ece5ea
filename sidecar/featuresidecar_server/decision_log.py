"""The decision log: one JSON line per call, written by a thread off the request path.

Calls only put their outcome on a bounded queue; when it is full the line is dropped and
counted, so a slow disk or a stuck reader never slows a call. Tokens never reach this module:
it sees the verified principal, not the credential.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from .grpc_service import CallOutcome

log = logging.getLogger("featuresidecar.decision_log")

# A Python int or short str and its list slot, beyond its bytes on the wire; and one line.
_PER_ID = 64
_PER_LINE = 512
# Lines are written once this many characters are formatted (and at the end of each pass).
_CHUNK = 1 << 20
# Entity ids longer than this are hashed each time: remembering them would let callers fill
# the memory of the hash cache with long ids.
_REMEMBERED_ID = 256
# The writer formats for at most _SLICE seconds at a time, then pauses _PAUSE seconds.
_SLICE = 0.0002
_PAUSE = 0.0005


class DecisionLog:
    def __init__(
        self,
        stream: IO[str],
        *,
        entities: str = "hashed",
        queue_size: int = 10000,
        queue_bytes: int = 64 * 1024 * 1024,
        entity_key: bytes = b"",
        close_stream: bool = False,
        clock: Callable[[], float] = time.time,
        interval: float = 0.05,
    ) -> None:
        self.stream = stream
        self.entities = entities
        # Without a secret, a key of this process alone: a fixed one would let anyone hash
        # candidate ids and find them in the log (the hashes then join only within this run).
        self.entity_key = entity_key or os.urandom(32)
        self._hmac = hmac.new(self.entity_key, digestmod=hashlib.sha256)
        # id of a plan's feature list -> (the lists, their JSON); principal or roles -> JSON.
        self._features_json: dict[int, tuple[Any, Any, Any, str]] = {}
        self._strings: dict[Any, str] = {}
        self._hashed: dict[tuple[str, Any], str] = {}
        self._last_second: tuple[int, str] = (-1, "")
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self.writing = 0  # lines the writer holds right now
        self.on_drop: list[Callable[[], None]] = []
        # A deque, not a Queue: appending takes no lock and wakes nobody; the writer drains it
        # every `interval` seconds and writes what it found at once.
        self._pending: deque[tuple[float, CallOutcome, int]] = deque()
        self._limit = max(1, queue_size)
        # What the waiting calls (their entity ids above all) cost to hold, roughly: counted
        # from the call's arrival until its line is written.
        self._max_bytes = max(1, queue_bytes)
        self._bytes = 0
        self._bytes_lock = threading.Lock()
        self._interval = interval
        self._stopping = threading.Event()
        self._close_stream = close_stream
        self._thread = threading.Thread(target=self._write_loop, name="decision-log", daemon=True)
        self._thread.start()

    @classmethod
    def open(
        cls,
        target: str,
        *,
        entities: str,
        queue_size: int,
        queue_bytes: int,
        entity_key: bytes = b"",
    ) -> DecisionLog:
        """`entity_key` keys the hash of entity ids (the sidecar passes --mask-key-file's
        secret): without it, anyone could hash candidate ids and find them in the log."""
        closing = target != "stdout"
        # closed by close()
        stream = open(target, "a", encoding="utf-8") if closing else sys.stdout  # noqa: SIM115
        return cls(
            stream,
            entities=entities,
            queue_size=queue_size,
            queue_bytes=queue_bytes,
            entity_key=entity_key,
            close_stream=closing,
        )

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def observe(self, outcome: CallOutcome) -> None:
        """Called on the request path: never blocks."""
        cost = _cost(outcome)
        with self._bytes_lock:
            room = len(self._pending) < self._limit and self._bytes + cost <= self._max_bytes
            if room:
                self._bytes += cost
        if not room:
            self.dropped += 1
            for callback in self.on_drop:
                callback()
            return
        self._pending.append((self.clock(), outcome, cost))

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.to_thread(self.close)

    def close(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return  # the writer is stuck; it is a daemon thread and dies with the process
        if self._close_stream:
            try:
                self.stream.close()
            except OSError as exc:  # e.g. the reader of a pipe went away
                log.warning("decision log close failed", extra={"detail": str(exc)})

    def _write_loop(self) -> None:
        pending = self._pending
        while True:
            stopping = self._stopping.wait(self._interval)
            lines: list[str] = []
            size = cost = 0
            slice_end = time.perf_counter() + _SLICE
            while pending:
                stamp, outcome, held = pending.popleft()
                line = self.line(stamp, outcome) + "\n"
                lines.append(line)
                size += len(line)
                cost += held
                if size >= _CHUNK:
                    # Written in chunks: formatted lines are copies of what the queue counts,
                    # and a reader that does not read must not make them pile up.
                    self._write(lines, cost)
                    lines, size, cost = [], 0, 0
                if time.perf_counter() > slice_end and not stopping:
                    # Formatting holds the GIL: after a short slice, step aside so that a call
                    # waiting for the serving thread is not held up for a millisecond.
                    time.sleep(_PAUSE)
                    slice_end = time.perf_counter() + _SLICE
            if lines:
                self._write(lines, cost)
            if stopping:
                return

    def _write(self, lines: list[str], cost: int) -> None:
        """Writes whole lines (a reader never sees half a line), then frees their bytes in the
        queue's count."""
        self.writing = len(lines)
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
            self.written += len(lines)
        except (OSError, ValueError) as exc:
            log.error("decision log write failed", extra={"detail": str(exc)})
        self.writing = 0
        lines.clear()
        with self._bytes_lock:
            self._bytes -= cost

    def line(self, stamp: float, outcome: CallOutcome) -> str:
        record = outcome.record
        identity = outcome.identity
        # Feature lists and roles are the objects cached with the caller's plan, principals
        # repeat: their JSON is made once, not once per line. Request ids, join key names and
        # hashed entity ids are plain ASCII by construction and need no escaping.
        allowed, denied, masked = record.allowed, record.denied, record.masked
        cached = self._features_json.get(id(allowed))
        if (
            cached is None
            or cached[0] is not allowed
            or cached[1] is not denied
            or (cached[2] is not masked)
        ):
            text = _dumps({"allowed": allowed, "denied": denied, "masked": masked})
            cached = (allowed, denied, masked, text)
            self._remember(self._features_json, id(allowed), cached)
        features = cached[3]
        principal = record.principal or (identity.principal if identity else "")
        quoted = self._strings.get(principal)
        if quoted is None:
            quoted = _dumps(principal)
            self._remember(self._strings, principal, quoted)
        roles = self._strings.get(record.roles)
        if roles is None:
            roles = _dumps(list(record.roles))
            self._remember(self._strings, record.roles, roles)
        seconds = int(stamp)
        text = (
            f'{{"time":"{self._second(seconds)}.{int(stamp * 1000) % 1000:03d}Z",'
            f'"request_id":"{outcome.request_id}","method":"{outcome.method}",'
            f'"principal":{quoted},"identity_source":"{identity.source if identity else ""}",'
            f'"roles":{roles},"features":{features},"entity_count":{record.entities},'
            f'"policy_revision":{record.revision},"code":"{outcome.code.name}",'
            f'"latency_ms":{round(outcome.seconds * 1000, 3)}'
        )
        if self.entities == "none":
            return text + "}"
        if self.entities == "plain":
            return f'{text},"entities":{_dumps(record.entity_values)}}}'
        columns = ",".join(
            f'"{name}":["' + '","'.join(self._entity(name, v) for v in values) + '"]'
            if values
            else f'"{name}":[]'
            for name, values in record.entity_values.items()
        )
        return f'{text},"entities":{{{columns}}}}}'

    @staticmethod
    def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
        if len(cache) > 4096:
            cache.clear()
        cache[key] = value

    def _second(self, seconds: int) -> str:
        if seconds != self._last_second[0]:
            self._last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        return self._last_second[1]

    def _entity(self, name: str, value: Any) -> str:
        # Hot entities come back call after call; an HMAC costs more than the rest of a line.
        key = (name, value)
        hashed = self._hashed.get(key)
        if hashed is None:
            digest = self._hmac.copy()
            digest.update(f"{name}={value}".encode())
            hashed = digest.hexdigest()[:16]
            if not isinstance(value, str) or len(value) <= _REMEMBERED_ID:
                self._remember(self._hashed, key, hashed)
        return hashed


def _cost(outcome: CallOutcome) -> int:
    """Bytes a waiting call holds, roughly: its request (whose entity ids the line will show)
    plus a Python object per entity id, plus the line itself."""
    record = outcome.record
    ids = sum(len(values) for values in record.entity_values.values())
    return record.request_bytes + _PER_ID * ids + _PER_LINE


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

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
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from .grpc_service import CallOutcome

log = logging.getLogger("featuresidecar.decision_log")


class DecisionLog:
    def __init__(
        self,
        stream: IO[str],
        *,
        entities: str = "hashed",
        queue_size: int = 10000,
        entity_key: bytes = b"",
        close_stream: bool = False,
        clock: Callable[[], float] = time.time,
        interval: float = 0.05,
    ) -> None:
        self.stream = stream
        self.entities = entities
        self.entity_key = entity_key or b"feature-sidecar/decision-log"
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self.writing = 0  # lines the writer holds right now
        self.on_drop: list[Callable[[], None]] = []
        # A deque, not a Queue: appending takes no lock and wakes nobody; the writer drains it
        # every `interval` seconds and writes what it found at once.
        self._pending: deque[tuple[float, CallOutcome]] = deque()
        self._limit = max(1, queue_size)
        self._interval = interval
        self._stopping = threading.Event()
        self._close_stream = close_stream
        self._thread = threading.Thread(target=self._write_loop, name="decision-log", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, target: str, *, entities: str, queue_size: int) -> DecisionLog:
        if target == "stdout":
            return cls(sys.stdout, entities=entities, queue_size=queue_size)
        stream = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        return cls(stream, entities=entities, queue_size=queue_size, close_stream=True)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def observe(self, outcome: CallOutcome) -> None:
        """Called on the request path: never blocks."""
        if len(self._pending) >= self._limit:
            self.dropped += 1
            for callback in self.on_drop:
                callback()
            return
        self._pending.append((self.clock(), outcome))

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
            lines = []
            while pending:
                stamp, outcome = pending.popleft()
                lines.append(self.line(stamp, outcome) + "\n")
                if len(lines) % 32 == 0:
                    # Lets the serving thread take the GIL now and then: a long batch of lines
                    # must not hold up a call for milliseconds.
                    time.sleep(0)
            if lines:
                self.writing = len(lines)
                try:
                    # Whole lines only: a reader never sees half a line.
                    self.stream.write("".join(lines))
                    self.stream.flush()
                    self.written += len(lines)
                except (OSError, ValueError) as exc:
                    log.error("decision log write failed", extra={"detail": str(exc)})
                self.writing = 0
            if stopping:
                return

    def line(self, stamp: float, outcome: CallOutcome) -> str:
        record = outcome.record
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
            + f".{int(stamp * 1000) % 1000:03d}Z",
            "request_id": outcome.request_id,
            "method": outcome.method,
            "principal": record.principal
            or (outcome.identity.principal if outcome.identity else ""),
            "identity_source": outcome.identity.source if outcome.identity else "",
            "roles": list(record.roles),
            "features": {
                "allowed": record.allowed,
                "denied": record.denied,
                "masked": record.masked,
            },
            "entity_count": record.entities,
            "policy_revision": record.revision,
            "code": outcome.code.name,
            "latency_ms": round(outcome.seconds * 1000, 3),
        }
        if self.entities != "none":
            entry["entities"] = {
                name: [self._entity(name, v) for v in values]
                for name, values in record.entity_values.items()
            }
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))

    def _entity(self, name: str, value: Any) -> Any:
        if self.entities == "plain":
            return value
        message = f"{name}={value}".encode()
        return hmac.new(self.entity_key, message, hashlib.sha256).hexdigest()[:16]

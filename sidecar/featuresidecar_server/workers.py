"""`--workers N`: a supervisor and N worker processes that share the TCP listeners.

The supervisor serves no gRPC. It cleans a Prometheus multiprocess directory, starts N workers
(fresh interpreters: fork and exec, so no gRPC, thread or lock state crosses the fork; each
worker gets PROMETHEUS_MULTIPROC_DIR in its environment before prometheus_client is imported),
serves the HTTP port by adding up the workers' metric files, restarts a worker that dies, and on
SIGTERM forwards it to the workers and exits 0 once they are done.

Every worker is a complete sidecar (`app.run`): it polls the bundle itself, binds the TCP
listeners with SO_REUSEPORT so the kernel spreads connections, and publishes its status to
`worker-<i>.json` in the directory (written atomically when it changes). A unix socket cannot be
shared, so only worker 0 binds `unix:` listeners.

A dead worker's counter files stay in the directory and keep counting in the totals; its
replacement starts new files, so totals neither reset nor double. What a worker killed by SIGKILL
had not written yet is lost: at most its last `metrics.FLUSH_SECONDS` (50 ms) of counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import glob
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.registry import Collector

from .config import ConfigError
from .settings import ServeSettings

log = logging.getLogger("featuresidecar.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATUS_FILE = "worker-{index}.json"
CONFIG_ERROR_EXIT = 2
# A worker that dies sooner than this after its start counts as crashing: back off.
STABLE_SECONDS = 10.0
BACKOFF_MAX = 30.0
_WORKER_COMMAND = (
    "from featuresidecar_server.workers import worker_main; raise SystemExit(worker_main())"
)


def worker_values(settings: ServeSettings, index: int) -> dict[str, Any]:
    """The settings of worker `index`: one process, no HTTP port, unix listeners on worker 0."""
    values = dataclasses.asdict(settings)
    values["workers"] = 1
    values["metrics_listen"] = None
    if index > 0:
        values["listen"] = [a for a in settings.listen if not a.startswith("unix:")]
    return values


def status_path(directory: str, index: int) -> str:
    return os.path.join(directory, STATUS_FILE.format(index=index))


def prepare_directory(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The multiprocess directory, emptied of earlier runs' files; True when it is ours."""
    configured = environ.get(MULTIPROC_ENV)
    if not configured:
        try:
            return tempfile.mkdtemp(prefix="feature-sidecar-metrics-"), True
        except OSError as exc:
            raise ConfigError(
                f"--workers: cannot create a metrics directory ({exc.strerror}); set "
                f"{MULTIPROC_ENV} to a writable directory"
            ) from None
    if os.path.exists(configured) and not os.path.isdir(configured):
        raise ConfigError(f"{MULTIPROC_ENV} {configured}: not a directory")
    try:
        os.makedirs(configured, exist_ok=True)
        for pattern in ("*.db", "worker-*.json", ".worker-*.tmp"):
            for path in glob.glob(os.path.join(configured, pattern)):
                os.unlink(path)
    except OSError as exc:
        raise ConfigError(f"{MULTIPROC_ENV} {configured}: {exc.strerror}") from None
    return configured, False


# --- the worker side ----------------------------------------------------------------------------


class StatusPublisher:
    """Writes this worker's status (bundle status and readiness) to its file when it changes,
    and holds this worker's readiness until every worker listens (see `PeerGate`)."""

    def __init__(
        self,
        path: str,
        index: int,
        parent: int,
        check_every: float = 0.5,
        gate: PeerGate | None = None,
    ) -> None:
        self.path = path
        self.index = index
        self.parent = parent
        self.check_every = check_every
        self.gate = gate
        self._lock = threading.Lock()
        self._written: dict[str, Any] | None = None
        self._sidecar: Any = None

    async def __call__(self, sidecar: Any, stopping: asyncio.Event) -> None:
        """`app.run`'s after-start hook."""
        self._sidecar = sidecar
        # Activation runs in the bundle thread, readiness on the loop: both publish at once.
        sidecar.activator.listeners.append(lambda _event, _detail: self.publish())
        sidecar.readiness.listeners.append(lambda _serving: self.publish())
        self.publish()
        sidecar.tasks.append(asyncio.create_task(self._watch(sidecar.stop_event, stopping)))

    def publish(self) -> None:
        from .status_view import local_status

        sidecar = self._sidecar
        entry = {"worker": self.index, "pid": os.getpid()}
        entry.update(local_status(sidecar.activator, sidecar.readiness))
        with self._lock:
            if entry == self._written:
                return
            temp = os.path.join(
                os.path.dirname(self.path), f".worker-{self.index}-{os.getpid()}.tmp"
            )
            try:
                with open(temp, "w", encoding="utf-8") as handle:
                    json.dump(entry, handle)
                os.replace(temp, self.path)
            except OSError as exc:
                log.error("cannot publish the worker status", extra={"detail": exc.strerror})
                return
            self._written = entry

    async def _watch(self, stop: asyncio.Event, stopping: asyncio.Event) -> None:
        # Also catches what no listener reports (Redis lost while no bundle is active) and the
        # death of the supervisor, after which this worker must not live on alone.
        gate = self.gate
        while not stop.is_set():
            if gate is not None and gate.open(time.monotonic()):
                self._sidecar.readiness.release()
                gate = None
            self.publish()
            if os.getppid() != self.parent:
                log.warning("the supervisor is gone; this worker stops")
                stopping.set()
            wait = self.check_every if gate is None else gate.check_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        self.publish()


class PeerGate:
    """Opens once every worker has listened (its status file exists), or after `patience`.

    HTTP/2 connections live long and the kernel hands each new one to a socket that listens at
    that moment: a worker that served before its siblings bound their sockets would keep every
    connection made meanwhile, e.g. all of a model's channels opened right after the startup
    probe passed."""

    HOLD = "waiting for the other workers to listen"

    def __init__(
        self, paths: list[str], started: float, patience: float = 10.0, check_every: float = 0.02
    ) -> None:
        self.paths = paths
        self.deadline = started + patience
        self.patience = patience
        self.check_every = check_every

    def open(self, now: float) -> bool:
        missing = [path for path in self.paths if not os.path.exists(path)]
        if not missing:
            return True
        if now < self.deadline:
            return False
        log.warning(
            "not every worker listens yet; serving without waiting longer",
            extra={"waited_seconds": self.patience, "missing": len(missing)},
        )
        return True


class _WorkerField(logging.Filter):
    """Adds worker=<i> to every log line, so interleaved lines say whose they are."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.index
        return True


def worker_main() -> int:
    """Entry point of a worker process; reads its start-up message from stdin."""
    try:
        spec = json.loads(sys.stdin.read())
        index = int(spec["index"])
        directory = str(spec["directory"])
        parent = int(spec["parent"])
        workers = int(spec["workers"])
        settings = ServeSettings.from_values(spec["settings"])
    except (ValueError, KeyError, TypeError) as exc:
        print(f"feature-sidecar worker: bad start-up message: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    from . import app, logs
    from .memory import tune_allocator
    from .server import ListenError

    logs.configure(settings.log_format, settings.log_level)
    tune_allocator()
    for handler in logging.getLogger("featuresidecar").handlers:
        handler.addFilter(_WorkerField(index))
    gate = None
    if workers > 1:
        peers = [status_path(directory, i) for i in range(workers)]
        gate = PeerGate(peers, time.monotonic())
    publisher = StatusPublisher(status_path(directory, index), index, parent, gate=gate)
    try:
        hold = PeerGate.HOLD if gate is not None else ""
        return asyncio.run(
            app.run(settings, after_start=publisher, hold=hold, shared_port=workers > 1)
        )
    except (ConfigError, ListenError, ValueError) as exc:
        print(f"feature-sidecar serve: worker {index}: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT


# --- the supervisor -----------------------------------------------------------------------------


@dataclass
class Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0

    @property
    def pid(self) -> int | None:
        process = self.process
        if process is None or process.returncode is not None:
            return None
        return process.pid


class Supervisor:
    def __init__(self, settings: ServeSettings, directory: str) -> None:
        self.settings = settings
        self.directory = directory
        self.slots = [Slot(index) for index in range(settings.workers)]
        self.draining = False
        self.exit_code = 0
        self._stopping: asyncio.Event | None = None
        self._environment = dict(os.environ, **{MULTIPROC_ENV: directory})

    # Running ----------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
        log.info(
            "supervisor started",
            extra={"workers": len(self.slots), "multiprocess_dir": self.directory},
        )
        await self._stopping.wait()
        await self._shutdown()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        log.info("supervisor stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def stop(self, code: int = 0) -> None:
        if self._stopping is not None:
            self.exit_code = self.exit_code or code
            self._stopping.set()

    async def _spawn(self, slot: Slot) -> None:
        message = json.dumps(
            {
                "index": slot.index,
                "directory": self.directory,
                "parent": os.getpid(),
                "workers": len(self.slots),
                "settings": worker_values(self.settings, slot.index),
            }
        ).encode()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER_COMMAND,
            stdin=asyncio.subprocess.PIPE,
            env=self._environment,
        )
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            # Settings go through a pipe, not argv or the environment: a Redis URL may hold a
            # password.
            process.stdin.write(message)
            await process.stdin.drain()
        process.stdin.close()
        slot.process = process
        slot.started = time.monotonic()
        log.info("worker started", extra={"worker": slot.index, "pid": process.pid})

    async def _keep(self, slot: Slot) -> None:
        """Runs one worker slot: start, wait for the exit, restart with backoff."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            await self._spawn(slot)
            assert slot.process is not None
            pid = slot.process.pid
            code = await slot.process.wait()
            self._mark_dead(pid)
            if self._stopping.is_set() or self.draining:
                return
            if code == CONFIG_ERROR_EXIT:
                log.error(
                    "a worker could not start (its error is above); stopping all workers",
                    extra={"worker": slot.index, "pid": pid},
                )
                self.stop(CONFIG_ERROR_EXIT)
                return
            lived = time.monotonic() - slot.started
            slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_SECONDS else 0
            delay = 0.0
            if slot.quick_deaths:
                delay = min(BACKOFF_MAX, 0.5 * 2 ** (slot.quick_deaths - 1))
            log.warning(
                "worker died; restarting it",
                extra={
                    "worker": slot.index,
                    "pid": pid,
                    "exit": _describe_exit(code),
                    "restart_in_seconds": round(delay, 2),
                },
            )
            slot.restarts += 1
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _shutdown(self) -> None:
        self.draining = True
        live = [slot.process for slot in self.slots if slot.process is not None and slot.pid]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        # Workers finish in-flight calls within the grace period, then their own shutdown.
        limit = self.settings.grace_period + self.settings.bundle_timeout + 5.0
        waits = [asyncio.create_task(process.wait()) for process in live]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=limit)
            if pending:
                log.error(
                    "workers did not stop in time; killing them", extra={"count": len(pending)}
                )
                for process in live:
                    if process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                await asyncio.wait(pending, timeout=5.0)
        for process in live:
            self._mark_dead(process.pid)

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]
        except OSError as exc:
            log.warning("cannot clear a dead worker's gauges", extra={"detail": exc.strerror})

    # What the HTTP port shows -----------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        from .metrics import source_label
        from .status_view import not_started

        source = source_label(self.settings.bundle or "")
        out = []
        for slot in self.slots:
            pid = slot.pid
            entry = _read_status(status_path(self.directory, slot.index))
            if pid is None or entry is None or entry.get("pid") != pid:
                entry = not_started(
                    slot.index, pid, source, "starting" if pid is not None else "restarting"
                )
            entry["alive"] = pid is not None
            entry["restarts"] = slot.restarts
            out.append(entry)
        return out

    def status(self) -> dict[str, Any]:
        from .metrics import source_label
        from .status_view import overall

        result = overall(self.entries(), source_label(self.settings.bundle or ""))
        result["supervisor_pid"] = os.getpid()
        if self.draining:
            result["ready"], result["reason"] = False, "shutting down"
        return result

    def ready(self) -> tuple[bool, str]:
        status = self.status()
        return bool(status["ready"]), str(status["reason"])

    def live_pids(self) -> Iterator[tuple[str, int]]:
        yield "supervisor", os.getpid()
        for slot in self.slots:
            pid = slot.pid
            if pid is not None:
                yield str(slot.index), pid


class SupervisorCollector(Collector):
    """The workers' metric files added up, plus restarts and every process's CPU and memory."""

    def __init__(self, supervisor: Supervisor) -> None:
        from prometheus_client import multiprocess

        self.supervisor = supervisor
        self._files = multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            None, path=supervisor.directory
        )

    def collect(self) -> Iterable[Any]:
        from .metrics import worker_restarts_family

        for family in self._files.collect():  # type: ignore[no-untyped-call]
            if family.name == "feature_sidecar_bundle_info":
                # A worker's former revisions stay in its file at 0; only active ones count.
                family.samples = [s for s in family.samples if s.value != 0]
            yield family
        yield worker_restarts_family(sum(slot.restarts for slot in self.supervisor.slots))
        yield from _process_families(self.supervisor.live_pids())


def _process_families(pids: Iterable[tuple[str, int]]) -> list[Any]:
    """process_* metrics of each process, with a `worker` label."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.samples import Sample

    merged: dict[str, Any] = {}
    for worker, pid in pids:
        collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
        for family in collector.collect():
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            for sample in family.samples:
                labels = {**sample.labels, "worker": worker}
                target.samples.append(Sample(sample.name, labels, sample.value))
    return list(merged.values())


def _read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def check_ports_free(listen: Iterable[str]) -> None:
    """ConfigError when a TCP address is already listened on. Workers bind with SO_REUSEPORT,
    which the kernel lets any process of the same user join: probing with a plain bind first
    means a second sidecar on the same port fails at start instead of sharing it."""
    from .settings import parse_host_port

    for address in listen:
        if address.startswith("unix:"):
            continue
        host, port = parse_host_port(address, "--listen")
        try:
            candidates = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror:
            continue  # the workers' own bind reports an address that does not resolve
        for family, kind, proto, _, sockaddr in candidates:
            with socket.socket(family, kind, proto) as probe:
                # Not SO_REUSEPORT: that is what lets a socket join a group already listening.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise ConfigError(
                            f"--listen {address}: the port is in use by another process "
                            "(another sidecar?)"
                        ) from None


def run_workers(settings: ServeSettings) -> int:
    """`feature-sidecar serve --workers N` (N > 1)."""
    from .metrics_http import Endpoints, MetricsServer

    check_ports_free(settings.listen)
    directory, owned = prepare_directory(os.environ)
    supervisor = Supervisor(settings, directory)
    http = None
    try:
        if settings.metrics_listen:
            registry = SupervisorCollector(supervisor)
            http = MetricsServer(
                settings.metrics_listen,
                Endpoints(metrics=registry, status=supervisor.status, ready=supervisor.ready),
            ).start()
        return asyncio.run(supervisor.run())
    finally:
        if http is not None:
            http.stop()
        if owned:
            shutil.rmtree(directory, ignore_errors=True)

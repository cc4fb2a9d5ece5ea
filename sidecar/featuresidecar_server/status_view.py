"""What `/status` and `/readyz` say: one process's view, and the overall view of workers.

Pure functions over plain data (the activator's status dict, readiness flags, worker entries),
so the single-process sidecar and the `--workers` supervisor answer in the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .activation import Activator
from .health import Readiness
from .metrics import source_label

BUNDLE_KEYS = (
    "source",
    "active",
    "last_attempt",
    "last_successful_download",
    "last_activation",
    "last_error",
    "consecutive_failures",
)


def readiness_reason(readiness: Readiness) -> str:
    """Why the sidecar is not serving; "" when it is."""
    if readiness.draining:
        return "shutting down"
    reasons = []
    if not readiness.policy_ready:
        reasons.append("no policy bundle is active yet")
    if not readiness.redis_up:
        reasons.append("Redis does not answer")
    if readiness.held_for:
        reasons.append(readiness.held_for)
    return "; ".join(reasons)


def local_status(activator: Activator, readiness: Readiness) -> dict[str, Any]:
    """The status of the sidecar in this process."""
    status = activator.status.as_dict()
    # A URL may carry a password or a signed query: never shown.
    status["source"] = source_label(status["source"])
    if status["active"]:
        status["active"]["from"] = source_label(status["active"]["from"])
    status["ready"] = readiness.serving
    status["reason"] = readiness_reason(readiness)
    return status


def not_started(index: int, pid: int | None, source: str, reason: str) -> dict[str, Any]:
    """The entry of a worker that has not published a status (yet)."""
    return {
        "worker": index,
        "pid": pid,
        "alive": pid is not None,
        "source": source,
        "active": None,
        "last_attempt": None,
        "last_successful_download": None,
        "last_activation": None,
        "last_error": None,
        "consecutive_failures": 0,
        "ready": False,
        "reason": reason,
    }


def overall(entries: Sequence[Mapping[str, Any]], source: str) -> dict[str, Any]:
    """The view of several workers as one sidecar, with every worker's entry under "workers".

    Conservative where they differ: no active bundle if any worker lacks one, else the lowest
    active revision; the oldest last successful download; the most consecutive failures and
    that worker's last error; ready only when every worker is.
    """
    result: dict[str, Any] = {"source": source}
    actives = [entry.get("active") for entry in entries]
    if entries and all(actives):
        result["active"] = min(actives, key=lambda active: int(active["revision"]))  # type: ignore[index]
    else:
        result["active"] = None
    result["revisions"] = sorted({int(a["revision"]) for a in actives if a})
    result["last_attempt"] = _latest(entry.get("last_attempt") for entry in entries)
    downloads = [entry.get("last_successful_download") for entry in entries]
    result["last_successful_download"] = (
        min(downloads) if downloads and all(downloads) else None  # type: ignore[type-var]
    )
    result["last_activation"] = _latest(entry.get("last_activation") for entry in entries)
    worst = max(entries, key=lambda e: int(e.get("consecutive_failures") or 0), default=None)
    failures = int(worst.get("consecutive_failures") or 0) if worst else 0
    result["consecutive_failures"] = failures
    if worst is not None and failures:
        result["last_error"] = worst.get("last_error")
    else:
        errors = [e["last_error"] for e in entries if e.get("last_error")]
        result["last_error"] = max(errors, key=lambda error: str(error.get("time")), default=None)
    not_ready = [e for e in entries if not e.get("ready")]
    result["ready"] = bool(entries) and not not_ready
    result["reason"] = "; ".join(
        f"worker {e.get('worker')}: {e.get('reason') or 'not ready'}" for e in not_ready
    )
    result["workers"] = [dict(entry) for entry in entries]
    return result


def problems(status: Mapping[str, Any]) -> list[str]:
    """What makes `feature-sidecar status` exit 1: no active bundle, a failing last attempt."""
    found = []
    if not status.get("active"):
        found.append("no policy bundle is active")
    if int(status.get("consecutive_failures") or 0) > 0:
        error = status.get("last_error") or {}
        detail = f" ({error.get('reason')}: {error.get('message')})" if error else ""
        found.append(f"the last bundle attempt failed{detail}")
    return found


def _latest(stamps: Any) -> str | None:
    present = [stamp for stamp in stamps if stamp]
    return max(present) if present else None

"""Side work of a call (metrics, the decision log) that must never change the call's outcome.

A failure there is logged (at most once a minute per kind of work, so a broken observer cannot
flood the log) and swallowed: the caller gets the answer the request path produced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("featuresidecar.observers")

_QUIET_SECONDS = 60.0
_last_logged: dict[str, float] = {}
_suppressed: dict[str, int] = {}


def contained(what: str, work: Callable[..., Any], *args: Any) -> None:
    """Runs `work(*args)`; an exception is logged as `what` failing, never raised."""
    try:
        work(*args)
    except Exception as exc:
        _report(what, exc)


def _report(what: str, exc: Exception, clock: Callable[[], float] = time.monotonic) -> None:
    now = clock()
    if now - _last_logged.get(what, -_QUIET_SECONDS) < _QUIET_SECONDS:
        _suppressed[what] = _suppressed.get(what, 0) + 1
        return
    _last_logged[what] = now
    log.error(
        "%s failed; the call's outcome stands",
        what,
        exc_info=exc,
        extra={"suppressed_since_last": _suppressed.pop(what, 0)},
    )

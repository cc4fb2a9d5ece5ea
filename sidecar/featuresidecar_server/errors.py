"""What can go wrong with a call, as plain exceptions (pure).

Each class is one gRPC code; `grpc_errors` converts them at the boundary through one table. The
message is one sentence for the caller: it names the field and the problem, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Caller input echoed in a message is cut to this many characters: a message travels in the
# call's trailing metadata, which the caller's gRPC refuses beyond a few KiB.
ECHO_LIMIT = 80
# Lists in a message (features denied, say) show this many names, then how many more.
LIST_LIMIT = 10


class ServiceError(Exception):
    """Base class; `str(exc)` is what the caller sees."""

    def __init__(self, message: str, *, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        # Trailing metadata for the caller (e.g. a retry hint).
        self.metadata = metadata


class InvalidArgument(ServiceError):
    pass


class NotFound(ServiceError):
    pass


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class ResourceExhausted(ServiceError):
    pass


class Unavailable(ServiceError):
    pass


class DeadlineExceeded(ServiceError):
    pass


class FailedPrecondition(ServiceError):
    pass


def quoted(value: Any) -> str:
    """`repr` of caller input for a message, cut to ECHO_LIMIT characters."""
    if isinstance(value, str) and len(value) > ECHO_LIMIT:
        return f"{value[:ECHO_LIMIT]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 2 * ECHO_LIMIT else f"{text[:ECHO_LIMIT]}…"


def named(text: str) -> str:
    """Caller input used as a name in a message (entities.NAME), cut to ECHO_LIMIT."""
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}…"


def listed(names: Sequence[str]) -> str:
    """Names joined with commas; past LIST_LIMIT of them, how many more."""
    shown = ", ".join(names[:LIST_LIMIT])
    if len(names) > LIST_LIMIT:
        shown += f" and {len(names) - LIST_LIMIT} more"
    return shown

"""What can go wrong with a call, as plain exceptions (pure).

Each class is one gRPC code; `grpc_errors` converts them at the boundary through one table. The
message is one sentence for the caller: it names the field and the problem, never a secret.
"""

from __future__ import annotations


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

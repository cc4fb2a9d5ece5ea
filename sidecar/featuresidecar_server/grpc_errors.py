"""The one table from exception to gRPC status, used at the boundary only."""

from __future__ import annotations

import asyncio

import grpc

from . import errors
from .store import StoreError

_TABLE: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    StoreError: grpc.StatusCode.INTERNAL,
}

INTERNAL_MESSAGE = "internal error in the sidecar; its log has the details (request id {})"


def status_of(
    exc: BaseException, request_id: str
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, one-sentence message, trailing metadata) for any exception."""
    if isinstance(exc, errors.ServiceError):
        for cls in type(exc).__mro__:
            code = _TABLE.get(cls)
            if code is not None:
                return code, _bounded(exc.message), exc.metadata
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time", ()
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE.format(request_id), ()


def is_expected(exc: BaseException) -> bool:
    """Errors that are the caller's or the environment's, not a bug (no stack trace logged)."""
    return isinstance(exc, errors.ServiceError)


# Whatever a message echoes, it must fit the caller's metadata limit (the status travels in
# trailers); each echo is already cut, this is the last guard.
MAX_MESSAGE = 2000


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"

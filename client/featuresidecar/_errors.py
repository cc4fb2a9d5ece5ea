"""Typed exceptions for the gRPC codes a caller can act on, and the one table that picks them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

Metadata = tuple[tuple[str, str | bytes], ...]

RETRY_AFTER_KEY = "retry-after-ms"


class FeatureSidecarError(Exception):
    """Base class of every error a call raises: the gRPC `code` and the sidecar's `details`."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        trailing_metadata: Metadata = (),
        attempts: int = 1,
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
        # How many attempts the call made before giving up (retries of UNAVAILABLE).
        self.attempts = attempts
        super().__init__(self._message())

    def _message(self) -> str:
        name = getattr(self.code, "name", str(self.code))
        text = f"{name}: {self.details}" if self.details else name
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        return text


class InvalidArgumentError(FeatureSidecarError):
    """The request is malformed; `details` names the field."""


class FeatureNotFoundError(FeatureSidecarError):
    """An unknown feature, view or feature service."""


class UnauthenticatedError(FeatureSidecarError):
    """The sidecar could not establish who is calling."""


class PermissionDeniedError(FeatureSidecarError):
    """The caller may not read some requested features; `details` names them."""


class ResourceExhaustedError(FeatureSidecarError):
    """A limit was hit: too many entities in one call, or too many calls per second."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the sidecar asks to wait before calling again, when it said so."""
        return retry_after(self.trailing_metadata)


class UnavailableError(FeatureSidecarError):
    """The sidecar or its Redis cannot answer now; worth retrying later."""


class DeadlineExceededError(FeatureSidecarError):
    """The call's deadline passed before an answer came."""


class InternalError(FeatureSidecarError):
    """Any other failure: a bug, a cancelled call, or a response this client cannot read."""


_TABLE: dict[grpc.StatusCode, type[FeatureSidecarError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: FeatureNotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def error_class(code: grpc.StatusCode) -> type[FeatureSidecarError]:
    return _TABLE.get(code, InternalError)


def from_rpc_error(exc: grpc.RpcError, attempts: int = 1) -> FeatureSidecarError:
    """The typed error for a failed call (the caller raises it `from exc`)."""
    code = _call(exc, "code") or grpc.StatusCode.UNKNOWN
    details = _call(exc, "details") or ""
    trailing = _metadata(_call(exc, "trailing_metadata"))
    return error_class(code)(code, str(details), trailing_metadata=trailing, attempts=attempts)


def malformed(problem: str) -> InternalError:
    """The error for a response that breaks the wire contract."""
    return InternalError(grpc.StatusCode.INTERNAL, f"malformed response: {problem}")


def retry_after(metadata: Iterable[tuple[str, str | bytes]]) -> float | None:
    for key, value in metadata:
        if key != RETRY_AFTER_KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            millis = int(text.strip())
        except ValueError:
            return None
        return millis / 1000.0 if millis >= 0 else None
    return None


def _call(exc: grpc.RpcError, method: str) -> Any:
    # A bare RpcError (not a grpc.Call) has none of these methods.
    fn = getattr(exc, method, None)
    return fn() if callable(fn) else None


def _metadata(raw: Any) -> Metadata:
    if not raw:
        return ()
    return tuple((str(key), value) for key, value in raw)

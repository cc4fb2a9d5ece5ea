"""The blocking client: one channel to the sidecar, typed errors, retries inside one deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from ._catalog import Catalog, catalog_from, list_request
from ._channel import ClientSettings, call_metadata
from ._request import EntityValues, features_request
from ._result import FeatureResult
from ._retry import Attempts, Retry
from .v1 import feature_service_pb2_grpc as pb_grpc

Reply = TypeVar("Reply")


class FeatureClient:
    """Reads features from the sidecar, blocking. Thread-safe; share one per process.

    `target` is "unix:/path", "unix:///path" or "host:port". `token` travels as
    `authorization: Bearer <token>`. `deadline` (seconds) is the default budget of each call,
    retries included; `retry` says which failures are tried again. `credentials` turn on TLS.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        metadata: Iterable[tuple[str, str | bytes]] = (),
        deadline: float = 2.0,
        retry: Retry = Retry(),  # noqa: B008 - a frozen, immutable value
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._settings = ClientSettings(
            target, token, metadata, deadline, retry, credentials, options
        )
        settings = self._settings
        if settings.credentials is not None:
            self._channel = grpc.secure_channel(
                settings.target, settings.credentials, settings.options
            )
        else:
            self._channel = grpc.insecure_channel(settings.target, settings.options)
        self._stub = pb_grpc.FeatureServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._closed = False

    def __repr__(self) -> str:
        # No metadata here: it carries the token.
        return f"FeatureClient({self._settings.target!r}, deadline={self._settings.deadline})"

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()

    def get_features(
        self,
        features: Sequence[str] | None = None,
        entities: Mapping[str, EntityValues] | None = None,
        *,
        feature_service: str | None = None,
        allow_partial: bool = False,
        deadline: float | None = None,
        metadata: Iterable[tuple[str, str | bytes]] | None = None,
    ) -> FeatureResult:
        """The values of `features` (or of `feature_service`) for every entity row."""
        request = features_request(features, entities, feature_service, allow_partial)
        return FeatureResult(self._call(self._stub.GetFeatures, request, deadline, metadata))

    def list_features(
        self,
        view: str | None = None,
        tag: str | None = None,
        *,
        deadline: float | None = None,
        metadata: Iterable[tuple[str, str | bytes]] | None = None,
    ) -> Catalog:
        """The features this caller may read, optionally of one view or with one tag."""
        request = list_request(view, tag)
        return catalog_from(self._call(self._stub.ListFeatures, request, deadline, metadata))

    def _call(
        self,
        method: Callable[..., Reply],
        request: Any,
        deadline: float | None,
        metadata: Iterable[tuple[str, str | bytes]] | None,
    ) -> Reply:
        if self._closed:
            raise RuntimeError("this FeatureClient is closed")
        settings = self._settings
        pairs = call_metadata(settings.metadata, metadata)
        attempts = Attempts(settings.retry, settings.budget(deadline))
        while True:
            try:
                return method(request, timeout=attempts.timeout(), metadata=pairs)
            except grpc.RpcError as exc:
                delay = attempts.failed(exc)
            time.sleep(delay)

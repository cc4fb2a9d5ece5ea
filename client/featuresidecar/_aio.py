"""The asyncio client: the same calls as FeatureClient, awaited, over grpc.aio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from ._catalog import Catalog, catalog_from, list_request
from ._channel import ClientSettings, call_metadata
from ._request import EntityValues, features_request
from ._result import FeatureResult
from ._retry import Attempts, Retry
from .v1 import feature_service_pb2_grpc as pb_grpc

Reply = TypeVar("Reply")


class AsyncFeatureClient:
    """Reads features from the sidecar without blocking the event loop.

    Create it inside the event loop that uses it (gRPC binds the channel to that loop); the
    arguments are those of `FeatureClient`. Use `async with`, or `await client.close()`.
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
            self._channel = grpc.aio.secure_channel(
                settings.target, settings.credentials, settings.options
            )
        else:
            self._channel = grpc.aio.insecure_channel(settings.target, settings.options)
        self._stub = pb_grpc.FeatureServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._closed = False

    def __repr__(self) -> str:
        # No metadata here: it carries the token.
        return f"AsyncFeatureClient({self._settings.target!r}, deadline={self._settings.deadline})"

    async def __aenter__(self) -> AsyncFeatureClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._channel.close()

    async def get_features(
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
        response = await self._call(self._stub.GetFeatures, request, deadline, metadata)
        return FeatureResult(response)

    async def list_features(
        self,
        view: str | None = None,
        tag: str | None = None,
        *,
        deadline: float | None = None,
        metadata: Iterable[tuple[str, str | bytes]] | None = None,
    ) -> Catalog:
        """The features this caller may read, optionally of one view or with one tag."""
        request = list_request(view, tag)
        return catalog_from(await self._call(self._stub.ListFeatures, request, deadline, metadata))

    async def _call(
        self,
        method: Callable[..., Awaitable[Reply]],
        request: Any,
        deadline: float | None,
        metadata: Iterable[tuple[str, str | bytes]] | None,
    ) -> Reply:
        if self._closed:
            raise RuntimeError("this AsyncFeatureClient is closed")
        settings = self._settings
        pairs = call_metadata(settings.metadata, metadata)
        attempts = Attempts(settings.retry, settings.budget(deadline))
        while True:
            try:
                return await method(request, timeout=attempts.timeout(), metadata=pairs)
            except grpc.RpcError as exc:
                delay = attempts.failed(exc)
            await asyncio.sleep(delay)

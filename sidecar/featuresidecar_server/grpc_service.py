"""The gRPC face of FeatureService: identity in, errors out through one table."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar.v1 import feature_service_pb2_grpc as pb_grpc

from .access import Identity
from .authn import Authenticator
from .errors import InvalidArgument, ResourceExhausted
from .grpc_errors import is_expected, status_of
from .isolation import contained
from .service import CallRecord, FeatureReader

log = logging.getLogger("featuresidecar.calls")

SERVICE = "featuresidecar.v1.FeatureService"


@dataclass
class CallOutcome:
    method: str
    code: grpc.StatusCode
    seconds: float
    request_id: str
    record: CallRecord
    identity: Identity | None


Observer = Callable[[CallOutcome], None]
# Called with the method name when a call starts (e.g. grpc_server_started_total).
Starter = Callable[[str], None]
Response = TypeVar("Response")


_PROCESS = f"{os.getpid():x}-{os.urandom(3).hex()}"
_COUNTER = itertools.count(1)


def _request_id(metadata: Any) -> str:
    """The caller's `x-request-id`, else one unique to this process and call."""
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str):
            cleaned = "".join(c for c in value[:64] if c.isalnum() or c in "-_.:")
            if cleaned:
                return cleaned
    return f"{_PROCESS}-{next(_COUNTER):x}"


class FeatureServicer(pb_grpc.FeatureServiceServicer):
    def __init__(
        self,
        reader: FeatureReader,
        authenticator: Authenticator,
        observers: list[Observer] | None = None,
        starters: list[Starter] | None = None,
        *,
        max_inflight: int | None = None,
    ) -> None:
        self.reader = reader
        self.authenticator = authenticator
        self.observers: list[Observer] = observers or []
        self.starters: list[Starter] = starters or []
        self.max_inflight = max_inflight
        self.inflight = 0

    def _identify(self, context: grpc.aio.ServicerContext[Any, Any], metadata: Any) -> Identity:
        return self.authenticator.identify(
            metadata,
            lambda: context.peer() or "",
            lambda: context.auth_context() or {},
        )

    async def GetFeatures(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Takes the request's bytes and returns the response's: the request is decoded only
        once the caller is identified, and the response is built as bytes (see `handlers`)."""

        async def handle(identity: Identity, record: CallRecord) -> bytes:
            request = _parse(pb.GetFeaturesRequest, raw)
            remaining = context.time_remaining()
            return await self.reader.get_features(request, identity, record, remaining)

        return await self._call("GetFeatures", context, handle, len(raw))

    async def ListFeatures(
        self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListFeaturesResponse:
        async def handle(identity: Identity, record: CallRecord) -> pb.ListFeaturesResponse:
            request = _parse(pb.ListFeaturesRequest, raw)
            record.principal = identity.principal
            return self.reader.list_features(request, identity)

        return await self._call("ListFeatures", context, handle, len(raw))

    async def _call(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        handle: Callable[[Identity, CallRecord], Awaitable[Response]],
        size: int,
    ) -> Response:
        for starter in self.starters:
            contained("counting a call's start", starter, method)
        start = time.perf_counter()
        record = CallRecord(request_bytes=size)
        identity: Identity | None = None
        code = grpc.StatusCode.OK
        metadata = context.invocation_metadata()
        request_id = _request_id(metadata)
        failure: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None
        admitted = False
        try:
            if self.max_inflight is not None and self.inflight >= self.max_inflight:
                raise ResourceExhausted(
                    f"the sidecar is serving its limit of {self.max_inflight} calls at once "
                    "(--max-inflight); retry after a short backoff"
                )
            self.inflight += 1
            admitted = True
            identity = self._identify(context, metadata)
            return await handle(identity, record)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            failure = status_of(exc, request_id)
            code = failure[0]
            if not is_expected(exc):
                log.error(
                    "call failed",
                    exc_info=exc,
                    extra={"method": method, "request_id": request_id},
                )
        finally:
            if admitted:
                self.inflight -= 1
            outcome = CallOutcome(
                method,
                code,
                time.perf_counter() - start,
                request_id,
                record,
                identity,
            )
            for observer in self.observers:
                contained("observing a call", observer, outcome)
        # Outside the try: abort() raises to end the call.
        assert failure is not None
        code, message, trailing = failure
        if trailing:
            context.set_trailing_metadata(trailing)
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # it always raises


def handlers(servicer: FeatureServicer) -> grpc.GenericRpcHandler:
    """FeatureService's method handlers. Requests arrive as bytes, decoded by the servicer once
    the caller is identified (an unknown caller costs no decoding); GetFeatures responses are
    built as bytes by `wire`, so they leave without a protobuf object per column. The contract
    on the wire is unchanged."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetFeatures": grpc.unary_unary_rpc_method_handler(
                servicer.GetFeatures, request_deserializer=None, response_serializer=None
            ),
            "ListFeatures": grpc.unary_unary_rpc_method_handler(
                servicer.ListFeatures,
                request_deserializer=None,
                response_serializer=pb.ListFeaturesResponse.SerializeToString,
            ),
        },
    )


Message = TypeVar("Message", pb.GetFeaturesRequest, pb.ListFeaturesRequest)


def _parse(message: type[Message], raw: bytes) -> Message:
    """Request bytes that are not the expected message are INVALID_ARGUMENT, not gRPC's own
    INTERNAL "Exception deserializing request"."""
    try:
        return message.FromString(raw)
    except DecodeError:
        raise InvalidArgument(
            f"the request is not a valid {message.DESCRIPTOR.full_name} message"
        ) from None

"""The floors the sidecar is measured against, in the same run.

- floor_redis: what model code does with no sidecar: redis-py + hiredis, one pipeline of HMGET,
  every value decoded to a Python value by protobuf's C parser (a Feast-compatible `Value`
  message built from a descriptor at run time, as Feast's SDK would parse it).
- floor_grpc: a do-nothing gRPC server in the same Python and grpcio, returning a pre-built
  response of the same size, with the same number of worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from featuresidecar_server.entity_key import redis_key
from featuresidecar_server.layout import field_of, ts_field_of
from featuresidecar_server.valuetypes import KINDS

_F = descriptor_pb2.FieldDescriptorProto


def _value_class() -> Any:
    """Feast's Value message (the fields this benchmark stores), from its field numbers."""
    file = descriptor_pb2.FileDescriptorProto(
        name="bench_feast_value.proto", package="benchfeast", syntax="proto3"
    )
    floats = file.message_type.add(name="FloatList")
    floats.field.add(name="val", number=1, type=_F.TYPE_FLOAT, label=_F.LABEL_REPEATED)
    value = file.message_type.add(name="Value")
    value.oneof_decl.add(name="val")
    for name, number, kind in (
        ("int64_val", 4, _F.TYPE_INT64),
        ("double_val", 5, _F.TYPE_DOUBLE),
        ("float_val", 6, _F.TYPE_FLOAT),
    ):
        value.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL, oneof_index=0)
    value.field.add(
        name="float_list_val",
        number=16,
        type=_F.TYPE_MESSAGE,
        type_name=".benchfeast.FloatList",
        label=_F.LABEL_OPTIONAL,
        oneof_index=0,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("benchfeast.Value"))


Value = _value_class()


def floor_redis(url: str, refs: Sequence[str]) -> Callable[[Sequence[int]], list[list[Any]]]:
    """A function fetching and decoding `refs` for some users, as model code would."""
    client = redis.Redis.from_url(url)
    views = sorted({ref.split(":")[0] for ref in refs})
    fields = [field_of(ref) for ref in refs] + [ts_field_of(v) for v in views]
    width = len(refs)
    key_kind = [("user_id", KINDS["int64"])]

    def fetch(users: Sequence[int]) -> list[list[Any]]:
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.hmget(redis_key(key_kind, [user], "bench"), fields)
        rows = []
        for reply in pipe.execute():
            row: list[Any] = []
            for raw in reply[:width]:
                if raw is None:
                    row.append(None)
                    continue
                value = Value.FromString(raw)
                which = value.WhichOneof("val")
                row.append(
                    list(value.float_list_val.val)
                    if which == "float_list_val"
                    else getattr(value, which)
                    if which
                    else None
                )
            for raw in reply[width:]:
                stamp = timestamp_pb2.Timestamp.FromString(raw) if raw else None
                row.append(stamp.seconds * 10**9 + stamp.nanos if stamp else None)
            rows.append(row)
        return rows

    return fetch


# --- floor_grpc: run as its own process -------------------------------------------------------


def _serve(port: int, payload: bytes, ready: Any) -> None:
    import grpc  # created after fork only

    async def main() -> None:
        async def handler(request: bytes, context: Any) -> bytes:
            return payload

        rpc = grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=None, response_serializer=None
        )
        generic = grpc.method_handlers_generic_handler(
            "featuresidecar.v1.FeatureService", {"GetFeatures": rpc}
        )
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers((generic,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0.5)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description="do-nothing gRPC server returning fixed bytes")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--response", required=True, help="file with the serialized response")
    args = parser.parse_args()
    with open(args.response, "rb") as handle:
        payload = handle.read()
    import multiprocessing

    context = multiprocessing.get_context("fork")
    children = []
    for _ in range(args.workers):
        ready = context.Event()
        child = context.Process(target=_serve, args=(args.port, payload, ready))
        child.start()
        ready.wait(30)
        children.append(child)
    print("ready", flush=True)

    def stop(*_: Any) -> None:
        for child in children:
            if child.pid:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.join()
    sys.exit(0)


if __name__ == "__main__":
    main()

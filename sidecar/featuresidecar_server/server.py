"""The gRPC server: FeatureService, health, reflection, listeners (TCP, unix, TLS)."""

from __future__ import annotations

import os
import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .config import read_flag_file
from .grpc_service import SERVICE, FeatureServicer, handlers

# Responses can be larger than requests (many rows x many features); requests have their own,
# configurable limit.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024


class ListenError(RuntimeError):
    pass


def tls_credentials(
    cert: str | None, key: str | None, client_ca: str | None
) -> grpc.ServerCredentials | None:
    if not cert or not key:
        return None
    pair = (read_flag_file("--tls-key", key), read_flag_file("--tls-cert", cert))
    if client_ca:
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=read_flag_file("--tls-client-ca", client_ca),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def build_server(
    servicer: FeatureServicer,
    health_servicer: health.aio.HealthServicer,
    *,
    listen: list[str],
    reflection_on: bool = True,
    credentials: grpc.ServerCredentials | None = None,
    max_request_bytes: int = 16 * 1024 * 1024,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, list[str]]:
    """The server with every listener bound; returns it and the bound addresses.

    `reuse_port` (SO_REUSEPORT) only for the workers of one supervisor: a lone sidecar holds
    its port alone, so that a second process cannot bind it and take a share of the
    connections (and the bearer tokens they carry)."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # gRPC refuses a larger message from its length prefix, before holding it whole.
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            # All of a call's metadata (a bearer token is the largest part): larger is refused
            # with RESOURCE_EXHAUSTED as it arrives.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ]
    )
    server.add_generic_rpc_handlers((handlers(servicer),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_on:
        names = (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    bound = []
    for address in listen:
        if address.startswith("unix:"):
            path = address[len("unix:") :].removeprefix("//")
            directory = os.path.dirname(path) or "."
            if not os.path.isdir(directory):
                raise ListenError(f"--listen {address}: directory {directory} does not exist")
            if os.path.exists(path):
                if _answers(path):
                    raise ListenError(
                        f"--listen {address}: another process (another sidecar?) is serving on "
                        "that socket"
                    )
                os.unlink(path)  # a socket left by an earlier run
            port = server.add_insecure_port(address)
            bound.append(address)
            continue
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:
            raise ListenError(_in_use(address)) from None
        if port == 0:
            raise ListenError(_in_use(address))
        host = address.rpartition(":")[0]
        bound.append(f"{host}:{port}")
    return server, bound


def _in_use(address: str) -> str:
    return (
        f"--listen {address}: cannot bind; is another process (another sidecar?) listening "
        "on that port?"
    )


def _answers(path: str) -> bool:
    """Whether something listens on the unix socket at `path` (not a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True

"""How a client reaches the sidecar: the target, channel options and call metadata (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from ._errors import Metadata
from ._retry import Retry

# The sidecar accepts messages up to this size; gRPC's 4 MiB default would refuse a response
# of, say, 200,000 rows x 4 float64 features on the client side.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A restarted sidecar is back within a second; gRPC's default reconnect backoff (1 s growing
    # to 120 s) would make every retry inside a short deadline fail without even trying.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

_PASS_THROUGH = ("dns:", "ipv4:", "ipv6:", "unix-abstract:")
_KEY = re.compile(r"[0-9a-z_.\-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")


def check_target(target: object) -> str:
    """`target` if gRPC can dial it: "unix:/path", "unix:///path" or "host:port"."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target: expected 'unix:/path' or 'host:port', got {target!r}")
    if target.startswith("unix:"):
        if not target[len("unix:") :].removeprefix("//"):
            raise ValueError(f"target {target!r}: the unix socket path is empty")
        return target
    if target.startswith(_PASS_THROUGH):
        return target
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"target {target!r}: expected 'unix:/path', 'unix:///path' or 'host:port' "
            "with a port from 1 to 65535"
        )
    return target


def check_deadline(deadline: object, where: str) -> float:
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, (int, float))
        or not math.isfinite(deadline)
        or deadline <= 0
    ):
        raise ValueError(f"{where}: expected a number of seconds > 0, got {deadline!r}")
    return float(deadline)


def channel_options(options: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The defaults above, each replaced by the caller's option of the same name."""
    given: dict[str, Any] = {}
    for index, pair in enumerate(options):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"options[{index}]: expected a (name, value) pair, got {pair!r}")
        given[pair[0]] = pair[1]
    merged = {name: value for name, value in DEFAULT_OPTIONS}
    merged.update(given)
    return list(merged.items())


def base_metadata(token: object, metadata: Iterable[tuple[str, str | bytes]]) -> Metadata:
    """The metadata every call of a client carries: the bearer token first, then `metadata`."""
    pairs = check_metadata(metadata, "metadata")
    if token is None:
        return pairs
    # Never echo the token: error messages end up in logs.
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValueError(
            "token: expected a non-empty string of printable ASCII without spaces "
            "(the token itself is not shown)"
        )
    if any(key == "authorization" for key, _ in pairs):
        raise ValueError("metadata: 'authorization' is also set by token=; pass only one of them")
    return (("authorization", f"Bearer {token}"), *pairs)


def check_metadata(metadata: Iterable[tuple[str, str | bytes]], where: str) -> Metadata:
    if isinstance(metadata, (str, bytes)) or not isinstance(metadata, Iterable):
        raise TypeError(f"{where}: expected a sequence of (key, value) pairs")
    out: list[tuple[str, str | bytes]] = []
    for index, pair in enumerate(metadata):
        if not (
            isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2
        ):
            raise TypeError(f"{where}[{index}]: expected a (key, value) pair")
        key, value = pair
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key.startswith("grpc-"):
            raise ValueError(
                f"{where}[{index}]: key {key!r} is not a valid gRPC metadata key (lower-case "
                "letters, digits, '-', '_', '.'; not starting with 'grpc-')"
            )
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                raise TypeError(f"{where}[{index}]: binary key {key!r} takes a bytes value")
        elif not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            # The value may be a secret: say what is wrong without showing it.
            raise ValueError(
                f"{where}[{index}]: the value of {key!r} must be a string of printable ASCII "
                "(use a key ending in '-bin' for binary values)"
            )
        out.append((key, value))
    return tuple(out)


def call_metadata(base: Metadata, extra: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
    """The client's metadata followed by one call's own pairs."""
    if extra is None:
        return base
    pairs = check_metadata(extra, "metadata")
    if any(key == "authorization" for key, _ in pairs) and any(
        key == "authorization" for key, _ in base
    ):
        raise ValueError("metadata: 'authorization' is already set by the client's token")
    return base + pairs


class ClientSettings:
    """What both clients check the same way before they open a channel."""

    def __init__(
        self,
        target: str,
        token: str | None,
        metadata: Iterable[tuple[str, str | bytes]],
        deadline: float,
        retry: Retry,
        credentials: grpc.ChannelCredentials | None,
        options: Iterable[tuple[str, Any]],
    ) -> None:
        self.target = check_target(target)
        self.metadata: Metadata = base_metadata(token, metadata)
        self.deadline = check_deadline(deadline, "deadline")
        if not isinstance(retry, Retry):
            raise TypeError(f"retry: expected a featuresidecar.Retry, got {type(retry).__name__}")
        self.retry = retry
        if credentials is not None and not isinstance(credentials, grpc.ChannelCredentials):
            raise TypeError(
                "credentials: expected grpc.ChannelCredentials, e.g. from "
                f"grpc.ssl_channel_credentials(); got {type(credentials).__name__}"
            )
        self.credentials = credentials
        self.options = channel_options(options)

    def budget(self, deadline: float | None) -> float:
        return self.deadline if deadline is None else check_deadline(deadline, "deadline")

"""The Feature Sidecar client: features of entity rows as NumPy arrays, over gRPC.

    from featuresidecar import FeatureClient

    with FeatureClient("unix:/run/feature-sidecar/grpc.sock") as client:
        result = client.get_features(["user_stats:ctr_7d"], {"user_id": [1001, 1002]})
        matrix = result.to_numpy()  # rows x features, NaN where a row holds no value

Installs with grpcio, protobuf and numpy only; it never imports the server package.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._aio import AsyncFeatureClient
    from ._catalog import Catalog, EntityInfo, FeatureInfo, FeatureServiceInfo, JoinKeyInfo
    from ._client import FeatureClient
    from ._errors import (
        DeadlineExceededError,
        FeatureNotFoundError,
        FeatureSidecarError,
        InternalError,
        InvalidArgumentError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnauthenticatedError,
        UnavailableError,
    )
    from ._result import FeatureResult
    from ._retry import Retry
    from ._types import Status

__all__ = [
    "AsyncFeatureClient",
    "Catalog",
    "DeadlineExceededError",
    "EntityInfo",
    "FeatureClient",
    "FeatureInfo",
    "FeatureNotFoundError",
    "FeatureResult",
    "FeatureServiceInfo",
    "FeatureSidecarError",
    "InternalError",
    "InvalidArgumentError",
    "JoinKeyInfo",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Retry",
    "Status",
    "UnauthenticatedError",
    "UnavailableError",
]

# Where each public name lives. Loaded on first use, so that importing the wire code
# (`featuresidecar.v1`), as the sidecar does, does not load the client library too.
_HOMES = {
    "AsyncFeatureClient": "._aio",
    "Catalog": "._catalog",
    "EntityInfo": "._catalog",
    "FeatureInfo": "._catalog",
    "FeatureServiceInfo": "._catalog",
    "JoinKeyInfo": "._catalog",
    "FeatureClient": "._client",
    "DeadlineExceededError": "._errors",
    "FeatureNotFoundError": "._errors",
    "FeatureSidecarError": "._errors",
    "InternalError": "._errors",
    "InvalidArgumentError": "._errors",
    "PermissionDeniedError": "._errors",
    "ResourceExhaustedError": "._errors",
    "UnauthenticatedError": "._errors",
    "UnavailableError": "._errors",
    "FeatureResult": "._result",
    "Retry": "._retry",
    "Status": "._types",
}


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'featuresidecar' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

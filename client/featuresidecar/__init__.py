"""The Feature Sidecar client: features of entity rows as NumPy arrays, over gRPC.

    from featuresidecar import FeatureClient

    with FeatureClient("unix:/run/feature-sidecar/grpc.sock") as client:
        result = client.get_features(["user_stats:ctr_7d"], {"user_id": [1001, 1002]})
        matrix = result.to_numpy()  # rows x features, NaN where a row holds no value

Installs with grpcio, protobuf and numpy only; it never imports the server package.
"""

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

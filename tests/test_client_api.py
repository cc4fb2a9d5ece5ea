"""The client's public surface: exactly what `__all__` lists, wire enums, no server imports."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import featuresidecar
from featuresidecar import FeatureSidecarError, Status
from featuresidecar._errors import error_class
from featuresidecar._types import VALUE_TYPES
from featuresidecar.v1 import feature_service_pb2 as pb

CLIENT = Path(featuresidecar.__file__).parent

PUBLIC_API = [
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


def test_all_is_exactly_the_public_api() -> None:
    assert featuresidecar.__all__ == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(featuresidecar, name).__module__.startswith("featuresidecar.")
    public = {n for n in vars(featuresidecar) if not n.startswith("_")}
    # Everything else reachable is a private module or the generated wire package.
    assert public - set(PUBLIC_API) == {"v1"}


def test_status_enum_matches_the_wire() -> None:
    wire = {
        name: number
        for name, number in pb.FeatureStatus.items()
        if name != "FEATURE_STATUS_UNSPECIFIED"
    }
    assert {s.name: int(s) for s in Status} == wire
    assert [int(s) for s in Status] == [1, 2, 3, 4, 5, 6]


def test_value_types_match_the_wire() -> None:
    wire = {number: name.lower() for name, number in pb.ValueType.items() if number != 0}
    assert {number: t.name for number, t in VALUE_TYPES.items()} == wire


def test_every_error_is_a_feature_sidecar_error_and_one_table_picks_it() -> None:
    errors = [getattr(featuresidecar, n) for n in PUBLIC_API if n.endswith("Error")]
    assert all(issubclass(e, FeatureSidecarError) for e in errors)
    picked = {code: error_class(code).__name__ for code in grpc.StatusCode}
    assert picked == {
        grpc.StatusCode.OK: "InternalError",
        grpc.StatusCode.CANCELLED: "InternalError",
        grpc.StatusCode.UNKNOWN: "InternalError",
        grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgumentError",
        grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceededError",
        grpc.StatusCode.NOT_FOUND: "FeatureNotFoundError",
        grpc.StatusCode.ALREADY_EXISTS: "InternalError",
        grpc.StatusCode.PERMISSION_DENIED: "PermissionDeniedError",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhaustedError",
        grpc.StatusCode.FAILED_PRECONDITION: "InternalError",
        grpc.StatusCode.ABORTED: "InternalError",
        grpc.StatusCode.OUT_OF_RANGE: "InternalError",
        grpc.StatusCode.UNIMPLEMENTED: "InternalError",
        grpc.StatusCode.INTERNAL: "InternalError",
        grpc.StatusCode.UNAVAILABLE: "UnavailableError",
        grpc.StatusCode.DATA_LOSS: "InternalError",
        grpc.StatusCode.UNAUTHENTICATED: "UnauthenticatedError",
    }


def test_catalog_entries_are_frozen_values() -> None:
    info = featuresidecar.FeatureInfo("v:f", "v", "f", "double", "", "", (), ("e",), ("k",), 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.owner = "me"  # type: ignore[misc]
    catalog = featuresidecar.Catalog((info,), (), (), 3)
    assert catalog.feature("v:f") is info and catalog.refs == ("v:f",)
    with pytest.raises(KeyError, match="'v:g' is not in this catalog"):
        catalog.feature("v:g")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_client_source_never_imports_the_server() -> None:
    files = sorted(CLIENT.rglob("*.py"))
    assert len(files) > 10
    imported = set().union(*(_imported_modules(f) for f in files))
    top = {name.split(".")[0] for name in imported}
    assert top <= {
        "__future__", "asyncio", "collections", "dataclasses", "datetime", "enum",
        "featuresidecar", "google", "grpc", "importlib",
        "math", "numbers", "numpy", "re", "time", "types", "typing", "warnings",
    }  # fmt: skip


def test_importing_the_client_loads_no_server_module() -> None:
    probe = (
        "import json, sys\n"
        "from featuresidecar import AsyncFeatureClient, FeatureClient, FeatureResult\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    server_only = {"featuresidecar_server", "redis", "yaml", "prometheus_client", "cryptography"}
    assert loaded & (server_only | {"jwt", "mmh3", "pyarrow"}) == set()
    assert {"featuresidecar", "grpc", "numpy"} <= loaded


def test_importing_the_wire_code_does_not_load_the_client_library() -> None:
    probe = (
        "import json, sys\n"
        "from featuresidecar.v1 import feature_service_pb2\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('featuresidecar'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [
        "featuresidecar",
        "featuresidecar.v1",
        "featuresidecar.v1.feature_service_pb2",
    ]

"""The generated wire code is exactly what `make protos` produces from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server.codec import Status
from featuresidecar_server.valuetypes import KINDS

ROOT = Path(__file__).parent.parent
GENERATED = ("feature_service_pb2.py", "feature_service_pb2.pyi", "feature_service_pb2_grpc.py")


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "featuresidecar" / "v1" / name).read_text()
        committed = (ROOT / "client" / "featuresidecar" / "v1" / name).read_text()
        assert committed == fresh, f"{name} is stale: run `make protos`"


def test_server_enums_match_the_wire() -> None:
    for status in Status:
        assert pb.FeatureStatus.Value(status.name) == status.value
    for kind in KINDS.values():
        assert pb.ValueType.Value(kind.name.upper()) == kind.number

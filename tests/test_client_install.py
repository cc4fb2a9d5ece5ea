"""`pip install feature-sidecar` without extras gives a working client and nothing of the server.

A fresh virtualenv gets the project from its own source tree, without extras, from PyPI. Then,
inside that venv: none of the server's packages can be imported, the client imports, decodes a
response built there, and reads features from a real sidecar; the console script says how to
get the server.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import FEAST_POLICY

REPO = Path(__file__).resolve().parent.parent
SERVER_ONLY = ("redis", "prometheus_client", "cryptography", "yaml", "jwt", "mmh3", "pyarrow")

# Runs inside the fresh venv; argv[1] is the address of a real sidecar.
PROBE = r"""
import importlib.util, json, sys

forbidden = sys.argv[2].split(",")
found = [name for name in forbidden if importlib.util.find_spec(name) is not None]

import numpy as np
import featuresidecar
from featuresidecar import FeatureClient, FeatureResult
from featuresidecar.v1 import feature_service_pb2 as pb

response = pb.GetFeaturesResponse(feature_names=["v:x", "v:s"], row_count=3, policy_revision=7)
response.columns.add(
    type=pb.DOUBLE,
    statuses=bytes([1, 3, 1]),
    event_timestamps=np.array([5, 0, 6], dtype="<i8").tobytes(),
    data=np.array([1.5, 0.0, -2.0], dtype="<f8").tobytes(),
)
response.columns.add(
    type=pb.STRING,
    statuses=bytes([1, 1, 2]),
    event_timestamps=np.array([5, 5, 5], dtype="<i8").tobytes(),
    strings=["a", "b", ""],
)
built = FeatureResult(response)

with FeatureClient(sys.argv[1]) as client:
    served = client.get_features(
        ["driver_scalars:double_f", "driver_scalars:string_f"], {"driver_id": [1001, 9999]}
    )

print(json.dumps({
    "importable_server_modules": found,
    "server_package_loaded": sorted(m for m in sys.modules if m.startswith("featuresidecar_s")),
    "all": featuresidecar.__all__,
    "built_matrix": built.to_numpy(["v:x"]).tolist(),
    "built_dict": built.to_dict(),
    "built_statuses": built.status_names("v:x"),
    "served_matrix": served.to_numpy(["driver_scalars:double_f"]).tolist(),
    "served_dict": served.to_dict(),
    "client_file": featuresidecar.__file__,
}))
"""


def _copy_source(destination: Path) -> Path:
    # The tree as it is (committed or not), without local state; building from a copy keeps
    # pip's build/ directory out of the repository.
    shutil.copytree(
        REPO,
        destination,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "__pycache__",
            "*.egg-info",
            "build",
            "dist",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            ".demo",
        ),
    )
    return destination


@pytest.mark.timeout(600)
def test_plain_install_gives_the_client_only(tmp_path, sidecar_factory, feast_redis) -> None:
    import featuresidecar

    sidecar = sidecar_factory(
        redis=feast_redis.url, bundle=str(FEAST_POLICY), workload_principal="compat-test"
    )
    source = _copy_source(tmp_path / "src")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]

    probe = subprocess.run(
        [str(python), "-c", PROBE, sidecar.address, ",".join(SERVER_ONLY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,  # not the repo: nothing may be imported from the source tree
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    seen = json.loads(probe.stdout)
    assert seen["importable_server_modules"] == []
    assert seen["server_package_loaded"] == []
    assert seen["all"] == featuresidecar.__all__
    assert Path(seen["client_file"]).is_relative_to(env_dir)
    (x0,), (x1,), (x2,) = seen["built_matrix"]
    assert (x0, x2) == (1.5, -2.0) and math.isnan(x1)
    assert seen["built_dict"] == {"v:x": [1.5, None, -2.0], "v:s": ["a", "b", None]}
    assert seen["built_statuses"] == ["PRESENT", "NOT_FOUND", "PRESENT"]
    (d0,), (d1,) = seen["served_matrix"]
    assert d0 == 0.123456789 and math.isnan(d1)
    assert seen["served_dict"] == {
        "driver_scalars:double_f": [0.123456789, None],
        "driver_scalars:string_f": ["Zürich", None],
    }

    script = subprocess.run(
        [str(env_dir / "bin" / "feature-sidecar"), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert script.returncode == 2
    assert "pip install 'feature-sidecar[server]'" in script.stderr

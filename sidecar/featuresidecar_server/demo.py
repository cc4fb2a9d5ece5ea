"""`feature-sidecar demo`: a real Redis, sample data, a real sidecar, one client call, a table.

Everything it starts it stops, by process id, and its files live in one temporary directory.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import processes
from .devredis import LocalRedis
from .probe import wait_serving

PRINCIPAL = "demo-model"
COUNTRIES = ("DE", "FR", "PL", "ES", "SE", "IT")
USERS = 20
ITEMS = 10
DIM = 8


def sample_data(now: datetime, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """Rows per view: users with ints, floats, strings, booleans and an embedding; user x item."""
    rng = random.Random(seed)
    profile, stats, pairs = [], [], []
    for user in range(1, USERS + 1):
        profile.append(
            {
                "user_id": user,
                "age": rng.randint(18, 80),
                "country": rng.choice(COUNTRIES),
                "email": f"user{user}@example.com",
                "is_premium": "true" if rng.random() < 0.3 else "false",
                "embedding": json.dumps([round(rng.gauss(0, 1), 3) for _ in range(DIM)]),
                "event_time": (now - timedelta(hours=rng.randint(1, 48))).isoformat(),
            }
        )
        # User 4's stats are two days old: older than the view's max_age of 1d.
        age = timedelta(days=2) if user == 4 else timedelta(minutes=rng.randint(5, 600))
        stats.append(
            {
                "user_id": user,
                "ctr_7d": round(rng.uniform(0.0, 0.2), 4),
                "orders_30d": rng.randint(0, 12),
                "event_time": (now - age).isoformat(),
            }
        )
        for item in rng.sample(range(1, ITEMS + 1), 3):
            pairs.append(
                {
                    "user_id": user,
                    "item_id": f"item-{item}",
                    "affinity": round(rng.uniform(-1, 1), 3),
                    "event_time": (now - timedelta(hours=rng.randint(1, 24))).isoformat(),
                }
            )
    # User 3 has no stats at all: served as NOT_FOUND, with the rule's default.
    stats = [row for row in stats if row["user_id"] != 3]
    return {"user_profile": profile, "user_stats": stats, "user_item": pairs}


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@contextlib.contextmanager
def _sidecar(workdir: Path, redis_url: str, policy: Path) -> Iterator[str]:
    socket_path = workdir / "sidecar.sock"
    # The demo policy masks the e-mail by hash, which needs a secret of this sidecar's own.
    secret = workdir / "mask.key"
    secret.write_bytes(os.urandom(24).hex().encode())
    secret.chmod(0o600)
    log = (workdir / "sidecar.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "featuresidecar_server.cli",
            "serve",
            "--listen",
            f"unix:{socket_path}",
            "--redis",
            redis_url,
            "--bundle",
            str(policy),
            "--allow-unsigned",
            "--workload-principal",
            PRINCIPAL,
            "--mask-key-file",
            str(secret),
            "--grace-period",
            "2s",
        ],
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")},
    )
    try:
        try:
            wait_serving(f"unix:{socket_path}", process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{(workdir / 'sidecar.log').read_text()[-2000:]}") from None
        yield f"unix:{socket_path}"
    finally:
        processes.stop(process, grace=10)
        log.close()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    if isinstance(value, list):
        shown = ", ".join(_cell(v) for v in value[:3])
        return f"[{shown}, ...]" if len(value) > 3 else f"[{shown}]"
    if isinstance(value, str) and len(value) > 14:
        return value[:12] + ".."
    return str(value)


def print_table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths), file=out)


def run(out: TextIO = sys.stdout) -> int:
    from featuresidecar import FeatureClient

    from .cli import main as cli_main

    workdir = Path(tempfile.mkdtemp(prefix="feature-sidecar-demo-"))
    policy = workdir / "policy.yaml"
    policy.write_text(resources.files(__package__).joinpath("demo_policy.yaml").read_text())
    redis = LocalRedis()
    try:
        redis.start()
        print(f"1. Redis: {redis.executable} on 127.0.0.1:{redis.port}", file=out)
        now = datetime.now(UTC).replace(microsecond=0)
        for view, rows in sample_data(now).items():
            path = workdir / f"{view}.csv"
            write_csv(path, rows)
            code = cli_main(
                [
                    "load",
                    "--redis",
                    redis.url,
                    "--bundle",
                    str(policy),
                    "--view",
                    view,
                    "--from",
                    str(path),
                    "--timestamp-column",
                    "event_time",
                    "--quiet",
                ]
            )
            if code != 0:
                return code
            print(f"2. loaded {len(rows):>2} rows of {view} with `feature-sidecar load`", file=out)
        with _sidecar(workdir, redis.url, policy) as target:
            print(
                f"3. sidecar serving on {target} (policy: {policy.name}, unsigned: demo only)",
                file=out,
            )
            users = [1, 2, 3, 4, 99]
            items = ["item-1", "item-2", "item-3", "item-4", "item-5"]
            with FeatureClient(target) as client:
                result = client.get_features(
                    feature_service="ranking_v1",
                    entities={"user_id": users, "item_id": items},
                )
                profile = client.get_features(
                    ["user_profile:country", "user_profile:email", "user_profile:embedding"],
                    {"user_id": users},
                )
            names = list(result.feature_names)
            print(
                f"\n4. GetFeatures(feature_service='ranking_v1'), policy revision "
                f"{result.policy_revision}:\n",
                file=out,
            )
            values = result.to_dict()
            print_table(
                out,
                ["user_id", "item_id", *names],
                [
                    [u, i, *(values[n][r] for n in names)]
                    for r, (u, i) in enumerate(zip(users, items, strict=True))
                ],
            )
            print("\n   statuses:\n", file=out)
            print_table(
                out,
                ["user_id", *names],
                [[u, *(result.status_names(n)[r] for n in names)] for r, u in enumerate(users)],
            )
            print("\n   as a NumPy matrix (NaN where a row holds no value):\n", file=out)
            with np.printoptions(precision=3, suppress=True, linewidth=100):
                matrix = str(result.to_numpy())
            for line in matrix.splitlines():
                print("   " + line, file=out)
            pnames = list(profile.feature_names)
            pvalues = profile.to_dict()
            print(
                "\n5. Profile features (e-mail masked by a keyed hash; embedding dim 8):\n",
                file=out,
            )
            print_table(
                out,
                ["user_id", *pnames, "email status"],
                [
                    [
                        u,
                        *(pvalues[n][r] for n in pnames),
                        profile.status_names("user_profile:email")[r],
                    ]
                    for r, u in enumerate(users)
                ],
            )
        print("\n6. stopped the sidecar and Redis; done.", file=out)
        return 0
    finally:
        redis.close()
        shutil.rmtree(workdir, ignore_errors=True)

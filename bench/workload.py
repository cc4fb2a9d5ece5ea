"""The benchmark's catalogs, policies, identities and data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import redis
from cryptography.hazmat.primitives.asymmetric import ed25519

from featuresidecar_server.bundle_format import build, private_key_pem, public_key_pem
from featuresidecar_server.catalog import Catalog
from featuresidecar_server.loader import load_rows
from featuresidecar_server.policy_yaml import parse_policy

PRINCIPAL = "bench-model"
ISSUER = "https://bench.invalid"
AUDIENCE = "feature-sidecar"
EMBEDDING_DIM = 256

# s1/s2/s4/s5: 50 double features, 5 views x 10; s3: 10 doubles + a 256-float embedding.
S1_FEATURES = [f"v{v}:f{i}" for v in range(5) for i in range(10)]
S3_FEATURES = [f"v0:f{i}" for i in range(10)] + ["emb:vec"]


def _view(name: str, features: list[tuple[str, str]], extra: str = "") -> str:
    lines = [
        f"    - name: {name}",
        "      entities: [user]",
        "      max_age: 7d",
        "      features:",
    ]
    lines += [
        f"        - {{name: {f}, type: {t}{extra if t == 'float_list' else ''}}}"
        for f, t in features
    ]
    return "\n".join(lines) + "\n"


def policy(views: int, features_per_view: int, roles: int) -> str:
    """A catalog of `views` x `features_per_view` doubles plus the embedding view, with
    `roles` roles; the benchmark principal holds exactly one of them."""
    parts = [
        "version: 1\nproject: bench\ncatalog:\n  entities:\n"
        "    - name: user\n      join_keys: [{name: user_id, type: int64}]\n  views:\n"
    ]
    for v in range(views):
        parts.append(_view(f"v{v}", [(f"f{i}", "double") for i in range(features_per_view)]))
    parts.append(_view("emb", [("vec", "float_list")], f", dim: {EMBEDDING_DIM}"))
    parts.append(
        'roles:\n  - name: model\n    allow: ["v0:*", "v1:*", "v2:*", "v3:*", "v4:*", "emb:*"]\n'
    )
    for r in range(roles - 1):
        parts.append(
            f'  - name: team-{r}\n    allow: ["v{r % views}:*", "*:f{r % 10}"]\n'
            f'    deny: ["v{(r + 1) % views}:f{r % features_per_view}"]\n'
        )
    parts.append("rules:\n")
    for r in range(min(roles - 1, 20)):
        parts.append(
            f'  - match: {{features: ["v{r % views}:f1"], roles: [team-{r}]}}\n    default: 0\n'
        )
    parts.append('  - match: {features: ["emb:*"]}\n    max_age: 3d\n')
    parts.append(f"bindings:\n  - principal: {PRINCIPAL}\n    roles: [model]\n")
    for r in range(roles - 1):
        parts.append(f"  - principal: team-{r}-svc\n    roles: [team-{r}]\n")
    return "".join(parts)


class Identity:
    """A JWT signing key, its JWKS file, and one long-lived token for the benchmark principal."""

    def __init__(self, directory: Path) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.get_algorithm_by_name("EdDSA").to_jwk(key.public_key()))
        jwk.update(kid="bench", alg="EdDSA", use="sig")
        self.jwks = directory / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [jwk]}))
        now = int(time.time())
        self.token = jwt.encode(
            {"sub": PRINCIPAL, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 86400},
            key,
            algorithm="EdDSA",
            headers={"kid": "bench"},
        )

    def flags(self) -> list[str]:
        return ["--jwt-jwks", str(self.jwks), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]


def signed_bundle(directory: Path, source: str, name: str) -> tuple[Path, Path]:
    """The signed bundle file and the public key that verifies it."""
    key = ed25519.Ed25519PrivateKey.generate()
    bundle = directory / f"{name}.bundle.json"
    bundle.write_bytes(build(source, 1, key))
    public = directory / f"{name}.pub"
    public.write_bytes(public_key_pem(key.public_key()))
    (directory / f"{name}.key").write_bytes(private_key_pem(key))
    return bundle, public


def load(url: str, source: str, users: int, seed: int = 1) -> None:
    """Doubles for v0..v4 and the embedding for `users` users, loaded with the loader's core."""
    catalog = Catalog(parse_policy(source, "bench"))
    rng = np.random.default_rng(seed)
    client = redis.Redis.from_url(url)
    ids = np.arange(users, dtype=np.int64)
    now = time.time_ns() - 60 * 10**9
    try:
        for v in range(5):
            columns: dict[str, Any] = {"user_id": ids}
            for i in range(10):
                columns[f"f{i}"] = rng.standard_normal(users)
            load_rows(
                client,
                catalog,
                f"v{v}",
                columns,
                now,
                features=[f"f{i}" for i in range(10)],
                batch_size=2000,
            )
        vectors = rng.standard_normal((users, EMBEDDING_DIM)).astype(np.float32)
        load_rows(
            client, catalog, "emb", {"user_id": ids, "vec": list(vectors)}, now, batch_size=500
        )
    finally:
        client.close()

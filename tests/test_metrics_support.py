"""Helpers of the metrics, status and worker tests (this module holds no tests).

A small policy with two views, data written in Feast's layout, HTTP GETs on loopback, the
Prometheus text format parsed into plain samples, and polling with a deadline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families
from support import put_entity

from featuresidecar_server.bundle_format import build

PRINCIPAL = "metrics-test"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

POLICY = """\
version: 1
project: metricstest
catalog:
  entities:
    - name: user
      join_keys:
        - {name: user_id, type: int64}
  views:
    - name: profile
      entities: [user]
      max_age: 1d
      features:
        - {name: age, type: int64}
        - {name: email, type: string, tags: [pii]}
    - name: stats
      entities: [user]
      max_age: 1h
      features:
        - {name: clicks, type: int64}
        - {name: score, type: double, tags: [restricted]}
roles:
  - name: scorer
    allow: ["profile:*", "stats:*"]
    deny: ["tag:restricted"]
rules:
  - match: {features: ["tag:pii"]}
    mask: hash
bindings:
  - principal: "metrics-test"
    roles: [scorer]
"""


def write_policy(directory: Path, extra: str = "", name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(POLICY + extra)
    return path


def seed(url: str, policy: Path, now_ns: int | None = None) -> None:
    """user 1: fresh profile (30 s), stale stats (2 h); user 2: null age (120 s), stats 10 min;
    user 3: nothing."""
    now = time.time_ns() if now_ns is None else now_ns
    second = 1_000_000_000
    put_entity(
        url, policy, "profile", {"user_id": 1}, {"age": 30, "email": "a@x"}, now - 30 * second
    )
    put_entity(
        url, policy, "profile", {"user_id": 2}, {"age": None, "email": "b@x"}, now - 120 * second
    )
    put_entity(
        url, policy, "stats", {"user_id": 1}, {"clicks": 5, "score": 0.5}, now - 7200 * second
    )
    put_entity(
        url, policy, "stats", {"user_id": 2}, {"clicks": 7, "score": 0.7}, now - 600 * second
    )


class BundleSigner:
    """A signing key, its public key file, and signed bundles of the test policy."""

    def __init__(self, directory: Path, name: str = "signer") -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public_path = directory / f"{name}.pub.pem"
        self.public_path.write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def bundle(self, revision: int, policy: str = POLICY) -> bytes:
        return build(policy, revision, self.private)


def http_get(
    url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, also for 4xx/5xx answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def scrape(base: str) -> Samples:
    """Every sample of /metrics: (name, labels) -> value."""
    status, _, body = http_get(f"{base}/metrics")
    assert status == 200, body
    return parse(body.decode())


def scrape_until(
    base: str, condition: Callable[[Samples], bool], what: str, timeout: float = 15.0
) -> Samples:
    """The first scrape that meets `condition`."""
    latest: list[Samples] = []

    def met() -> bool:
        latest[:] = [scrape(base)]
        return condition(latest[0])

    wait_until(met, timeout, what)
    return latest[0]


def parse(text: str) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (absent is an error, not 0)."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Polls until `predicate()` is truthy and returns it; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def status_json(base: str) -> dict[str, Any]:
    code, _, body = http_get(f"{base}/status")
    assert code == 200, body
    document: dict[str, Any] = json.loads(body)
    return document

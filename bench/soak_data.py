"""The soak's catalog and policy, its data, its requests and what each answer must hold.

Every stored value is a function of the user id, so the load process knows, without asking
anyone, what an allowed feature must return, what a masked feature must never show and what a
denied feature must never carry. The policy gives the soak's caller one masked feature
(`profile:email`, `mask: hash`) and one denied feature (`profile:ssn`); everything else it reads
in the clear.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import workload

from featuresidecar.v1 import feature_service_pb2 as pb

PROJECT = "soak"
# The subject of the token workload.Identity signs.
PRINCIPAL = workload.PRINCIPAL
# Loaded ids are 0..USERS-1; requests also name ids up to UNKNOWN_TOP (NOT_FOUND rows).
USERS = 10_000
UNKNOWN_TOP = 11_000

# The struct format of each numeric feature on the wire (little-endian int64, double).
NUMERIC = {"stats:clicks_7d": "<q", "stats:ctr": "<d", "stats:spend": "<d"}
COUNTRY = "profile:country"
MASKED = "profile:email"
DENIED = "profile:ssn"
ALLOWED = [*NUMERIC, COUNTRY]

# Request kinds; the numbers are stored per call in the results.
ALLOWED_ONLY, WITH_MASKED, PARTIAL_DENIED, STRICT_DENIED = 0, 1, 2, 3
KIND_NAMES = {
    ALLOWED_ONLY: "allowed",
    WITH_MASKED: "masked",
    PARTIAL_DENIED: "partial_denied",
    STRICT_DENIED: "strict_denied",
}
_KIND_WEIGHTS = {ALLOWED_ONLY: 0.5, WITH_MASKED: 0.25, PARTIAL_DENIED: 0.2, STRICT_DENIED: 0.05}

_COUNTRIES = ("DE", "FR", "US", "JP", "BR", "IN", "NG", "SE")
_HASH = re.compile(r"[0-9a-f]{32}")


def policy(revision: int) -> str:
    """The policy YAML; each revision differs only in its description, so every revision gives
    the same answers and a change of revision shows only in `policy_revision`."""
    return f"""version: 1
project: {PROJECT}
description: "soak policy, revision {revision}"
catalog:
  entities:
    - name: user
      join_keys: [{{name: user_id, type: int64}}]
  views:
    - name: stats
      entities: [user]
      features:
        - {{name: clicks_7d, type: int64}}
        - {{name: ctr, type: double}}
        - {{name: spend, type: double}}
    - name: profile
      entities: [user]
      features:
        - {{name: country, type: string}}
        - {{name: email, type: string, tags: [pii]}}
        - {{name: ssn, type: string, tags: [secret]}}
roles:
  - name: model
    allow: ["stats:*", "profile:*"]
    deny: ["tag:secret"]
rules:
  - match: {{features: ["tag:pii"], roles: [model]}}
    mask: hash
bindings:
  - principal: {PRINCIPAL}
    roles: [model]
tests:
  - {{principal: {PRINCIPAL}, feature: "stats:ctr", expect: allow}}
  - {{principal: {PRINCIPAL}, feature: "{MASKED}", expect: mask}}
  - {{principal: {PRINCIPAL}, feature: "{DENIED}", expect: deny}}
"""


# --- the stored values, as functions of the user id ------------------------------------------


def clicks(uid: int) -> int:
    return (uid * 7919) % 1000


def ctr(uid: int) -> float:
    return ((uid * 2654435761) % 10007) / 10007.0


def spend(uid: int) -> float:
    return uid * 0.25 + 1.5


def country(uid: int) -> str:
    return _COUNTRIES[uid % len(_COUNTRIES)]


def email(uid: int) -> str:
    return f"user{uid}@soak.example"


def ssn(uid: int) -> str:
    return f"{100 + uid % 800:03d}-{10 + uid % 89:02d}-{uid:05d}"


_NUMERIC_VALUES = {"stats:clicks_7d": clicks, "stats:ctr": ctr, "stats:spend": spend}


def load(url: str, revision_source: str) -> None:
    """Writes every user's values into Redis with the loader's core (Feast's layout)."""
    import redis

    from featuresidecar_server.catalog import Catalog
    from featuresidecar_server.loader import load_rows
    from featuresidecar_server.policy_yaml import parse_policy

    catalog = Catalog(parse_policy(revision_source, "soak"))
    ids = list(range(USERS))
    client = redis.Redis.from_url(url)
    now = time.time_ns() - 60 * 10**9
    try:
        load_rows(
            client,
            catalog,
            "stats",
            {
                "user_id": np.arange(USERS, dtype=np.int64),
                "clicks_7d": np.array([clicks(u) for u in ids], dtype=np.int64),
                "ctr": np.array([ctr(u) for u in ids]),
                "spend": np.array([spend(u) for u in ids]),
            },
            now,
            batch_size=2000,
        )
        load_rows(
            client,
            catalog,
            "profile",
            {
                "user_id": np.arange(USERS, dtype=np.int64),
                "country": [country(u) for u in ids],
                "email": [email(u) for u in ids],
                "ssn": [ssn(u) for u in ids],
            },
            now,
            batch_size=2000,
        )
    finally:
        client.close()


# --- requests and their expected answers -------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One pooled request: its bytes and everything its answer must (not) hold."""

    kind: int
    payload: bytes
    features: tuple[str, ...]
    rows: int
    # Per allowed feature: the exact statuses bytes and data bytes (numeric) or strings.
    statuses: dict[str, bytes]
    data: dict[str, bytes]
    strings: dict[str, list[str]]
    # Raw values that must never appear anywhere in the answer's bytes.
    secrets: tuple[bytes, ...]


def _statuses(ids: Sequence[int], present: int) -> bytes:
    return bytes(present if u < USERS else pb.NOT_FOUND for u in ids)


def expected_for(kind: int, ids: Sequence[int]) -> Expected:
    features = list(ALLOWED)
    if kind in (WITH_MASKED, PARTIAL_DENIED):
        features.append(MASKED)
    if kind in (PARTIAL_DENIED, STRICT_DENIED):
        features.append(DENIED)
    if kind == STRICT_DENIED:
        features = ["stats:ctr", DENIED]
    message = pb.GetFeaturesRequest(features=features, allow_partial=kind == PARTIAL_DENIED)
    message.entities["user_id"].int64_values.values.extend(ids)
    known = [u for u in ids if u < USERS]
    statuses: dict[str, bytes] = {}
    data: dict[str, bytes] = {}
    strings: dict[str, list[str]] = {}
    for ref in features:
        if ref in NUMERIC:
            statuses[ref] = _statuses(ids, pb.PRESENT)
            fn = _NUMERIC_VALUES[ref]
            code = NUMERIC[ref]
            data[ref] = b"".join(struct.pack(code, fn(u) if u < USERS else 0) for u in ids)
        elif ref == COUNTRY:
            statuses[ref] = _statuses(ids, pb.PRESENT)
            strings[ref] = [country(u) if u < USERS else "" for u in ids]
        elif ref == MASKED:
            statuses[ref] = _statuses(ids, pb.MASKED)
        elif ref == DENIED:
            statuses[ref] = bytes([pb.DENIED] * len(ids))
    secrets = tuple(email(u).encode() for u in known) + tuple(ssn(u).encode() for u in known)
    return Expected(
        kind=kind,
        payload=message.SerializeToString(),
        features=tuple(features),
        rows=len(ids),
        statuses=statuses,
        data=data,
        strings=strings,
        secrets=secrets,
    )


def request_pool(size: int, seed: int = 5) -> list[Expected]:
    """Varied requests: mostly one row, some up to 50; about one row in eleven unknown."""
    rng = np.random.default_rng(seed)
    kinds = list(_KIND_WEIGHTS)
    weights = np.array(list(_KIND_WEIGHTS.values()))
    pool = []
    for _ in range(size):
        kind = int(rng.choice(kinds, p=weights / weights.sum()))
        draw = rng.random()
        rows = (
            1
            if draw < 0.6
            else int(rng.integers(2, 11))
            if draw < 0.9
            else int(rng.integers(11, 51))
        )
        ids = [int(u) for u in rng.choice(UNKNOWN_TOP, rows, replace=False)]
        pool.append(expected_for(kind, ids))
    return pool


# --- checking an answer ------------------------------------------------------------------------

# What can be wrong with an OK answer; the first group is against the policy.
POLICY_VIOLATIONS = (
    "secret_in_answer",
    "masked_not_masked",
    "denied_not_denied",
    "denied_call_answered",
)
DATA_VIOLATIONS = ("wrong_shape", "wrong_value")


def check(expected: Expected, answer: bytes) -> tuple[int, str, str]:
    """(policy revision, violation, detail) of an OK answer; violation is "" when the answer
    is what the policy and the loaded data say."""
    response = pb.GetFeaturesResponse.FromString(answer)
    revision = int(response.policy_revision)
    if expected.kind == STRICT_DENIED:
        return revision, "denied_call_answered", "a request for the denied feature got OK"
    for secret in expected.secrets:
        if secret in answer:
            return revision, "secret_in_answer", f"{secret.decode()!r} is in the answer"
    if tuple(response.feature_names) != expected.features or response.row_count != expected.rows:
        return revision, "wrong_shape", f"{list(response.feature_names)} x {response.row_count}"
    for ref, column in zip(expected.features, response.columns, strict=True):
        problem = _column_problem(expected, ref, column)
        if problem is not None:
            return revision, problem[0], f"{ref}: {problem[1]}"
    return revision, "", ""


def _column_problem(expected: Expected, ref: str, column: Any) -> tuple[str, str] | None:
    statuses = bytes(column.statuses)
    if ref == MASKED:
        if statuses != expected.statuses[ref] or column.mask != pb.MASK_HASH:
            return "masked_not_masked", f"statuses {list(statuses)}, mask {column.mask}"
        for status, value in zip(statuses, column.strings, strict=True):
            if status == pb.MASKED and not _HASH.fullmatch(value):
                return "masked_not_masked", f"{value!r} is not a keyed hash"
        return None
    if ref == DENIED:
        if statuses != expected.statuses[ref]:
            return "denied_not_denied", f"statuses {list(statuses)}"
        if any(column.strings) or any(column.data) or any(column.binaries):
            return "denied_not_denied", "a DENIED column carries a value"
        return None
    if statuses != expected.statuses[ref]:
        return "wrong_value", f"statuses {list(statuses)}"
    if ref in expected.data and bytes(column.data) != expected.data[ref]:
        return "wrong_value", "data differs from what was loaded"
    if ref in expected.strings and list(column.strings) != expected.strings[ref]:
        return "wrong_value", f"{list(column.strings)} instead of {expected.strings[ref]}"
    return None

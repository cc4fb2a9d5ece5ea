"""What the hostile-input suite shares: its policy and data, a real sidecar for one module, raw
calls, and the invariant every answer must satisfy.

The invariant, for any input a caller can send: the answer's code is one a caller can act on
(never UNKNOWN or INTERNAL), and an OK answer never carries a denied value, a masked value or a
value past its maximum age in the clear.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import event
from hypothesis.errors import InvalidArgument
from support import EXAMPLE_POLICY, SidecarThread, TokenIssuer, put_entity, settings

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server import bundle_format
from featuresidecar_server.access import Identity
from featuresidecar_server.devredis import LocalRedis
from featuresidecar_server.errors import ServiceError
from featuresidecar_server.policy import Policy
from featuresidecar_server.policy_tests import run_tests
from featuresidecar_server.service import CallRecord, FeatureReader
from featuresidecar_server.snapshot import ActivePolicy, Snapshot

GET = "/featuresidecar.v1.FeatureService/GetFeatures"
LIST = "/featuresidecar.v1.FeatureService/ListFeatures"
TIMEOUT = 10.0

# Codes a caller can act on. Everything else (UNKNOWN, INTERNAL, ...) breaks the invariant;
# UNAVAILABLE and DEADLINE_EXCEEDED cannot come from input alone while Redis is healthy.
ACTIONABLE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)

WORKLOAD = "spiffe://hostile.test/ns/ml/sa/model"
ALICE = "alice"  # bound to the reader role by principal
BOB = "bob"  # bound to nothing; reads through the group "readers"
MAX_ENTITIES = 500

# Every feature kind that matters to the invariant:
#   allowed:           profile:age, profile:embedding, stats:ctr, pair:affinity, flags:*
#   masked (hash):     profile:email
#   masked (redact):   profile:phone
#   denied (by deny):  profile:ssn
#   max age 1h:        stats:* (stats:clicks also has a default)
POLICY = """\
version: 1
project: hostile
catalog:
  entities:
    - name: user
      join_keys: [{name: user_id, type: int64}]
    - name: item
      join_keys: [{name: item_id, type: string}]
    - name: shard
      join_keys: [{name: shard_id, type: int32}]
  views:
    - name: profile
      entities: [user]
      features:
        - {name: age, type: int64}
        - {name: email, type: string, tags: [pii]}
        - {name: phone, type: string, tags: [contact]}
        - {name: ssn, type: string, tags: [secret]}
        - {name: embedding, type: float_list, dim: 4}
    - name: stats
      entities: [user]
      max_age: 1h
      features:
        - {name: ctr, type: double}
        - {name: clicks, type: int64}
    - name: pair
      entities: [user, item]
      features:
        - {name: affinity, type: float}
    - name: flags
      entities: [shard]
      features:
        - {name: enabled, type: bool}
  services:
    - name: open
      features: ["profile:age", "stats:*"]
    - name: everything
      features: ["*:*"]
roles:
  - name: reader
    allow: ["*:*"]
    deny: ["tag:secret"]
  - name: limited
    allow: ["profile:age"]
rules:
  - match: {features: ["tag:pii"]}
    mask: hash
  - match: {features: ["tag:contact"]}
    mask: redact
  - match: {features: ["stats:clicks"]}
    default: -1
limits:
  - roles: ["*"]
    max_entities: 500
bindings:
  - principal: "alice"
    roles: [reader]
  - group: "readers"
    roles: [reader]
  - principal: "spiffe://hostile.test/ns/ml/sa/model"
    roles: [limited]
tests:
  - principal: "alice"
    feature: "profile:ssn"
    expect: deny
  - principal: "alice"
    feature: "profile:email"
    expect: mask
"""

FEATURES = (
    "profile:age",
    "profile:email",
    "profile:phone",
    "profile:ssn",
    "profile:embedding",
    "stats:ctr",
    "stats:clicks",
    "pair:affinity",
    "flags:enabled",
)
SERVICES = ("open", "everything")
MASKED_HASH = frozenset({"profile:email"})
MASKED_REDACT = frozenset({"profile:phone"})
DENIED = frozenset({"profile:ssn"})
MAX_AGE = frozenset({"stats:ctr", "stats:clicks"})
JOIN_KEYS = ("user_id", "item_id", "shard_id")

FRESH_USERS = (1, 2, 3)
STALE_USER = 4  # stats written three hours ago: past the 1h max_age
UNTIMED_USER = 5  # stats without an event time: cannot prove its age, so STALE
USERS = (*FRESH_USERS, STALE_USER, UNTIMED_USER)
ITEMS = ("a", "b")
SHARDS = (0, 1)


def secret_values(user: int) -> dict[str, str]:
    """Values that must never leave the sidecar in the clear, one distinct marker each."""
    return {
        "email": f"email-of-{user}@hostile.test",
        "phone": f"+1-555-0100-{user:04d}",
        "ssn": f"SSN-SECRET-{user:04d}",
    }


def stale_ctr(user: int) -> float:
    # A value that cannot occur by chance, so its bytes in a response prove a leak.
    return 1234.5 + user / 1024


LEAK_MARKERS: tuple[bytes, ...] = tuple(
    value.encode() for user in USERS for value in secret_values(user).values()
) + tuple(np.float64(stale_ctr(u)).tobytes() for u in (STALE_USER, UNTIMED_USER))


def load_data(url: str, policy_path: Path) -> None:
    now = time.time_ns()
    for user in USERS:
        profile: dict[str, Any] = {
            "age": 20 + user,
            "embedding": [float(user)] * 4,
            **secret_values(user),
        }
        put_entity(url, policy_path, "profile", {"user_id": user}, profile, now)
    for user in FRESH_USERS:
        stats = {"ctr": user / 10, "clicks": user * 100}
        put_entity(url, policy_path, "stats", {"user_id": user}, stats, now)
    three_hours_ago = now - 3 * 3600 * 10**9
    stale = {"ctr": stale_ctr(STALE_USER), "clicks": 7}
    put_entity(url, policy_path, "stats", {"user_id": STALE_USER}, stale, three_hours_ago)
    untimed = {"ctr": stale_ctr(UNTIMED_USER), "clicks": 8}
    put_entity(url, policy_path, "stats", {"user_id": UNTIMED_USER}, untimed, None)
    for user in FRESH_USERS:
        for item in ITEMS:
            entity: dict[str, int | str] = {"user_id": user, "item_id": item}
            put_entity(url, policy_path, "pair", entity, {"affinity": 0.5}, now)
    for shard in SHARDS:
        put_entity(url, policy_path, "flags", {"shard_id": shard}, {"enabled": True}, now)


# --- the sidecar -------------------------------------------------------------------------------


@dataclass
class Issuers:
    """Three signing keys of different types behind one JWKS file, with their kids."""

    rsa: TokenIssuer
    ec: TokenIssuer
    ed: TokenIssuer
    jwks_path: Path

    @classmethod
    def create(cls, directory: Path) -> Issuers:
        rsa = TokenIssuer(directory, "RS256", kid="rsa-key")
        ec = TokenIssuer(directory, "ES256", kid="ec-key")
        ed = TokenIssuer(directory, "EdDSA", kid="ed-key")
        keys = [json.loads(i.jwks_path.read_text())["keys"][0] for i in (rsa, ec, ed)]
        path = directory / "jwks.json"
        path.write_text(json.dumps({"keys": keys}))
        return cls(rsa, ec, ed, path)

    @property
    def all(self) -> tuple[TokenIssuer, ...]:
        return (self.rsa, self.ec, self.ed)


@dataclass
class Hostile:
    """One real sidecar (unix socket and loopback TCP) on a real Redis, with everything a test
    needs to call it."""

    redis: LocalRedis
    sidecar: SidecarThread
    issuers: Issuers
    policy_path: Path
    signing_key: Ed25519PrivateKey
    unix: grpc.Channel
    tcp: grpc.Channel
    # A valid token of ALICE, made once: the suite finishes well within its lifetime.
    alice_token: str = ""
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def alice(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.alice_token}")]

    def close(self) -> None:
        for channel in (self.unix, self.tcp, *self.channels):
            channel.close()
        self.sidecar.stop()
        self.redis.close()


def start_hostile(directory: Path) -> Hostile:
    """Redis, data, a signed bundle, a JWKS of three key types, a mask secret, a sidecar."""
    directory.mkdir(parents=True, exist_ok=True)
    redis_server = LocalRedis().start()
    try:
        policy_path = directory / "policy.yaml"
        policy_path.write_text(POLICY)
        load_data(redis_server.url, policy_path)
        signing_key = Ed25519PrivateKey.generate()
        bundle_path = directory / "bundle.json"
        bundle_path.write_bytes(bundle_format.build(POLICY, 1, signing_key))
        public_path = directory / "bundle.pub"
        public_path.write_bytes(bundle_format.public_key_pem(signing_key.public_key()))
        mask_key = directory / "mask.key"
        mask_key.write_text("hostile-suite-mask-secret\n")
        issuers = Issuers.create(directory)
        config = settings(
            listen=[f"unix:{directory}/sidecar.sock", "127.0.0.1:0"],
            redis=redis_server.url,
            bundle=str(bundle_path),
            bundle_public_key=[str(public_path)],
            allow_unsigned=False,
            mask_key_file=str(mask_key),
            workload_principal=WORKLOAD,
            jwt_jwks=str(issuers.jwks_path),
            jwt_issuer=TokenIssuer.ISSUER,
            jwt_audience=TokenIssuer.AUDIENCE,
            # Hostile calls must not fill the test log with decision lines.
            decision_log=None,
            # The poller's jitter draws from the global `random` while Hypothesis generates
            # (it warns); this sidecar's bundle never changes, so it polls rarely.
            bundle_poll_interval=3600.0,
        )
        sidecar = SidecarThread(config)
        sidecar.wait_ready()
    except BaseException:
        redis_server.close()
        raise
    unix, tcp = (grpc.insecure_channel(a) for a in _addresses(sidecar))
    token = issuers.rsa.token(ALICE, ttl=3600)
    return Hostile(redis_server, sidecar, issuers, policy_path, signing_key, unix, tcp, token)


def _addresses(sidecar: SidecarThread) -> tuple[str, str]:
    addresses = sidecar.sidecar.addresses
    unix = next(a for a in addresses if a.startswith("unix:"))
    tcp = next(a for a in addresses if not a.startswith("unix:"))
    return unix, tcp


# --- calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    body: bytes  # the raw response message on OK, else b""
    trailing: tuple[tuple[str, str | bytes], ...] = ()


def call_raw(
    channel: grpc.Channel,
    method: str,
    body: bytes,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
) -> Answer:
    """Sends `body` as the request message, byte for byte, and returns the answer unparsed."""
    rpc = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        response, call = rpc.with_call(body, metadata=metadata, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        trailing = tuple(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
        return Answer(exc.code(), exc.details() or "", b"", trailing)  # type: ignore[attr-defined]
    return Answer(grpc.StatusCode.OK, "", response, tuple(call.trailing_metadata() or ()))


def get(
    channel: grpc.Channel,
    message: pb.GetFeaturesRequest,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
) -> Answer:
    return call_raw(channel, GET, message.SerializeToString(), metadata)


# --- the invariant -----------------------------------------------------------------------------

_HASH = re.compile(r"^[0-9a-f]{32}$")


def check_code(answer: Answer) -> None:
    # Shows, with --hypothesis-show-statistics, which codes the generated inputs reached.
    with contextlib.suppress(InvalidArgument):  # outside a Hypothesis test: nothing to record
        event(answer.code.name)
    assert answer.code in ACTIONABLE, (answer.code, answer.details)
    if answer.code is not grpc.StatusCode.OK:
        # One sentence for a person, never a stack trace.
        assert "Traceback" not in answer.details, answer.details
        assert answer.details, answer.code


def check_no_leak(body: bytes) -> None:
    for marker in LEAK_MARKERS:
        assert marker not in body, f"a protected value left the sidecar in the clear: {marker!r}"


def requested_refs(message: pb.GetFeaturesRequest) -> tuple[str, ...]:
    if message.feature_service == "open":
        return ("profile:age", "stats:ctr", "stats:clicks")
    if message.feature_service == "everything":
        return FEATURES
    return tuple(message.features)


READER_READS = frozenset(FEATURES) - DENIED
LIMITED_READS = frozenset({"profile:age"})


def check_get_answer(
    answer: Answer, message: pb.GetFeaturesRequest, readable: frozenset[str] = READER_READS
) -> pb.GetFeaturesResponse | None:
    """The invariant for one GetFeatures answer of a caller who may read `readable`; the parsed
    response when it is OK."""
    check_code(answer)
    if answer.code is not grpc.StatusCode.OK:
        return None
    check_no_leak(answer.body)
    response = pb.GetFeaturesResponse.FromString(answer.body)
    refs = requested_refs(message)
    assert tuple(response.feature_names) == refs
    assert len(response.columns) == len(refs)
    rows = response.row_count
    users = _user_column(message)
    for ref, column in zip(response.feature_names, response.columns, strict=True):
        statuses = np.frombuffer(column.statuses, dtype="u1").tolist()
        assert len(statuses) == rows, (ref, len(statuses), rows)
        if ref not in readable:
            # A feature the caller may not read comes back only as a DENIED column without
            # values, and only when the caller asked for partial answers.
            assert message.allow_partial, ref
            assert set(statuses) <= {pb.DENIED}, (ref, statuses)
            assert not any(column.strings), ref
            assert not any(column.binaries), ref
            assert not any(column.data), ref
            continue
        assert pb.DENIED not in statuses, ref
        if ref in MASKED_HASH:
            assert pb.PRESENT not in statuses, (ref, statuses)
            assert column.mask == pb.MASK_HASH, ref
            for status, text in zip(statuses, column.strings, strict=True):
                assert _HASH.match(text) if status == pb.MASKED else text == "", (ref, text)
        if ref in MASKED_REDACT:
            assert pb.PRESENT not in statuses, (ref, statuses)
            assert column.mask == pb.MASK_REDACT, ref
            assert not any(column.strings), ref
        if ref in MAX_AGE and users is not None:
            for row, user in enumerate(users):
                if user in (STALE_USER, UNTIMED_USER):
                    assert statuses[row] == pb.STALE, (ref, user, statuses[row])
    return response


def _user_column(message: pb.GetFeaturesRequest) -> list[int] | None:
    if "user_id" not in message.entities:
        return None
    column = message.entities["user_id"]
    if column.WhichOneof("values") != "int64_values":
        return None
    return list(column.int64_values.values)


# --- policies ---------------------------------------------------------------------------------


def exercise(policy: Policy) -> None:
    """What a sidecar and `bundle test` do with a policy that parsed. Only the errors a caller
    is meant to get (ServiceError) may come out."""
    snapshot = Snapshot(
        policy, revision=1, digest="sha256:0", source="hostile", signed=True, mask_secret=b"k"
    )
    run_tests(policy, snapshot.access)
    active = ActivePolicy()
    active.swap(snapshot)
    reader = FeatureReader(active, store=None, clock_ns=lambda: 1_800_000_000 * 10**9)
    identities = [
        Identity(b.principal or "someone", (b.group,) if b.group else (), "jwt")
        for b in policy.bindings
    ]
    for identity in [*identities, Identity("nobody")]:
        reader.list_features(pb.ListFeaturesRequest(), identity)
        roles = snapshot.access.roles_of(identity)
        readable = [
            r for r in snapshot.catalog.features if snapshot.access.decide(roles, r).allowed
        ]
        if not readable:
            continue
        request = pb.GetFeaturesRequest(features=readable)
        for _ in range(3):  # the third call of a tight rate limit computes a retry hint
            with contextlib.suppress(ServiceError):
                asyncio.run(reader.get_features(request, identity, CallRecord()))


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The example policy plus "billion laughs" in extension keys: `levels` lists of `width`
    aliases each, 9**9 strings once every alias is expanded; about 4 KB of source."""
    lines = [f"x-l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"x-l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return EXAMPLE_POLICY.read_text() + "\n".join(lines) + "\n"


# --- tokens ------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: Any, claims: Any, signature: bytes = b"") -> str:
    """A JWS compact token with any header and claims, JSON or not, signed or not."""

    def part(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return b64url(raw)

    return f"{part(header)}.{part(claims)}.{b64url(signature)}"


def sign(alg: str, key: Any, header: bytes, claims: bytes) -> str:
    """A compact JWS over exactly these header and claims bytes."""
    signing_input = f"{b64url(header)}.{b64url(claims)}".encode("ascii")
    signature = jwt.get_algorithm_by_name(alg).sign(signing_input, key)
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def good_claims(sub: str = ALICE, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "iss": TokenIssuer.ISSUER,
        "aud": TokenIssuer.AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(changes)
    return claims


# --- memory ------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (the sidecar under test runs in it)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


MiB = 1024 * 1024

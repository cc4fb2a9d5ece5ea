"""Bearer tokens built by Hypothesis against one real sidecar that trusts an RSA, an EC and an
Ed25519 key. A token identifies its caller only when it is truly valid; every other token is
UNAUTHENTICATED, never INTERNAL.

Each generated token is described by a few dimensions, each either right or spoiled in one
known way; the token is valid exactly when every dimension is right, so the expected code
follows from the description and not from re-implementing the verifier.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hostile_support import (
    ALICE,
    Hostile,
    b64url,
    check_code,
    check_get_answer,
    get,
    good_claims,
    sign,
)
from hypothesis import example, given
from hypothesis import strategies as st

from featuresidecar.v1 import feature_service_pb2 as pb

REQUEST = pb.GetFeaturesRequest(features=["profile:age"])
REQUEST.entities["user_id"].int64_values.values.extend([1])

ALGS = ("RS256", "ES256", "EdDSA")
KIDS = {"RS256": "rsa-key", "ES256": "ec-key", "EdDSA": "ed-key"}
LEEWAY = 30  # the sidecar's default clock-skew allowance, seconds


def _strangers() -> dict[str, Any]:
    """Keys of the right types that the sidecar does not trust."""
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


STRANGERS = _strangers()


def _trusted(hostile: Hostile) -> dict[str, Any]:
    issuers = hostile.issuers
    return {"RS256": issuers.rsa.private, "ES256": issuers.ec.private, "EdDSA": issuers.ed.private}


@dataclass(frozen=True)
class Spec:
    """What is wrong with a token ("" where nothing is) and whom it names."""

    alg: str
    header: str
    signature: str
    claims: str
    structure: str
    sub: Any
    groups: Any

    @property
    def valid(self) -> bool:
        return not (self.header or self.signature or self.claims or self.structure)

    @property
    def reader(self) -> bool:
        groups = self.groups
        if isinstance(groups, str):
            groups = groups.split()
        return self.sub == ALICE or (isinstance(groups, list) and "readers" in groups)


# --- the dimensions ------------------------------------------------------------------------------

HEADER_SPOILS = (
    "",
    "alg none",
    "alg HS256",
    "alg RS512",
    "alg PS256",
    "alg lower-case",
    "alg missing",
    "alg a list",
    "alg a number",
    "kid unknown",
    "kid missing",
    "kid empty",
    "kid a number",
    "kid a list",
    "header a list",
    "header not json",
)
SIGNATURE_SPOILS = ("", "stranger's key", "flipped byte", "truncated", "empty", "random bytes")
# Claim spoils; each makes a truly valid token invalid (values far in the future are not spoils).
CLAIM_SPOILS = (
    "",
    "expired",
    "exp missing",
    "exp a string",
    "exp a bool",
    "exp a list",
    "exp 5000 digits",
    "exp hugely negative",
    "nbf in the future",
    "nbf a string",
    "nbf huge",
    "sub missing",
    "sub empty",
    "sub a list",
    "sub a number",
    "iss wrong",
    "iss a list",
    "aud wrong",
    "aud a list without us",
    "claims a list",
    "claims a string",
    "claims not json",
)
STRUCTURE_SPOILS = (
    "",
    "last segment cut",
    "two segments",
    "one segment",
    "extra dot",
    "extra segment",
    "padding added",
    "space inside",
    "non-base64 character",
    "header segment empty",
)
subs = st.one_of(st.just(ALICE), st.just("mallory"), st.text(min_size=1, max_size=20))
groups = st.one_of(
    st.none(),
    st.lists(st.one_of(st.just("readers"), st.text(max_size=8), st.integers(), st.none())),
    st.just("readers admins"),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.integers(),
)


def _header(spec: Spec) -> bytes:
    header: dict[str, Any] = {"alg": spec.alg, "typ": "JWT", "kid": KIDS[spec.alg]}
    match spec.header:
        case "alg none":
            header["alg"] = "none"
        case "alg HS256":
            header["alg"] = "HS256"
        case "alg RS512":
            header["alg"] = "RS512"
        case "alg PS256":
            header["alg"] = "PS256"
        case "alg lower-case":
            header["alg"] = spec.alg.lower()
        case "alg missing":
            del header["alg"]
        case "alg a list":
            header["alg"] = [spec.alg]
        case "alg a number":
            header["alg"] = 256
        case "kid unknown":
            header["kid"] = "no-such-key"
        case "kid missing":
            # Three keys are trusted: without a kid none can be chosen.
            del header["kid"]
        case "kid empty":
            header["kid"] = ""
        case "kid a number":
            header["kid"] = 7
        case "kid a list":
            header["kid"] = [KIDS[spec.alg]]
        case "header a list":
            return json.dumps([header]).encode()
        case "header not json":
            return b"{alg: RS256"
    return json.dumps(header).encode()


def _claims(spec: Spec) -> bytes:
    now = int(time.time())
    claims: dict[str, Any] = good_claims(spec.sub)
    if spec.groups is not None:
        claims["groups"] = spec.groups
    changes: dict[str, Any] = {
        "expired": {"exp": now - LEEWAY - 60},
        "exp a string": {"exp": str(now + 300)},
        "exp a bool": {"exp": True},
        "exp a list": {"exp": [now + 300]},
        "exp hugely negative": {"exp": -(10**30)},
        "nbf in the future": {"nbf": now + LEEWAY + 600},
        "nbf a string": {"nbf": str(now)},
        "nbf huge": {"nbf": 10**30},
        "sub empty": {"sub": ""},
        "sub a list": {"sub": [ALICE]},
        "sub a number": {"sub": 12345},
        "iss wrong": {"iss": "https://evil.test"},
        "iss a list": {"iss": [claims["iss"]]},
        "aud wrong": {"aud": "someone-else"},
        "aud a list without us": {"aud": ["someone-else", "other"]},
    }
    claims.update(changes.get(spec.claims, {}))
    if spec.claims == "exp missing":
        del claims["exp"]
    if spec.claims == "sub missing":
        del claims["sub"]
    if spec.claims == "claims a list":
        return json.dumps([claims]).encode()
    if spec.claims == "claims a string":
        return json.dumps("alice").encode()
    if spec.claims == "claims not json":
        return b'{"sub": "alice", '
    text = json.dumps(claims)
    if spec.claims == "exp 5000 digits":
        # json.dumps refuses ints this long; the text is what a hostile issuer sends anyway.
        text = text.replace(f'"exp": {claims["exp"]}', '"exp": ' + "9" * 5000)
    return text.encode()


def _token(spec: Spec, trusted: dict[str, Any]) -> str:
    header, claims = _header(spec), _claims(spec)
    key = STRANGERS[spec.alg] if spec.signature == "stranger's key" else trusted[spec.alg]
    token = sign(spec.alg, key, header, claims)
    head, _, signature = token.rpartition(".")
    match spec.signature:
        case "flipped byte":
            raw = bytearray(jwt.utils.base64url_decode(signature))
            raw[len(raw) // 2] ^= 0x01
            token = f"{head}.{b64url(bytes(raw))}"
        case "truncated":
            token = f"{head}.{signature[: len(signature) // 2]}"
        case "empty":
            token = f"{head}."
        case "random bytes":
            token = f"{head}.{b64url(bytes(range(64)))}"
    first, second, third = token.split(".")
    match spec.structure:
        case "last segment cut":
            token = f"{first}.{second}"
        case "two segments":
            token = f"{first}.{second}."[:-1]
        case "one segment":
            token = first
        case "extra dot":
            token = f"{first}.{second}..{third}"
        case "extra segment":
            token = f"{first}.{second}.{third}.{third}"
        case "padding added":
            token = f"{first}==.{second}.{third}"
        case "space inside":
            token = f"{first}.{second[:5]} {second[5:]}.{third}"
        case "non-base64 character":
            token = f"{first}.{second[:5]}*{second[6:]}.{third}"
        case "header segment empty":
            token = f".{second}.{third}"
    return token


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """Mostly one spoiled dimension (so each spoil is seen alone), sometimes several."""
    choices = {
        "header": draw(st.sampled_from(HEADER_SPOILS)),
        "signature": draw(st.sampled_from(SIGNATURE_SPOILS)),
        "claims": draw(st.sampled_from(CLAIM_SPOILS)),
        "structure": draw(st.sampled_from(STRUCTURE_SPOILS)),
    }
    keep = draw(st.sampled_from(("one", "one", "one", "none", "all")))
    if keep == "one":
        spoiled = draw(st.sampled_from(sorted(choices)))
        choices = {k: (v if k == spoiled else "") for k, v in choices.items()}
    elif keep == "none":
        choices = dict.fromkeys(choices, "")
    return Spec(
        alg=draw(st.sampled_from(ALGS)),
        sub=draw(subs),
        groups=draw(groups),
        **choices,
    )


def _check(hostile: Hostile, spec: Spec, token: str) -> None:
    answer = get(hostile.unix, REQUEST, [("authorization", f"Bearer {token}")])
    check_code(answer)
    if not spec.valid:
        assert answer.code is grpc.StatusCode.UNAUTHENTICATED, (spec, answer.code, answer.details)
    elif spec.reader:
        assert answer.code is grpc.StatusCode.OK, (spec, answer.details)
        check_get_answer(answer, REQUEST)
    else:
        assert answer.code is grpc.StatusCode.PERMISSION_DENIED, (spec, answer.details)
        assert "holds no role in this policy" in answer.details


@example(spec=Spec("RS256", "", "", "", "", ALICE, None))
@example(spec=Spec("EdDSA", "", "", "", "", "mallory", ["readers", 3, None]))
@example(spec=Spec("ES256", "", "", "", "", "mallory", None))
@given(spec=specs())
def test_a_token_identifies_its_caller_only_when_truly_valid(hostile: Hostile, spec: Spec) -> None:
    _check(hostile, spec, _token(spec, _trusted(hostile)))


@given(
    alg=st.sampled_from(ALGS),
    kid_alg=st.sampled_from(ALGS),
    sub=subs,
)
def test_a_token_whose_alg_does_not_fit_its_key_type_is_unauthenticated(
    hostile: Hostile, alg: str, kid_alg: str, sub: str
) -> None:
    """An ES256 token naming the RSA key's kid, RS256 naming the EC or Ed25519 kid, ...: signed
    with a key of the type its alg names, checked against a trusted key of another type."""
    if alg == kid_alg:
        return
    header = json.dumps({"alg": alg, "typ": "JWT", "kid": KIDS[kid_alg]}).encode()
    claims = json.dumps(good_claims(sub)).encode()
    token = sign(alg, _trusted(hostile)[alg], header, claims)
    answer = get(hostile.unix, REQUEST, [("authorization", f"Bearer {token}")])
    assert answer.code is grpc.StatusCode.UNAUTHENTICATED, (alg, kid_alg, answer.details)

"""Arbitrary call metadata against one real sidecar: garbage and repeated `authorization`
headers, random request ids and headers that claim an identity. Only a verified token (or the
unix socket's workload principal) identifies a caller; nothing else grants anything.

Metadata the gRPC client itself refuses to send (non-ASCII or control characters in a text
header, upper-case keys) never reaches the sidecar; binary (`-bin`) headers carry any bytes.
"""

from __future__ import annotations

import grpc
from hostile_support import ALICE, WORKLOAD, Hostile, check_code, check_get_answer, get
from hypothesis import example, given
from hypothesis import strategies as st

from featuresidecar.v1 import feature_service_pb2 as pb

# `stats:ctr` is readable by ALICE, not by the workload principal: an OK answer proves that the
# call ran as ALICE.
REQUEST = pb.GetFeaturesRequest(features=["profile:age", "stats:ctr"])
REQUEST.entities["user_id"].int64_values.values.extend([1, 2])

# Printable ASCII: what gRPC lets a text header carry.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))
FORGED_KEYS = (
    "x-principal",
    "x-user",
    "x-remote-user",
    "x-forwarded-user",
    "x-forwarded-client-cert",
    "x-spiffe-id",
    "x-workload-principal",
    "x-jwt-sub",
    "principal",
    "sub",
    "groups",
    "x-groups",
)
FORGED_VALUES = (
    ALICE,
    WORKLOAD,
    "readers",
    "By=spiffe://hostile.test;URI=spiffe://hostile.test/ns/ml/sa/model",
    "alice; groups=readers",
)


@st.composite
def spoiled_token(draw: st.DrawFn, token: str) -> str:
    """ALICE's token changed inside its header or claims, so it can no longer verify. (The last
    characters of a segment may only carry padding bits: changing them proves nothing.)"""
    header_end = token.index(".")
    claims_end = token.rindex(".")
    at = draw(st.integers(0, claims_end - 2))
    if at == header_end:
        at -= 1
    replacement = draw(st.sampled_from("AQgw_-x9"))
    if replacement == token[at]:
        replacement = "A" if token[at] != "A" else "B"
    return token[:at] + replacement + token[at + 1 :]


def garbage_authorization(token: str) -> st.SearchStrategy[str]:
    return st.one_of(
        header_text,
        st.builds(lambda t: f"Bearer {t}", header_text),
        st.builds(lambda t: f"Bearer {t}", spoiled_token(token)),
        st.builds(lambda s: f"{s} {token}", st.sampled_from(("Basic", "Token", "JWT", ""))),
        st.builds(lambda t: "Bearer " + t[: len(t) // 2], st.just(token)),
        st.builds(lambda n: "Bearer " + "A" * n, st.integers(4000, 15000)),
        st.just("Bearer"),
        st.just("Bearer "),
    )


@st.composite
def metadata(draw: st.DrawFn, token: str) -> tuple[list[tuple[str, str | bytes]], bool]:
    """Headers, and whether ALICE's valid token is the first `authorization` header among them."""
    headers: list[tuple[str, str | bytes]] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(("auth", "forged", "request-id", "bin", "other")))
        if kind == "auth":
            headers.append(("authorization", draw(garbage_authorization(token))))
        elif kind == "forged":
            value = draw(st.one_of(st.sampled_from(FORGED_VALUES), header_text))
            headers.append((draw(st.sampled_from(FORGED_KEYS)), value))
        elif kind == "request-id":
            headers.append(("x-request-id", draw(header_text)))
        elif kind == "bin":
            key = draw(
                st.sampled_from(("authorization-bin", "x-principal-bin", "x-request-id-bin"))
            )
            headers.append((key, draw(st.binary(max_size=64))))
        else:
            key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1))
            if key.endswith("-bin") or key.startswith("grpc-"):
                key = f"x{key}x"
            headers.append((key, draw(header_text)))
    valid_first = False
    if draw(st.booleans()):
        at = draw(st.integers(0, len(headers)))
        headers.insert(at, ("authorization", f"Bearer {token}"))
        valid_first = not any(k == "authorization" for k, _ in headers[:at])
    return headers, valid_first


def _expected(headers: list[tuple[str, str | bytes]], valid_first: bool, unix: bool) -> str:
    """ALICE, the workload, or nobody: from the first `authorization` header only."""
    if valid_first:
        return ALICE
    if any(key == "authorization" for key, _ in headers):
        return ""
    return WORKLOAD if unix else ""


@example(data=None)
@given(data=st.data())
def test_only_a_verified_token_or_the_socket_identifies_the_caller(
    hostile: Hostile, data: st.DataObject | None
) -> None:
    if data is None:
        # The classic: every identity-claiming header, no token, over both transports.
        headers: list[tuple[str, str | bytes]] = [(k, ALICE) for k in FORGED_KEYS]
        valid_first = False
        cases_ = [(hostile.unix, True), (hostile.tcp, False)]
    else:
        # ALICE's token exists only once the fixture ran, so the headers are drawn here.
        headers, valid_first = data.draw(metadata(hostile.alice_token), label="metadata")
        unix = data.draw(st.booleans(), label="unix socket")
        cases_ = [(hostile.unix if unix else hostile.tcp, unix)]
    for channel, unix in cases_:
        answer = get(channel, REQUEST, headers)
        check_code(answer)
        if answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            # gRPC's own limit on the size of all headers (8 KiB soft, 16 KiB hard).
            assert "metadata size" in answer.details, answer.details
            continue
        who = _expected(headers, valid_first, unix)
        if who == ALICE:
            assert answer.code is grpc.StatusCode.OK, (answer.code, answer.details)
            check_get_answer(answer, REQUEST)
        elif who == WORKLOAD:
            assert answer.code is grpc.StatusCode.PERMISSION_DENIED, answer.details
            assert answer.details == f"principal {WORKLOAD!r} may not read: stats:ctr"
        else:
            assert answer.code is grpc.StatusCode.UNAUTHENTICATED, answer.details


@given(request_id=header_text)
def test_any_request_id_is_accepted(hostile: Hostile, request_id: str) -> None:
    answer = get(hostile.unix, REQUEST, [*hostile.alice, ("x-request-id", request_id)])
    assert answer.code is grpc.StatusCode.OK, answer.details
    check_get_answer(answer, REQUEST)

"""Arbitrary GetFeatures / ListFeatures requests, as messages and as raw bytes, against one real
sidecar: never UNKNOWN or INTERNAL, and an OK answer never shows a protected value."""

from __future__ import annotations

import grpc
from hostile_strategies import mutated_bytes
from hostile_support import (
    FEATURES,
    GET,
    ITEMS,
    JOIN_KEYS,
    LIMITED_READS,
    LIST,
    MAX_ENTITIES,
    READER_READS,
    SERVICES,
    USERS,
    Hostile,
    call_raw,
    check_code,
    check_get_answer,
    get,
    requested_refs,
)
from hypothesis import example, given
from hypothesis import strategies as st

from featuresidecar.v1 import feature_service_pb2 as pb

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

# Text the protobuf runtime accepts for a string field (valid UTF-8: no lone surrogates).
names = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("abc_:*?-. \x00"), max_size=12),
    st.text(min_size=200, max_size=3000),
)

feature_refs = st.one_of(
    st.sampled_from(FEATURES),
    st.builds(lambda v, f: f"{v}:{f}", st.sampled_from(("profile", "stats", "pair")), names),
    st.builds(lambda v, f: f"{v}:{f}", names, st.sampled_from(("age", "email", "ctr"))),
    names,
)

int_values = st.lists(st.one_of(st.sampled_from(USERS), INT64), max_size=40)
string_values = st.lists(
    st.one_of(st.sampled_from(("a", "b", "")), st.text(max_size=30), st.text(min_size=1000)),
    max_size=8,
)
columns = st.one_of(
    st.tuples(st.just("int"), int_values),
    st.tuples(st.just("str"), string_values),
    st.tuples(st.just("none"), st.just([])),
)
entity_maps = st.dictionaries(st.one_of(st.sampled_from(JOIN_KEYS), names), columns, max_size=4)


@st.composite
def hostile_requests(draw: st.DrawFn) -> pb.GetFeaturesRequest:
    """Anything the message can hold: mostly wrong."""
    message = pb.GetFeaturesRequest(allow_partial=draw(st.booleans()))
    choice = draw(st.sampled_from(("features", "service", "both", "neither")))
    if choice in ("features", "both"):
        message.features.extend(draw(st.lists(feature_refs, max_size=12)))
    if choice in ("service", "both"):
        message.feature_service = draw(st.one_of(st.sampled_from(SERVICES), names))
    for key, (kind, values) in draw(entity_maps).items():
        column = message.entities[key]
        if kind == "int":
            column.int64_values.values.extend(values)
        elif kind == "str":
            column.string_values.values.extend(values)
        else:  # a column with neither member of the oneof set
            column.SetInParent()
    return message


@st.composite
def plausible_requests(draw: st.DrawFn) -> pb.GetFeaturesRequest:
    """Known features and well-typed entity columns, then at most one thing made wrong: these
    mostly get OK, which is where a leak would show."""
    message = pb.GetFeaturesRequest(allow_partial=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:
        message.feature_service = draw(st.sampled_from(SERVICES))
    else:
        message.features.extend(
            draw(st.lists(st.sampled_from(FEATURES), min_size=1, max_size=6, unique=True))
        )
    refs = requested_refs(message)
    rows = draw(st.integers(0, 12))
    users = draw(st.lists(st.one_of(st.sampled_from(USERS), INT64), min_size=rows, max_size=rows))
    message.entities["user_id"].int64_values.values.extend(users)
    # The join keys the features need, and sometimes one they do not.
    if any(r.startswith("pair:") for r in refs) or draw(st.integers(0, 3)) == 0:
        items = st.one_of(st.sampled_from(ITEMS), st.text(max_size=20))
        message.entities["item_id"].string_values.values.extend(
            draw(st.lists(items, min_size=rows, max_size=rows))
        )
    if any(r.startswith("flags:") for r in refs) or draw(st.integers(0, 3)) == 0:
        shards = st.one_of(st.sampled_from((0, 1)), st.integers(-(2**31), 2**31 - 1))
        message.entities["shard_id"].int64_values.values.extend(
            draw(st.lists(shards, min_size=rows, max_size=rows))
        )
    spoils = ("none",) * 7 + ("ref", "length", "type", "key", "rows", "int32")
    spoil = draw(st.sampled_from(spoils))
    if spoil == "ref":
        message.features.append(draw(feature_refs))
    elif spoil == "length":
        message.entities["user_id"].int64_values.values.append(1)
    elif spoil == "type":
        message.entities["item_id"].int64_values.values.extend([1] * rows)
    elif spoil == "key":
        message.entities[draw(names)].int64_values.values.extend([1] * rows)
    elif spoil == "int32":
        message.entities["shard_id"].int64_values.values.extend([2**31] * rows)
    elif spoil == "rows":
        # More rows than the policy's max_entities (500).
        extra = draw(st.integers(MAX_ENTITIES - rows - 1, MAX_ENTITIES + 10))
        for name in list(message.entities):
            column = message.entities[name]
            if column.WhichOneof("values") == "int64_values":
                column.int64_values.values.extend([1] * extra)
            else:
                column.string_values.values.extend(["a"] * extra)
    return message


def _valid(features: list[str], users: list[int], partial: bool) -> pb.GetFeaturesRequest:
    message = pb.GetFeaturesRequest(features=features, allow_partial=partial)
    message.entities["user_id"].int64_values.values.extend(users)
    return message


# Known shapes first, so that every run covers allowed, masked, denied and stale features.
@example(_valid(list(FEATURES[:5]), list(USERS), True))
@example(_valid(["profile:email", "profile:phone", "stats:ctr"], [1, 4, 5, 99], False))
@example(_valid(["stats:ctr", "stats:clicks"], [4, 5, 4, 1], False))
@example(pb.GetFeaturesRequest(feature_service="everything", allow_partial=True))
@given(message=plausible_requests())
def test_plausible_requests_never_show_a_denied_masked_or_stale_value(
    hostile: Hostile, message: pb.GetFeaturesRequest
) -> None:
    check_get_answer(get(hostile.unix, message, hostile.alice), message, READER_READS)


@example(_valid(["profile:ssn"], [1], False))
@example(pb.GetFeaturesRequest())
@given(message=hostile_requests())
def test_any_request_message_gets_an_actionable_code(
    hostile: Hostile, message: pb.GetFeaturesRequest
) -> None:
    check_get_answer(get(hostile.unix, message, hostile.alice), message, READER_READS)


@example(_valid(list(FEATURES), list(USERS), True))
@given(message=st.one_of(plausible_requests(), hostile_requests()))
def test_the_workload_principal_reads_only_what_its_role_allows(
    hostile: Hostile, message: pb.GetFeaturesRequest
) -> None:
    # No token on the unix socket: the caller is the limited workload principal.
    check_get_answer(get(hostile.unix, message), message, LIMITED_READS)


_SEED = _valid(["profile:age", "profile:email", "stats:ctr"], [1, 2, 4], True)
_SEED.entities["item_id"].string_values.values.extend(["a", "b", "c"])
SEED = _SEED.SerializeToString()


@example(b"")
@example(b"\xff" * 64)
@example(b"\x0a\xff\xff\xff\xff\x0f")  # field 1, length 4 GiB
@example(b"\x1a\x05\x0a\x03\xed\xa0\x80")  # a map key holding a UTF-8-encoded lone surrogate
@given(body=st.one_of(st.binary(max_size=512), mutated_bytes(SEED)))
def test_raw_bytes_as_a_getfeatures_request(hostile: Hostile, body: bytes) -> None:
    answer = call_raw(hostile.unix, GET, body, hostile.alice)
    check_code(answer)
    if answer.code is grpc.StatusCode.OK:
        # Bytes that parse are a request like any other: the full invariant applies.
        check_get_answer(answer, pb.GetFeaturesRequest.FromString(body), READER_READS)


@example(b"\x0a\x03\xed\xa0\x80")
@example(b"\x12\x80\x80\x80\x80\x10")
@given(body=st.one_of(st.binary(max_size=256), mutated_bytes(b"\x0a\x07profile\x12\x03pii")))
def test_raw_bytes_as_a_listfeatures_request(hostile: Hostile, body: bytes) -> None:
    answer = call_raw(hostile.unix, LIST, body, hostile.alice)
    check_code(answer)
    if answer.code is grpc.StatusCode.OK:
        listed = {f.ref for f in pb.ListFeaturesResponse.FromString(answer.body).features}
        assert listed <= READER_READS


@given(view=st.one_of(st.sampled_from(("profile", "stats", "")), names), tag=names)
def test_listfeatures_lists_only_readable_features(hostile: Hostile, view: str, tag: str) -> None:
    body = pb.ListFeaturesRequest(view=view, tag=tag).SerializeToString()
    for metadata, readable in ((hostile.alice, READER_READS), (None, LIMITED_READS)):
        answer = call_raw(hostile.unix, LIST, body, metadata)
        check_code(answer)
        if answer.code is grpc.StatusCode.OK:
            listed = {f.ref for f in pb.ListFeaturesResponse.FromString(answer.body).features}
            assert listed <= readable, listed - readable

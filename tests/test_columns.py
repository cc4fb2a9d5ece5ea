"""The vectorized column path gives exactly the bytes of the general path."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server import wire
from featuresidecar_server.access import Decision
from featuresidecar_server.codec import encode_timestamp, encode_value
from featuresidecar_server.columns import (
    TimestampCache,
    Wanted,
    _general_column,
    _Group,
    build_columns,
    plan_columns,
)
from featuresidecar_server.layout import Group, ReadPlan, Slot
from featuresidecar_server.policy import NO_DEFAULT, Feature
from featuresidecar_server.response import column_message
from featuresidecar_server.valuetypes import KINDS

NOW = 1_800_000_000 * 10**9
HOUR = 3600 * 10**9
KIND_NAMES = ["double", "float", "bool", "int64", "string", "float_list"]


def _value(kind: str, rng: random.Random) -> object:
    if kind == "double":
        return rng.uniform(-1e6, 1e6)
    if kind == "float":
        return float(rng.randint(-1000, 1000)) / 4
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int64":
        return rng.randint(-(2**40), 2**40)
    if kind == "string":
        return rng.choice(["a", "bé", ""])
    return [0.5] * rng.randint(0, 3)


def _scenario(
    seed: int, rows: int, holes: bool, fresh: bool = False
) -> tuple[list[Wanted], ReadPlan, list[list[bytes | None]]]:
    rng = random.Random(seed)
    kinds = [rng.choice(KIND_NAMES) for _ in range(12)]
    fields = [f"f{i}".encode() for i in range(12)] + [b"_ts:v0", b"_ts:v1"]
    plan = ReadPlan(
        (Group((), b"", tuple(fields)),),
        tuple(
            Slot(Feature(f"v{i % 2}", f"f{i}", KINDS[k]), 0, i, 12 + i % 2, None)
            for i, k in enumerate(kinds)
        ),
    )
    wanted = []
    for i, kind in enumerate(kinds):
        max_age = rng.choice([None, 2 * HOUR])
        default = NO_DEFAULT
        if rng.random() < 0.3 and kind in ("double", "float", "int64"):
            default = 0.0 if kind != "int64" else 0
        decision = Decision(f"v:f{i}", True, max_age_ns=max_age, default=default)
        if rng.random() < 0.1:
            decision = Decision(f"v:f{i}", False)
        wanted.append(
            Wanted(
                i, KINDS[kind], f"v{i % 2}", decision, plan.slots[i] if decision.allowed else None
            )
        )
    replies: list[list[bytes | None]] = []
    for _ in range(rows):
        if holes and rng.random() < 0.2:
            replies.append([None] * len(fields))  # the entity is not stored at all
            continue
        row: list[bytes | None] = []
        for kind in kinds:
            roll = rng.random()
            if holes and roll < 0.1:
                row.append(None)
            else:
                row.append(encode_value(_value(kind, rng), KINDS[kind]))
        for _ in range(2):
            age = HOUR if fresh else rng.choice([HOUR, 3 * HOUR])
            row.append(encode_timestamp(NOW - age) if not (holes and rng.random() < 0.05) else None)
        replies.append(row)
    return wanted, plan, replies


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("rows", "holes", "fresh"),
    [
        (1, False, True),
        (1, False, False),
        (7, False, True),
        (7, False, False),
        (7, True, False),
        (0, False, False),
    ],
)
def test_fast_and_general_paths_encode_the_same_columns(
    seed: int, rows: int, holes: bool, fresh: bool
) -> None:
    wanted, plan, replies = _scenario(seed, rows, holes, fresh)
    fast = build_columns(plan_columns(wanted), plan, replies, rows, NOW, b"k", TimestampCache())
    parsed = pb.GetFeaturesResponse.FromString(b"".join(fast)).columns
    assert len(parsed) == len(wanted)
    group = _Group(replies, len(plan.groups[0].fields))
    for item, column in zip(wanted, parsed, strict=True):
        reference = _general_column(item, [group], rows, NOW, b"k", TimestampCache())
        assert column == column_message(reference), (item.kind.name, item.decision)


def test_the_response_parses_with_the_generated_code() -> None:
    wanted, plan, replies = _scenario(3, 4, True)
    columns = build_columns(plan_columns(wanted), plan, replies, 4, NOW, b"k", TimestampCache())
    refs = [f"v{i % 2}:f{i}" for i in range(12)]
    payload = wire.response(wire.names(refs), columns, 42, 4)
    response = pb.GetFeaturesResponse.FromString(payload)
    assert list(response.feature_names) == refs
    assert len(response.columns) == 12
    assert (response.policy_revision, response.row_count) == (42, 4)
    assert pb.GetFeaturesResponse.FromString(wire.response(wire.names(["a:b"]), [], 0, 0)) == (
        pb.GetFeaturesResponse(feature_names=["a:b"])
    )


def test_the_fast_path_takes_fixed_width_scalars_and_declines_nulls() -> None:
    from featuresidecar_server.columns import _fast_batch

    def batch(values: list[bytes | None]) -> tuple[bool, list[bytes]]:
        slot = Slot(Feature("v", "x", KINDS["double"]), 0, 0, 1, None)
        item = Wanted(0, KINDS["double"], "v", Decision("v:x", True), slot)
        group = _Group([[v, encode_timestamp(NOW)] for v in values], 2)
        out = [b""]
        (plan,) = plan_columns([item]).batches
        return _fast_batch(plan, group, len(values), NOW, TimestampCache(), out, None), out

    taken, out = batch([encode_value(0.5, KINDS["double"]), None])
    assert taken
    column = pb.GetFeaturesResponse.FromString(out[0]).columns[0]
    assert list(column.statuses) == [pb.PRESENT, pb.NOT_FOUND]
    assert batch([encode_value(0.5, KINDS["double"]), b""])[0] is False  # a null value
    assert batch([encode_value(0.5, KINDS["float"])])[0] is False  # stored as float


def test_a_reused_plan_serves_a_single_row_right_as_time_passes_and_event_times_change() -> None:
    # One plan serves call after call; what it remembers of earlier calls' event times must
    # neither keep a value fresh once it has aged nor show an old event time.
    wanted, plan, _ = _scenario(5, 1, False, fresh=True)
    columns = plan_columns(wanted)
    stamps = TimestampCache()

    def served(replies: list[list[bytes | None]], now: int) -> list[Any]:
        fast = build_columns(columns, plan, replies, 1, now, b"k", stamps)
        group = _Group(replies, len(plan.groups[0].fields))
        parsed = list(pb.GetFeaturesResponse.FromString(b"".join(fast)).columns)
        for item, column in zip(wanted, parsed, strict=True):
            reference = _general_column(item, [group], 1, now, b"k", TimestampCache())
            assert column == column_message(reference), (item.kind.name, item.decision)
        return parsed

    _, _, first = _scenario(5, 1, False, fresh=True)
    limited = [i for i, w in enumerate(wanted) if w.decision.max_age_ns and w.slot]
    assert limited, "the scenario needs a column with a maximum age"
    early = served(first, NOW)
    assert {early[i].statuses[0] for i in limited} == {pb.PRESENT}
    late = served(first, NOW + 2 * HOUR)  # the same bytes, an hour past the maximum age
    assert {late[i].statuses[0] for i in limited} == {pb.STALE}
    again = [row[:-2] + [encode_timestamp(NOW + HOUR)] * 2 for row in first]
    moved = served(again, NOW + 2 * HOUR)
    assert {moved[i].statuses[0] for i in limited} == {pb.PRESENT}
    stamps_of = {int.from_bytes(moved[i].event_timestamps, "little") for i in limited}
    assert stamps_of == {NOW + HOUR}


def test_a_single_row_of_interleaved_views_is_cut_into_the_right_columns() -> None:
    # Request order v0, v0, v1, v1, v0: one contiguous batch whose shares (one per view's event
    # time) alternate, so the columns are assembled share run by share run.
    views = ["v0", "v0", "v1", "v1", "v0"]
    fields = [f"f{i}".encode() for i in range(5)] + [b"_ts:v0", b"_ts:v1"]
    plan = ReadPlan(
        (Group((), b"", tuple(fields)),),
        tuple(
            Slot(Feature(view, f"f{i}", KINDS["double"]), 0, i, 5 if view == "v0" else 6, None)
            for i, view in enumerate(views)
        ),
    )
    wanted = [
        Wanted(i, KINDS["double"], view, Decision(f"{view}:f{i}", True), plan.slots[i])
        for i, view in enumerate(views)
    ]
    columns = plan_columns(wanted)
    (batch,) = columns.batches
    assert batch.contiguous
    assert batch.runs == ((0, 2, 0), (2, 4, 1), (4, 5, 0))
    replies: list[list[bytes | None]] = [
        [encode_value(i + 0.25, KINDS["double"]) for i in range(5)]
        + [encode_timestamp(NOW - HOUR), encode_timestamp(NOW - 2 * HOUR)]
    ]
    fast = build_columns(columns, plan, replies, 1, NOW, b"k", TimestampCache())
    assert fast[1:] == [b""] * 4  # the whole batch is one piece of bytes
    parsed = pb.GetFeaturesResponse.FromString(b"".join(fast)).columns
    group = _Group(replies, len(fields))
    for item, column in zip(wanted, parsed, strict=True):
        reference = _general_column(item, [group], 1, NOW, b"k", TimestampCache())
        assert column == column_message(reference)
    values = [struct.unpack("<d", column.data)[0] for column in parsed]
    assert values == [0.25, 1.25, 2.25, 3.25, 4.25]
    stamps = [int.from_bytes(column.event_timestamps, "little") for column in parsed]
    assert stamps == [NOW - HOUR] * 2 + [NOW - 2 * HOUR] * 2 + [NOW - HOUR]

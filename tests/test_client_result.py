"""FeatureResult reads the wire format exactly, and numeric columns cost no Python object per value.

Responses here are built by hand, byte by byte as the wire contract lays them out, so every
placeholder, offset and status is chosen by the test.
"""

from __future__ import annotations

import datetime as dt
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from featuresidecar import FeatureResult, InternalError, Status
from featuresidecar.v1 import feature_service_pb2 as pb

P, NV, NF, ST, MK, DN = (int(s) for s in Status)
NAT = np.datetime64("NaT", "ns")


def column(
    kind: int,
    statuses: Sequence[int],
    *,
    data: Any = None,
    strings: Sequence[str] = (),
    binaries: Sequence[bytes] = (),
    offsets: Sequence[int] | None = None,
    times: Sequence[int] | None = None,
    has_default: bool = False,
    mask: int = pb.MASK_NONE,
) -> pb.FeatureColumn:
    message = pb.FeatureColumn(
        type=kind,
        statuses=bytes(statuses),
        event_timestamps=np.asarray(
            times if times is not None else [0] * len(statuses), dtype="<i8"
        ).tobytes(),
        strings=list(strings),
        binaries=list(binaries),
        has_default=has_default,
        mask=mask,
    )
    if data is not None:
        message.data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if offsets is not None:
        message.offsets = np.asarray(offsets, dtype="<u4").tobytes()
    return message


def result(rows: int, **columns: pb.FeatureColumn) -> FeatureResult:
    response = pb.GetFeaturesResponse(
        feature_names=[name.replace("__", ":") for name in columns],
        row_count=rows,
        policy_revision=42,
    )
    response.columns.extend(columns.values())
    return FeatureResult(response)


def _base(array: np.ndarray) -> Any:
    """The object at the end of an array's .base chain."""
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base


# --- every type -------------------------------------------------------------------------------


def test_fixed_width_scalars_in_their_own_dtype() -> None:
    got = result(
        3,
        v__i32=column(pb.INT32, [P, NF, P], data=np.array([-7, 0, 2**31 - 1], "<i4")),
        v__i64=column(pb.INT64, [P, P, NV], data=np.array([2**63 - 1, -(2**63), 0], "<i8")),
        v__f32=column(pb.FLOAT, [P, P, P], data=np.array([0.5, -1.25, 3.0], "<f4")),
        v__f64=column(pb.DOUBLE, [ST, P, DN], data=np.array([0.0, 1e300, 0.0], "<f8")),
        v__bool=column(pb.BOOL, [P, P, NF], data=bytes([1, 0, 0])),
        v__ts=column(
            pb.TIMESTAMP, [P, NF, P], data=np.array([1_700_000_000_123_456_789, 0, 5], "<i8")
        ),
    )
    assert got.values("v:i32").dtype == np.int32
    assert got.values("v:i32").tolist() == [-7, 0, 2**31 - 1]
    assert got.values("v:i64").tolist() == [2**63 - 1, -(2**63), 0]
    assert got.values("v:f32").dtype == np.float32
    assert got.values("v:f64").tolist() == [0.0, 1e300, 0.0]
    assert got.values("v:bool").dtype == np.bool_
    assert got.values("v:bool").tolist() == [True, False, False]
    stamps = got.values("v:ts")
    assert stamps.dtype == np.dtype("datetime64[ns]")
    assert stamps[0] == np.datetime64("2023-11-14T22:13:20.123456789", "ns")
    assert got.to_dict() == {
        "v:i32": [-7, None, 2**31 - 1],
        "v:i64": [2**63 - 1, -(2**63), None],
        "v:f32": [0.5, -1.25, 3.0],
        "v:f64": [None, 1e300, None],
        "v:bool": [True, False, None],
        # Python datetimes stop at microseconds.
        "v:ts": [
            dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC),
            None,
            dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        ],
    }
    assert got.type("v:ts") == "timestamp" and got.type("v:bool") == "bool"
    assert got.policy_revision == 42 and got.row_count == 3


def test_strings_bytes_and_lists() -> None:
    got = result(
        3,
        v__s=column(pb.STRING, [P, NF, P], strings=["Zürich", "", ""]),
        v__b=column(pb.BYTES, [NV, P, P], binaries=[b"", b"\x00\xff", b""]),
        v__il=column(
            pb.INT64_LIST, [P, P, NF], data=np.array([1, 2, 3], "<i8"), offsets=[0, 2, 3, 3]
        ),
        v__sl=column(pb.STRING_LIST, [P, NV, P], strings=["a", "", "b"], offsets=[0, 2, 2, 3]),
        v__bl=column(pb.BYTES_LIST, [P, P, P], binaries=[b"x"], offsets=[0, 0, 1, 1]),
        v__tl=column(
            pb.TIMESTAMP_LIST,
            [P, NF, NF],
            data=np.array([1_000_000_000, -(2**63)], "<i8"),
            offsets=[0, 2, 2, 2],
        ),
    )
    assert got.values("v:s") == ["Zürich", "", ""]
    assert got.values("v:b") == [b"", b"\x00\xff", b""]
    assert [row.tolist() for row in got.values("v:il")] == [[1, 2], [3], []]
    assert got.values("v:sl") == [["a", ""], [], ["b"]]
    assert got.to_dict() == {
        "v:s": ["Zürich", None, ""],
        "v:b": [None, b"\x00\xff", b""],
        "v:il": [[1, 2], [3], None],
        "v:sl": [["a", ""], None, ["b"]],
        "v:bl": [[], [b"x"], []],
        # INT64_MIN inside a timestamp list is Feast's null item.
        "v:tl": [[dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC), None], None, None],
    }
    assert got.to_rows()[0] == {
        "v:s": "Zürich",
        "v:b": None,
        "v:il": [1, 2],
        "v:sl": ["a", ""],
        "v:bl": [],
        "v:tl": [dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC), None],
    }


VALID_RULES = [
    # has_default, mask, expected validity of PRESENT, NULL_VALUE, NOT_FOUND, STALE, MASKED, DENIED
    (False, pb.MASK_NONE, [True, False, False, False, False, False]),
    (True, pb.MASK_NONE, [True, False, True, True, False, False]),
    (False, pb.MASK_HASH, [True, False, False, False, True, False]),
    (False, pb.MASK_REDACT, [True, False, False, False, False, False]),
    (True, pb.MASK_HASH, [True, False, True, True, True, False]),
]


@pytest.mark.parametrize(("has_default", "mask", "expected"), VALID_RULES)
def test_which_rows_hold_a_value(has_default, mask, expected) -> None:
    got = result(
        6,
        v__x=column(
            pb.DOUBLE,
            [P, NV, NF, ST, MK, DN],
            data=np.arange(6, dtype="<f8"),
            has_default=has_default,
            mask=mask,
        ),
    )
    assert got.valid("v:x").tolist() == expected
    want = [float(i) if ok else None for i, ok in enumerate(expected)]
    assert got.to_dict() == {"v:x": want}
    matrix = got.to_numpy()
    assert [None if np.isnan(v) else v for v in matrix[:, 0].tolist()] == want
    assert got.status_names("v:x") == [
        "PRESENT", "NULL_VALUE", "NOT_FOUND", "STALE", "MASKED", "DENIED",
    ]  # fmt: skip


def test_statuses_event_times_and_unknown_statuses() -> None:
    got = result(3, v__x=column(pb.DOUBLE, [P, 9, NF], data=np.zeros(3), times=[5, 6, 0]))
    assert got.statuses("v:x").dtype == np.uint8
    assert got.statuses("v:x").tolist() == [1, 9, 3]
    assert got.status_names("v:x") == ["PRESENT", "STATUS_9", "NOT_FOUND"]
    times = got.event_times("v:x")
    assert times.dtype == np.dtype("datetime64[ns]")
    assert times[:2].astype(np.int64).tolist() == [5, 6]
    assert np.isnat(times[2])
    # A column without event times: every row NaT.
    bare = pb.GetFeaturesResponse(feature_names=["v:y"], row_count=2)
    bare.columns.add(type=pb.INT64, statuses=bytes([P, P]), data=np.zeros(2, "<i8").tobytes())
    assert np.isnat(FeatureResult(bare).event_times("v:y")).all()


# --- matrices ---------------------------------------------------------------------------------


def test_to_numpy_refuses_what_is_not_a_numeric_scalar() -> None:
    got = result(
        1,
        v__x=column(pb.DOUBLE, [P], data=np.ones(1)),
        v__s=column(pb.STRING, [P], strings=["a"]),
        v__e=column(pb.FLOAT_LIST, [P], data=np.ones(2, "<f4"), offsets=[0, 2]),
        v__h=column(pb.STRING, [MK], strings=["00ff"], mask=pb.MASK_HASH),
        v__t=column(pb.TIMESTAMP, [P], data=np.ones(1, "<i8")),
    )
    with pytest.raises(TypeError) as caught:
        got.to_numpy()
    assert str(caught.value) == (
        "to_numpy() takes numeric scalar features (int32, int64, float, double, bool); not "
        "numeric: v:s (string), v:e (float_list), v:h (string, masked by hash), v:t (timestamp). "
        "Read those with values() or matrix()"
    )
    assert got.to_numpy(["v:x"]).tolist() == [[1.0]]
    with pytest.raises(TypeError, match="needs a floating dtype to hold NaN, got int64"):
        got.to_numpy(["v:x"], dtype=np.int64)
    with pytest.raises(
        KeyError, match=r"'v:nope' is not a feature of this result \(it has: v:x, v:s"
    ):
        got.to_numpy(["v:nope"])
    with pytest.raises(TypeError, match="wrap one in a list"):
        got.to_numpy("v:x")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"matrix\(\) needs a numeric list feature.*'v:x' is double"
    ):
        got.matrix("v:x")


def test_matrix_of_equal_length_lists() -> None:
    got = result(
        4,
        v__e=column(
            pb.FLOAT_LIST,
            [P, NF, P, NV],
            data=np.array([1, 2, 3, 4], "<f4"),
            offsets=[0, 2, 2, 4, 4],
        ),
        v__i=column(
            pb.INT32_LIST, [P, P, P, P], data=np.arange(8, dtype="<i4"), offsets=[0, 2, 4, 6, 8]
        ),
        v__none=column(pb.DOUBLE_LIST, [NF, NF, NF, NF], offsets=[0, 0, 0, 0, 0], data=b""),
    )
    matrix = got.embedding("v:e")
    assert matrix.dtype == np.float32 and matrix.shape == (4, 2)
    assert matrix[[0, 2]].tolist() == [[1, 2], [3, 4]]
    assert np.isnan(matrix[[1, 3]]).all()
    ints = got.matrix("v:i")
    assert ints.dtype == np.float64 and ints.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert got.matrix("v:i", dtype=np.float32).dtype == np.float32
    # No row holds a value: the width comes from dim, the rows are all NaN.
    empty = got.matrix("v:none", dim=3)
    assert empty.shape == (4, 3) and np.isnan(empty).all()
    assert got.matrix("v:none").shape == (4, 0)
    with pytest.raises(ValueError, match=r"matrix\(dim=...\): expected an int >= 0"):
        got.matrix("v:e", dim=-1)


def test_a_packed_all_present_embedding_is_a_view_not_a_copy() -> None:
    got = result(
        3,
        v__e=column(
            pb.DOUBLE_LIST, [P, P, P], data=np.arange(6, dtype="<f8"), offsets=[0, 2, 4, 6]
        ),
    )
    matrix = got.matrix("v:e")
    assert matrix.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert np.shares_memory(matrix, got.values("v:e")[0])
    assert isinstance(_base(matrix), bytes)


# --- no Python object per value -----------------------------------------------------------------


def test_numeric_values_are_views_over_the_message_bytes() -> None:
    data = np.array([1.5, -2.0, 3.25], "<f8")
    got = result(3, v__x=column(pb.DOUBLE, [P, P, P], data=data))
    values = got.values("v:x")
    base = _base(values)
    # The chain ends at one bytes object: the column's data field, not a per-value structure.
    assert type(base) is bytes
    assert base == got.response.columns[0].data == data.tobytes()
    assert not values.flags.owndata and not values.flags.writeable
    # Reading again makes no new copy.
    assert np.shares_memory(values, got.values("v:x"))
    rows = got.values("v:x")
    assert rows.tolist() == [1.5, -2.0, 3.25]
    # List rows are slices of the same buffer.
    lists = result(
        2, v__l=column(pb.INT64_LIST, [P, P], data=np.arange(3, dtype="<i8"), offsets=[0, 1, 3])
    )
    first, second = lists.values("v:l")
    assert (first.tolist(), second.tolist()) == ([0], [1, 2])
    assert type(_base(second)) is bytes
    assert _base(first) is _base(second)


ROWS = 200_000
FEATURES = 4


def _big_result() -> tuple[FeatureResult, np.ndarray]:
    rng = np.random.default_rng(7)
    response = pb.GetFeaturesResponse(row_count=ROWS)
    expected = np.empty((ROWS, FEATURES))
    kinds = [(pb.DOUBLE, "<f8"), (pb.FLOAT, "<f4"), (pb.INT64, "<i8"), (pb.BOOL, "u1")]
    for index, (kind, dtype) in enumerate(kinds):
        values = (
            (rng.random(ROWS) * 1000).astype(dtype)
            if kind != pb.BOOL
            else rng.integers(0, 2, ROWS).astype("u1")
        )
        statuses = np.where(rng.random(ROWS) < 0.1, NF, P).astype(np.uint8)
        response.feature_names.append(f"v:f{index}")
        response.columns.add(
            type=kind,
            statuses=statuses.tobytes(),
            event_timestamps=np.zeros(ROWS, "<i8").tobytes(),
            data=values.tobytes(),
        )
        expected[:, index] = np.where(statuses == P, values.astype(np.float64), np.nan)
    return FeatureResult(response), expected


def _measure(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, int, int]:
    """(output, live blocks it left behind, peak bytes beyond the output)."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(ignore)
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        output = fn()
        _, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot().filter_traces(ignore)
    finally:
        tracemalloc.stop()
    blocks = sum(max(stat.count_diff, 0) for stat in after.compare_to(before, "lineno"))
    return output, blocks, peak - start - output.nbytes


def _per_value(got: FeatureResult) -> np.ndarray:
    """What to_numpy must not be: one Python object per value."""
    columns = [
        [
            float(v) if ok else float("nan")
            for v, ok in zip(got.values(n).tolist(), got.valid(n).tolist(), strict=True)
        ]
        for n in got.feature_names
    ]
    return np.array(columns).T


def test_to_numpy_makes_no_python_object_per_value() -> None:
    got, expected = _big_result()
    matrix, blocks, extra = _measure(got.to_numpy)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.shape == (ROWS, FEATURES) and matrix.flags.c_contiguous
    # A handful of arrays, not one object per row.
    assert blocks < 1_000, blocks
    # Beyond the output, less memory than one 8-byte pointer per row at any moment.
    assert extra < ROWS * 8, extra

    # The measure tells the two apart: a per-value decoder needs far more than the bound.
    naive, _, naive_extra = _measure(lambda: _per_value(got))
    np.testing.assert_array_equal(naive, expected)
    assert naive_extra > ROWS * 8 * FEATURES


# --- responses that break the contract ---------------------------------------------------------


def _response(
    rows: int, *columns: pb.FeatureColumn, names: Sequence[str] | None = None
) -> pb.GetFeaturesResponse:
    response = pb.GetFeaturesResponse(row_count=rows)
    response.feature_names.extend(
        names if names is not None else [f"v:c{i}" for i in range(len(columns))]
    )
    response.columns.extend(columns)
    return response


MALFORMED = [
    (
        _response(2, column(pb.DOUBLE, [P], data=np.zeros(2))),
        "column 'v:c0' has 1 statuses for 2 rows",
    ),
    (
        _response(2, column(pb.DOUBLE, [P, P], data=np.zeros(3))),
        "column 'v:c0' (double) has 24 bytes of data; expected 16 for 2 values",
    ),
    (
        _response(1, column(pb.STRING, [P], strings=["a", "b"])),
        "column 'v:c0' (string) has 2 values; expected 1",
    ),
    (
        _response(2, column(pb.INT32_LIST, [P, P], data=np.zeros(2, "<i4"), offsets=[0, 2])),
        "column 'v:c0' has 8 bytes of list offsets; expected 12 for 2 rows",
    ),
    (
        _response(2, column(pb.INT32_LIST, [P, P], data=np.zeros(2, "<i4"), offsets=[0, 2, 1])),
        "column 'v:c0' has list offsets that do not start at 0 and grow",
    ),
    (
        _response(1, column(pb.INT32_LIST, [P], data=np.zeros(1, "<i4"), offsets=[0, 2])),
        "column 'v:c0' (int32_list) has 4 bytes of data; expected 8 for 2 values",
    ),
    (
        _response(1, column(pb.DOUBLE, [P], data=np.zeros(1), times=[1, 2])),
        "column 'v:c0' has 16 bytes of event timestamps; expected 8 for 1 rows",
    ),
    (
        _response(1, column(99, [P])),
        "column 'v:c0' has value type 99, unknown to this client (a newer sidecar? "
        "upgrade featuresidecar)",
    ),
    (
        _response(1, column(pb.DOUBLE, [P], data=np.zeros(1)), names=["v:a", "v:b"]),
        "2 feature names but 1 columns",
    ),
    (
        _response(
            1,
            column(pb.DOUBLE, [P], data=np.zeros(1)),
            column(pb.DOUBLE, [P], data=np.zeros(1)),
            names=["v:a", "v:a"],
        ),
        "feature 'v:a' appears twice",
    ),
]


@pytest.mark.parametrize(("response", "problem"), MALFORMED, ids=[p for _, p in MALFORMED])
def test_a_malformed_response_is_a_clear_internal_error(response, problem) -> None:
    with pytest.raises(InternalError) as caught:
        FeatureResult(response)
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert caught.value.details == f"malformed response: {problem}"


def test_only_a_get_features_response_is_accepted() -> None:
    with pytest.raises(
        TypeError, match=r"needs a featuresidecar\.v1 GetFeaturesResponse, got ListFeaturesResponse"
    ):
        FeatureResult(pb.ListFeaturesResponse())  # type: ignore[arg-type]


def test_zero_rows() -> None:
    got = result(
        0,
        v__x=column(pb.DOUBLE, [], data=b""),
        v__l=column(pb.FLOAT_LIST, [], data=b"", offsets=[0]),
    )
    assert got.to_numpy(["v:x"]).shape == (0, 1)
    assert got.to_dict() == {"v:x": [], "v:l": []}
    assert got.values("v:l") == []
    assert got.matrix("v:l", dim=4).shape == (0, 4)
    assert got.to_rows() == []
    assert (
        repr(got) == "FeatureResult(row_count=0, feature_names=['v:x', 'v:l'], policy_revision=42)"
    )

"""`feature-sidecar load`: files into real Redis, read back through a real sidecar, exactly."""

from __future__ import annotations

import base64
import io
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import by_name, column_values, request, statuses, stub, timestamps

from featuresidecar_server import bundle_format, cell_text, cells, loader
from featuresidecar_server.catalog import Catalog
from featuresidecar_server.cli import main
from featuresidecar_server.cmd_load import ProgressBar, summary
from featuresidecar_server.devredis import LocalRedis, free_port
from featuresidecar_server.entity_key import redis_key
from featuresidecar_server.policy_yaml import parse_policy
from featuresidecar_server.valuetypes import KINDS

PRINCIPAL = "loader-test"
NS = 1_000_000_000

POLICY = f"""\
version: 1
project: loadtest
catalog:
  entities:
    - name: user
      join_keys: [{{name: user_id, type: int64}}]
    - name: item
      join_keys: [{{name: item_id, type: string}}]
  views:
    - name: scalars
      entities: [user]
      features:
        - {{name: int32_f, type: int32}}
        - {{name: int64_f, type: int64}}
        - {{name: float_f, type: float}}
        - {{name: double_f, type: double}}
        - {{name: string_f, type: string}}
        - {{name: bytes_f, type: bytes}}
        - {{name: bool_f, type: bool}}
        - {{name: ts_f, type: timestamp}}
    - name: lists
      entities: [user]
      features:
        - {{name: int32_list_f, type: int32_list}}
        - {{name: int64_list_f, type: int64_list}}
        - {{name: float_list_f, type: float_list, dim: 2}}
        - {{name: double_list_f, type: double_list}}
        - {{name: string_list_f, type: string_list}}
        - {{name: bytes_list_f, type: bytes_list}}
        - {{name: bool_list_f, type: bool_list}}
        - {{name: ts_list_f, type: timestamp_list}}
    - name: pair
      entities: [user, item]
      features:
        - {{name: affinity, type: float}}
    - name: stats
      entities: [user]
      features:
        - {{name: age, type: int64}}
        - {{name: score, type: double}}
roles:
  - name: reader
    allow: ["*:*"]
bindings:
  - principal: {PRINCIPAL}
    roles: [reader]
"""

SCALARS = [
    "scalars:int32_f",
    "scalars:int64_f",
    "scalars:float_f",
    "scalars:double_f",
    "scalars:string_f",
    "scalars:bytes_f",
    "scalars:bool_f",
    "scalars:ts_f",
]
LISTS = [ref.replace("scalars:", "lists:").replace("_f", "_list_f") for ref in SCALARS]

# 2024-05-01T12:00:00Z
NOON = 1_714_564_800


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def csv_file(tmp_path: Path, text: str, name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(redis_url: str | None, policy: Path, view: str, source: Path, *extra: str) -> list[str]:
    args = ["load", "--bundle", str(policy), "--view", view, "--from", str(source), *extra]
    if redis_url is not None:
        args += ["--redis", redis_url]
    return args


def run(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> tuple[int, str]:
    """Exit code and stderr of the CLI, in process; stdout must stay empty."""
    code = main(args)
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def served(
    sidecar_factory: Callable[..., Any],
    redis_url: str,
    policy: Path,
    refs: Sequence[str],
    entities: Mapping[str, Sequence[int] | Sequence[str]],
) -> dict[str, Any]:
    sidecar = sidecar_factory(redis=redis_url, bundle=str(policy), workload_principal=PRINCIPAL)
    channel, client = stub(sidecar.address)
    try:
        return by_name(client.GetFeatures(request(refs, entities), timeout=10))
    finally:
        channel.close()


def keys_of(redis_url: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return sorted(client.keys())
    finally:
        client.close()


def user_key(user_id: int) -> bytes:
    return redis_key([("user_id", KINDS["int64"])], [user_id], "loadtest")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


SUMMARY = re.compile(
    r"loaded (\d+) rows? x (\d+) features? of view '(\w+)' into (\S+) in \d+\.\d s "
    r"\([\d,]+ values/s\)\n"
)


# --- every type, CSV ----------------------------------------------------------------------------


def test_csv_every_scalar_type_and_nulls_are_served_exactly(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    source = csv_file(
        tmp_path,
        "user_id,int32_f,int64_f,float_f,double_f,string_f,bytes_f,bool_f,ts_f\n"
        f"1,-7,9007199254740993,0.5,0.1,héllo,{b64(bytes([0, 1, 2, 255]))},true,"
        "2024-05-01T12:00:00.75+02:00\n"
        "2,,,,,,,,\n"
        '3,2147483647,-9223372036854775808,-1.25,1e300,"a,b",,FALSE,1700000000\n',
    )
    code, err = run(capsys, load(redis_server.url, policy, "scalars", source))
    assert code == 0, err
    columns = served(sidecar_factory, redis_server.url, policy, SCALARS, {"user_id": [1, 2, 3, 4]})
    expected = {
        "int32_f": [-7, None, 2147483647, None],
        "int64_f": [9007199254740993, None, -9223372036854775808, None],
        "float_f": [0.5, None, -1.25, None],
        "double_f": [0.1, None, 1e300, None],
        "string_f": ["héllo", None, "a,b", None],
        "bytes_f": [b"\x00\x01\x02\xff", None, None, None],
        "bool_f": [True, None, False, None],
        # Feast keeps timestamp values in whole seconds: 12:00:00.75+02:00 is 10:00:00Z.
        "ts_f": [(NOON - 7200) * NS, None, 1_700_000_000 * NS, None],
    }
    for ref in SCALARS:
        name = ref.split(":")[1]
        assert column_values(columns[ref]) == expected[name], ref
        want = ["NULL_VALUE" if v is None else "PRESENT" for v in expected[name][:3]]
        assert statuses(columns[ref]) == [*want, "NOT_FOUND"], ref


def test_csv_every_list_type_is_served_exactly(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    source = csv_file(
        tmp_path,
        "user_id,int32_list_f,int64_list_f,float_list_f,double_list_f,string_list_f,"
        "bytes_list_f,bool_list_f,ts_list_f\n"
        '1,"[1, -2]",[9007199254740993],"[0.5, -1.5]","[0.1, 2]","[""a"", ""é""]",'
        f'"[""{b64(bytes([0, 1]))}"", """"]","[true, false, 1]",'
        '"[""2024-05-01T12:00:00Z"", 1700000000]"\n'
        "2,,,,,,,,\n"
        "3,[],[],,[],[],[],[],[]\n",
    )
    code, err = run(capsys, load(redis_server.url, policy, "lists", source))
    assert code == 0, err
    columns = served(sidecar_factory, redis_server.url, policy, LISTS, {"user_id": [1, 2, 3]})
    expected = {
        "int32_list_f": [[1, -2], None, []],
        "int64_list_f": [[9007199254740993], None, []],
        "float_list_f": [[0.5, -1.5], None, None],
        "double_list_f": [[0.1, 2.0], None, []],
        "string_list_f": [["a", "é"], None, []],
        "bytes_list_f": [[b"\x00\x01", b""], None, []],
        "bool_list_f": [[True, False, True], None, []],
        "ts_list_f": [[NOON * NS, 1_700_000_000 * NS], None, []],
    }
    for ref in LISTS:
        name = ref.split(":")[1]
        assert column_values(columns[ref]) == expected[name], ref
        want = ["NULL_VALUE" if v is None else "PRESENT" for v in expected[name]]
        assert statuses(columns[ref]) == want, ref


def test_composite_key_view_writes_feast_keys(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    # Columns in the file are in another order than Feast's sorted key order (item_id first);
    # the file starts with a byte order mark, as spreadsheet exports do.
    source = csv_file(
        tmp_path, "\ufeffuser_id,affinity,item_id\r\n1,0.25,A-1\r\n1,0.5,B-2\r\n2,-1,A-1\r\n"
    )
    code, err = run(capsys, load(redis_server.url, policy, "pair", source))
    assert code == 0, err
    expected_key = redis_key(
        [("user_id", KINDS["int64"]), ("item_id", KINDS["string"])], [1, "B-2"], "loadtest"
    )
    assert expected_key in keys_of(redis_server.url)
    columns = served(
        sidecar_factory,
        redis_server.url,
        policy,
        ["pair:affinity"],
        {"user_id": [1, 1, 2, 2], "item_id": ["A-1", "B-2", "A-1", "B-2"]},
    )
    assert column_values(columns["pair:affinity"]) == [0.25, 0.5, -1.0, None]
    assert statuses(columns["pair:affinity"]) == ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"]


# --- every type, Parquet ------------------------------------------------------------------------


def test_parquet_every_type_with_nulls_and_event_times(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    stamp = pa.timestamp("us", tz="UTC")
    event = pa.array([NOON * NS + 123_456_789, 1_700_000_000 * NS, 5 * NS], pa.timestamp("ns"))
    scalars = pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "int32_f": pa.array([-7, None, 2147483647], pa.int32()),
            "int64_f": pa.array([9007199254740993, None, -1], pa.int64()),
            "float_f": pa.array([0.5, None, -1.25], pa.float32()),
            "double_f": pa.array([0.1, None, float("inf")], pa.float64()),
            "string_f": pa.array(["héllo", None, ""], pa.string()),
            "bytes_f": pa.array([b"\x00\xff", None, b""], pa.binary()),
            "bool_f": pa.array([True, None, False], pa.bool_()),
            "ts_f": pa.array([NOON * 1_000_000, None, 0], stamp),
            "event": event,
        }
    )
    pq.write_table(scalars, tmp_path / "scalars.parquet")
    lists = pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "int32_list_f": pa.array([[1, -2], None, []], pa.list_(pa.int32())),
            "int64_list_f": pa.array([[9007199254740993], None, []], pa.list_(pa.int64())),
            "float_list_f": pa.array([[0.5, -1.5], None, [2.0, 3.0]], pa.list_(pa.float32())),
            "double_list_f": pa.array([[0.1, 2.0], None, []], pa.large_list(pa.float64())),
            "string_list_f": pa.array([["a", "é"], None, []], pa.list_(pa.string())),
            "bytes_list_f": pa.array([[b"\x00\x01", b""], None, []], pa.list_(pa.binary())),
            "bool_list_f": pa.array([[True, False], None, []], pa.list_(pa.bool_())),
            "ts_list_f": pa.array([[NOON * 1_000_000], None, []], pa.list_(stamp)),
            "event": event,
        }
    )
    pq.write_table(lists, tmp_path / "lists.pq")
    for view, name in (("scalars", "scalars.parquet"), ("lists", "lists.pq")):
        code, err = run(
            capsys,
            load(redis_server.url, policy, view, tmp_path / name, "--timestamp-column", "event"),
        )
        assert code == 0, err
    columns = served(
        sidecar_factory, redis_server.url, policy, SCALARS + LISTS, {"user_id": [1, 2, 3]}
    )
    expected = {
        "scalars:int32_f": [-7, None, 2147483647],
        "scalars:int64_f": [9007199254740993, None, -1],
        "scalars:float_f": [0.5, None, -1.25],
        "scalars:double_f": [0.1, None, float("inf")],
        "scalars:string_f": ["héllo", None, ""],
        "scalars:bytes_f": [b"\x00\xff", None, b""],
        "scalars:bool_f": [True, None, False],
        "scalars:ts_f": [NOON * NS, None, 0],
        "lists:int32_list_f": [[1, -2], None, []],
        "lists:int64_list_f": [[9007199254740993], None, []],
        "lists:float_list_f": [[0.5, -1.5], None, [2.0, 3.0]],
        "lists:double_list_f": [[0.1, 2.0], None, []],
        "lists:string_list_f": [["a", "é"], None, []],
        "lists:bytes_list_f": [[b"\x00\x01", b""], None, []],
        "lists:bool_list_f": [[True, False], None, []],
        "lists:ts_list_f": [[NOON * NS], None, []],
    }
    for ref, values in expected.items():
        assert column_values(columns[ref]) == values, ref
        want = ["NULL_VALUE" if v is None else "PRESENT" for v in values]
        assert statuses(columns[ref]) == want, ref
        assert timestamps(columns[ref]) == event.cast(pa.int64()).to_pylist(), ref


def test_parquet_value_of_another_type_names_row_column_and_value(
    capsys, redis_server, policy, tmp_path
) -> None:
    path = tmp_path / "stats.parquet"
    pq.write_table(
        pa.table({"user_id": [1, 2, 3], "age": [30.0, 31.0, 3.5], "score": [0.5, 0.5, 0.5]}), path
    )
    code, err = run(capsys, load(redis_server.url, policy, "stats", path))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {path}: row 1, column 'age': 30.0 is not an int64 "
        "(nothing was written)\n"
    )
    text = tmp_path / "text.parquet"
    pq.write_table(
        pa.table({"user_id": [1, 2, 3], "age": ["30", "31", "x1"], "score": [0.5, 1.0, 2.0]}),
        text,
    )
    code, err = run(capsys, load(redis_server.url, policy, "stats", text))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {text}: row 3, column 'age': 'x1' is not an int64 "
        "(nothing was written)\n"
    )
    assert keys_of(redis_server.url) == []


def test_unreadable_files_exit_one_with_the_reason(capsys, redis_server, policy, tmp_path) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    code, err = run(capsys, load(redis_server.url, policy, "stats", garbage))
    assert code == 1
    assert err.startswith(f"feature-sidecar load: {garbage}: not a readable Parquet file ("), err
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"user_id,age,score\n1,30,0.5\n2,31,caf\xe9\n")
    code, err = run(capsys, load(redis_server.url, policy, "stats", latin))
    assert (code, err) == (
        1,
        f"feature-sidecar load: {latin}: row 3: not UTF-8 text (nothing was written)\n",
    )
    empty = csv_file(tmp_path, "", "empty.csv")
    code, err = run(capsys, load(redis_server.url, policy, "stats", empty))
    assert (code, err) == (
        1,
        f"feature-sidecar load: {empty}: the first line must name the columns, and it is empty\n",
    )
    assert keys_of(redis_server.url) == []


# --- event times, TTL ---------------------------------------------------------------------------


def test_timestamp_column_gives_exact_event_times(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    source = csv_file(
        tmp_path,
        "user_id,age,score,seen\n"
        "1,30,0.5,2024-05-01T12:00:00.123456789+02:00\n"
        "2,31,0.5,2024-05-01 12:00:00\n"
        "3,32,0.5,1700000000.5\n"
        "4,33,0.5,2024-05-01\n",
    )
    code, err = run(
        capsys, load(redis_server.url, policy, "stats", source, "--timestamp-column", "seen")
    )
    assert code == 0, err
    columns = served(
        sidecar_factory, redis_server.url, policy, ["stats:age"], {"user_id": [1, 2, 3, 4]}
    )
    assert timestamps(columns["stats:age"]) == [
        (NOON - 7200) * NS + 123_456_789,
        NOON * NS,
        1_700_000_000 * NS + 500_000_000,
        (NOON - 12 * 3600) * NS,
    ]


def test_without_timestamp_column_the_load_time_is_the_event_time(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n2,31,0.25\n")
    before = time.time_ns()
    code, err = run(capsys, load(redis_server.url, policy, "stats", source))
    after = time.time_ns()
    assert code == 0, err
    columns = served(sidecar_factory, redis_server.url, policy, ["stats:age"], {"user_id": [1, 2]})
    first, second = timestamps(columns["stats:age"])
    assert first == second
    assert before <= first <= after


def test_ttl_seconds_sets_an_expiry_on_each_entity(capsys, redis_server, policy, tmp_path) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n2,31,0.25\n")
    code, err = run(capsys, load(redis_server.url, policy, "stats", source, "--ttl-seconds", "600"))
    assert code == 0, err
    client = redis.Redis.from_url(redis_server.url)
    try:
        ttls = [client.ttl(user_key(user)) for user in (1, 2)]
        assert all(590 <= ttl <= 600 for ttl in ttls), ttls
        assert client.ttl(user_key(3)) == -2  # not written
    finally:
        client.close()
    other = csv_file(tmp_path, "user_id,age,score\n3,30,0.5\n", "no_ttl.csv")
    assert run(capsys, load(redis_server.url, policy, "stats", other))[0] == 0
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ttl(user_key(3)) == -1  # no expiry without --ttl-seconds
    finally:
        client.close()


# --- errors -------------------------------------------------------------------------------------


def test_missing_column_stops_before_anything_is_written(
    capsys, redis_server, policy, tmp_path
) -> None:
    source = csv_file(tmp_path, "user_id,age\n1,30\n")
    code, err = run(capsys, load(redis_server.url, policy, "stats", source))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {source}: missing column 'score' of view 'stats' "
        "(the input has: user_id, age); to load some of its features, name them with "
        "--features\n"
    )
    no_key = csv_file(tmp_path, "age,score\n30,0.5\n", "no_key.csv")
    code, err = run(capsys, load(redis_server.url, policy, "pair", no_key))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {no_key}: missing columns 'item_id', 'user_id', 'affinity' "
        "of view 'pair' (the input has: age, score); to load some of its features, name them "
        "with --features\n"
    )
    assert keys_of(redis_server.url) == []


def test_bad_value_in_batch_three_leaves_batches_one_and_two_written(
    capsys, redis_server, policy, tmp_path
) -> None:
    # Header is line 1; batches of 2: lines 2-3, 4-5, 6-7. Line 7 is bad.
    source = csv_file(
        tmp_path,
        "user_id,age,score\n1,30,0.5\n2,31,0.5\n3,32,0.5\n4,33,0.5\n5,34,0.5\n6,abc,0.5\n",
    )
    code, err = run(capsys, load(redis_server.url, policy, "stats", source, "--batch-size", "2"))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {source}: row 7, column 'age': 'abc' is not an int64 "
        "(4 rows written before this batch; none of this batch was written)\n"
    )
    assert keys_of(redis_server.url) == sorted(user_key(u) for u in (1, 2, 3, 4))


def test_csv_row_numbers_count_lines_of_the_file(capsys, redis_server, policy, tmp_path) -> None:
    # A blank line and a quoted value spanning two lines still count as lines.
    source = csv_file(
        tmp_path,
        'user_id,age,score,note\n1,30,0.5,"two\nlines"\n\n2,31,0.5,x\n3,-,0.5,x\n',
    )
    code, err = run(capsys, load(redis_server.url, policy, "stats", source, "--quiet"))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {source}: row 6, column 'age': '-' is not an int64 "
        "(nothing was written)\n"
    )
    spanning = csv_file(tmp_path, 'user_id,age,score,note\n1,x,0.5,"two\nlines"\n', "span.csv")
    code, err = run(capsys, load(redis_server.url, policy, "stats", spanning, "--quiet"))
    assert (code, err) == (
        1,
        f"feature-sidecar load: {spanning}: row 2, column 'age': 'x' is not an int64 "
        "(nothing was written)\n",
    )
    short = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n2,31\n", "short.csv")
    code, err = run(capsys, load(redis_server.url, policy, "stats", short))
    assert code == 1
    assert err == (
        f"feature-sidecar load: {short}: row 3: 2 fields where the header has 3 "
        "(nothing was written)\n"
    )


def test_every_row_needs_its_join_keys_and_event_time(
    capsys, redis_server, policy, tmp_path
) -> None:
    no_key = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n,31,0.5\n", "no_key.csv")
    code, err = run(capsys, load(redis_server.url, policy, "stats", no_key))
    assert (code, err) == (
        1,
        f"feature-sidecar load: {no_key}: row 3, column 'user_id': no value, and every row "
        "needs a join key value (nothing was written)\n",
    )
    no_time = csv_file(tmp_path, "user_id,age,score,seen\n1,30,0.5,\n", "no_time.csv")
    code, err = run(
        capsys, load(redis_server.url, policy, "stats", no_time, "--timestamp-column", "seen")
    )
    assert (code, err) == (
        1,
        f"feature-sidecar load: {no_time}: row 2, column 'seen': no value, and every row "
        "needs an event time (nothing was written)\n",
    )
    wrong_time = csv_file(tmp_path, "user_id,age,score,seen\n1,30,0.5,May 1\n", "when.csv")
    code, err = run(
        capsys, load(redis_server.url, policy, "stats", wrong_time, "--timestamp-column", "seen")
    )
    assert (code, err) == (
        1,
        f"feature-sidecar load: {wrong_time}: row 2, column 'seen': 'May 1' is not a timestamp "
        "(use ISO-8601, e.g. 2024-05-01T12:00:00Z, or Unix seconds) (nothing was written)\n",
    )
    absent = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n", "absent_time.csv")
    code, err = run(
        capsys, load(redis_server.url, policy, "stats", absent, "--timestamp-column", "seen")
    )
    assert (code, err) == (
        1,
        f"feature-sidecar load: {absent}: missing column 'seen' named as the timestamp column "
        "(the input has: user_id, age, score)\n",
    )
    assert keys_of(redis_server.url) == []


def test_unknown_view_lists_the_views(capsys, redis_server, policy, tmp_path) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    code, err = run(capsys, load(redis_server.url, policy, "user_stats", source))
    assert code == 2
    assert err == (
        "feature-sidecar load: unknown feature view 'user_stats' "
        "(the policy has: lists, pair, scalars, stats)\n"
    )


def test_usage_errors_exit_two_with_the_reason(
    capsys, monkeypatch, redis_server, policy, tmp_path
) -> None:
    monkeypatch.delenv("FEATURE_SIDECAR_REDIS", raising=False)
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n", "input.txt")
    cases = [
        (
            load(redis_server.url, policy, "stats", source),
            f"{source}: cannot tell the format from the file name (.csv, .parquet or .pq); "
            "give --format csv or --format parquet",
        ),
        (
            load(redis_server.url, policy, "stats", tmp_path / "absent.csv"),
            f"{tmp_path / 'absent.csv'}: no such file",
        ),
        (
            load(
                redis_server.url, policy, "stats", source, "--format", "csv", "--features", "age,x"
            ),
            "view 'stats' has no feature 'x' (it has: age, score)",
        ),
        (
            load(redis_server.url, policy, "stats", source, "--format", "csv", "--batch-size", "0"),
            "--batch-size must be at least 1, not 0",
        ),
        (
            ["load", "--bundle", str(policy), "--view", "stats", "--from", str(source)],
            "--redis is required [env FEATURE_SIDECAR_REDIS]",
        ),
        (
            load("http://127.0.0.1:1/0", policy, "stats", source, "--format", "csv"),
            "--redis http://127.0.0.1:1/0: unsupported URL scheme 'http' "
            "(use redis://, rediss:// or unix://)",
        ),
    ]
    for args, message in cases:
        code, err = run(capsys, args)
        assert (code, err) == (2, f"feature-sidecar load: {message}\n"), args
    assert keys_of(redis_server.url) == []


def test_cell_conversion_is_strict_and_says_why() -> None:
    kinds = KINDS
    cases = [
        ("1.5", "int64", "'1.5' is not an int64"),
        ("1_000", "int64", "'1_000' is not an int64"),
        ("3000000000", "int32", "'3000000000' is out of range for int32"),
        ("1e39", "float", "'1e39' is out of range for float"),
        ("yes", "bool", "'yes' is not a bool (use true, false, 1 or 0)"),
        ("!!", "bytes", "'!!' is not base64 text (bytes values are written in base64)"),
        ("2024-13-01", "timestamp", "'2024-13-01' is not a timestamp (month must be in 1..12)"),
        (
            "[1, 2",
            "int64_list",
            "'[1, 2' is not an int64_list (write lists as JSON arrays, e.g. [1, 2])",
        ),
        (
            '[1, "x"]',
            "int64_list",
            "'[1, \"x\"]' is not an int64_list (item 2: 'x' is not an int64)",
        ),
        (
            "[1, null]",
            "double_list",
            "'[1, null]' is not a double_list (item 2 is null; a list cannot hold nulls)",
        ),
    ]
    for cell, kind, message in cases:
        with pytest.raises(cells.CellError) as caught:
            cells.encode_column(cell_text.parse_text_column([cell], kinds[kind]), kinds[kind])
        assert (caught.value.index, str(caught.value)) == (0, message), cell
    with pytest.raises(cells.CellError) as caught:
        cells.encode_column(
            cell_text.parse_text_column(["[1, 2, 3]"], kinds["float_list"]),
            kinds["float_list"],
            dim=2,
        )
    assert str(caught.value) == "[1.0, 2.0, 3.0] has 3 items, but the feature declares dim 2"


# --- the policy: YAML, unsigned and signed bundles ----------------------------------------------


def test_signed_bundle_needs_public_key(capsys, redis_server, sidecar_factory, tmp_path) -> None:
    private = Ed25519PrivateKey.generate()
    bundle = tmp_path / "policy.bundle"
    bundle.write_bytes(bundle_format.build(POLICY, 3, private))
    public = tmp_path / "signer.pub"
    public.write_bytes(bundle_format.public_key_pem(private.public_key()))
    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(bundle_format.public_key_pem(Ed25519PrivateKey.generate().public_key()))
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")

    code, err = run(capsys, load(redis_server.url, bundle, "stats", source))
    assert (code, err) == (
        2,
        f"feature-sidecar load: --bundle {bundle}: the bundle is signed; give --public-key "
        "FILE to verify it\n",
    )
    code, err = run(
        capsys, load(redis_server.url, bundle, "stats", source, "--public-key", str(stranger))
    )
    signer_id = bundle_format.key_id(private.public_key())
    assert (code, err) == (
        2,
        f"feature-sidecar load: --bundle {bundle}: the bundle is signed by an untrusted key "
        f"({signer_id})\n",
    )
    assert keys_of(redis_server.url) == []

    code, err = run(
        capsys,
        load(
            redis_server.url,
            bundle,
            "stats",
            source,
            "--public-key",
            str(stranger),
            "--public-key",
            str(public),
        ),
    )
    assert code == 0, err
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    columns = served(sidecar_factory, redis_server.url, policy, ["stats:age"], {"user_id": [1]})
    assert column_values(columns["stats:age"]) == [30]


def test_unsigned_bundle_is_read_without_a_key_but_not_with_one(
    capsys, redis_server, tmp_path
) -> None:
    bundle = tmp_path / "unsigned.bundle"
    bundle.write_bytes(bundle_format.build(POLICY, 1, None))
    public = tmp_path / "k.pub"
    public.write_bytes(bundle_format.public_key_pem(Ed25519PrivateKey.generate().public_key()))
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    code, err = run(
        capsys, load(redis_server.url, bundle, "stats", source, "--public-key", str(public))
    )
    assert (code, err) == (2, f"feature-sidecar load: --bundle {bundle}: the bundle is unsigned\n")
    code, err = run(capsys, load(redis_server.url, bundle, "stats", source))
    assert code == 0, err
    assert keys_of(redis_server.url) == [user_key(1)]


# --- settings from the environment, output, Redis -----------------------------------------------


def test_redis_url_from_environment_and_flag_wins(
    capsys, monkeypatch, redis_server, policy, tmp_path
) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    monkeypatch.setenv("FEATURE_SIDECAR_REDIS", redis_server.url)
    code, err = run(capsys, load(None, policy, "stats", source))
    assert code == 0, err
    assert SUMMARY.fullmatch(err).group(4) == redis_server.url  # type: ignore[union-attr]
    assert keys_of(redis_server.url) == [user_key(1)]
    with LocalRedis() as other:
        code, err = run(capsys, load(other.url, policy, "stats", source))
        assert code == 0, err
        assert keys_of(other.url) == [user_key(1)]


def test_output_off_a_terminal_is_the_summary_line_only(
    capsys, redis_server, policy, tmp_path
) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n2,31,0.5\n3,32,0.5\n")
    code, err = run(capsys, load(redis_server.url, policy, "stats", source, "--batch-size", "1"))
    assert code == 0
    match = SUMMARY.fullmatch(err)
    assert match is not None, err
    assert match.groups() == ("3", "2", "stats", redis_server.url)
    code, err = run(capsys, load(redis_server.url, policy, "stats", source, "--quiet"))
    assert (code, err) == (0, "")


def test_extra_columns_are_reported_once_and_features_loads_a_subset(
    capsys, redis_server, sidecar_factory, policy, tmp_path
) -> None:
    source = csv_file(tmp_path, "note,user_id,age\nx,1,30\ny,2,31\n")
    code, err = run(capsys, load(redis_server.url, policy, "stats", source, "--features", "age"))
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == f"{source}: ignoring columns not loaded into view 'stats': note"
    assert SUMMARY.fullmatch(lines[1] + "\n").groups() == (  # type: ignore[union-attr]
        "2",
        "1",
        "stats",
        redis_server.url,
    )
    columns = served(
        sidecar_factory, redis_server.url, policy, ["stats:age", "stats:score"], {"user_id": [1, 2]}
    )
    assert column_values(columns["stats:age"]) == [30, 31]
    assert statuses(columns["stats:score"]) == ["NOT_FOUND", "NOT_FOUND"]


def test_redis_password_is_used_and_never_printed(capsys, monkeypatch, policy, tmp_path) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    secret = "s3cret-Pw"
    with LocalRedis(password=secret) as guarded:
        in_url = f"redis://:{secret}@127.0.0.1:{guarded.port}/0"
        code, err = run(capsys, load(in_url, policy, "stats", source))
        assert code == 0, err
        assert SUMMARY.fullmatch(err).group(4) == (  # type: ignore[union-attr]
            f"redis://:***@127.0.0.1:{guarded.port}/0"
        )
        code, err = run(capsys, load(guarded.url, policy, "stats", source))
        assert code == 1
        assert secret not in err
        assert err.startswith(f"feature-sidecar load: Redis at {guarded.url} is unavailable: ")
        monkeypatch.setenv("FEATURE_SIDECAR_REDIS_PASSWORD", secret)
        code, err = run(capsys, load(guarded.url, policy, "stats", source))
        assert code == 0, err
        assert secret not in err


def test_unreachable_redis_exits_one_and_writes_nothing(capsys, policy, tmp_path) -> None:
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, err = run(capsys, load(url, policy, "stats", source, "--redis-timeout", "2s"))
    assert code == 1
    assert err.startswith(f"feature-sidecar load: Redis at {url} is unavailable: ")
    assert err.endswith(" (nothing was written)\n")


def test_installed_script_loads_and_reports_bad_data_without_traceback(
    redis_server, policy, tmp_path
) -> None:
    script = Path(sys.executable).parent / "feature-sidecar"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    good = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    done = subprocess.run(
        [str(script), *load(redis_server.url, policy, "stats", good)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "")
    assert SUMMARY.fullmatch(done.stderr) is not None, done.stderr
    bad = csv_file(tmp_path, "user_id,age,score\n2,30,zero\n", "bad.csv")
    failed = subprocess.run(
        [str(script), *load(redis_server.url, policy, "stats", bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (failed.returncode, failed.stdout, failed.stderr) == (
        1,
        "",
        f"feature-sidecar load: {bad}: row 2, column 'score': 'zero' is not a double "
        "(nothing was written)\n",
    )
    assert keys_of(redis_server.url) == [user_key(1)]


def test_on_a_terminal_a_progress_bar_is_drawn_then_replaced_by_the_summary(
    redis_server, policy, tmp_path
) -> None:
    rows = "".join(f"{user},{user % 90},0.5\n" for user in range(1, 201))
    source = csv_file(tmp_path, "user_id,age,score\n" + rows)
    script = Path(sys.executable).parent / "feature-sidecar"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_SIDECAR_")}
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [str(script), *load(redis_server.url, policy, "stats", source, "--batch-size", "50")],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env=env,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert done.returncode == 0
    text = output.decode().replace("\r\n", "\n")  # the terminal turns \n into \r\n
    drawn, _, last_line = text.rpartition("\r")
    assert drawn.startswith("\r[#######.......................] 50/200 rows  "), text
    blanks = drawn.rpartition("\r")[2]
    assert blanks == " " * len(blanks) and len(blanks) >= len("50/200 rows"), text  # wiped
    assert SUMMARY.fullmatch(last_line) is not None, text
    assert len(keys_of(redis_server.url)) == 200


# --- the core from Python -----------------------------------------------------------------------


def test_load_rows_from_numpy_columns(redis_server, sidecar_factory, policy) -> None:
    catalog = Catalog(parse_policy(POLICY))
    client = redis.Redis.from_url(redis_server.url)
    seen: list[int] = []
    try:
        written = loader.load_rows(
            client,
            catalog,
            "stats",
            {
                "user_id": np.arange(1, 6, dtype=np.int64),
                "age": np.ma.MaskedArray([30, 31, 32, 33, 34], mask=[0, 1, 0, 0, 0]),
                "score": np.array([0.5, 0.25, -1.0, 1e-3, 7.0]),
            },
            np.array([10, 20, 30, 40, 50], dtype=np.int64) * NS,
            batch_size=2,
            progress=seen.append,
        )
        assert (written, seen) == (5, [2, 4, 5])
        with pytest.raises(loader.DataError) as caught:
            loader.load_rows(
                client,
                catalog,
                "stats",
                {"user_id": [7, 8, 9], "age": [1, 2, 3.5], "score": [0.0, 0.0, 0.0]},
                0,
                batch_size=2,
            )
        assert caught.value.message == (
            "input: row 3, column 'age': 3.5 is not an int64 "
            "(2 rows written before this batch; none of this batch was written)"
        )
        assert caught.value.rows_written == 2
    finally:
        client.close()
    columns = served(
        sidecar_factory,
        redis_server.url,
        policy,
        ["stats:age", "stats:score"],
        {"user_id": [1, 2, 3, 4, 5]},
    )
    assert column_values(columns["stats:age"]) == [30, None, 32, 33, 34]
    assert column_values(columns["stats:score"]) == [0.5, 0.25, -1.0, 1e-3, 7.0]
    assert timestamps(columns["stats:score"]) == [10 * NS, 20 * NS, 30 * NS, 40 * NS, 50 * NS]


def test_progress_bar_redraws_one_line_and_clears_it() -> None:
    stream = io.StringIO()
    ticks = iter([0.0, 1.0, 1.05, 2.0])
    bar = ProgressBar(stream, 400, lambda: next(ticks), width=10)
    bar(100)  # at 1.0 s
    bar(150)  # 0.05 s later: too soon to redraw
    bar(400)  # at 2.0 s
    bar.clear()
    first = "[##........] 100/400 rows  100 rows/s"
    last = "[##########] 400/400 rows  200 rows/s"
    assert stream.getvalue() == f"\r{first}\r{last}\r{' ' * len(last)}\r"


def test_summary_rounds_the_rate_to_three_digits() -> None:
    assert summary(100_000, 10, "v", "redis://127.0.0.1:1234/0", 1.9) == (
        "loaded 100000 rows x 10 features of view 'v' into redis://127.0.0.1:1234/0 in 1.9 s "
        "(526,000 values/s)"
    )


def test_unreadable_bundle_or_key_files_are_named_with_their_flag(capsys, redis_server, tmp_path):
    source = csv_file(tmp_path, "user_id,age,score\n1,30,0.5\n")
    missing = tmp_path / "missing.bundle"
    code, err = run(capsys, load(redis_server.url, missing, "stats", source))
    assert (code, err) == (
        2,
        f"feature-sidecar load: --bundle {missing}: No such file or directory\n",
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    key = tmp_path / "missing.pub"
    args = load(redis_server.url, policy, "stats", source, "--public-key", str(key))
    code, err = run(capsys, args)
    assert (code, err) == (
        2,
        f"feature-sidecar load: --public-key {key}: No such file or directory\n",
    )
    assert keys_of(redis_server.url) == []

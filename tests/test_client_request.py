"""Arguments are checked before anything is sent: requests, targets, metadata, retry values.

None of these needs a server: each error is raised by the client itself, names the argument
and the problem, and never shows a token or an entity value.
"""

from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np
import pytest

from featuresidecar import (
    AsyncFeatureClient,
    FeatureClient,
    FeatureSidecarError,
    ResourceExhaustedError,
    Retry,
    UnavailableError,
)
from featuresidecar._catalog import list_request
from featuresidecar._channel import (
    DEFAULT_OPTIONS,
    base_metadata,
    call_metadata,
    channel_options,
    check_target,
)
from featuresidecar._request import features_request

# Nothing listens here; argument errors are raised before any connection is tried.
NOWHERE = "unix:/nonexistent/featuresidecar-test.sock"


def _which(request, key: str) -> tuple[str, list]:
    column = request.entities[key]
    which = column.WhichOneof("values")
    return which, list(getattr(column, which).values)


# --- requests ---------------------------------------------------------------------------------


def test_ints_and_strings_become_the_two_entity_columns() -> None:
    request = features_request(
        ["v:a", "v:b"],
        {
            "user_id": [1, -(2**63), 2**63 - 1, np.int32(5)],
            "item_id": ["x", "", "Zürich", "y"],
            "np_id": np.array([7, 8, 9, 10], dtype=np.uint16),
            "np_name": np.array(["a", "b", "c", "d"]),
            "obj_name": np.array(["a", "b", "c", "d"], dtype=object),
        },
        None,
        True,
    )
    assert list(request.features) == ["v:a", "v:b"]
    assert request.feature_service == "" and request.allow_partial is True
    assert _which(request, "user_id") == ("int64_values", [1, -(2**63), 2**63 - 1, 5])
    assert _which(request, "item_id") == ("string_values", ["x", "", "Zürich", "y"])
    assert _which(request, "np_id") == ("int64_values", [7, 8, 9, 10])
    assert _which(request, "np_name") == ("string_values", ["a", "b", "c", "d"])
    assert _which(request, "obj_name") == ("string_values", ["a", "b", "c", "d"])


def test_a_feature_service_instead_of_features() -> None:
    request = features_request(None, {"k": (1,)}, "ranking_v3", False)
    assert request.feature_service == "ranking_v3" and list(request.features) == []


BAD_REQUESTS = [
    (("v:a", {"k": [1]}, None), TypeError, "features: expected a sequence of 'view:feature' "
     "strings, got str (wrap a single feature in a list)"),
    (([], {"k": [1]}, None), ValueError, "features: name at least one feature, or pass "
     "feature_service="),
    ((None, {"k": [1]}, None), ValueError, "features: name at least one feature, or pass "
     "feature_service="),
    ((["v:a", 3], {"k": [1]}, None), TypeError, "features[1]: expected a str, got int"),
    ((["v:a"], {"k": [1]}, "svc"), ValueError, "features and feature_service are exclusive: "
     "pass one of them"),
    ((None, {"k": [1]}, ""), TypeError, "feature_service: expected a non-empty str, got ''"),
    ((["v:a"], None, None), TypeError, "entities: required, a mapping of join key -> one value "
     "per row"),
    ((["v:a"], [("k", [1])], None), TypeError, "entities: expected a mapping of join key -> "
     "values, got list"),
    ((["v:a"], {}, None), ValueError, "entities: empty; give each join key the features need"),
    ((["v:a"], {"k": "abc"}, None), TypeError, "entities['k']: expected a sequence (list, "
     "tuple, NumPy array) of values, one per row, got str"),
    ((["v:a"], {"k": 5}, None), TypeError, "entities['k']: expected a sequence (list, tuple, "
     "NumPy array) of values, one per row, got int"),
    ((["v:a"], {"k": []}, None), ValueError, "entities['k']: no values; a call needs at least "
     "one entity row"),
    ((["v:a"], {"k": [1, "secret-user"]}, None), TypeError, "entities['k'][1]: is of type str, "
     "but the column holds int values; join key values are all int or all str"),
    ((["v:a"], {"k": ["a", 2]}, None), TypeError, "entities['k'][1]: is of type int, but the "
     "column holds str values; join key values are all int or all str"),
    ((["v:a"], {"k": [1, True]}, None), TypeError, "entities['k'][1]: is of type bool, but the "
     "column holds int values; join key values are all int or all str"),
    ((["v:a"], {"k": [1.0]}, None), TypeError, "entities['k'][0]: is of type float, but the "
     "column holds int values; join key values are all int or all str"),
    ((["v:a"], {"k": [2**63]}, None), ValueError, "entities['k'][0]: the value is out of the "
     "int64 range"),
    ((["v:a"], {"k": np.array([1.5])}, None), TypeError, "entities['k']: a float64 array cannot "
     "hold join key values; use an int64 or str array"),
    ((["v:a"], {"k": np.array([True])}, None), TypeError, "entities['k']: a bool array cannot "
     "hold join key values; use an int64 or str array"),
    ((["v:a"], {"k": np.zeros((2, 2), dtype=np.int64)}, None), ValueError, "entities['k']: "
     "expected a 1-D array, got shape (2, 2)"),
    ((["v:a"], {"k": np.array([2**64 - 1], dtype=np.uint64)}, None), ValueError,
     "entities['k']: holds values above the int64 range"),
    ((["v:a"], {"a": [1, 2], "b": ["x"]}, None), ValueError, "entities['b'] has 1 values but "
     "entities['a'] has 2; every join key needs one value per row"),
    ((["v:a"], {3: [1]}, None), TypeError, "entities: join key 3 is not a non-empty str"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "error", "message"), BAD_REQUESTS, ids=[m for *_, m in BAD_REQUESTS]
)
def test_bad_request_arguments_are_refused_before_sending(args, error, message) -> None:
    with pytest.raises(error) as caught:
        features_request(*args, False)
    assert str(caught.value) == message
    assert "secret-user" not in str(caught.value)


def test_list_request_arguments() -> None:
    assert list_request("v", None).view == "v"
    assert list_request(None, "pii").tag == "pii"
    with pytest.raises(TypeError, match="view: expected a str, got int"):
        list_request(3, None)  # type: ignore[arg-type]


# --- targets, options, metadata -----------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["unix:/run/sidecar.sock", "unix:///run/sidecar.sock", "localhost:50051", "[::1]:50051",
     "dns:///sidecar:50051", "127.0.0.1:1"],
)  # fmt: skip
def test_targets_grpc_can_dial(target) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "target: expected 'unix:/path' or 'host:port', got ''"),
        ("unix:", "target 'unix:': the unix socket path is empty"),
        ("unix://", "target 'unix://': the unix socket path is empty"),
        ("localhost", "target 'localhost': expected 'unix:/path', 'unix:///path' or 'host:port' "
         "with a port from 1 to 65535"),
        ("localhost:0", "target 'localhost:0': expected 'unix:/path', 'unix:///path' or "
         "'host:port' with a port from 1 to 65535"),
        (":80", "target ':80': expected 'unix:/path', 'unix:///path' or 'host:port' with a port "
         "from 1 to 65535"),
    ],
)  # fmt: skip
def test_targets_that_cannot_work(target, message) -> None:
    with pytest.raises(ValueError) as caught:
        FeatureClient(target)
    assert str(caught.value) == message


def test_channel_options_keep_defaults_unless_replaced() -> None:
    options = dict(channel_options([("grpc.max_receive_message_length", 1024), ("x.y", 1)]))
    assert options["grpc.max_receive_message_length"] == 1024
    assert (
        options["grpc.max_send_message_length"]
        == dict(DEFAULT_OPTIONS)["grpc.max_send_message_length"]
    )
    assert options["x.y"] == 1
    with pytest.raises(ValueError, match=r"options\[0\]: expected a \(name, value\) pair"):
        channel_options([("only-a-name",)])  # type: ignore[list-item]


def test_token_goes_first_as_a_bearer_header() -> None:
    assert base_metadata("abc.def.ghi", [("x-tenant", "blue")]) == (
        ("authorization", "Bearer abc.def.ghi"),
        ("x-tenant", "blue"),
    )
    assert base_metadata(None, ()) == ()
    base = base_metadata("t", ())
    assert call_metadata(base, None) is base
    assert call_metadata(base, [("x-request-id", "r1")]) == (
        ("authorization", "Bearer t"),
        ("x-request-id", "r1"),
    )


SECRET = "s3cr3t-token-value"

BAD_METADATA = [
    (lambda: base_metadata("has space " + SECRET, ()), ValueError,
     "token: expected a non-empty string of printable ASCII without spaces (the token itself "
     "is not shown)"),
    (lambda: base_metadata("", ()), ValueError,
     "token: expected a non-empty string of printable ASCII without spaces (the token itself "
     "is not shown)"),
    (lambda: base_metadata(SECRET, [("authorization", "Bearer x")]), ValueError,
     "metadata: 'authorization' is also set by token=; pass only one of them"),
    (lambda: base_metadata(None, [("X-Tenant", "blue")]), ValueError,
     "metadata[0]: key 'X-Tenant' is not a valid gRPC metadata key (lower-case letters, "
     "digits, '-', '_', '.'; not starting with 'grpc-')"),
    (lambda: base_metadata(None, [("grpc-timeout", "1S")]), ValueError,
     "metadata[0]: key 'grpc-timeout' is not a valid gRPC metadata key (lower-case letters, "
     "digits, '-', '_', '.'; not starting with 'grpc-')"),
    (lambda: base_metadata(None, [("x-ok", "a"), ("x-key", SECRET + "\n")]), ValueError,
     "metadata[1]: the value of 'x-key' must be a string of printable ASCII (use a key ending "
     "in '-bin' for binary values)"),
    (lambda: base_metadata(None, [("trace-bin", "text")]), TypeError,
     "metadata[0]: binary key 'trace-bin' takes a bytes value"),
    (lambda: base_metadata(None, [("x-a",)]), TypeError,
     "metadata[0]: expected a (key, value) pair"),
    (lambda: base_metadata(None, "x-a"), TypeError,
     "metadata: expected a sequence of (key, value) pairs"),
    (lambda: call_metadata(base_metadata(SECRET, ()), [("authorization", "Bearer y")]),
     ValueError, "metadata: 'authorization' is already set by the client's token"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "error", "message"), BAD_METADATA, ids=[m for *_, m in BAD_METADATA]
)
def test_bad_metadata_is_refused_without_showing_secrets(make, error, message) -> None:
    with pytest.raises(error) as caught:
        make()
    assert str(caught.value) == message
    assert SECRET not in str(caught.value)


def test_client_arguments_are_checked_and_the_token_never_shown() -> None:
    client = FeatureClient(NOWHERE, token=SECRET, deadline=0.5)
    assert repr(client) == f"FeatureClient({NOWHERE!r}, deadline=0.5)"
    assert SECRET not in repr(client)
    with pytest.raises(ValueError, match="deadline: expected a number of seconds > 0, got 0"):
        client.get_features(["v:a"], {"k": [1]}, deadline=0)
    with pytest.raises(ValueError, match="authorization"):
        client.list_features(metadata=[("authorization", "Bearer other")])
    client.close()
    for kwargs, error, message in [
        ({"deadline": 0}, ValueError, "deadline: expected a number of seconds > 0, got 0"),
        ({"deadline": math.inf}, ValueError, "deadline: expected a number of seconds > 0, got inf"),
        ({"retry": 3}, TypeError, "retry: expected a featuresidecar.Retry, got int"),
        ({"credentials": "tls"}, TypeError, "credentials: expected grpc.ChannelCredentials, e.g. "
         "from grpc.ssl_channel_credentials(); got str"),
    ]:  # fmt: skip
        with pytest.raises(error) as caught:
            FeatureClient(NOWHERE, **kwargs)
        assert str(caught.value) == message


def test_async_client_checks_the_same_arguments() -> None:
    async def run() -> str:
        async with AsyncFeatureClient(NOWHERE, token=SECRET) as client:
            with pytest.raises(TypeError, match="wrap a single feature in a list"):
                await client.get_features("v:a", {"k": [1]})  # type: ignore[arg-type]
            return repr(client)

    assert asyncio.run(run()) == f"AsyncFeatureClient({NOWHERE!r}, deadline=2.0)"
    with pytest.raises(ValueError, match="unix socket path is empty"):
        AsyncFeatureClient("unix:")


# --- the retry value --------------------------------------------------------------------------


def test_retry_defaults_and_backoff_schedule() -> None:
    retry = Retry()
    assert (retry.attempts, retry.initial_backoff, retry.max_backoff, retry.multiplier) == (
        3,
        0.05,
        1.0,
        2.0,
    )
    assert retry.codes == (grpc.StatusCode.UNAVAILABLE,)
    assert [retry.backoff(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert retry.backoff(10_000) == 1.0  # no overflow far out
    assert Retry(codes=[grpc.StatusCode.UNAVAILABLE]) == retry  # any iterable, kept as a tuple
    assert hash(Retry()) == hash(retry)


def _error(code: grpc.StatusCode, retry_after_ms: str | None = None) -> FeatureSidecarError:
    trailing = (("retry-after-ms", retry_after_ms),) if retry_after_ms is not None else ()
    cls = ResourceExhaustedError if code == grpc.StatusCode.RESOURCE_EXHAUSTED else UnavailableError
    return cls(code, "x", trailing_metadata=trailing)


def test_next_delay_only_while_attempts_and_time_remain() -> None:
    retry = Retry(attempts=3)
    down = _error(grpc.StatusCode.UNAVAILABLE)
    assert retry.next_delay(1, down, remaining=1.0) == 0.05
    assert retry.next_delay(2, down, remaining=1.0) == 0.1
    assert retry.next_delay(3, down, remaining=1.0) is None  # attempts used up
    assert retry.next_delay(2, down, remaining=0.1) is None  # the sleep would reach the deadline
    assert retry.next_delay(2, down, remaining=0.1001) == 0.1
    limited = _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "400")
    assert retry.next_delay(1, limited, remaining=1.0) is None  # not a retried code
    both = Retry(codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert both.next_delay(1, limited, remaining=1.0) == 0.4  # the sidecar's hint wins
    assert both.next_delay(1, limited, remaining=0.3) is None
    assert both.next_delay(1, _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "soon"), 1.0) == 0.05
    assert Retry(attempts=1).next_delay(1, down, remaining=10.0) is None


def test_retry_after_parsing() -> None:
    assert _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "1500").retry_after == 1.5
    assert _error(grpc.StatusCode.RESOURCE_EXHAUSTED, " 0 ").retry_after == 0.0
    assert _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "-5").retry_after is None
    assert _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "later").retry_after is None
    assert _error(grpc.StatusCode.RESOURCE_EXHAUSTED).retry_after is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "Retry.attempts: must be at least 1, got 0"),
        ({"attempts": 2.5}, TypeError, "Retry.attempts: expected an int, got 2.5"),
        ({"initial_backoff": -1}, ValueError,
         "Retry.initial_backoff: must be a finite number >= 0, got -1"),
        ({"max_backoff": math.nan}, ValueError,
         "Retry.max_backoff: must be a finite number >= 0, got nan"),
        ({"multiplier": 0.5}, ValueError,
         "Retry.multiplier: must be a finite number >= 1, got 0.5"),
        ({"initial_backoff": 2.0}, ValueError,
         "Retry.max_backoff (1.0) is below initial_backoff (2.0)"),
        ({"codes": ["UNAVAILABLE"]}, TypeError,
         "Retry.codes: 'UNAVAILABLE' is not a grpc.StatusCode"),
    ],
)  # fmt: skip
def test_retry_values_that_make_no_sense(kwargs, error, message) -> None:
    with pytest.raises(error) as caught:
        Retry(**kwargs)
    assert str(caught.value) == message

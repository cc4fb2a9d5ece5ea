"""The client against a real sidecar serving bytes written by real Feast (tests/fixtures/feast)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from jwt.algorithms import OKPAlgorithm
from support import FEAST_POLICY, FIXTURES

from featuresidecar import (
    AsyncFeatureClient,
    EntityInfo,
    FeatureClient,
    FeatureInfo,
    FeatureNotFoundError,
    InvalidArgumentError,
    JoinKeyInfo,
    PermissionDeniedError,
    ResourceExhaustedError,
    Status,
    UnauthenticatedError,
)

EXPECTED = json.loads((FIXTURES / "feast" / "expected.json").read_text())
SCALARS = ("int32_f", "int64_f", "float_f", "double_f", "string_f", "bytes_f", "bool_f", "ts_f")
LISTS = tuple(name.replace("_f", "_list_f") for name in SCALARS)
DRIVERS = [1001, 1002, 1003, 9999]  # 9999 was never written: NOT_FOUND everywhere


def _serve(sidecar_factory: Any, redis: Any, bundle: Path = FEAST_POLICY, **settings: Any) -> Any:
    settings.setdefault("workload_principal", "compat-test")
    return sidecar_factory(redis=redis.url, bundle=str(bundle), **settings)


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _python(feature: str, value: Any) -> Any:
    """expected.json's notation as the Python value to_dict() gives."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_python(feature, item) for item in value]
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    if feature.startswith("ts_"):
        return _when(value)
    return value


def _expected_column(view: str, feature: str) -> list[Any]:
    rows = EXPECTED[view]
    return [_python(feature, rows[f"driver_id={d}"][feature]) for d in DRIVERS[:3]] + [None]


def _expected_ns(view: str) -> list[int]:
    """Event times of drivers 1001-1003 in Unix nanoseconds."""
    out = []
    for driver in DRIVERS[:3]:
        stamp = _when(EXPECTED[view][f"driver_id={driver}"]["_event_timestamp"])
        out.append(int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000)
    return out


def test_every_scalar_type_reaches_the_dict_exactly(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    assert sidecar.address.startswith("unix:/")
    refs = [f"driver_scalars:{name}" for name in SCALARS]
    with FeatureClient(sidecar.address) as client:
        result = client.get_features(refs, {"driver_id": DRIVERS})

    assert result.feature_names == tuple(refs)
    assert result.row_count == 4
    assert result.to_dict() == {
        f"driver_scalars:{name}": _expected_column("driver_scalars", name) for name in SCALARS
    }
    assert [result.type(ref) for ref in refs] == [
        "int32", "int64", "float", "double", "string", "bytes", "bool", "timestamp",
    ]  # fmt: skip
    assert result.status_names("driver_scalars:string_f") == [
        "PRESENT", "PRESENT", "NULL_VALUE", "NOT_FOUND",
    ]  # fmt: skip
    assert result.statuses("driver_scalars:int64_f").tolist() == [
        Status.PRESENT, Status.PRESENT, Status.PRESENT, Status.NOT_FOUND,
    ]  # fmt: skip
    assert result.valid("driver_scalars:string_f").tolist() == [True, True, False, False]
    times = result.event_times("driver_scalars:int32_f")
    assert times.dtype == np.dtype("datetime64[ns]")
    assert times[:3].astype(np.int64).tolist() == _expected_ns("driver_scalars")
    assert np.isnat(times[3])
    assert times[2] == np.datetime64("2026-01-15T12:02:00.123456", "ns")
    # Native dtypes, placeholders where no value.
    assert result.values("driver_scalars:int64_f").tolist() == [
        5_000_000_000, -6_000_000_000, 2**63 - 1, 0,
    ]  # fmt: skip
    assert result.values("driver_scalars:int32_f").dtype == np.int32
    assert result.values("driver_scalars:float_f").dtype == np.float32
    assert result.values("driver_scalars:bool_f").tolist() == [True, False, True, False]
    assert result.values("driver_scalars:ts_f")[0] == np.datetime64("2026-02-01T08:30:00", "ns")
    assert result.values("driver_scalars:string_f") == ["Zürich", "東京", "", ""]


def test_numeric_features_become_a_matrix_with_nan(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    numeric = ["int32_f", "int64_f", "float_f", "double_f", "bool_f"]
    refs = [f"driver_scalars:{name}" for name in numeric]
    with FeatureClient(sidecar.address) as client:
        result = client.get_features(refs, {"driver_id": DRIVERS})
    matrix = result.to_numpy()
    assert matrix.shape == (4, 5)
    assert matrix.dtype == np.float64
    assert matrix[:3].tolist() == [
        [-7.0, 5e9, 0.5, 0.123456789, 1.0],
        [2147483647.0, -6e9, -1.25, -2.5e-10, 0.0],
        [0.0, float(2**63 - 1), 3.0, 1e300, 1.0],
    ]
    assert np.isnan(matrix[3]).all()
    with pytest.warns(RuntimeWarning, match="overflow"):
        # 1e300 does not fit a float32: NumPy makes it inf and says so.
        picked = result.to_numpy(["driver_scalars:double_f", "driver_scalars:int32_f"], np.float32)
    assert picked.dtype == np.float32
    assert picked[2, 0] == np.inf
    assert picked[:2].tolist() == [
        [np.float32(0.123456789), -7.0],
        [np.float32(-2.5e-10), 2147483648.0],
    ]


def test_lists_come_back_per_row_and_embeddings_as_a_matrix(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    refs = [f"driver_lists:{name}" for name in LISTS]
    with FeatureClient(sidecar.address) as client:
        result = client.get_features(refs, {"driver_id": DRIVERS})
        assert result.to_dict() == {
            f"driver_lists:{name}": _expected_column("driver_lists", name) for name in LISTS
        }
        per_row = result.values("driver_lists:float_list_f")
        assert [row.tolist() for row in per_row] == [[0.5, -1.25, 1024.0], [-0.75], [], []]
        assert per_row[0].dtype == np.float32
        with pytest.raises(ValueError, match=r"row 0 has 3, row 1 has 1"):
            result.matrix("driver_lists:float_list_f")

        # Equal lengths: rows x dim, a NaN row where the entity is unknown.
        embeddings = client.get_features(
            ["driver_lists:float_list_f", "driver_lists:double_list_f"],
            {"driver_id": [1001, 9999, 1001]},
        )
    matrix = embeddings.embedding("driver_lists:float_list_f")
    assert matrix.shape == (3, 3) and matrix.dtype == np.float32
    assert matrix[[0, 2]].tolist() == [[0.5, -1.25, 1024.0]] * 2
    assert np.isnan(matrix[1]).all()
    doubles = embeddings.matrix("driver_lists:double_list_f", dim=3)
    assert doubles.dtype == np.float64
    assert doubles[0].tolist() == [0.123456789, -1e-300, 6.02214076e23]
    with pytest.raises(ValueError, match="lists have 3 elements, not dim=4"):
        embeddings.matrix("driver_lists:double_list_f", dim=4)
    with pytest.raises(TypeError, match=r"to_numpy\(\) takes numeric scalar features"):
        embeddings.to_numpy()


def test_async_client_gives_the_same_answers(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    path = sidecar.address.removeprefix("unix:")
    refs = ["driver_scalars:double_f", "driver_lists:float_list_f", "driver_scalars:string_f"]

    async def run() -> tuple[Any, Any, Any]:
        # The unix:///path spelling of the same socket.
        async with AsyncFeatureClient(f"unix://{path}") as client:
            result = await client.get_features(refs, {"driver_id": DRIVERS})
            catalog = await client.list_features(view="item_stats")
            with pytest.raises(FeatureNotFoundError) as caught:
                await client.get_features(["driver_scalars:nope"], {"driver_id": [1]})
            return result, catalog, caught.value

    result, catalog, error = asyncio.run(run())
    with FeatureClient(sidecar.address) as client:
        expected = client.get_features(refs, {"driver_id": DRIVERS})
    assert result.to_dict() == expected.to_dict()
    assert result.to_dict()["driver_scalars:double_f"] == [0.123456789, -2.5e-10, 1e300, None]
    assert result.status_names("driver_scalars:string_f") == expected.status_names(
        "driver_scalars:string_f"
    )
    assert catalog.refs == ("item_stats:price",)
    assert error.details == "features[0]: view 'driver_scalars' has no feature 'nope'"
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)


def test_composite_keys_and_string_entities_from_numpy(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    with FeatureClient(sidecar.address) as client:
        result = client.get_features(
            ["driver_item:score", "item_stats:price"],
            {
                "driver_id": np.array([1002, 1001, 1001], dtype=np.int64),
                "item_id": np.array(["B-2", "A-1", "B-2"]),
            },
        )
    assert result.to_dict() == {
        "driver_item:score": [-12.5, 0.875, None],
        "item_stats:price": [-0.001, 19.99, -0.001],
    }
    assert result.event_times("driver_item:score")[0] == np.datetime64(
        "2026-01-15T15:00:00.500", "ns"
    )


def test_list_features_describes_the_catalog(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    with FeatureClient(sidecar.address) as client:
        catalog = client.list_features()
        lists = client.list_features(view="driver_lists")
        with pytest.raises(FeatureNotFoundError) as caught:
            client.list_features(view="nope")
    assert len(catalog.features) == 18
    assert catalog.feature("driver_lists:float_list_f") == FeatureInfo(
        ref="driver_lists:float_list_f",
        view="driver_lists",
        name="float_list_f",
        type="float_list",
        description="",
        owner="",
        tags=(),
        entities=("driver",),
        join_keys=("driver_id",),
        max_age_seconds=36500 * 86400,
        dim=0,
    )
    assert catalog.feature("driver_item:score").join_keys == ("driver_id", "item_id")
    assert catalog.entities == (
        EntityInfo("driver", (JoinKeyInfo("driver_id", "int64"),), ""),
        EntityInfo("item", (JoinKeyInfo("item_id", "string"),), ""),
    )
    assert catalog.services == ()
    assert [f.type for f in lists.features] == [
        "int32_list", "int64_list", "float_list", "double_list",
        "string_list", "bytes_list", "bool_list", "timestamp_list",
    ]  # fmt: skip
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.details == "view: unknown feature view 'nope'"


def test_bad_requests_raise_typed_errors_from_the_rpc_error(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis)
    with FeatureClient(sidecar.address) as client:
        with pytest.raises(InvalidArgumentError) as wrong_type:
            client.get_features(["item_stats:price"], {"item_id": [1, 2]})
        with pytest.raises(InvalidArgumentError) as missing:
            client.get_features(["driver_item:score"], {"driver_id": [1001]})
        with pytest.raises(FeatureNotFoundError) as unknown:
            client.get_features(["nope:x"], {"driver_id": [1001]})
    assert wrong_type.value.details == (
        "entities.item_id: join key 'item_id' takes string values, "
        "but the request carries int64 values"
    )
    assert missing.value.details == (
        "entities: missing join key 'item_id', needed by feature view 'driver_item'"
    )
    assert unknown.value.details == "features[0]: unknown feature view 'nope' in 'nope:x'"
    for caught in (wrong_type, missing, unknown):
        assert isinstance(caught.value.__cause__, grpc.RpcError)
        assert caught.value.__cause__.code() == caught.value.code
        assert caught.value.attempts == 1


# --- TCP, bearer tokens and TLS -------------------------------------------------------------------


def test_tcp_without_identity_is_unauthenticated(sidecar_factory, feast_redis) -> None:
    sidecar = _serve(sidecar_factory, feast_redis, listen=["127.0.0.1:0"])
    host, _, port = sidecar.address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    with FeatureClient(sidecar.address) as client:
        with pytest.raises(UnauthenticatedError) as caught:
            client.get_features(["item_stats:price"], {"item_id": ["A-1"]})
        with pytest.raises(UnauthenticatedError) as refused:
            client.get_features(
                ["item_stats:price"], {"item_id": ["A-1"]}, metadata=[("authorization", "Basic x")]
            )
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details == (
        "no identity: send a bearer token in 'authorization' metadata, a client certificate, "
        "or call over the sidecar's unix socket"
    )
    assert caught.value.attempts == 1  # UNAUTHENTICATED is not retried
    assert refused.value.details == "the 'authorization' metadata must be 'Bearer <token>'"


def _jwks(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "test-key"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return path, key


def _token(key: Ed25519PrivateKey, subject: str) -> str:
    claims = {"sub": subject, "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "test-key"})


def test_bearer_token_over_tcp(sidecar_factory, feast_redis, tmp_path) -> None:
    jwks, key = _jwks(tmp_path)
    sidecar = _serve(sidecar_factory, feast_redis, listen=["127.0.0.1:0"], jwt_jwks=str(jwks))
    with FeatureClient(sidecar.address, token=_token(key, "compat-test")) as client:
        result = client.get_features(["item_stats:price"], {"item_id": ["A-1", "Z-9"]})
    assert result.to_dict() == {"item_stats:price": [19.99, None]}

    stranger = _token(Ed25519PrivateKey.generate(), "compat-test")
    with (
        FeatureClient(sidecar.address, token=stranger) as client,
        pytest.raises(UnauthenticatedError) as caught,
    ):
        client.get_features(["item_stats:price"], {"item_id": ["A-1"]})
    assert caught.value.details == "token has a bad signature"
    assert stranger not in str(caught.value) and stranger not in repr(client)

    with (
        FeatureClient(sidecar.address, token=_token(key, "somebody-else")) as client,
        pytest.raises(PermissionDeniedError) as denied,
    ):
        client.get_features(["item_stats:price"], {"item_id": ["A-1"]})
    assert denied.value.details == (
        "principal 'somebody-else' holds no role in this policy and may not read: item_stats:price"
    )


def _certificate(
    subject: str, key: Any, issuer: x509.Name | None, signer: Any, *, ca: bool, server: bool
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_mutual_tls_credentials(sidecar_factory, feast_redis, tmp_path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test-ca", ca_key, None, ca_key, ca=True, server=False)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("sidecar", server_key, ca.subject, ca_key, ca=False, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate(
        "compat-test", client_key, ca.subject, ca_key, ca=False, server=False
    )
    files = {
        "ca.pem": _pem(ca),
        "server.pem": _pem(server),
        "server.key": _key_pem(server_key),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    sidecar = _serve(
        sidecar_factory,
        feast_redis,
        listen=["127.0.0.1:0"],
        tls_cert=str(tmp_path / "server.pem"),
        tls_key=str(tmp_path / "server.key"),
        tls_client_ca=str(tmp_path / "ca.pem"),
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem(ca),
        private_key=_key_pem(client_key),
        certificate_chain=_pem(client_cert),
    )
    with FeatureClient(sidecar.address, credentials=credentials) as client:
        result = client.get_features(["item_stats:price"], {"item_id": ["B-2"]})
    assert result.to_dict() == {"item_stats:price": [-0.001]}

    async def run() -> Any:
        async with AsyncFeatureClient(sidecar.address, credentials=credentials) as client:
            return await client.list_features(view="item_stats")

    assert asyncio.run(run()).refs == ("item_stats:price",)


# --- serving rules and limits ------------------------------------------------------------------

_CATALOG = FEAST_POLICY.read_text().split("\nroles:")[0]

RULES_POLICY = (
    _CATALOG
    + """
roles:
  - name: reader
    allow: ["*:*"]
    deny: ["driver_scalars:bytes_f"]

rules:
  - match: {features: ["driver_scalars:string_f"]}
    mask: hash
  - match: {features: ["item_stats:price"]}
    default: 0

limits:
  - roles: ["reader"]
    max_entities: 3

bindings:
  - principal: "compat-test"
    roles: [reader]
"""
)

RATE_POLICY = (
    _CATALOG
    + """
roles:
  - name: reader
    allow: ["*:*"]

limits:
  - roles: ["reader"]
    requests_per_second: 0.5

bindings:
  - principal: "compat-test"
    roles: [reader]
"""
)


def test_defaults_masks_and_denials_follow_the_valid_rules(
    sidecar_factory, feast_redis, tmp_path
) -> None:
    bundle = tmp_path / "rules.yaml"
    bundle.write_text(RULES_POLICY)
    sidecar = _serve(sidecar_factory, feast_redis, bundle=bundle)
    with FeatureClient(sidecar.address) as client:
        priced = client.get_features(["item_stats:price"], {"item_id": ["A-1", "Z-9"]})
        masked = client.get_features(["driver_scalars:string_f"], {"driver_id": [1001, 1003, 9]})
        partial = client.get_features(
            ["driver_scalars:double_f", "driver_scalars:bytes_f"],
            {"driver_id": [1001, 1002]},
            allow_partial=True,
        )
        with pytest.raises(PermissionDeniedError) as denied:
            client.get_features(["driver_scalars:bytes_f"], {"driver_id": [1001]})
        with pytest.raises(ResourceExhaustedError) as too_many:
            client.get_features(["driver_scalars:double_f"], {"driver_id": [1, 2, 3, 4]})

    # NOT_FOUND with the rule's default holds a value.
    assert priced.status_names("item_stats:price") == ["PRESENT", "NOT_FOUND"]
    assert priced.valid("item_stats:price").tolist() == [True, True]
    assert priced.to_numpy().tolist() == [[19.99], [0.0]]
    # MASKED by hash holds the hash (a string column); NULL and NOT_FOUND rows hold nothing.
    assert masked.type("driver_scalars:string_f") == "string"
    assert masked.status_names("driver_scalars:string_f") == ["MASKED", "NULL_VALUE", "NOT_FOUND"]
    assert masked.valid("driver_scalars:string_f").tolist() == [True, False, False]
    digest = masked.to_dict()["driver_scalars:string_f"][0]
    assert len(digest) == 32 and digest != "Zürich" and int(digest, 16) >= 0
    # DENIED only with allow_partial; those rows are NaN in a matrix.
    assert partial.status_names("driver_scalars:bytes_f") == ["DENIED", "DENIED"]
    assert partial.valid("driver_scalars:bytes_f").tolist() == [False, False]
    assert partial.to_dict()["driver_scalars:bytes_f"] == [None, None]
    assert partial.to_numpy(["driver_scalars:double_f"]).tolist() == [[0.123456789], [-2.5e-10]]
    assert denied.value.details == "principal 'compat-test' may not read: driver_scalars:bytes_f"
    assert too_many.value.details == (
        "entities: 4 rows exceed this caller's limit of 3 per request; split the batch"
    )
    assert too_many.value.retry_after is None


def test_rate_limit_error_carries_retry_after(sidecar_factory, feast_redis, tmp_path) -> None:
    bundle = tmp_path / "rate.yaml"
    bundle.write_text(RATE_POLICY)
    sidecar = _serve(sidecar_factory, feast_redis, bundle=bundle)
    with FeatureClient(sidecar.address) as client:
        client.get_features(["item_stats:price"], {"item_id": ["A-1"]})
        with pytest.raises(ResourceExhaustedError) as caught:
            client.get_features(["item_stats:price"], {"item_id": ["A-1"]})
    error = caught.value
    # One token every 2 s, and the first call took it.
    assert error.retry_after is not None and 1.5 < error.retry_after <= 2.0
    assert ("retry-after-ms", str(round(error.retry_after * 1000))) in error.trailing_metadata
    assert error.attempts == 1  # RESOURCE_EXHAUSTED is not in the default retry codes
    assert math.isclose(error.retry_after * 1000, round(error.retry_after * 1000))

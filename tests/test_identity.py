"""Caller identity: JWT bearer tokens, mTLS client certificates, the unix-socket workload."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import EXAMPLE_POLICY, TokenIssuer, bearer, code_of, column_values, put_entity, request

from featuresidecar.v1 import feature_service_pb2_grpc as pb_grpc
from featuresidecar_server.access import Identity
from featuresidecar_server.authn import Authenticator, JwtSettings
from featuresidecar_server.errors import Unauthenticated

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
NOW = 1_800_000_000.0


def _authenticator(issuer: TokenIssuer, clock: float = NOW, **settings: Any) -> Authenticator:
    jwt_settings = JwtSettings(
        str(issuer.jwks_path), issuer=issuer.ISSUER, audience=issuer.AUDIENCE, **settings
    )
    return Authenticator(jwt_settings=jwt_settings, clock=lambda: clock)


def _identify(auth: Authenticator, token: str) -> Identity:
    return auth.identify(bearer(token), "ipv4:127.0.0.1:5000", {})


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_accepted_algorithm_gives_principal_and_groups(tmp_path: Path, alg: str) -> None:
    issuer = TokenIssuer(tmp_path, alg)
    token = issuer.token("alice", ("data-science", "ml"), now=NOW)
    assert _identify(_authenticator(issuer), token) == Identity(
        "alice", ("data-science", "ml"), "jwt"
    )


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def _claims(issuer: TokenIssuer, **changes: Any) -> dict[str, Any]:
    claims = {
        "sub": "alice",
        "iss": issuer.ISSUER,
        "aud": issuer.AUDIENCE,
        "iat": int(NOW),
        "exp": int(NOW + 300),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_every_token_failure_is_unauthenticated_with_its_reason(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)
    auth = _authenticator(issuer)
    other = TokenIssuer(tmp_path / "..", kid="test-key")  # same kid, different key
    public_pem = issuer.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The classic confusion attack: HMAC keyed with the public key, which PyJWT won't even sign.
    signing_input = _unsigned(_claims(issuer), {"alg": "HS256", "kid": "test-key"})[:-1]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs256 = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    cases = {
        "expired": (issuer.token("alice", now=NOW - 400, ttl=60), "token expired"),
        "wrong audience": (
            issuer.token("alice", now=NOW, aud="someone-else"),
            "token has the wrong audience",
        ),
        "wrong issuer": (
            issuer.token("alice", now=NOW, iss="https://evil.test"),
            "token has the wrong issuer",
        ),
        "alg none": (
            _unsigned(_claims(issuer), {"alg": "none", "typ": "JWT"}),
            "token algorithm 'none' is refused (accepted: RS256, ES256, EdDSA)",
        ),
        "hs256 with the public key": (
            hs256,
            "token algorithm 'HS256' is refused (accepted: RS256, ES256, EdDSA)",
        ),
        "bad signature": (other.token("alice", now=NOW), "token has a bad signature"),
        "unknown key": (
            jwt.encode(_claims(issuer), issuer.private, algorithm="RS256", headers={"kid": "nope"}),
            "token signed by an unknown key (kid 'nope')",
        ),
        "not yet valid": (
            issuer.token("alice", now=NOW, nbf=int(NOW + 120)),
            "token is not valid yet (nbf)",
        ),
        "no exp": (
            jwt.encode(
                _claims(issuer, exp=None),
                issuer.private,
                algorithm="RS256",
                headers={"kid": "test-key"},
            ),
            "token lacks the 'exp' claim",
        ),
        "no sub": (
            jwt.encode(
                _claims(issuer, sub=None),
                issuer.private,
                algorithm="RS256",
                headers={"kid": "test-key"},
            ),
            "token lacks the 'sub' claim",
        ),
        "garbage": ("not-a-token", "malformed bearer token"),
    }
    for name, (token, reason) in cases.items():
        with pytest.raises(Unauthenticated) as error:
            _identify(auth, token)
        assert error.value.message == reason, name


def test_clock_skew_is_tolerated_up_to_the_leeway(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)
    token = issuer.token("alice", now=NOW - 320, ttl=300)  # expired 20 s ago
    assert _identify(_authenticator(issuer), token).principal == "alice"
    with pytest.raises(Unauthenticated, match="token expired"):
        _identify(_authenticator(issuer, clock=NOW + 15), token)


def test_a_cached_token_still_expires(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)
    clock = [NOW]
    auth = Authenticator(
        jwt_settings=JwtSettings(
            str(issuer.jwks_path), issuer=issuer.ISSUER, audience=issuer.AUDIENCE
        ),
        clock=lambda: clock[0],
    )
    token = issuer.token("alice", now=NOW, ttl=60)
    assert _identify(auth, token).principal == "alice"
    clock[0] = NOW + 100
    with pytest.raises(Unauthenticated, match="token expired"):
        _identify(auth, token)


def test_groups_come_from_the_configured_claim(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)
    token = issuer.token("alice", now=NOW, teams=["blue", "red"], groups=["ignored"])
    identity = _identify(_authenticator(issuer, groups_claim="teams"), token)
    assert identity.groups == ("blue", "red")


def test_a_rotated_jwks_file_is_read_again(tmp_path: Path) -> None:
    old = TokenIssuer(tmp_path, kid="old")
    clock = [NOW]
    auth = Authenticator(
        jwt_settings=JwtSettings(str(old.jwks_path), issuer=old.ISSUER, audience=old.AUDIENCE),
        clock=lambda: clock[0],
    )
    new = TokenIssuer(tmp_path, kid="new")
    with pytest.raises(Unauthenticated, match="unknown key"):
        _identify(auth, new.token("bob", now=NOW))
    old.jwks_path.write_text(new.jwks_path.read_text())
    clock[0] = NOW + 6  # past the re-check interval
    assert _identify(auth, new.token("bob", now=NOW)).principal == "bob"


def test_no_identity_and_bad_headers(tmp_path: Path) -> None:
    auth = Authenticator(workload_principal="me")
    with pytest.raises(Unauthenticated) as error:
        auth.identify([], "ipv4:127.0.0.1:1", {})
    assert error.value.message == (
        "no identity: send a bearer token in 'authorization' metadata, a client certificate, "
        "or call over the sidecar's unix socket"
    )
    assert auth.identify([], "unix:/tmp/s.sock", {}) == Identity("me", (), "workload")
    with pytest.raises(Unauthenticated, match="must be 'Bearer <token>'"):
        auth.identify([("authorization", "Basic dXNlcjpwYXNz")], "unix:/tmp/s.sock", {})
    with pytest.raises(Unauthenticated, match="started without --jwt-jwks"):
        auth.identify(bearer("a.b.c"), "unix:/tmp/s.sock", {})


# --- end to end ---------------------------------------------------------------------------------


def _cert(
    subject: str,
    issuer_key: Any,
    issuer_name: x509.Name,
    key: Any,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = _cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    out = {"ca": _pem(ca)}
    import ipaddress

    for name, subject, san in (
        (
            "server",
            "localhost",
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ),
        ("spiffe", "ignored-cn", [x509.UniformResourceIdentifier(RANKER)]),
        ("cn", "support-console", None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name] = _pem(_cert(subject, ca_key, ca_name, key, san=san))
        out[name + "_key"] = _key_pem(key)
    return out


@pytest.fixture
def tls_sidecar(
    pki: dict[str, bytes], redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> Any:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34, "country": "DE"},
        time.time_ns(),
    )
    files = {}
    for name in ("ca", "server", "server_key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(pki[name])
    issuer = TokenIssuer(tmp_path)
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        listen=["127.0.0.1:0"],
        tls_cert=str(files["server"]),
        tls_key=str(files["server_key"]),
        tls_client_ca=str(files["ca"]),
        workload_principal=RANKER,
        **issuer.settings(),
    )
    sidecar.issuer = issuer
    return sidecar


def _tls_channel(sidecar: Any, pki: dict[str, bytes], who: str | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"],
        private_key=pki[who + "_key"] if who else None,
        certificate_chain=pki[who] if who else None,
    )
    return grpc.secure_channel(
        sidecar.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def test_mtls_principal_is_the_spiffe_id_else_the_common_name(
    tls_sidecar: Any, pki: dict[str, bytes]
) -> None:
    ranker = pb_grpc.FeatureServiceStub(_tls_channel(tls_sidecar, pki, "spiffe"))
    response = ranker.GetFeatures(request(["user_profile:age"], {"user_id": [1]}), timeout=5)
    assert column_values(response.columns[0]) == [34]
    assert code_of(
        lambda: ranker.GetFeatures(request(["user_profile:country"], {"user_id": [1]}), timeout=5)
    ) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"principal '{RANKER}' may not read: user_profile:country",
    )
    support = pb_grpc.FeatureServiceStub(_tls_channel(tls_sidecar, pki, "cn"))
    response = support.GetFeatures(request(["user_profile:country"], {"user_id": [1]}), timeout=5)
    assert column_values(response.columns[0]) == ["DE"]


def test_a_bearer_token_comes_before_the_certificate(
    tls_sidecar: Any, pki: dict[str, bytes]
) -> None:
    ranker_cert = pb_grpc.FeatureServiceStub(_tls_channel(tls_sidecar, pki, "spiffe"))
    token = tls_sidecar.issuer.token("support-console")
    response = ranker_cert.GetFeatures(
        request(["user_profile:country"], {"user_id": [1]}), metadata=bearer(token), timeout=5
    )
    assert column_values(response.columns[0]) == ["DE"]
    bad = tls_sidecar.issuer.token("support-console", ttl=-100)
    assert code_of(
        lambda: ranker_cert.GetFeatures(
            request(["user_profile:age"], {"user_id": [1]}), metadata=bearer(bad), timeout=5
        )
    ) == (grpc.StatusCode.UNAUTHENTICATED, "token expired")


def test_mtls_refuses_a_client_without_a_certificate(
    tls_sidecar: Any, pki: dict[str, bytes]
) -> None:
    anonymous = pb_grpc.FeatureServiceStub(_tls_channel(tls_sidecar, pki, None))
    code, _ = code_of(
        lambda: anonymous.GetFeatures(request(["user_profile:age"], {"user_id": [1]}), timeout=5)
    )
    assert code == grpc.StatusCode.UNAVAILABLE


def test_workload_principal_only_on_the_unix_socket_and_probes_need_no_identity(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    put_entity(
        redis_server.url,
        EXAMPLE_POLICY,
        "user_profile",
        {"user_id": 1},
        {"age": 34},
        time.time_ns(),
    )
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(EXAMPLE_POLICY),
        workload_principal=RANKER,
        listen=[f"unix:{tmp_path}/w.sock", "127.0.0.1:0"],
    )
    unix_address, tcp_address = sidecar.sidecar.addresses
    message = request(["user_profile:age"], {"user_id": [1]})
    with grpc.insecure_channel(unix_address) as channel:
        response = pb_grpc.FeatureServiceStub(channel).GetFeatures(message, timeout=5)
        assert column_values(response.columns[0]) == [34]
    with grpc.insecure_channel(tcp_address) as channel:
        assert (
            code_of(lambda: pb_grpc.FeatureServiceStub(channel).GetFeatures(message, timeout=5))[0]
            == grpc.StatusCode.UNAUTHENTICATED
        )
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def _jwks_of(*issuers: TokenIssuer) -> dict[str, Any]:
    return {"keys": [json.loads(i.jwks_path.read_text())["keys"][0] for i in issuers]}


@pytest.mark.parametrize(
    ("signer", "named"),
    [("ES256", "RS256"), ("RS256", "ES256"), ("RS256", "EdDSA"), ("EdDSA", "RS256")],
)
def test_a_token_whose_algorithm_does_not_fit_the_named_key_is_unauthenticated(
    tmp_path: Path, signer: str, named: str
) -> None:
    issuers = {
        alg: TokenIssuer(tmp_path, alg, kid=alg.lower()) for alg in ("RS256", "ES256", "EdDSA")
    }
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(_jwks_of(*issuers.values())))
    auth = Authenticator(
        jwt_settings=JwtSettings(
            str(jwks), issuer=TokenIssuer.ISSUER, audience=TokenIssuer.AUDIENCE
        ),
        clock=lambda: NOW,
    )
    source = issuers[signer]
    # Signed with one type of key, naming a key of another type.
    token = jwt.encode(
        _claims(source), source.private, algorithm=signer, headers={"kid": named.lower()}
    )
    with pytest.raises(Unauthenticated) as error:
        _identify(auth, token)
    assert error.value.message == (
        f"token algorithm {signer!r} does not fit the key {named.lower()!r} it names"
    )
    # The same key with its own algorithm still verifies.
    assert _identify(auth, issuers[named].token("alice", now=NOW)).principal == "alice"


def test_a_key_removed_from_the_jwks_file_revokes_its_cached_tokens(tmp_path: Path) -> None:
    kept = TokenIssuer(tmp_path, kid="kept")
    removed = TokenIssuer(tmp_path, kid="removed")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(_jwks_of(kept, removed)))
    clock = [NOW]
    auth = Authenticator(
        jwt_settings=JwtSettings(str(jwks), issuer=kept.ISSUER, audience=kept.AUDIENCE),
        clock=lambda: clock[0],
    )
    doomed = removed.token("mallory", now=NOW, ttl=3600)
    survivor = kept.token("alice", now=NOW, ttl=3600)
    assert _identify(auth, doomed).principal == "mallory"  # verified once, then cached
    assert _identify(auth, survivor).principal == "alice"
    jwks.write_text(json.dumps(_jwks_of(kept)))
    clock[0] = NOW + 4  # within the re-check interval the cached identity still stands
    assert _identify(auth, doomed).principal == "mallory"
    clock[0] = NOW + 6  # past it (docs/security.md: within 5 s of the change)
    with pytest.raises(Unauthenticated) as error:
        _identify(auth, doomed)
    assert error.value.message == "token signed by an unknown key (kid 'removed')"
    assert _identify(auth, survivor).principal == "alice"
    jwks.write_text(json.dumps({"keys": []}))  # every key revoked
    clock[0] = NOW + 12
    with pytest.raises(Unauthenticated, match="unknown key"):
        _identify(auth, survivor)

"""Who is calling: a JWT bearer token, else the mTLS client certificate, else (unix socket only)
the workload principal the sidecar was started with. A header that merely claims an identity is
never trusted.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from .access import Identity
from .errors import Unauthenticated, quoted

ACCEPTED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class JwtSettings:
    jwks_path: str
    issuer: str | None = None
    audience: str | None = None
    groups_claim: str = "groups"
    leeway: float = 30.0


class _Jwks:
    """The trusted keys, re-read when the file changes (key rotation without a restart)."""

    def __init__(self, path: str, clock: Callable[[], float], recheck: float = 5.0) -> None:
        self.path = path
        self._clock = clock
        self._recheck = recheck
        self._checked = -1e18
        self._version: tuple[int, int, int] = (-1, -1, -1)
        self.keys: dict[str, Any] = {}
        # Counts loads: tokens verified with an earlier key set are verified again.
        self.generation = 0
        self._load()

    def _load(self) -> None:
        import jwt  # only sidecars that take bearer tokens pay for PyJWT

        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
            # An empty key set is valid: it revokes every key (PyJWT refuses to build one).
            empty = isinstance(document, dict) and document.get("keys") == []
            found = [] if empty else jwt.PyJWKSet.from_dict(document).keys
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ValueError(f"--jwt-jwks {self.path}: not a readable JWKS file ({exc})") from exc
        keys: dict[str, Any] = {}
        for key in found:
            keys[key.key_id or ""] = key
        self.keys = keys
        self.generation += 1
        self._version = _changed(self.path)

    def refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._recheck:
            return
        self._checked = now
        try:
            if _changed(self.path) != self._version:
                self._load()
        except (OSError, ValueError):
            pass  # keep the keys we have; a half-written file must not lock everybody out

    def find(self, kid: str | None) -> Any:
        self.refresh()
        if kid is not None:
            return self.keys.get(kid)
        if len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return None


class Authenticator:
    def __init__(
        self,
        *,
        jwt_settings: JwtSettings | None = None,
        workload_principal: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwt = jwt_settings
        self.workload_principal = workload_principal
        self.clock = clock
        self._jwks = _Jwks(jwt_settings.jwks_path, clock) if jwt_settings else None
        self._tokens: OrderedDict[str, tuple[Identity, float, float]] = OrderedDict()
        self._generation = self._jwks.generation if self._jwks else 0

    def identify(
        self,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        peer: str | Callable[[], str],
        auth_context: Mapping[str, Sequence[bytes]] | Callable[[], Mapping[str, Sequence[bytes]]],
    ) -> Identity:
        """`peer` and `auth_context` may be given as functions: they are asked only when the
        token path did not decide (asking gRPC for them costs on every call)."""
        token = _bearer(metadata)
        if token is not None:
            return self.verify_token(token)
        context = auth_context() if callable(auth_context) else auth_context
        cert = context.get("x509_pem_cert") if context else None
        if cert:
            return _certificate_identity(cert[0])
        if self.workload_principal and (peer() if callable(peer) else peer).startswith("unix:"):
            return Identity(self.workload_principal, (), "workload")
        raise Unauthenticated(
            "no identity: send a bearer token in 'authorization' metadata, a client certificate, "
            "or call over the sidecar's unix socket"
        )

    def verify_token(self, token: str) -> Identity:
        now = self.clock()
        jwks = self._jwks
        if jwks is not None:
            # A key removed from the JWKS file revokes the tokens it signed, cached or not.
            jwks.refresh()
            if jwks.generation != self._generation:
                self._generation = jwks.generation
                self._tokens.clear()
        cached = self._tokens.get(token)
        if cached is not None:
            identity, not_before, expires = cached
            if not_before - self._leeway <= now <= expires + self._leeway:
                return identity
            del self._tokens[token]
        identity, not_before, expires = self._verify(token, now)
        self._tokens[token] = (identity, not_before, expires)
        if len(self._tokens) > _CACHE_SIZE:
            self._tokens.popitem(last=False)
        return identity

    @property
    def _leeway(self) -> float:
        return self.jwt.leeway if self.jwt else 0.0

    def _verify(self, token: str, now: float) -> tuple[Identity, float, float]:
        import jwt

        if self.jwt is None or self._jwks is None:
            raise Unauthenticated(
                "bearer tokens are not accepted here: the sidecar was started without --jwt-jwks"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token") from None
        alg = header.get("alg")
        if alg not in ACCEPTED_ALGORITHMS:
            raise Unauthenticated(
                f"token algorithm {quoted(alg)} is refused (accepted: "
                f"{', '.join(ACCEPTED_ALGORITHMS)})"
            )
        kid = header.get("kid")
        key = self._jwks.find(kid)
        if key is None:
            raise Unauthenticated(f"token signed by an unknown key (kid {quoted(kid)})")
        if not _fits(alg, key):
            raise Unauthenticated(
                f"token algorithm {alg!r} does not fit the key {quoted(kid)} it names"
            )
        settings = self.jwt
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                # Time claims are checked below against the injected clock.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": settings.audience is not None,
                    "verify_iss": settings.issuer is not None,
                },
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token has a bad signature") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token has the wrong audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token has the wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise Unauthenticated("token could not be verified") from None
        except (ValueError, TypeError, KeyError):
            # Whatever a crafted token makes the verifier trip over, it is not an identity.
            raise Unauthenticated("token could not be verified") from None
        expires = _number_claim(claims, "exp")
        if expires is None:
            raise Unauthenticated("token lacks the 'exp' claim")
        if now > expires + settings.leeway:
            raise Unauthenticated("token expired")
        not_before = _number_claim(claims, "nbf")
        if not_before is not None and now < not_before - settings.leeway:
            raise Unauthenticated("token is not valid yet (nbf)")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token lacks the 'sub' claim")
        groups = _groups(claims.get(settings.groups_claim))
        identity = Identity(subject, groups, "jwt")
        return identity, not_before if not_before is not None else -1e18, expires


def _changed(path: str) -> tuple[int, int, int]:
    """What tells a rewritten file apart, even within one mtime tick: inode, size, mtime."""
    info = os.stat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns


def _fits(alg: str, key: Any) -> bool:
    """Whether a token's `alg` may be verified with this JWKS key. PyJWT names each key's
    algorithm: the JWK's own `alg`, else the one its type and curve imply (RSA: RS256, P-256:
    ES256, OKP: EdDSA)."""
    return bool(key.algorithm_name == alg)


def _number_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unauthenticated(f"token claim {name!r} is not a number")
    return float(value)


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(sorted({g for g in value if isinstance(g, str)}))
    return ()


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the 'authorization' metadata must be 'Bearer <token>'")
            return token.strip()
    return None


def _certificate_identity(pem: bytes) -> Identity:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("the client certificate could not be read") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith("spiffe://"):
                return Identity(uri, (), "mtls")
    except x509.ExtensionNotFound:
        pass
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return Identity(value if isinstance(value, str) else value.decode(), (), "mtls")
    raise Unauthenticated("the client certificate has neither a SPIFFE ID nor a common name")

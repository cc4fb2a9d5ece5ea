"""The signed bundle artifact: format, signing and verification (pure: bytes in, data out).

A bundle is one JSON document::

    {"format": "feature-sidecar-bundle/1",
     "payload": "<base64 of the payload JSON>",
     "signatures": [{"keyid": "<hex>", "alg": "ed25519", "sig": "<base64>"}]}

The payload JSON carries ``revision``, ``built_at``, ``digest`` (``sha256:<hex>`` of the policy
source) and ``policy`` (the policy YAML source, kept verbatim so errors and explanations can name
lines). Each signature is Ed25519 over the exact payload bytes; the key id is the first 16 hex
digits of SHA-256 over the raw 32-byte public key. docs/bundle-format.md has the details.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .policy_yaml import PolicyError, plain_data

FORMAT = "feature-sidecar-bundle/1"
# Revisions travel as int64 (policy_revision on the wire).
MAX_REVISION = 2**63 - 1
# A JSON escape of a UTF-16 surrogate: how a lone surrogate gets into a payload, which no
# encoder of UTF-8 text writes. Only payloads that hold one are checked closely.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# Key ids named in an "untrusted key" rejection: enough to recognise a key, bounded for hostile
# bundles that carry thousands of signatures.
_NAMED_KEY_IDS = 5


class BundleError(ValueError):
    """A bundle that must not be activated; `reason` is a bounded metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # signature | parse | rollback | size | http | timeout | io
        self.message = message


@dataclass(frozen=True)
class Bundle:
    revision: int
    built_at: str
    digest: str
    policy_source: str
    # Key id that verified it; "" for an unsigned bundle or a plain policy file.
    key_id: str
    signed: bool
    # The source already parsed to plain data (bundles built by this version); None otherwise.
    policy_data: Any = None


# --- keys ---------------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def private_key_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, where: str = "key") -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{where}: not an Ed25519 private key")
    return key


def load_public_key(pem: bytes, where: str = "key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{where}: not an Ed25519 public key")
    return key


def trusted_keys(keys: Sequence[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}


# --- building -----------------------------------------------------------------------------------


def content_digest(policy_source: str) -> str:
    return "sha256:" + hashlib.sha256(policy_source.encode("utf-8")).hexdigest()


def build(
    policy_source: str,
    revision: int,
    private: Ed25519PrivateKey | None,
    built_at: datetime | None = None,
) -> bytes:
    """The bundle bytes; unsigned when `private` is None (development only).

    The payload also carries the source parsed to plain data (`data`), so a sidecar activates
    a large catalog from JSON rather than YAML: several times faster and lighter.
    """
    if not 0 <= revision <= MAX_REVISION:
        raise ValueError(f"revision must be between 0 and {MAX_REVISION}")
    fields: dict[str, Any] = {
        "revision": revision,
        "built_at": (built_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "digest": content_digest(policy_source),
        "policy": policy_source,
    }
    # Not YAML: no parsed copy; a sidecar then rejects the bundle from its source, with the reason.
    with contextlib.suppress(PolicyError):
        fields["data"] = plain_data(policy_source)
    payload = json.dumps(
        fields,
        sort_keys=True,
        ensure_ascii=False,
        default=str,  # only `x-` extension keys can hold anything else, and they are ignored
    ).encode("utf-8")
    signatures = []
    if private is not None:
        signatures.append(
            {
                "keyid": key_id(private.public_key()),
                "alg": "ed25519",
                "sig": base64.b64encode(private.sign(payload)).decode("ascii"),
            }
        )
    document = {
        "format": FORMAT,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": signatures,
    }
    return (json.dumps(document, indent=1) + "\n").encode("utf-8")


# --- reading ------------------------------------------------------------------------------------


def looks_like_bundle(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{" and FORMAT.encode() in data[:4096]


def verify(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    allow_unsigned: bool = False,
) -> Bundle:
    """The bundle, if its signature verifies against a trusted key; BundleError otherwise.

    With `allow_unsigned` (development), a bundle without signatures, or a plain policy YAML,
    is accepted; a bundle that carries signatures must still verify.
    """
    if not looks_like_bundle(data):
        if allow_unsigned:
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BundleError("parse", "the policy file is not UTF-8 text") from None
            return Bundle(0, "", content_digest(source), source, "", False)
        raise BundleError(
            "parse", "not a signed bundle (build one with `feature-sidecar bundle build`)"
        )
    payload, signatures = _envelope(data)
    key_used = ""
    if signatures:
        key_used = _check_signatures(payload, signatures, trusted)
    elif not allow_unsigned:
        raise BundleError("signature", "the bundle is unsigned")
    return _content(payload, key_used)


def read_unverified(data: bytes) -> tuple[Bundle, tuple[str, ...]]:
    """A bundle's content with its signatures left unchecked (its digest still is), and the key
    ids its signatures claim: for tools that show or compare bundles, never for activation."""
    payload, signatures = _envelope(data)
    claimed = tuple(str(s.get("keyid", "")) for s in signatures if isinstance(s, dict))
    return _content(payload, ""), claimed


def _envelope(data: bytes) -> tuple[bytes, list[object]]:
    """The payload bytes and the signature entries of a bundle document."""
    try:
        document = json.loads(data)
        if document.get("format") != FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        payload = base64.b64decode(document["payload"], validate=True)
        signatures = document.get("signatures") or []
        if not isinstance(signatures, list):
            raise ValueError("signatures must be a list")
    # RecursionError: deeply nested JSON, which anyone who can serve bytes can send before any
    # signature is checked; it must end as a rejected bundle, not kill the caller.
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error) as exc:
        raise BundleError("parse", f"the bundle is corrupt: {_short(exc)}") from None
    return payload, signatures


def _content(payload: bytes, key_used: str) -> Bundle:
    try:
        fields = json.loads(payload)
        revision = fields["revision"]
        source = fields["policy"]
        digest = fields["digest"]
        built_at = fields.get("built_at", "")
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValueError("revision must be a non-negative integer")
        if revision > MAX_REVISION:
            # Served as int64: a larger one made every ListFeatures fail after activation.
            raise ValueError(f"revision must be at most {MAX_REVISION}")
        if not isinstance(source, str) or not isinstance(digest, str):
            raise ValueError("policy and digest must be strings")
        _check_unicode(payload, fields)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleError("parse", f"the bundle payload is corrupt: {_short(exc)}") from None
    if content_digest(source) != digest:
        raise BundleError("parse", "the bundle's digest does not match its content")
    return Bundle(
        revision, str(built_at), digest, source, key_used, bool(key_used), fields.get("data")
    )


def _check_unicode(payload: bytes, fields: Any) -> None:
    """ValueError when a string of the payload holds a lone surrogate (a JSON escape such as
    \\ud800): such text cannot be encoded, so its digest, a gRPC message or a status line
    built from it would fail later instead of the bundle being refused now."""
    if _SURROGATE_ESCAPE.search(payload) is None:
        return
    try:
        json.dumps(fields, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("it holds text that is not valid Unicode (a lone surrogate)") from None


def _check_signatures(
    payload: bytes, signatures: list[object], trusted: Mapping[str, Ed25519PublicKey]
) -> str:
    """The key id of the first trusted signature that verifies (any one is enough)."""
    unknown = []
    failed = []
    for entry in signatures:
        if not isinstance(entry, dict):
            raise BundleError("parse", "the bundle is corrupt: a signature is not an object")
        keyid = str(entry.get("keyid", ""))
        key = trusted.get(keyid)
        if key is None:
            unknown.append(keyid)
            continue
        try:
            if entry.get("alg") != "ed25519":
                raise ValueError("unsupported algorithm")
            signature = base64.b64decode(str(entry.get("sig", "")), validate=True)
            key.verify(signature, payload)
        except (InvalidSignature, binascii.Error, ValueError):
            failed.append(keyid)
            continue
        return keyid
    if failed:
        raise BundleError("signature", f"the signature by key {failed[0]} does not verify")
    named = ", ".join(keyid[:32] for keyid in unknown[:_NAMED_KEY_IDS]) or "none"
    if len(unknown) > _NAMED_KEY_IDS:
        named += f" and {len(unknown) - _NAMED_KEY_IDS} more"
    raise BundleError("signature", f"the bundle is signed by an untrusted key ({named})")


def _short(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        # str() of a KeyError is only the key's repr: "'digest'" says nothing on its own.
        return f"{str(exc)[:60]} is missing"
    return (str(exc) or type(exc).__name__).splitlines()[0][:160]

"""Hostile bundle bytes through `bundle_format.verify` and `Activator.offer`.

The invariant: a bundle is activated only when one of its signatures verifies with a trusted key
(checked here independently of bundle_format) and its revision is not lower than the active one;
anything else raises BundleError with a known reason and leaves the active bundle in place. What
gets activated can be served.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hostile_strategies import json_like, mutated_bytes, mutated_source
from hostile_support import POLICY, exercise
from hypothesis import event, example, given
from hypothesis import strategies as st

from featuresidecar_server import bundle_format
from featuresidecar_server.activation import Activator
from featuresidecar_server.bundle_format import BundleError
from featuresidecar_server.policy_yaml import PolicyError, plain_data
from featuresidecar_server.snapshot import ActivePolicy

TRUSTED = (Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())  # rotation: two keys
STRANGER = Ed25519PrivateKey.generate()
TRUSTED_KEYS = bundle_format.trusted_keys([k.public_key() for k in TRUSTED])
KEY_IDS = [bundle_format.key_id(k.public_key()) for k in (*TRUSTED, STRANGER)]
ACTIVE_REVISION = 5
BUILT_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GOOD = bundle_format.build(POLICY, ACTIVE_REVISION, TRUSTED[0], built_at=BUILT_AT)
GOOD_DOCUMENT = json.loads(GOOD)
GOOD_FIELDS = json.loads(base64.b64decode(GOOD_DOCUMENT["payload"]))
# Reasons verification and activation give; size, http, timeout and io come from fetchers.
REASONS = {"signature", "parse", "rollback"}


def independently_verified(data: bytes) -> int | None:
    """The payload's revision when a signature of `data` verifies with a trusted key, by a
    reading of docs/bundle-format.md that shares no code with bundle_format; else None."""
    try:
        document = json.loads(data)
        payload = base64.b64decode(document["payload"], validate=True)
        for entry in document["signatures"]:
            key = TRUSTED_KEYS.get(entry["keyid"])
            if key is None or entry.get("alg") != "ed25519":
                continue
            try:
                key.verify(base64.b64decode(entry["sig"], validate=True), payload)
            except (InvalidSignature, binascii.Error, ValueError):
                continue
            revision = json.loads(payload)["revision"]
            return revision if isinstance(revision, int) else None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error):
        return None
    return None


def active_activator() -> tuple[ActivePolicy, Activator]:
    """An activator whose active bundle is GOOD (revision 5)."""
    active = ActivePolicy()
    activator = Activator(active, source="hostile", trusted=TRUSTED_KEYS, mask_secret=b"k")
    assert activator.offer(GOOD, "good")
    return active, activator


def check_offer(data: bytes) -> None:
    active, activator = active_activator()
    before = active.current
    assert before is not None
    try:
        changed = activator.offer(data, "hostile")
    except BundleError as exc:
        event(f"BundleError {exc.reason}")
        assert exc.reason in REASONS, (exc.reason, exc.message)
        assert exc.message and len(exc.message) < 1000, exc.message
        assert active.current is before
        assert activator.status.last_error is not None
        assert activator.status.last_error["reason"] == exc.reason
        return
    revision = independently_verified(data)
    assert revision is not None, "activated a bundle no trusted key signed"
    assert revision >= ACTIVE_REVISION
    if not changed:
        event("unchanged")
        assert active.current is before
        return
    event("activated")
    current = active.current
    assert current is not None and current is not before
    assert current.revision == revision and current.signed
    exercise(current.policy)


def check_verify(data: bytes) -> None:
    try:
        bundle = bundle_format.verify(data, TRUSTED_KEYS)
    except BundleError as exc:
        assert exc.reason in {"signature", "parse"}, (exc.reason, exc.message)
        return
    assert independently_verified(data) == bundle.revision
    assert bundle.signed and bundle.key_id in TRUSTED_KEYS


# --- whole documents, byte by byte ----------------------------------------------------------------


@example(GOOD)
@example(b"")
@example(b"{}")
@example(b"[" * 100_000 + b"]" * 100_000)
@example(GOOD.replace(b'"signatures": [', b'"signatures": [' + b"[" * 50_000, 1))
@given(data=st.one_of(mutated_bytes(GOOD), st.binary(max_size=256)))
def test_mutated_bundle_bytes_activate_only_when_a_trusted_signature_verifies(data: bytes) -> None:
    check_verify(data)
    check_offer(data)


# --- the envelope ------------------------------------------------------------------------------


def _encode(document: Any, style: str) -> bytes:
    if style == "indented":
        return json.dumps(document, indent=1).encode()
    if style == "compact":
        return json.dumps(document, separators=(",", ":")).encode()
    return json.dumps(dict(reversed(list(document.items())))).encode()


def _sign(payload: bytes, key: Ed25519PrivateKey, keyid: str | None = None) -> dict[str, str]:
    return {
        "keyid": keyid or bundle_format.key_id(key.public_key()),
        "alg": "ed25519",
        "sig": base64.b64encode(key.sign(payload)).decode(),
    }


_GOOD_PAYLOAD = base64.b64decode(GOOD_DOCUMENT["payload"])
_GOOD_SIGNATURE = GOOD_DOCUMENT["signatures"][0]

SIGNATURE_LISTS: dict[str, Callable[[], Any]] = {
    "as built": lambda: [_GOOD_SIGNATURE],
    "none": lambda: [],
    "null": lambda: None,
    "not a list": lambda: _GOOD_SIGNATURE,
    "an entry not an object": lambda: ["sig"],
    "the other trusted key's id": lambda: [{**_GOOD_SIGNATURE, "keyid": KEY_IDS[1]}],
    "a stranger's id": lambda: [{**_GOOD_SIGNATURE, "keyid": KEY_IDS[2]}],
    "signed by a stranger, under a trusted id": lambda: [
        _sign(_GOOD_PAYLOAD, STRANGER, KEY_IDS[0])
    ],
    "signed by a stranger": lambda: [_sign(_GOOD_PAYLOAD, STRANGER)],
    "alg ED25519": lambda: [{**_GOOD_SIGNATURE, "alg": "ED25519"}],
    "alg none": lambda: [{**_GOOD_SIGNATURE, "alg": "none"}],
    "alg missing": lambda: [{k: v for k, v in _GOOD_SIGNATURE.items() if k != "alg"}],
    "sig truncated": lambda: [{**_GOOD_SIGNATURE, "sig": _GOOD_SIGNATURE["sig"][:40]}],
    "sig empty": lambda: [{**_GOOD_SIGNATURE, "sig": ""}],
    "sig not base64": lambda: [{**_GOOD_SIGNATURE, "sig": "*" * 88}],
    "sig a number": lambda: [{**_GOOD_SIGNATURE, "sig": 12345}],
    "keyid a list": lambda: [{**_GOOD_SIGNATURE, "keyid": [KEY_IDS[0]]}],
    "a bad one, then the good one": lambda: [
        _sign(_GOOD_PAYLOAD, STRANGER, KEY_IDS[0]),
        _GOOD_SIGNATURE,
    ],
    "10,000 strangers": lambda: [
        {"keyid": f"{i:016x}", "alg": "ed25519", "sig": ""} for i in range(10_000)
    ],
    "both trusted keys": lambda: [_sign(_GOOD_PAYLOAD, TRUSTED[1]), _GOOD_SIGNATURE],
}
PAYLOADS: dict[str, Callable[[], Any]] = {
    "as built": lambda: GOOD_DOCUMENT["payload"],
    "re-encoded without padding": lambda: GOOD_DOCUMENT["payload"].rstrip("="),
    "urlsafe base64": lambda: base64.urlsafe_b64encode(_GOOD_PAYLOAD).decode(),
    "with a newline": lambda: GOOD_DOCUMENT["payload"][:40] + "\n" + GOOD_DOCUMENT["payload"][40:],
    "keys reordered": lambda: base64.b64encode(
        json.dumps(dict(reversed(list(GOOD_FIELDS.items())))).encode()
    ).decode(),
    "revision raised, not re-signed": lambda: base64.b64encode(
        json.dumps({**GOOD_FIELDS, "revision": 6}, sort_keys=True).encode()
    ).decode(),
    "a number": lambda: 7,
    "missing": lambda: None,
}


@example(format_="feature-sidecar-bundle/1", payload="as built", signatures="as built", style="")
@given(
    format_=st.sampled_from(
        ("feature-sidecar-bundle/1",) * 4 + ("feature-sidecar-bundle/2", "", None)
    ),
    payload=st.sampled_from(sorted(PAYLOADS)),
    signatures=st.sampled_from(sorted(SIGNATURE_LISTS)),
    style=st.sampled_from(("indented", "compact", "reversed")),
)
def test_an_envelope_changed_in_any_field_activates_only_when_a_trusted_signature_verifies(
    format_: str | None, payload: str, signatures: str, style: str
) -> None:
    document: dict[str, Any] = {
        "format": format_,
        "payload": PAYLOADS[payload](),
        "signatures": SIGNATURE_LISTS[signatures](),
    }
    document = {k: v for k, v in document.items() if v is not None}
    data = _encode(document, style or "indented")
    check_verify(data)
    check_offer(data)


# --- payloads signed by a trusted key, with hostile content -------------------------------------

# Mostly revisions a sidecar may take, so that activation is exercised as much as refusal.
REVISIONS = st.one_of(
    st.integers(ACTIVE_REVISION, 100),
    st.integers(ACTIVE_REVISION, 2**63 - 1),
    st.sampled_from((0, 4, 2**63, 2**70, -1, True, 5.0, "6", None, [6])),
    st.integers(),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    fields: dict[str, Any] = dict(GOOD_FIELDS)
    fields["revision"] = draw(REVISIONS)
    policy = draw(
        st.one_of(
            st.just(POLICY),
            mutated_source(POLICY),
            st.sampled_from((7, None, "\ud800 policy", "version: 1\n")),
        )
    )
    fields["policy"] = policy
    digest = draw(st.sampled_from(("right", "right", "right", "wrong", "missing", "a number")))
    if digest == "right" and isinstance(policy, str) and "\ud800" not in policy:
        fields["digest"] = bundle_format.content_digest(policy)
    elif digest == "wrong":
        fields["digest"] = "sha256:" + "0" * 64
    elif digest == "a number":
        fields["digest"] = 1
    else:
        fields.pop("digest", None)
    data = draw(
        st.sampled_from(("as built", "as built", "missing", "junk", "deep", "from the source"))
    )
    if data == "missing":
        fields.pop("data", None)
    elif data == "junk":
        fields["data"] = draw(json_like)
    elif data == "deep":
        fields["data"] = json.loads("[" * 500 + "]" * 500)
    elif data == "from the source":
        # The parsed copy of the (possibly mutated) source, as a builder would write it.
        fields.pop("data", None)
        if isinstance(policy, str):
            with contextlib.suppress(PolicyError, UnicodeEncodeError):
                fields["data"] = plain_data(policy)
    if draw(st.booleans()):
        fields["x-extra"] = draw(json_like)
    text = json.dumps(fields, sort_keys=draw(st.booleans()), ensure_ascii=True)
    return text.encode()


@example(payload=json.dumps({**GOOD_FIELDS, "revision": 2**63}).encode(), signer=0)
@example(payload=json.dumps({**GOOD_FIELDS, "revision": 4}).encode(), signer=0)
@example(payload=json.dumps({**GOOD_FIELDS, "revision": 6}).encode(), signer=1)
@example(payload=json.dumps({**GOOD_FIELDS, "revision": 9}).encode(), signer=2)
@example(payload=b'{"revision": ' + b"9" * 5000 + b"}", signer=0)
@example(payload=b'{"revision": 6, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", signer=0)
@given(payload=payloads(), signer=st.integers(0, 2))
def test_a_signed_payload_with_hostile_content_is_refused_or_served(
    payload: bytes, signer: int
) -> None:
    key = (*TRUSTED, STRANGER)[signer]
    document = {
        "format": bundle_format.FORMAT,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [_sign(payload, key)],
    }
    data = json.dumps(document, indent=1).encode()
    check_verify(data)
    check_offer(data)


# --- the fixed corpus ---------------------------------------------------------------------------


def _document(payload: bytes, signatures: list[Any]) -> bytes:
    document = {
        "format": bundle_format.FORMAT,
        "payload": base64.b64encode(payload).decode(),
        "signatures": signatures,
    }
    return json.dumps(document, indent=1).encode()


def _signed(payload: bytes, key: Ed25519PrivateKey = TRUSTED[0]) -> bytes:
    return _document(payload, [_sign(payload, key)])


def _fields(**changes: Any) -> bytes:
    fields = {**GOOD_FIELDS, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not None}, sort_keys=True).encode()


_SURROGATE_DATA = json.loads(json.dumps(GOOD_FIELDS["data"]))
_SURROGATE_DATA["catalog"]["views"][0]["features"][0]["description"] = "\ud800"
_SURROGATE_SOURCE = POLICY.replace("version: 1", 'version: 1\ndescription: "\ud800"')
ID0, ID1, ID_STRANGER = KEY_IDS

REFUSED = {
    "unsigned": (_document(_GOOD_PAYLOAD, []), "signature", "the bundle is unsigned"),
    "signed by a stranger": (
        _signed(_GOOD_PAYLOAD, STRANGER),
        "signature",
        f"the bundle is signed by an untrusted key ({ID_STRANGER})",
    ),
    "a stranger's signature under a trusted key id": (
        _document(_GOOD_PAYLOAD, [_sign(_GOOD_PAYLOAD, STRANGER, ID0)]),
        "signature",
        f"the signature by key {ID0} does not verify",
    ),
    "a signature swapped to the other trusted key's id": (
        _document(_GOOD_PAYLOAD, [{**_GOOD_SIGNATURE, "keyid": ID1}]),
        "signature",
        f"the signature by key {ID1} does not verify",
    ),
    "the revision raised after signing": (
        _document(_fields(revision=6), [_GOOD_SIGNATURE]),
        "signature",
        f"the signature by key {ID0} does not verify",
    ),
    "10,000 untrusted signatures": (
        _document(
            _GOOD_PAYLOAD,
            [{"keyid": f"{i:016x}", "alg": "ed25519", "sig": ""} for i in range(10_000)],
        ),
        "signature",
        "the bundle is signed by an untrusted key (0000000000000000, 0000000000000001, "
        "0000000000000002, 0000000000000003, 0000000000000004 and 9995 more)",
    ),
    "a lower revision": (
        _signed(_fields(revision=4)),
        "rollback",
        "revision 4 is lower than the active revision 5",
    ),
    "revision 2**63": (
        _signed(_fields(revision=2**63)),
        "parse",
        "the bundle payload is corrupt: revision must be at most 9223372036854775807",
    ),
    "a 5000-digit revision": (
        _signed(b'{"revision": ' + b"9" * 5000 + b"}"),
        "parse",
        "the bundle payload is corrupt: Exceeds the limit (4300 digits) for integer string "
        "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the "
        "limit",
    ),
    "a negative revision": (
        _signed(_fields(revision=-1)),
        "parse",
        "the bundle payload is corrupt: revision must be a non-negative integer",
    ),
    "no digest": (
        _signed(_fields(digest=None)),
        "parse",
        "the bundle payload is corrupt: 'digest' is missing",
    ),
    "a digest of other content": (
        _signed(_fields(digest="sha256:" + "0" * 64)),
        "parse",
        "the bundle's digest does not match its content",
    ),
    "a lone surrogate in the policy source": (
        _signed(_fields(policy=_SURROGATE_SOURCE, data=None)),
        "parse",
        "the bundle payload is corrupt: it holds text that is not valid Unicode (a lone surrogate)",
    ),
    "a lone surrogate in the parsed copy": (
        _signed(_fields(data=_SURROGATE_DATA)),
        "parse",
        "the bundle payload is corrupt: it holds text that is not valid Unicode (a lone surrogate)",
    ),
    "a 100,000-level nested envelope": (
        b'{"format": "feature-sidecar-bundle/1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "parse",
        "the bundle is corrupt: maximum recursion depth exceeded while decoding a JSON array "
        "from a unicode string",
    ),
    "a 100,000-level nested payload": (
        _signed(b'{"revision": 6, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "parse",
        "the bundle payload is corrupt: maximum recursion depth exceeded while decoding a JSON "
        "array from a unicode string",
    ),
    "a 100-level nested parsed copy": (
        _signed(_fields(revision=6, data=json.loads("[" * 100 + "]" * 100))),
        "parse",
        "bundle r6: expected a mapping, got a list",
    ),
    "another format": (
        GOOD.replace(b"feature-sidecar-bundle/1", b"feature-sidecar-bundle/2"),
        "parse",
        "not a signed bundle (build one with `feature-sidecar bundle build`)",
    ),
    "cut in half": (
        GOOD[: len(GOOD) // 2],
        "parse",
        "the bundle is corrupt: Unterminated string starting at: line 3 column 13 (char 53)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_nasty_bundle_is_refused_with_its_reason_and_the_active_one_stays(case: str) -> None:
    data, reason, message = REFUSED[case]
    active, activator = active_activator()
    before = active.current
    with pytest.raises(BundleError) as error:
        activator.offer(data, "hostile")
    assert (error.value.reason, error.value.message) == (reason, message)
    assert active.current is before
    assert activator.status.active_revision == ACTIVE_REVISION


def test_reordered_envelope_keys_are_the_same_bundle() -> None:
    active, activator = active_activator()
    order = ("signatures", "format", "payload")
    reordered = json.dumps({k: GOOD_DOCUMENT[k] for k in order}).encode()
    assert activator.offer(reordered, "hostile") is False
    assert active.current is not None and active.current.revision == ACTIVE_REVISION


def test_a_format_named_after_4096_bytes_is_not_taken_for_a_bundle() -> None:
    """docs/bundle-format.md: a bundle names its format in its first 4096 bytes; here the
    payload (over 4 KiB) comes first."""
    active, activator = active_activator()
    reordered = json.dumps(dict(reversed(list(GOOD_DOCUMENT.items())))).encode()
    assert reordered.index(bundle_format.FORMAT.encode()) > 4096
    with pytest.raises(BundleError) as error:
        activator.offer(reordered, "hostile")
    assert error.value.reason == "parse"
    assert error.value.message == (
        "not a signed bundle (build one with `feature-sidecar bundle build`)"
    )
    assert active.current is not None and active.current.revision == ACTIVE_REVISION


def test_a_higher_revision_signed_by_the_rotated_key_is_activated() -> None:
    active, activator = active_activator()
    assert activator.offer(_signed(_fields(revision=6), TRUSTED[1]), "rotated") is True
    assert active.current is not None and active.current.revision == 6
    assert activator.status.active_key_id == ID1

"""Activation of policy bundles: verify, keep the last good one, swap atomically, persist.

A bundle is activated only when its signature verifies against a trusted key, its policy parses,
and its revision is not lower than the active one. Anything else is recorded in the status and
leaves the active bundle in place. The last good bundle is written to the state directory
(temp file, fsync, rename, mode 0600) and loaded, and verified again, at start.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .bundle_format import Bundle, BundleError, verify
from .memory import release_memory
from .policy import Policy, Rule
from .policy_yaml import PolicyError, parse_policy, parse_policy_data
from .snapshot import ActivePolicy, Snapshot

log = logging.getLogger("featuresidecar.bundle")

PERSISTED_NAME = "bundle.json"


@dataclass
class BundleStatus:
    source: str
    active_revision: int | None = None
    active_digest: str = ""
    active_source: str = ""
    active_key_id: str = ""
    signed: bool = False
    last_attempt: float | None = None
    last_download: float | None = None
    last_activation: float | None = None
    last_error: dict[str, Any] | None = None
    consecutive_failures: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "active": None
            if self.active_revision is None
            else {
                "revision": self.active_revision,
                "digest": self.active_digest,
                "from": self.active_source,
                "key_id": self.active_key_id,
                "signed": self.signed,
            },
            "last_attempt": _iso(self.last_attempt),
            "last_successful_download": _iso(self.last_download),
            "last_activation": _iso(self.last_activation),
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
        }


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


Listener = Callable[[str, Any], None]  # (event, detail): "activated", "failed", "attempt"


class Activator:
    def __init__(
        self,
        active: ActivePolicy,
        *,
        source: str,
        trusted: Mapping[str, Ed25519PublicKey],
        allow_unsigned: bool = False,
        state_dir: str | None = None,
        mask_secret: bytes = b"",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.active = active
        self.trusted = dict(trusted)
        self.allow_unsigned = allow_unsigned
        self.state_dir = state_dir
        self.mask_secret = mask_secret
        self.clock = clock
        self.status = BundleStatus(source=source)
        self.listeners: list[Listener] = []

    # Events from the downloader ---------------------------------------------------------------

    def attempt(self) -> None:
        self.status.last_attempt = self.clock()
        self._emit("attempt", self.status.last_attempt)

    def offer(self, data: bytes, origin: str) -> bool:
        """Activates `data` if it is acceptable; False when it was already active."""
        try:
            changed = self._activate(data, origin)
        except BundleError as exc:
            self.failed(exc.reason, exc.message)
            raise
        self.status.last_download = self.clock()
        self.status.consecutive_failures = 0
        self._emit("downloaded", self.status.last_download)
        return changed

    def failed(self, reason: str, message: str) -> None:
        status = self.status
        status.consecutive_failures += 1
        status.failures[reason] = status.failures.get(reason, 0) + 1
        status.last_error = {"time": _iso(self.clock()), "reason": reason, "message": message}
        log.warning(
            "bundle rejected or not fetched; the active bundle stays",
            extra={"reason": reason, "detail": message, "source": status.source},
        )
        self._emit("failed", reason)

    def not_modified(self) -> None:
        self.status.last_download = self.clock()
        self.status.consecutive_failures = 0
        self._emit("downloaded", self.status.last_download)

    # Start ------------------------------------------------------------------------------------

    def load_persisted(self) -> bool:
        """Activates the bundle saved by an earlier run, if there is one and it still verifies."""
        path = self._persisted_path()
        if path is None or not os.path.exists(path):
            return False
        try:
            with open(path, "rb") as handle:
                data = handle.read()
            self._activate(data, f"persisted:{path}", persist=False)
        except (OSError, BundleError) as exc:
            message = exc.message if isinstance(exc, BundleError) else str(exc)
            reason = exc.reason if isinstance(exc, BundleError) else "parse"
            self.failed(reason, f"persisted bundle {path} not used: {message}")
            return False
        return True

    # ------------------------------------------------------------------------------------------

    def _activate(self, data: bytes, origin: str, persist: bool = True) -> bool:
        bundle = verify(data, self.trusted, allow_unsigned=self.allow_unsigned)
        current = self.active.current
        if current is not None and bundle.revision < current.revision:
            raise BundleError(
                "rollback",
                f"revision {bundle.revision} is lower than the active revision {current.revision}",
            )
        if (
            current is not None
            and bundle.digest == current.digest
            and bundle.revision == current.revision
        ):
            return False
        try:
            policy = _parse(bundle, f"bundle r{bundle.revision}")
        except PolicyError as exc:
            raise BundleError("parse", str(exc)) from None
        hashing = _hash_mask(policy)
        if hashing is not None and not self.mask_secret:
            # Without a secret the key would follow from the bundle alone, which is distributed
            # widely: anyone holding it could hash candidate values and unmask them.
            raise BundleError(
                "mask_secret",
                f"rule {hashing.index + 1} masks features by hash, which needs a key of the "
                "sidecar's own: start it with --mask-key-file (or FEATURE_SIDECAR_MASK_KEY_FILE); "
                "the bundle must not carry the key",
            )
        snapshot = Snapshot(
            policy,
            revision=bundle.revision,
            digest=bundle.digest,
            source=origin,
            signed=bundle.signed,
            mask_secret=self.mask_secret,
        )
        if not bundle.signed:
            log.warning(
                "UNSIGNED POLICY ACTIVATED: --allow-unsigned is for development only; "
                "anyone who can change the source controls access",
                extra={"source": origin, "revision": bundle.revision},
            )
        if persist:
            self._persist(data)
        self.active.swap(snapshot)
        self._record(bundle, origin)
        release_memory()
        return True

    def _record(self, bundle: Bundle, origin: str) -> None:
        status = self.status
        status.active_revision = bundle.revision
        status.active_digest = bundle.digest
        status.active_source = origin
        status.active_key_id = bundle.key_id
        status.signed = bundle.signed
        status.last_activation = self.clock()
        log.info(
            "policy bundle activated",
            extra={"revision": bundle.revision, "digest": bundle.digest, "source": origin},
        )
        self._emit("activated", bundle)

    def _persisted_path(self) -> str | None:
        if not self.state_dir:
            return None
        return os.path.join(self.state_dir, PERSISTED_NAME)

    def _persist(self, data: bytes) -> None:
        path = self._persisted_path()
        if path is None:
            return
        try:
            write_atomic(path, data)
        except OSError as exc:
            # Serving goes on; only a restart without the bundle server would suffer.
            log.error(
                "could not persist the active bundle",
                extra={"path": path, "detail": exc.strerror},
            )

    def _emit(self, event: str, detail: Any) -> None:
        for listener in self.listeners:
            listener(event, detail)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".bundle-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _hash_mask(policy: Policy) -> Rule | None:
    """The first rule that masks by hash, if any."""
    return next((rule for rule in policy.rules if rule.mask == "hash"), None)


def _parse(bundle: Bundle, where: str) -> Policy:
    """From the bundle's parsed copy when it has one (fast and light); a rejection is then
    explained from the YAML source, whose errors name lines."""
    if bundle.policy_data is None:
        return parse_policy(bundle.policy_source, source=where)
    try:
        return parse_policy_data(bundle.policy_data, source=where)
    except PolicyError as data_error:
        parse_policy(bundle.policy_source, source=where)  # raises, with the line
        raise data_error from None

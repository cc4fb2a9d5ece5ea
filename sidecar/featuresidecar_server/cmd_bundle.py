"""`feature-sidecar bundle`: keygen, build, verify, test and explain policy bundles.

Bad input gets one line on stderr that starts with the file it is about, and exit status 1;
usage errors exit 2 (argparse). No command prints a traceback for input it was given.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import bundle_format
from .access import Access
from .activation import write_atomic
from .bundle_format import Bundle, BundleError
from .catalog import Catalog
from .explain import ExplainError, as_json, explain, explain_feature, render_text
from .policy import Policy
from .policy_tests import CaseResult, run_tests
from .policy_yaml import PolicyError, parse_policy

PRIVATE_NAME = "private.pem"
PUBLIC_NAME = "public.pem"
# Revisions travel as int64 on the wire (policy_revision).
MAX_REVISION = 2**63 - 1


class CommandError(Exception):
    """Bad input; the message is the whole line printed on stderr."""


Handler = Callable[[argparse.Namespace], int]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "bundle",
        help="write, test, explain, build, sign and verify policy bundles",
        description="Policy bundle tooling. docs/policy.md walks through all of it.",
    )

    def no_command(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=no_command)
    commands = parser.add_subparsers(title="bundle commands", metavar="COMMAND")

    keygen = commands.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing bundles",
        description=f"Write DIR/{PRIVATE_NAME} (mode 0600) and DIR/{PUBLIC_NAME}; "
        "print the key id.",
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="directory for the key pair")
    keygen.add_argument("--force", action="store_true", help="replace an existing key pair")
    keygen.set_defaults(handler=_guarded(_keygen))

    build = commands.add_parser(
        "build",
        help="validate a policy, run its tests, write a signed bundle",
        description="Validate POLICY, run its `tests` (a failing case fails the build), "
        "then write one signed bundle.",
    )
    build.add_argument("policy", metavar="POLICY.yaml")
    build.add_argument("--key", required=True, metavar="PRIVATE", help="Ed25519 private key (PEM)")
    build.add_argument(
        "--revision",
        required=True,
        type=_revision,
        metavar="N",
        help="revision number; sidecars refuse a revision lower than the active one",
    )
    build.add_argument("-o", "--out", required=True, metavar="FILE", help="bundle file to write")
    build.set_defaults(handler=_guarded(_build))

    verify = commands.add_parser(
        "verify",
        help="check a bundle's signature and content",
        description="Check FILE the way a sidecar does before activating it (signature, "
        "digest, policy); print revision, build time, digest and key id.",
    )
    verify.add_argument("file", metavar="FILE")
    verify.add_argument(
        "--public-key",
        action="append",
        required=True,
        metavar="PUB",
        help="trusted public key (PEM); repeat for rotation",
    )
    verify.set_defaults(handler=_guarded(_verify))

    test = commands.add_parser(
        "test",
        help="run a policy's test cases",
        description="Run the `tests` of a policy (or of the policy inside a bundle): one line "
        "per case, a summary, exit status 1 when a case fails.",
    )
    test.add_argument("policy", metavar="POLICY_OR_BUNDLE")
    test.add_argument(
        "--public-key", action="append", default=[], metavar="PUB", help="verify a bundle first"
    )
    test.set_defaults(handler=_guarded(_test))

    explain_parser = commands.add_parser(
        "explain",
        help="explain what a caller gets for a feature, and why",
        description="Print the decision (allow / deny / mask) for a caller and feature, with "
        "the roles and bindings, the allow/deny entries that matched, and the rules behind "
        "each serving setting.",
    )
    explain_parser.add_argument("policy", metavar="POLICY_OR_BUNDLE")
    explain_parser.add_argument("--principal", metavar="P", help="the caller's principal")
    explain_parser.add_argument(
        "--group", action="append", default=[], metavar="G", help="a group of the caller; repeat"
    )
    explain_parser.add_argument(
        "--feature",
        action="append",
        required=True,
        metavar="REF",
        help="view:feature, or a selector (service:NAME, tag:TAG, globs); repeat",
    )
    explain_parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="PUB",
        help="verify a bundle's signature with this key; repeat for rotation",
    )
    explain_parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run_explain(args: argparse.Namespace) -> int:
        if args.principal is None and not args.group:
            explain_parser.error("give --principal, --group, or both")
        return _guarded(_explain)(args)

    explain_parser.set_defaults(handler=run_explain)


def _guarded(command: Handler) -> Handler:
    """Turns every error about the input into one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (CommandError, PolicyError, ExplainError) as exc:
            message = str(exc)
        except BundleError as exc:
            message = exc.message
        except OSError as exc:
            # Reads and writes are wrapped where they happen; this is the last line of defence.
            where = f"{exc.filename}: " if exc.filename else ""
            message = f"{where}{exc.strerror or exc}"
        print(message.splitlines()[0] if message else "failed", file=sys.stderr)
        return 1

    return run


def _revision(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_REVISION:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and {MAX_REVISION}")
    return value


# --- reading input ------------------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def _text(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _policy_source(path: str) -> tuple[str, Policy]:
    """The policy text, verbatim (it goes into the bundle), and the parsed policy."""
    text = _text(path, _read(path, "policy"))
    return text, parse_policy(text, source=path)


def _public_keys(paths: Sequence[str]) -> dict[str, Ed25519PublicKey]:
    keys = []
    for path in paths:
        try:
            keys.append(bundle_format.load_public_key(_read(path, "public key"), path))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return bundle_format.trusted_keys(keys)


def _private_key(path: str) -> Ed25519PrivateKey:
    pem = _read(path, "private key")
    try:
        key = bundle_format.load_private_key(pem, path)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        print(
            f"warning: {path} is readable by others (mode {mode:04o}); run: chmod 600 {path}",
            file=sys.stderr,
        )
    return key


@dataclass(frozen=True)
class Loaded:
    path: str
    policy: Policy
    bundle: Bundle | None  # None for a policy source
    # For a bundle: "verified", "not checked" or "unsigned".
    signature: str = ""
    claimed_key_ids: tuple[str, ...] = ()


def _load(path: str, public_keys: Sequence[str]) -> Loaded:
    """A policy source or a bundle; a bundle is verified when public keys are given."""
    data = _read(path, "policy or bundle")
    trusted = _public_keys(public_keys)
    if not bundle_format.looks_like_bundle(data):
        return Loaded(path, parse_policy(_text(path, data), source=path), None)
    if trusted:
        bundle = _verified(path, data, trusted)
        claimed: tuple[str, ...] = ()
        signature = "verified"
    else:
        bundle, claimed = _unverified(path, data)
        signature = "not checked" if claimed else "unsigned"
    policy = parse_policy(bundle.policy_source, source=f"{path}(policy)")
    return Loaded(path, policy, bundle, signature, claimed)


def _verified(path: str, data: bytes, trusted: dict[str, Ed25519PublicKey]) -> Bundle:
    try:
        return bundle_format.verify(data, trusted)
    except BundleError as exc:
        hint = f" [trusted key ids: {', '.join(trusted)}]" if exc.reason == "signature" else ""
        raise CommandError(f"{path}: verification failed: {exc.message}{hint}") from None


def _unverified(path: str, data: bytes) -> tuple[Bundle, tuple[str, ...]]:
    """The bundle's content without its signatures checked, and the key ids they claim."""
    try:
        return bundle_format.read_unverified(data)
    except BundleError as exc:
        raise CommandError(f"{path}: {exc.message}") from None


def _write(path: str, data: bytes, mode: int, what: str) -> None:
    try:
        write_atomic(path, data, mode=mode)
    except OSError as exc:
        raise CommandError(f"{path}: cannot write the {what}: {exc.strerror}") from None


def _existing_revision(path: str) -> int | None:
    """The revision in the bundle at `path`, if there is a readable one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if not bundle_format.looks_like_bundle(data):
            return None
        return _unverified(path, data)[0].revision
    except (OSError, CommandError):
        return None


# --- keygen ---------------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    directory: str = args.out
    private_path = os.path.join(directory, PRIVATE_NAME)
    public_path = os.path.join(directory, PUBLIC_NAME)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise CommandError(f"{directory}: exists and is not a directory")
    if not args.force:
        for path in (private_path, public_path):
            if os.path.lexists(path):
                raise CommandError(
                    f"{path}: already exists; not overwritten (--force replaces the key pair, "
                    "and bundles signed with the old key then verify only with the old public key)"
                )
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o700)
            # makedirs' mode is filtered by the umask; the key directory must be 0700 exactly.
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise CommandError(
                f"{directory}: cannot create the directory: {exc.strerror}"
            ) from None
    private = Ed25519PrivateKey.generate()
    _write(private_path, bundle_format.private_key_pem(private), 0o600, "private key")
    _write(public_path, bundle_format.public_key_pem(private.public_key()), 0o644, "public key")
    print(f"key id:      {bundle_format.key_id(private.public_key())}")
    print(
        f"private key: {private_path} (mode 0600: keep it secret; sign with `bundle build --key`)"
    )
    print(f"public key:  {public_path} (give it to sidecars: `serve --bundle-public-key`)")
    return 0


# --- build ----------------------------------------------------------------------------------------


def _build(args: argparse.Namespace) -> int:
    policy_path: str = args.policy
    out: str = args.out
    source, policy = _policy_source(policy_path)
    if os.path.exists(out) and os.path.samefile(out, policy_path):
        raise CommandError(f"{out}: is the policy source itself; write the bundle elsewhere")
    access = Access(policy, Catalog(policy))
    report = run_tests(policy, access)
    if not report.passed:
        for result in report.failures:
            print(result.description, file=sys.stderr)
        raise CommandError(
            f"{policy_path}: {len(report.failures)} of {len(report.results)} policy tests failed; "
            "no bundle written (`feature-sidecar bundle test` shows why)"
        )
    private = _private_key(args.key)
    data = bundle_format.build(source, args.revision, private)
    # Read back what we are about to publish, exactly as a sidecar will.
    bundle = bundle_format.verify(data, bundle_format.trusted_keys([private.public_key()]))
    previous = _existing_revision(out)
    if previous is not None and previous > args.revision:
        print(
            f"warning: {out} held revision {previous}; sidecars that activated it will refuse "
            f"revision {args.revision} as a rollback",
            file=sys.stderr,
        )
    # A bundle is public (it is served over HTTP); only the key is secret.
    _write(out, data, 0o644, "bundle")
    print(f"tests:    {report.summary}")
    print(f"wrote:    {out}")
    _print_fields(bundle)
    return 0


def _print_fields(bundle: Bundle) -> None:
    print(f"revision: {bundle.revision}")
    print(f"built at: {bundle.built_at}")
    print(f"digest:   {bundle.digest}")
    print(f"key id:   {bundle.key_id}")


# --- verify ---------------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    trusted = _public_keys(args.public_key)
    data = _read(args.file, "bundle")
    bundle = _verified(args.file, data, trusted)
    # A sidecar parses the policy before activating it; so does verify.
    policy = parse_policy(bundle.policy_source, source=f"{args.file}(policy)")
    features = sum(len(v.features) for v in policy.catalog.views)
    print(f"OK: {args.file} verifies; a sidecar trusting key {bundle.key_id} can activate it")
    _print_fields(bundle)
    print(
        f"policy:   project {policy.project}, {features} features, {len(policy.roles)} roles, "
        f"{len(policy.tests)} tests"
    )
    return 0


# --- test -----------------------------------------------------------------------------------------


def _test(args: argparse.Namespace) -> int:
    loaded = _load(args.policy, args.public_key)
    policy = loaded.policy
    access = Access(policy, Catalog(policy))
    report = run_tests(policy, access)
    if not report.results:
        print(f"{loaded.path}: no test cases; add a `tests:` list (see docs/policy.md)")
        return 0
    for result in report.results:
        print(f"{'PASS' if result.passed else 'FAIL'} {result.description}")
        if not result.passed:
            print(f"     why: {_why(policy, access, result)}")
            print(f"     explain: {_explain_command(loaded.path, result)}")
    print(f"{report.summary} ({loaded.path})")
    return 0 if report.passed else 1


def _why(policy: Policy, access: Access, result: CaseResult) -> str:
    feature = explain_feature(policy, access, result.roles, result.case.feature)
    if feature.verdict == "deny":
        return feature.reason
    allowed = ", ".join(f"{m.role} ({m.selector!r})" for m in feature.allowed_by)
    return f"allowed by {allowed}; {feature.reason}"


def _explain_command(path: str, result: CaseResult) -> str:
    case = result.case
    words = ["feature-sidecar", "bundle", "explain", path]
    if case.principal is not None:
        words += ["--principal", case.principal]
    for group in case.groups:
        words += ["--group", group]
    words += ["--feature", case.feature]
    return shlex.join(words)


# --- explain --------------------------------------------------------------------------------------


def _explain(args: argparse.Namespace) -> int:
    loaded = _load(args.policy, args.public_key)
    try:
        explanation = explain(loaded.policy, args.principal, args.group, args.feature)
    except ExplainError as exc:
        raise CommandError(f"{loaded.path}: {exc}") from None
    if args.json:
        document = {"input": _input_json(loaded), **as_json(explanation)}
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    for line in _input_lines(loaded, bool(args.public_key)):
        print(line)
    sys.stdout.write(render_text(explanation))
    return 0


def _input_lines(loaded: Loaded, keys_given: bool) -> list[str]:
    bundle = loaded.bundle
    if bundle is None:
        note = "; --public-key ignored, nothing to verify" if keys_given else ""
        return [f"policy: {loaded.path} (policy source, not a signed bundle{note})"]
    lines = [
        f"policy: {loaded.path} (bundle revision {bundle.revision}, built {bundle.built_at}, "
        f"{bundle.digest})"
    ]
    if loaded.signature == "verified":
        lines.append(f"signature: verified with key id {bundle.key_id}")
    elif loaded.signature == "unsigned":
        lines.append(
            "signature: none (unsigned bundle; sidecars accept it only with --allow-unsigned)"
        )
    else:
        lines.append(
            f"signature not checked (signed by key id {', '.join(loaded.claimed_key_ids)}; "
            "give --public-key to check it)"
        )
    return lines


def _input_json(loaded: Loaded) -> dict[str, Any]:
    bundle = loaded.bundle
    if bundle is None:
        return {"path": loaded.path, "kind": "policy"}
    return {
        "path": loaded.path,
        "kind": "bundle",
        "revision": bundle.revision,
        "built_at": bundle.built_at,
        "digest": bundle.digest,
        "signature": loaded.signature,
        "key_ids": [bundle.key_id] if bundle.key_id else list(loaded.claimed_key_ids),
    }

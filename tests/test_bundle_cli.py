"""`feature-sidecar bundle keygen|build|verify|test|explain`: exact output, exit codes, files.

Most tests call the CLI entry point in-process (fast); a few run it as a real process to pin exit
statuses and the absence of tracebacks; one activates a built bundle in a real sidecar.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import EXAMPLE_POLICY, TokenIssuer, bearer, put_entity, request, statuses, stub

from featuresidecar.v1 import feature_service_pb2 as pb
from featuresidecar_server import bundle_format, cli
from featuresidecar_server.activation import Activator
from featuresidecar_server.bundle_format import BundleError
from featuresidecar_server.explain import explain
from featuresidecar_server.policy_yaml import load_policy_file
from featuresidecar_server.snapshot import ActivePolicy

RANKER = "spiffe://cluster.local/ns/ml/sa/ranker"
EXAMPLE_TEXT = EXAMPLE_POLICY.read_text()


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run(*argv: str | Path) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


@dataclass
class Keys:
    directory: Path
    private: Path
    public: Path
    key_id: str


def keygen(directory: Path) -> Keys:
    ran = run("bundle", "keygen", "--out", directory)
    assert ran.code == 0, ran.err
    public = directory / "public.pem"
    key_id = bundle_format.key_id(bundle_format.load_public_key(public.read_bytes()))
    return Keys(directory, directory / "private.pem", public, key_id)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return keygen(tmp_path / "keys")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE_TEXT)
    return path


def build(policy: Path, keys: Keys, revision: int, out: Path) -> Ran:
    return run(
        "bundle", "build", policy, "--key", keys.private, "--revision", str(revision), "-o", out
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- keygen ---------------------------------------------------------------------------------------


def test_keygen_writes_an_ed25519_pair_with_a_private_key_only_the_owner_reads(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "new" / "keys"
    ran = run("bundle", "keygen", "--out", directory)
    assert ran.code == 0 and ran.err == ""
    private = bundle_format.load_private_key((directory / "private.pem").read_bytes())
    public = bundle_format.load_public_key((directory / "public.pem").read_bytes())
    key_id = bundle_format.key_id(public)
    assert bundle_format.key_id(private.public_key()) == key_id
    assert ran.out == (
        f"key id:      {key_id}\n"
        f"private key: {directory}/private.pem (mode 0600: keep it secret; sign with "
        "`bundle build --key`)\n"
        f"public key:  {directory}/public.pem (give it to sidecars: `serve --bundle-public-key`)\n"
    )
    assert (mode(directory), mode(directory / "private.pem"), mode(directory / "public.pem")) == (
        0o700,
        0o600,
        0o644,
    )
    assert sorted(os.listdir(directory)) == ["private.pem", "public.pem"]


def test_keygen_refuses_to_overwrite_a_key_pair_without_force(keys: Keys) -> None:
    before = keys.private.read_bytes(), keys.public.read_bytes()
    ran = run("bundle", "keygen", "--out", keys.directory)
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"{keys.private}: already exists; not overwritten (--force replaces the key pair, and "
        "bundles signed with the old key then verify only with the old public key)\n"
    )
    assert (keys.private.read_bytes(), keys.public.read_bytes()) == before
    forced = run("bundle", "keygen", "--out", keys.directory, "--force")
    assert forced.code == 0
    assert keys.private.read_bytes() != before[0]
    new_id = bundle_format.key_id(bundle_format.load_public_key(keys.public.read_bytes()))
    assert new_id != keys.key_id and forced.out.startswith(f"key id:      {new_id}\n")
    assert mode(keys.private) == 0o600


def test_keygen_refuses_when_only_the_public_key_exists(tmp_path: Path) -> None:
    (tmp_path / "public.pem").write_text("kept")
    ran = run("bundle", "keygen", "--out", tmp_path)
    assert ran.code == 1 and ran.err.startswith(f"{tmp_path}/public.pem: already exists;")
    assert (tmp_path / "public.pem").read_text() == "kept"
    assert not (tmp_path / "private.pem").exists()


def test_keygen_into_a_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    ran = run("bundle", "keygen", "--out", tmp_path / "f")
    assert (ran.code, ran.err) == (1, f"{tmp_path}/f: exists and is not a directory\n")


def test_keygen_needs_out() -> None:
    ran = run("bundle", "keygen")
    assert ran.code == 2
    assert "the following arguments are required: --out" in ran.err


# --- build ----------------------------------------------------------------------------------------


def test_the_example_policy_builds_into_a_bundle_a_sidecar_would_accept(
    tmp_path: Path, keys: Keys, policy_file: Path
) -> None:
    out = tmp_path / "dist" / "bundle.json"
    before = datetime.now(UTC).replace(microsecond=0)
    ran = build(policy_file, keys, 7, out)
    after = datetime.now(UTC)
    assert (ran.code, ran.err) == (0, "")
    bundle = bundle_format.verify(
        out.read_bytes(), {keys.key_id: bundle_format.load_public_key(keys.public.read_bytes())}
    )
    assert (bundle.revision, bundle.key_id, bundle.signed) == (7, keys.key_id, True)
    assert bundle.policy_source == EXAMPLE_TEXT
    assert bundle.digest == bundle_format.content_digest(EXAMPLE_TEXT)
    built_at = datetime.strptime(bundle.built_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= built_at <= after
    assert ran.out == (
        "tests:    4 passed, 0 failed\n"
        f"wrote:    {out}\n"
        "revision: 7\n"
        f"built at: {bundle.built_at}\n"
        f"digest:   {bundle.digest}\n"
        f"key id:   {keys.key_id}\n"
    )
    document = json.loads(out.read_bytes())
    assert [s["keyid"] for s in document["signatures"]] == [keys.key_id]
    payload = json.loads(base64.b64decode(document["payload"]))
    assert sorted(payload) == ["built_at", "data", "digest", "policy", "revision"]
    # The parsed copy that sidecars activate from is exactly the source's data.
    assert payload["data"] == yaml.safe_load(payload["policy"])
    # Written atomically: no temp file is left beside it; public, since it is served over HTTP.
    assert os.listdir(out.parent) == ["bundle.json"]
    assert mode(out) == 0o644


def test_a_failing_policy_test_fails_the_build_and_names_the_case(
    tmp_path: Path, keys: Keys
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE_TEXT.replace("expect: mask", "expect: allow"))
    out = tmp_path / "bundle.json"
    out.write_text("previous bundle")
    ran = build(policy, keys, 8, out)
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        "tests[3]: principal 'support-console' reading user_profile:email: "
        "expected allow, got mask\n"
        f"{policy}: 1 of 4 policy tests failed; no bundle written "
        "(`feature-sidecar bundle test` shows why)\n"
    )
    assert out.read_text() == "previous bundle"


def test_an_invalid_policy_fails_the_build_with_file_line_and_key(
    tmp_path: Path, keys: Keys
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE_TEXT.replace("type: double,", "type: doubel,"))
    line = EXAMPLE_TEXT.split("type: double,")[0].count("\n") + 1
    ran = build(policy, keys, 1, tmp_path / "bundle.json")
    assert (ran.code, ran.out) == (1, "")
    assert ran.err.startswith(
        f"{policy}:{line}: catalog.views[1].features[0].type: unknown type 'doubel' (known: "
    )
    assert ran.err.count("\n") == 1
    assert not (tmp_path / "bundle.json").exists()


@pytest.mark.parametrize(
    ("key_text", "message"),
    [
        (None, "{key}: cannot read the private key: No such file or directory"),
        ("PUBLIC", "{key}: not an unencrypted PEM private key ("),
        ("not a key", "{key}: not an unencrypted PEM private key ("),
    ],
)
def test_a_bad_signing_key_is_one_line_and_no_bundle(
    tmp_path: Path, keys: Keys, policy_file: Path, key_text: str | None, message: str
) -> None:
    key = tmp_path / "k.pem"
    if key_text is not None:
        key.write_bytes(keys.public.read_bytes() if key_text == "PUBLIC" else key_text.encode())
    out = tmp_path / "bundle.json"
    ran = run("bundle", "build", policy_file, "--key", key, "--revision", "1", "-o", out)
    assert ran.code == 1
    assert ran.err.startswith(message.format(key=key)) and ran.err.count("\n") == 1
    assert not out.exists()


def test_a_signing_key_others_can_read_gives_a_warning(
    tmp_path: Path, keys: Keys, policy_file: Path
) -> None:
    keys.private.chmod(0o644)
    ran = build(policy_file, keys, 1, tmp_path / "bundle.json")
    assert ran.code == 0
    assert ran.err == (
        f"warning: {keys.private} is readable by others (mode 0644); "
        f"run: chmod 600 {keys.private}\n"
    )


def test_building_a_lower_revision_over_a_bundle_warns_about_rollback(
    tmp_path: Path, keys: Keys, policy_file: Path
) -> None:
    out = tmp_path / "bundle.json"
    assert build(policy_file, keys, 5, out).code == 0
    ran = build(policy_file, keys, 4, out)
    assert ran.code == 0
    assert ran.err == (
        f"warning: {out} held revision 5; sidecars that activated it will refuse revision 4 "
        "as a rollback\n"
    )
    assert build(policy_file, keys, 5, out).err == ""


def test_build_will_not_overwrite_its_own_policy_source(keys: Keys, policy_file: Path) -> None:
    ran = build(policy_file, keys, 1, policy_file)
    assert (ran.code, ran.err) == (
        1,
        f"{policy_file}: is the policy source itself; write the bundle elsewhere\n",
    )
    assert policy_file.read_text() == EXAMPLE_TEXT


def test_an_unwritable_output_is_one_line(tmp_path: Path, keys: Keys, policy_file: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    ran = build(policy_file, keys, 1, blocker / "bundle.json")
    assert ran.code == 1
    assert ran.err.startswith(f"{blocker}/bundle.json: cannot write the bundle: ")
    assert ran.err.count("\n") == 1


@pytest.mark.parametrize(
    ("revision", "problem"),
    [
        ("abc", "argument --revision: 'abc' is not a whole number"),
        ("-1", "argument --revision: '-1' must be between 0 and 9223372036854775807"),
        ("9223372036854775808", "must be between 0 and 9223372036854775807"),
    ],
)
def test_a_bad_revision_is_a_usage_error(
    tmp_path: Path, keys: Keys, policy_file: Path, revision: str, problem: str
) -> None:
    ran = run(
        "bundle", "build", policy_file, "--key", keys.private, "--revision", revision,
        "-o", tmp_path / "b.json",
    )  # fmt: skip
    assert ran.code == 2 and problem in ran.err


def test_build_requires_key_revision_and_output(policy_file: Path) -> None:
    ran = run("bundle", "build", policy_file)
    assert ran.code == 2
    assert "the following arguments are required: --key, --revision, -o/--out" in ran.err


# --- verify ---------------------------------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path, keys: Keys, policy_file: Path) -> Path:
    out = tmp_path / "bundle.json"
    assert build(policy_file, keys, 3, out).code == 0
    return out


def test_verify_prints_revision_build_time_digest_and_key_id(built: Path, keys: Keys) -> None:
    ran = run("bundle", "verify", built, "--public-key", keys.public)
    bundle = bundle_format.verify(
        built.read_bytes(), {keys.key_id: bundle_format.load_public_key(keys.public.read_bytes())}
    )
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == (
        f"OK: {built} verifies; a sidecar trusting key {keys.key_id} can activate it\n"
        "revision: 3\n"
        f"built at: {bundle.built_at}\n"
        f"digest:   {bundle_format.content_digest(EXAMPLE_TEXT)}\n"
        f"key id:   {keys.key_id}\n"
        "policy:   project demo, 8 features, 3 roles, 4 tests\n"
    )


def test_verify_accepts_any_of_several_keys_for_rotation(
    tmp_path: Path, built: Path, keys: Keys
) -> None:
    new = keygen(tmp_path / "new-keys")
    for order in ((new.public, keys.public), (keys.public, new.public)):
        ran = run("bundle", "verify", built, "--public-key", order[0], "--public-key", order[1])
        assert ran.code == 0 and f"key id:   {keys.key_id}\n" in ran.out
    ran = run("bundle", "verify", built, "--public-key", new.public)
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"{built}: verification failed: the bundle is signed by an untrusted key "
        f"({keys.key_id}) [trusted key ids: {new.key_id}]\n"
    )


def _resigned(data: bytes, change: Any) -> bytes:
    document = json.loads(data)
    payload = json.loads(base64.b64decode(document["payload"]))
    change(payload)
    document["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(document).encode()


def test_verify_rejects_a_tampered_bundle_in_one_line(
    tmp_path: Path, built: Path, keys: Keys
) -> None:
    def bump(payload: dict[str, Any]) -> None:
        payload["revision"] = 99

    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(_resigned(built.read_bytes(), bump))
    ran = run("bundle", "verify", tampered, "--public-key", keys.public)
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"{tampered}: verification failed: the signature by key {keys.key_id} does not verify "
        f"[trusted key ids: {keys.key_id}]\n"
    )


def test_verify_checks_the_digest_and_the_policy_inside(tmp_path: Path, keys: Keys) -> None:
    private = bundle_format.load_private_key(keys.private.read_bytes())
    broken_policy = EXAMPLE_TEXT.replace(
        'type: int64, description: "Age', 'type: int65, description: "Age'
    )
    line = EXAMPLE_TEXT.split('type: int64, description: "Age')[0].count("\n") + 1
    bad = tmp_path / "bad-policy.json"
    bad.write_bytes(bundle_format.build(broken_policy, 4, private))
    ran = run("bundle", "verify", bad, "--public-key", keys.public)
    assert ran.code == 1 and ran.out == ""
    assert ran.err.startswith(
        f"{bad}(policy):{line}: catalog.views[0].features[0].type: unknown type 'int65'"
    )
    # A correctly signed payload whose digest does not match its policy.
    payload = json.dumps(
        {"revision": 4, "built_at": "", "digest": "sha256:00", "policy": EXAMPLE_TEXT}
    ).encode()
    document = {
        "format": bundle_format.FORMAT,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {
                "keyid": keys.key_id,
                "alg": "ed25519",
                "sig": base64.b64encode(private.sign(payload)).decode(),
            }
        ],
    }
    mismatched = tmp_path / "mismatched.json"
    mismatched.write_text(json.dumps(document))
    ran = run("bundle", "verify", mismatched, "--public-key", keys.public)
    assert (ran.code, ran.err) == (
        1,
        f"{mismatched}: verification failed: the bundle's digest does not match its content\n",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "{f}: cannot read the bundle: No such file or directory"),
        (b"version: 1\n", "{f}: verification failed: not a signed bundle (build one with "
         "`feature-sidecar bundle build`)"),
        (b'{"format": "feature-sidecar-bundle/1", "payload": "!!", "signatures": []}',
         "{f}: verification failed: the bundle is corrupt: Only base64 data is allowed"),
        (b'{"format": "feature-sidecar-bundle/1", "payload": "e30=", "signatures": []}',
         "{f}: verification failed: the bundle is unsigned [trusted key ids: {k}]"),
        (b'{"format": "feature-sidecar-bundle/1", "pay',
         "{f}: verification failed: the bundle is corrupt: Unterminated string starting at: "
         "line 1 column 40 (char 39)"),
    ],
)  # fmt: skip
def test_verify_failures_are_one_line_and_exit_1(
    tmp_path: Path, keys: Keys, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bundle.json"
    if content is not None:
        path.write_bytes(content)
    ran = run("bundle", "verify", path, "--public-key", keys.public)
    assert (ran.code, ran.out, ran.err) == (1, "", message.format(f=path, k=keys.key_id) + "\n")


def test_verify_with_a_bad_public_key_file(tmp_path: Path, built: Path, keys: Keys) -> None:
    ran = run("bundle", "verify", built, "--public-key", keys.private)
    assert ran.code == 1 and ran.err.startswith(f"{keys.private}: not a PEM public key (")
    ran = run("bundle", "verify", built, "--public-key", tmp_path / "missing.pem")
    assert (
        ran.err
        == f"{tmp_path}/missing.pem: cannot read the public key: No such file or directory\n"
    )


def test_verify_needs_a_public_key(built: Path) -> None:
    ran = run("bundle", "verify", built)
    assert ran.code == 2 and "the following arguments are required: --public-key" in ran.err


# --- test -----------------------------------------------------------------------------------------


def test_test_prints_one_line_per_case_and_a_summary(policy_file: Path) -> None:
    ran = run("bundle", "test", policy_file)
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == (
        f"PASS tests[0]: principal '{RANKER}' reading user_profile:age: expected allow, got allow\n"
        f"PASS tests[1]: principal '{RANKER}' reading user_profile:email: expected deny, got deny\n"
        "PASS tests[2]: group 'data-science' reading user_profile:email: expected deny, got deny\n"
        "PASS tests[3]: principal 'support-console' reading user_profile:email: expected mask, "
        "got mask\n"
        f"4 passed, 0 failed ({policy_file})\n"
    )


def test_test_exits_1_and_says_why_a_case_failed(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    case = 'group: "data-science"\n    feature: "user_profile:email"\n    expect: '
    assert case + "deny" in EXAMPLE_TEXT
    policy.write_text(EXAMPLE_TEXT.replace(case + "deny", case + "allow"))
    ran = run("bundle", "test", policy)
    assert ran.code == 1
    lines = ran.out.splitlines()
    assert lines[2:5] == [
        "FAIL tests[2]: group 'data-science' reading user_profile:email: expected allow, got deny",
        "     why: role analyst denies it with 'tag:pii', and deny wins over allow",
        f"     explain: feature-sidecar bundle explain {policy} --group data-science "
        "--feature user_profile:email",
    ]
    assert lines[-1] == f"3 passed, 1 failed ({policy})"


def test_test_on_a_policy_without_cases(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(EXAMPLE_TEXT.split("\ntests:")[0] + "\n")
    ran = run("bundle", "test", policy)
    assert (ran.code, ran.out) == (
        0,
        f"{policy}: no test cases; add a `tests:` list (see docs/policy.md)\n",
    )


def test_test_runs_the_cases_inside_a_bundle(built: Path, keys: Keys) -> None:
    ran = run("bundle", "test", built, "--public-key", keys.public)
    assert ran.code == 0 and ran.out.endswith(f"4 passed, 0 failed ({built})\n")


def test_test_of_a_broken_policy_names_file_line_and_key(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(EXAMPLE_TEXT.replace("mask: hash", "mask: blur"))
    line = EXAMPLE_TEXT.split("mask: hash")[0].count("\n") + 1
    ran = run("bundle", "test", policy)
    assert (ran.code, ran.out, ran.err) == (
        1,
        "",
        f"{policy}:{line}: rules[0].mask: unknown mask 'blur' (expected 'hash' or 'redact')\n",
    )


# --- explain --------------------------------------------------------------------------------------


def test_explain_a_masked_feature_from_a_policy_source(policy_file: Path) -> None:
    ran = run(
        "bundle", "explain", policy_file, "--principal", "support-console",
        "--feature", "user_profile:email",
    )  # fmt: skip
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == (
        f"policy: {policy_file} (policy source, not a signed bundle)\n"
        "caller: principal 'support-console'\n"
        "roles:\n"
        "  support-tool  from bindings[1] (principal 'support-console')\n"
        "limits:\n"
        "  max_entities 1000  from limits[0]\n"
        "\n"
        "user_profile:email: MASK\n"
        "  why:        readable, served masked (hash) by rules[0]\n"
        "  allowed by: support-tool ('user_profile:*')\n"
        "  denied by:  none\n"
        "  mask:       hash, set by rules[0] (features: tag:pii; roles: support-tool)\n"
        "  max_age:    7d, from view user_profile (no rule sets it)\n"
        "  default:    none (no rule sets it)\n"
    )


def test_explain_a_bundle_says_whether_its_signature_was_checked(built: Path, keys: Keys) -> None:
    args = ["bundle", "explain", built, "--group", "data-science", "--feature", "user_stats:ctr_7d"]
    digest = bundle_format.content_digest(EXAMPLE_TEXT)
    unchecked = run(*args)
    assert unchecked.code == 0
    first, second, *rest = unchecked.out.splitlines()
    assert first.startswith(f"policy: {built} (bundle revision 3, built ")
    assert first.endswith(f", {digest})")
    assert second == (
        f"signature not checked (signed by key id {keys.key_id}; give --public-key to check it)"
    )
    assert rest[-3:] == [
        "  mask:       none (no rule sets it)",
        "  max_age:    6h, set by rules[1] (features: user_stats:*; roles: any role)",
        "  default:    0.0, set by rules[1] (features: user_stats:*; roles: any role)",
    ]
    checked = run(*args, "--public-key", keys.public)
    assert checked.out.splitlines()[1] == f"signature: verified with key id {keys.key_id}"
    assert checked.out.splitlines()[2:] == rest


def test_explain_a_policy_source_with_a_public_key_says_there_is_nothing_to_verify(
    policy_file: Path, keys: Keys
) -> None:
    ran = run(
        "bundle", "explain", policy_file, "--principal", RANKER, "--feature", "user_profile:age",
        "--public-key", keys.public,
    )  # fmt: skip
    assert ran.code == 0
    assert ran.out.splitlines()[0] == (
        f"policy: {policy_file} (policy source, not a signed bundle; --public-key ignored, "
        "nothing to verify)"
    )


def test_explain_refuses_a_bundle_that_does_not_verify(tmp_path: Path, built: Path) -> None:
    other = keygen(tmp_path / "other")
    ran = run(
        "bundle", "explain", built, "--principal", RANKER, "--feature", "user_profile:age",
        "--public-key", other.public,
    )  # fmt: skip
    assert (ran.code, ran.out) == (1, "")
    assert ran.err.startswith(f"{built}: verification failed: the bundle is signed by an untrusted")


def test_explain_json_is_the_machine_readable_form(built: Path, keys: Keys) -> None:
    ran = run(
        "bundle", "explain", built, "--principal", "nobody", "--group", "data-science",
        "--feature", "user_profile:email", "--public-key", keys.public, "--json",
    )  # fmt: skip
    assert ran.code == 0
    document = json.loads(ran.out)
    assert document["input"] == {
        "path": str(built),
        "kind": "bundle",
        "revision": 3,
        "built_at": document["input"]["built_at"],
        "digest": bundle_format.content_digest(EXAMPLE_TEXT),
        "signature": "verified",
        "key_ids": [keys.key_id],
    }
    assert document["caller"] == {"principal": "nobody", "groups": ["data-science"]}
    assert [f["decision"] for f in document["features"]] == ["deny"]
    assert document["features"][0]["denied_by"] == [{"role": "analyst", "selector": "tag:pii"}]


def test_explain_an_unknown_caller_is_denied_by_default(policy_file: Path) -> None:
    ran = run(
        "bundle", "explain", policy_file, "--principal", "mallory", "--feature", "user_profile:age"
    )
    assert ran.code == 0
    assert ran.out.splitlines()[1:] == [
        "caller: principal 'mallory'",
        "roles: none (no binding names this principal or any of its groups)",
        "limits:",
        "  max_entities 1000  from limits[0]",
        "",
        "user_profile:age: DENY",
        "  why:        no binding gives this caller a role, so nothing is allowed "
        "(deny by default)",
        "  allowed by: none",
        "  denied by:  none",
    ]


def test_explain_an_unknown_feature_is_one_line(policy_file: Path) -> None:
    ran = run(
        "bundle", "explain", policy_file, "--principal", RANKER, "--feature", "user_stats:ctr"
    )
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"{policy_file}: --feature 'user_stats:ctr': no feature of view 'user_stats' matches "
        "(its features: ctr_7d, orders_30d, is_premium)\n"
    )


def test_explain_needs_a_caller_and_a_feature(policy_file: Path) -> None:
    ran = run("bundle", "explain", policy_file, "--feature", "user_profile:age")
    assert ran.code == 2 and "give --principal, --group, or both" in ran.err
    ran = run("bundle", "explain", policy_file, "--principal", RANKER)
    assert ran.code == 2 and "the following arguments are required: --feature" in ran.err


def test_bundle_without_a_command_prints_help_and_exits_2() -> None:
    ran = run("bundle")
    assert ran.code == 2 and "keygen" in ran.err and "explain" in ran.err


# --- as a real process ----------------------------------------------------------------------------


def _process(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "featuresidecar_server.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_real_command_exits_1_with_one_line_and_2_on_usage(tmp_path: Path, keys: Keys) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nproject: demo\ncatalog: [\n")
    bad = _process(
        "bundle", "build", policy, "--key", keys.private, "--revision", "1", "-o", tmp_path / "b"
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith(f"{policy}:") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b'{"format": "feature-sidecar-bundle/1", "payload": 7}')
    rejected = _process("bundle", "verify", garbage, "--public-key", keys.public)
    assert (rejected.returncode, rejected.stderr.count("\n")) == (1, 1)
    assert "Traceback" not in rejected.stderr
    usage = _process("bundle", "build", policy)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


# --- a built bundle in a real sidecar -------------------------------------------------------------


def test_a_sidecar_activates_the_built_bundle_and_serves_what_explain_says(
    tmp_path: Path, keys: Keys, policy_file: Path, redis_server: Any, sidecar_factory: Any
) -> None:
    out = tmp_path / "bundle.json"
    assert build(policy_file, keys, 12, out).code == 0
    now = time.time_ns()
    hour = 3600 * 10**9
    put_entity(
        redis_server.url, policy_file, "user_profile", {"user_id": 1},
        {"age": 41, "country": "DE", "email": "a@example.com", "embedding": [0.5] * 32},
        now - hour,
    )  # fmt: skip
    put_entity(
        redis_server.url, policy_file, "user_stats", {"user_id": 1},
        {"ctr_7d": 0.25, "orders_30d": 3, "is_premium": True}, now - hour,
    )  # fmt: skip
    issuer = TokenIssuer(tmp_path)
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(out),
        bundle_public_key=[str(keys.public)],
        allow_unsigned=False,
        **issuer.settings(),
    )
    assert sidecar.sidecar.activator.status.active_key_id == keys.key_id
    _, client = stub(sidecar.address)
    policy = load_policy_file(str(policy_file))
    refs = [f.ref for v in policy.catalog.views if v.name != "user_item" for f in v.features]
    served_status = {"allow": "PRESENT", "mask": "MASKED", "deny": "DENIED"}
    callers = [(RANKER, ()), ("support-console", ()), ("someone", ("data-science",))]
    for principal, groups in callers:
        expected = {f.ref: f.verdict for f in explain(policy, principal, groups, refs).features}
        response = client.GetFeatures(
            request(refs, {"user_id": [1]}, allow_partial=True),
            metadata=bearer(issuer.token(principal, groups)),
            timeout=10,
        )
        assert response.policy_revision == 12
        got = {
            name: statuses(column)[0]
            for name, column in zip(response.feature_names, response.columns, strict=True)
        }
        assert got == {ref: served_status[verdict] for ref, verdict in expected.items()}, principal
    # The support console sees the e-mail only as a keyed hash, as explain said.
    response = client.GetFeatures(
        request(["user_profile:email"], {"user_id": [1]}),
        metadata=bearer(issuer.token("support-console")),
        timeout=10,
    )
    assert response.columns[0].mask == pb.MASK_HASH


# --- hostile nesting ------------------------------------------------------------------------------

DEEP = 100_000


def test_deeply_nested_input_is_rejected_in_one_line_not_a_crash(
    tmp_path: Path, keys: Keys
) -> None:
    policy = tmp_path / "deep.yaml"
    policy.write_text("version: 1\nproject: p\ncatalog: " + "[" * DEEP + "]" * DEEP + "\n")
    ran = run("bundle", "test", policy)
    # libyaml stops at its nesting limit (line 3); the pure-Python parser recurses until Python
    # does: both are one line, never a traceback.
    assert ran.code == 1
    assert ran.err in (
        f"{policy}:3: not valid YAML: exceeded maximum nesting depth\n",
        f"{policy}: not valid YAML: nested too deeply\n",
    )
    bundle = tmp_path / "deep.json"
    bundle.write_text(
        '{"format": "feature-sidecar-bundle/1", "x": ' + "[" * DEEP + "]" * DEEP + "}"
    )
    ran = run("bundle", "verify", bundle, "--public-key", keys.public)
    assert (ran.code, ran.err) == (
        1,
        f"{bundle}: verification failed: the bundle is corrupt: maximum recursion depth "
        "exceeded while decoding a JSON array from a unicode string\n",
    )


def test_a_sidecar_rejects_deeply_nested_bundles_and_keeps_going(keys: Keys) -> None:
    # Unsigned bytes from the bundle source are parsed before any signature check; they must
    # end as a recorded rejection (the sync loop only survives BundleError).
    private = bundle_format.load_private_key(keys.private.read_bytes())
    trusted = bundle_format.trusted_keys([private.public_key()])
    activator = Activator(
        ActivePolicy(), source="test", trusted=trusted, mask_secret=b"a secret, 24 bytes long"
    )
    hostile = b'{"format": "feature-sidecar-bundle/1", "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    with pytest.raises(BundleError) as error:
        activator.offer(hostile, "test")
    assert error.value.reason == "parse"
    deep_policy = "version: 1\nproject: p\ncatalog: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"
    with pytest.raises(BundleError) as error:
        activator.offer(bundle_format.build(deep_policy, 1, private), "test")
    assert error.value.reason == "parse"
    assert error.value.message in (
        "bundle r1:3: not valid YAML: exceeded maximum nesting depth",
        "bundle r1: not valid YAML: nested too deeply",
    )
    assert activator.status.failures == {"parse": 2}
    assert activator.offer(bundle_format.build(EXAMPLE_TEXT, 2, private), "test") is True
    assert activator.status.active_revision == 2

"""Hostile policy sources: generated and mutated YAML through `parse_policy` and through the
`feature-sidecar bundle test/build` commands.

The invariant: a `Policy` or a `PolicyError` whose message names the source, never another
exception; a policy that parses can be served (the sidecar and `bundle test` never crash on it
later); bounded time and memory, alias bombs included.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hostile_strategies import json_like, mutated_source
from hostile_support import MiB, alias_bomb, exercise, rss_bytes
from hypothesis import event, example, given
from hypothesis import strategies as st
from support import EXAMPLE_POLICY

from featuresidecar_server import bundle_format, cli
from featuresidecar_server.policy_yaml import PolicyError, parse_policy

EXAMPLE = EXAMPLE_POLICY.read_text()
SOURCE = "hostile.yaml"


def _generated_document(data: object) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


@st.composite
def generated_policies(draw: st.DrawFn) -> str:
    """The example's data with a subtree replaced by generated data, dumped as YAML."""
    data = yaml.safe_load(EXAMPLE)
    path: list[object] = []
    node: object = data
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = draw(st.integers(0, len(node) - 1))
        else:
            break
        path.append(key)
        node = node[key]  # type: ignore[index]
    replacement = draw(json_like)
    if not path:
        return _generated_document(replacement)
    parent: object = data
    for key in path[:-1]:
        parent = parent[key]  # type: ignore[index]
    parent[path[-1]] = replacement  # type: ignore[index]
    return _generated_document(data)


def check_source(text: str) -> None:
    try:
        policy = parse_policy(text, SOURCE)
    except PolicyError as exc:
        event("PolicyError")
        message = str(exc)
        assert message.startswith(SOURCE) and len(message) > len(SOURCE) + 2, message
        return
    event("parsed")
    exercise(policy)


@example(EXAMPLE)
@example(EXAMPLE.replace("max_age: 7d", "max_age: .nan"))
@example(EXAMPLE.replace("max_age: 6h", "max_age: .nan"))
@example(EXAMPLE.replace("max_age: 7d", "max_age: 99999999999999w"))
@example(EXAMPLE.replace("dim: 32", "dim: 1099511627776"))
@example(EXAMPLE.replace("requests_per_second: 50", "requests_per_second: 5.0e-324"))
@example(EXAMPLE.replace("requests_per_second: 50", "requests_per_second: .nan"))
@example(
    EXAMPLE.replace("requests_per_second: 50", "requests_per_second: 50\n    burst: 1" + "0" * 400)
)
@example(EXAMPLE + "x-big: " + "1" * 5000 + "\n")
@example(EXAMPLE + "x-date: 2020-13-45\n")
@example(EXAMPLE + "x-map: !!map scalar\n")
@given(text=mutated_source(EXAMPLE))
def test_a_mutated_policy_parses_or_fails_with_a_policy_error(text: str) -> None:
    check_source(text)


@given(text=generated_policies())
def test_a_generated_policy_document_parses_or_fails_with_a_policy_error(text: str) -> None:
    check_source(text)


@example("")
@example("\x00")
@example("\ufeff")
@example("- a\n-")
@example("&a [*a]")
@given(text=st.text(max_size=300))
def test_any_text_is_a_policy_error(text: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(text, SOURCE)
    assert str(error.value).startswith(SOURCE)


# --- the bundle commands -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile-cli")
    key = directory / "private.pem"
    key.write_bytes(bundle_format.private_key_pem(Ed25519PrivateKey.generate()))
    key.chmod(0o600)
    return directory


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@example(text=EXAMPLE)
@example(text=EXAMPLE + "x-date: 2020-13-45\n")
@given(text=st.one_of(mutated_source(EXAMPLE), generated_policies()))
def test_bundle_test_and_build_answer_in_one_line_or_succeed(workdir: Path, text: str) -> None:
    policy = workdir / "policy.yaml"
    policy.write_text(text)
    code, _, err = run_cli("bundle", "test", str(policy))
    assert code in (0, 1), (code, err)
    if code == 1 and not err:
        return  # failing test cases are reported on stdout
    out = workdir / "bundle.json"
    code, _, err = run_cli(
        "bundle", "build", str(policy), "--key", str(workdir / "private.pem"),
        "--revision", "1", "-o", str(out),
    )  # fmt: skip
    assert code in (0, 1), (code, err)
    if code == 1:
        assert err.count("\n") >= 1 and "Traceback" not in err, err
        return
    assert bundle_format.read_unverified(out.read_bytes())[0].policy_source == text


# --- alias bombs and deep nesting -----------------------------------------------------------------


def test_an_alias_bomb_parses_in_bounded_time_and_memory() -> None:
    text = alias_bomb()
    before = rss_bytes()
    start = time.monotonic()
    policy = parse_policy(text, SOURCE)
    elapsed = time.monotonic() - start
    grown = rss_bytes() - before
    # Extension keys are ignored; the aliases are shared, never copied.
    assert policy.project == "demo"
    assert grown < 100 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
    assert elapsed < 5.0, elapsed


_BUILD = textwrap.dedent(
    """
    import resource, sys, time
    # The child caps its own address space (preexec_fn is unsafe in a threaded parent).
    limit = int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from featuresidecar_server import cli
    start = time.monotonic()
    code = cli.main(["bundle", "build", sys.argv[1], "--key", sys.argv[2], "--revision", "1",
                     "-o", sys.argv[3]])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(code, peak, time.monotonic() - start)
    """
)


def _build_in_child(workdir: Path, name: str, text: str) -> tuple[int, float, Path]:
    """Peak RSS and seconds of 'bundle build' of `text` in a child process."""
    policy = workdir / f"{name}.yaml"
    policy.write_text(text)
    out = workdir / f"{name}.json"
    key = str(workdir / "private.pem")
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, str(policy), key, str(out), str(1024 * MiB)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    code, peak, seconds = result.stdout.splitlines()[-1].split()
    assert code == "0", result.stderr
    return int(peak), float(seconds), out


def test_building_a_bundle_of_an_alias_bomb_stays_small(workdir: Path) -> None:
    """Before the fix, the bundle's parsed copy of the source expanded every alias: a 4 KB
    policy became a multi-gigabyte bundle. The build runs in a child process with an address
    space limit, so a regression fails this test instead of the machine; its peak is compared
    with building the plain example (the command's imports alone take most of it)."""
    plain_peak, _, _ = _build_in_child(workdir, "plain", EXAMPLE)
    bomb_peak, seconds, out = _build_in_child(workdir, "bomb", alias_bomb())
    grown = bomb_peak - plain_peak
    assert grown < 50 * MiB, f"the bomb's build peaked {grown / MiB:.0f} MiB above the plain one"
    assert seconds < 10.0
    assert out.stat().st_size < 64 * 1024
    # The parsed copy is left out; a sidecar activates from the YAML source, which shares aliases.
    assert bundle_format.read_unverified(out.read_bytes())[0].policy_data is None

"""`feature-sidecar status`: what a running sidecar says on its HTTP port's /status.

Exit 0 when a bundle is active and the last attempt succeeded, 1 when no bundle is active or the
last attempt failed, 2 when the sidecar cannot be asked (not reachable, not a sidecar).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

ENV_LISTEN = "FEATURE_SIDECAR_METRICS_LISTEN"
UNREACHABLE = 2


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="show the bundle and readiness status of a running sidecar",
        description="Fetch /status from a running sidecar's HTTP port (--metrics-listen) and "
        "print it. Exit 0: a bundle is active and the last attempt succeeded; 1: no bundle is "
        "active or the last attempt failed; 2: the sidecar could not be asked.",
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        help=f"the sidecar's HTTP port, e.g. http://127.0.0.1:9464 [default: from {ENV_LISTEN}]",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="time limit of the request"
    )
    parser.set_defaults(handler=run)


def base_url(given: str | None, environ: Mapping[str, str]) -> str:
    """The URL to ask; a ValueError says what is missing or wrong."""
    if given:
        url = given if "://" in given else f"http://{given}"
    else:
        listen = environ.get(ENV_LISTEN, "").strip()
        if not listen:
            raise ValueError(f"give --url http://HOST:PORT or set {ENV_LISTEN}")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{ENV_LISTEN}={listen!r}: expected host:port")
        # A wildcard bind address is reachable on loopback.
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)
        url = f"http://{host}:{port}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {given!r}: use http://HOST:PORT")
    return url.rstrip("/")


def fetch(url: str, timeout: float) -> dict[str, Any]:
    """The /status document; a RuntimeError says why it could not be had."""
    target = f"{url}/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            body = response.read(4 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{target} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"cannot reach the sidecar at {target}: {reason}") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise RuntimeError(f"{target} did not answer with JSON; is this a sidecar?") from None
    if not isinstance(document, dict) or "active" not in document:
        raise RuntimeError(f"{target} did not answer with a sidecar status")
    return document


def render(status: Mapping[str, Any]) -> str:
    """The status as lines a person reads."""
    lines = [f"ready:                    {_ready(status)}"]
    lines.append(f"bundle source:            {status.get('source') or '-'}")
    lines.append(f"active bundle:            {_active(status.get('active'))}")
    revisions = status.get("revisions")
    if revisions and len(revisions) > 1:
        lines.append(f"active revisions:         {', '.join(map(str, revisions))} (workers differ)")
    lines.append(f"last attempt:             {status.get('last_attempt') or 'never'}")
    lines.append(f"last successful download: {status.get('last_successful_download') or 'never'}")
    lines.append(f"last activation:          {status.get('last_activation') or 'never'}")
    lines.append(f"consecutive failures:     {status.get('consecutive_failures') or 0}")
    lines.append(f"last error:               {_error(status.get('last_error'))}")
    workers = status.get("workers")
    if workers:
        lines.append("workers:")
        for entry in workers:
            active = entry.get("active")
            revision = active.get("revision") if isinstance(active, dict) else "-"
            lines.append(
                f"  {entry.get('worker')}: pid {entry.get('pid') or '-'}, "
                f"{_ready(entry)}, revision {revision}, "
                f"failures {entry.get('consecutive_failures') or 0}, "
                f"restarts {entry.get('restarts') or 0}"
            )
    return "\n".join(lines)


def _ready(status: Mapping[str, Any]) -> str:
    if status.get("ready"):
        return "yes"
    return f"no ({status.get('reason') or 'not ready'})"


def _active(active: Any) -> str:
    if not isinstance(active, dict):
        return "none"
    signed = f"signed by {active.get('key_id')}" if active.get("signed") else "UNSIGNED"
    return (
        f"revision {active.get('revision')}, {signed}, {active.get('digest')}, "
        f"from {active.get('from')}"
    )


def _error(error: Any) -> str:
    if not isinstance(error, dict):
        return "none"
    return f"{error.get('time')} {error.get('reason')}: {error.get('message')}"


def run(args: argparse.Namespace) -> int:
    from .status_view import problems

    try:
        url = base_url(args.url, os.environ)
        status = fetch(url, args.timeout)
    except (ValueError, RuntimeError) as exc:
        print(f"feature-sidecar status: {exc}", file=sys.stderr)
        return UNREACHABLE
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(f"feature sidecar at {url}")
        print(render(status))
    found = problems(status)
    for problem in found:
        print(f"feature-sidecar status: {problem}", file=sys.stderr)
    return 1 if found else 0

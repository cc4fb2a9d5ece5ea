"""The `feature-sidecar` command: serve, load, demo, bundle, status."""

from __future__ import annotations

import sys
from collections.abc import Sequence

SERVER_DEPENDENCIES = ("redis", "yaml", "prometheus_client", "cryptography", "jwt", "mmh3")


def _missing_server_dependencies() -> list[str]:
    import importlib.util

    return [name for name in SERVER_DEPENDENCIES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    missing = _missing_server_dependencies()
    if missing:
        print(
            "feature-sidecar: the server needs packages that are not installed "
            f"({', '.join(missing)}); install them with: pip install 'feature-sidecar[server]'",
            file=sys.stderr,
        )
        return 2
    from . import commands

    parser = commands.parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

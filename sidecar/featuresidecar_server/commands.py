"""The argument parser of `feature-sidecar`; each subcommand lives in its own `cmd_*` module."""

from __future__ import annotations

import argparse
import importlib

from . import __version__

SUBCOMMANDS = ("cmd_serve", "cmd_load", "cmd_demo", "cmd_bundle", "cmd_status")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="feature-sidecar",
        description="Serve feature vectors from Redis to model code over gRPC, "
        "under a signed access policy.",
    )
    root.add_argument("--version", action="version", version=f"feature-sidecar {__version__}")
    sub = root.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return root

"""Placeholder: filled in by its own change."""

from typing import Any


def register(sub: Any) -> None:
    pass

"""docs/security.md maps each guarantee to tests: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
# `tests/x.py::name`, `tests/x.py` alone, or `…::name` (the file named last before it).
REFERENCE = re.compile(r"`(tests/[\w/]+\.py|…)(?:::(\w+))?`")


def _references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    last = ""
    for path, name in REFERENCE.findall((ROOT / "docs" / "security.md").read_text()):
        last = last if path == "…" else path
        found.append((last, name or None))
    return found


def test_every_test_the_security_doc_names_exists() -> None:
    references = _references()
    assert len(references) > 50
    missing = []
    for path, name in references:
        source = ROOT / path
        if not source.exists():
            missing.append(path)
        elif name and not re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert missing == []

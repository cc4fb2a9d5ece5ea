"""Feature selectors: ``view:feature`` (with ``*`` globs), ``service:NAME`` and ``tag:TAG``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .policy import Feature

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_GLOB = re.compile(r"^[A-Za-z0-9_.\-*?]+$")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Selector:
    text: str
    kind: str  # "feature", "service" or "tag"
    view: str = ""
    feature: str = ""
    name: str = ""

    def matches(self, feature: Feature, services: Mapping[str, frozenset[str]]) -> bool:
        if self.kind == "tag":
            return self.name in feature.tags
        if self.kind == "service":
            return feature.ref in services.get(self.name, frozenset())
        return fnmatchcase(feature.view, self.view) and fnmatchcase(feature.name, self.feature)

    def select(
        self, features: Iterable[Feature], services: Mapping[str, frozenset[str]]
    ) -> list[Feature]:
        return [f for f in features if self.matches(f, services)]


def parse_selector(text: str) -> Selector:
    if not isinstance(text, str) or not text:
        raise SelectorError("a selector must be a non-empty string")
    prefix, sep, rest = text.partition(":")
    if not sep:
        raise SelectorError(
            f"selector {text!r} must be 'view:feature', 'service:NAME' or 'tag:TAG'"
        )
    if prefix in ("service", "tag"):
        if not _NAME.match(rest):
            raise SelectorError(f"selector {text!r}: {prefix} name {rest!r} is not a valid name")
        return Selector(text, prefix, name=rest)
    if not _GLOB.match(prefix) or not _GLOB.match(rest):
        raise SelectorError(
            f"selector {text!r} must be 'view:feature' where both parts are names or '*' globs"
        )
    return Selector(text, "feature", view=prefix, feature=rest)


def is_glob(text: str) -> bool:
    return "*" in text or "?" in text

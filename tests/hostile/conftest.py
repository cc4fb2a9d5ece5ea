"""Hostile-input suite: the Hypothesis profile and one real sidecar per test module."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from hostile_support import Hostile, start_hostile
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches (e.g. constants it found in the code) in ./.hypothesis; nothing of it
# belongs in the checkout.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "feature-sidecar-hypothesis"))

# CI: the same examples on every run (derandomize), no example database written into the
# checkout, no per-example deadline (a shared 2-core machine has slow moments), and few enough
# examples that the whole hostile suite stays well under two minutes there.
settings.register_profile(
    "hostile-ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# For a person hunting bugs locally: HYPOTHESIS_PROFILE=hostile-deep, random and many more.
settings.register_profile(
    "hostile-deep",
    parent=settings.get_profile("hostile-ci"),
    derandomize=False,
    max_examples=2000,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hostile-ci"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A real sidecar on a real redis-server with the hostile policy and data, for one module."""
    started = start_hostile(tmp_path_factory.mktemp("hostile"))
    try:
        yield started
    finally:
        started.close()

"""Shared fixtures: real TCP socket populations in private network namespaces."""

from __future__ import annotations

import os
import sys

import pytest

# `from tests.population import ...` must work however pytest was started.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.population import SMALL_SPEC, Population, Spec, netns_supported  # noqa: E402

LARGE_TOTAL = 10_000


@pytest.fixture(scope="session")
def require_netns() -> None:
    """Skip (locally) or fail (in CI) when network namespaces are unavailable.

    In CI a namespace test must never be skipped silently: a runner without
    CAP_SYS_ADMIN would otherwise turn the whole suite green untested.
    """
    ok, reason = netns_supported()
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("network namespaces are required in CI: " + reason, pytrace=False)
    pytest.skip("network namespaces unavailable: " + reason)


@pytest.fixture(scope="module")
def small_population(require_netns):
    """A handful of every scenario (SMALL_SPEC).  Exact for ~55 s after the
    build (TIME_WAIT / orphan FIN_WAIT2 expire at 60 s), so keep modules quick."""
    with Population(SMALL_SPEC) as pop:
        yield pop


@pytest.fixture(scope="module")
def large_population(require_netns):
    """Spec.mixed(10_000): at least 10,000 visible sockets, every scenario."""
    with Population(Spec.mixed(LARGE_TOTAL)) as pop:
        yield pop


def pytest_configure(config) -> None:
    # Hardening tests that take a size from tests/hardening.py: small by
    # default, the full size under FASTTCPSTAT_STRESS=1 (CI runs
    # `FASTTCPSTAT_STRESS=1 pytest -m stress` after the default suite).
    config.addinivalue_line(
        "markers", "stress: hardening test with a stress size (FASTTCPSTAT_STRESS=1)")

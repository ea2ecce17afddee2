"""Shared fixtures: real TCP socket populations in private network namespaces."""

from __future__ import annotations

import os
import sys

import pytest

# `from tests.population import ...` must work however pytest was started.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.kernel import is_kernel_facing  # noqa: E402
from tests.population import SMALL_SPEC, Population, Spec, netns_supported  # noqa: E402

LARGE_TOTAL = 10_000


def require(ok: bool, what: str, reason: str) -> None:
    """Skip (locally) or fail (in CI) when `what` is unavailable.

    In CI a kernel-facing test must never be skipped silently: a runner
    without the privilege would otherwise turn the whole suite green
    untested.
    """
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} required in CI: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(scope="session")
def require_netns() -> None:
    """Network namespaces (CAP_SYS_ADMIN)."""
    ok, reason = netns_supported()
    require(ok, "network namespaces", reason)


@pytest.fixture(scope="session")
def require_bpf() -> None:
    """The BPF iterator backend (root, Linux >= 5.9 with BTF)."""
    import fasttcpstat

    try:
        with fasttcpstat.Counter("bpf"):
            ok, reason = True, ""
    except (OSError, ImportError) as exc:
        ok, reason = False, str(exc)
    require(ok, "the BPF iterator", reason)


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
    # .ci/kernels runs `pytest -m kernel` on each kernel it boots.
    config.addinivalue_line(
        "markers", "kernel: kernel-facing test, run on every kernel (tests/kernel.py)")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if is_kernel_facing(str(item.fspath)):
            item.add_marker(pytest.mark.kernel)

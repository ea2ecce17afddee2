"""Shared fixtures: real TCP socket populations in private network namespaces."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

# `from tests.population import ...` must work however pytest was started.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.kernel import is_kernel_facing  # noqa: E402
from tests.population import SMALL_SPEC, Population, Spec, netns_supported  # noqa: E402

# .ci/kernels sets a smaller size under software emulation, where building
# 10,000 sockets takes half of a population's 55 s of exactness.
LARGE_TOTAL = int(os.environ.get("FASTTCPSTAT_LARGE_TOTAL", "10000"))


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


def require_backend(name: str, what: str) -> None:
    """Skip or fail (in CI) unless a Counter with backend `name` opens."""
    import fasttcpstat

    try:
        with fasttcpstat.Counter(name):
            ok, reason = True, ""
    except (OSError, ImportError) as exc:
        ok, reason = False, str(exc)
    require(ok, what, reason)


@pytest.fixture(scope="session")
def require_bpf() -> None:
    """The BPF iterator backend (root, Linux >= 5.9 with BTF)."""
    require_backend("bpf", "the BPF iterator")


@pytest.fixture(scope="session")
def require_walk() -> None:
    """The walk backend (root, Linux >= 6.2 with BTF); its self-check runs
    here once.  Skipped below 6.2, which refuses it (test_walk_backend.py's
    test_refused_below_6_2 checks how), else failed in CI."""
    from fasttcpstat import _walk

    if _walk._kernel_release() < _walk.MIN_KERNEL:
        pytest.skip(f"the walk backend needs Linux >= 6.2, not {os.uname().release}")
    require_backend("walk", "the walk backend")


# A test gets its population with at least this many seconds of exact
# counts ahead.  TIME_WAIT and orphaned FIN_WAIT2 sockets expire 60 s after
# the build whatever the machine's speed, so on a loaded machine a module's
# tests outlast them: the population is then rebuilt between two tests
# instead of failing the later ones.
FRESH_FOR_SECONDS = 30.0


class _Renewed:
    """One population per module, rebuilt when it is about to go stale."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.pop: "Population | None" = None

    def get(self) -> Population:
        if self.pop is None or time.monotonic() + FRESH_FOR_SECONDS > self.pop.fresh_until:
            self.close()
            self.pop = Population(self.spec)
        return self.pop

    def close(self) -> None:
        if self.pop is not None:
            self.pop.close()
            self.pop = None


@pytest.fixture(scope="module")
def _small_populations(require_netns):
    renewed = _Renewed(SMALL_SPEC)
    yield renewed
    renewed.close()


@pytest.fixture(scope="module")
def _large_populations(require_netns):
    renewed = _Renewed(Spec.mixed(LARGE_TOTAL))
    yield renewed
    renewed.close()


@pytest.fixture
def small_population(_small_populations):
    """A handful of every scenario (SMALL_SPEC), exact for at least
    FRESH_FOR_SECONDS from the test's start."""
    return _small_populations.get()


@pytest.fixture
def large_population(_large_populations):
    """Spec.mixed(LARGE_TOTAL): at least that many visible sockets, every scenario,
    exact for at least FRESH_FOR_SECONDS from the test's start."""
    return _large_populations.get()


def pytest_configure(config) -> None:
    # Hardening tests that take a size from tests/hardening.py: small by
    # default, the full size under FASTTCPSTAT_STRESS=1 (CI runs
    # `FASTTCPSTAT_STRESS=1 pytest -m stress` after the default suite).
    config.addinivalue_line(
        "markers", "stress: hardening test with a stress size (FASTTCPSTAT_STRESS=1)")
    # .ci/kernels runs `pytest -m kernel` on each kernel it boots.
    config.addinivalue_line(
        "markers", "kernel: kernel-facing test, run on every kernel (tests/kernel.py)")
    # A script's background job (`cmd &` without job control) starts with
    # SIGINT ignored, and Python then leaves it ignored: the Ctrl-C tests
    # would fail, or spin for ever on EINTR.  They test Python's default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if is_kernel_facing(item.nodeid):
            item.add_marker(pytest.mark.kernel)

"""Tests of the population builder itself (tests/population.py).

The kernel's view, read by two independent references (`ss` and
/proc/net/tcp{,6}, plus a plain netlink dump), must equal `expected`, which
is derived from the spec alone.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest

from tests import kernel, population
from tests.population import (
    FAMILIES,
    SMALL_SPEC,
    STATES,
    ChildTraceback,
    Population,
    PopulationError,
    Spec,
    diag_counts,
    expected_counts,
    fds_needed,
    proc_counts,
    ss_counts,
    ss_shows_bound_inactive,
)
from tests.conftest import LARGE_TOTAL, ROOT


def total(counts: dict) -> dict:
    """Sum per-family counts into one {state: n}."""
    return {s: sum(counts[f][s] for f in FAMILIES) for s in STATES}


# --------------------------------------------------------------------------
# Pure logic (no namespace needed)
# --------------------------------------------------------------------------


def test_expected_counts_of_single_scenarios():
    e = expected_counts(Spec(estab_mapped=3))
    assert e["ipv4"]["ESTABLISHED"] == 3 and e["ipv6"]["ESTABLISHED"] == 3
    # SYN_SENT keeps its listener plus a queued connection that fills the queue.
    e = expected_counts(Spec(syn_sent4=4))
    assert (e["ipv4"]["SYN_SENT"], e["ipv4"]["LISTEN"], e["ipv4"]["ESTABLISHED"]) == (4, 1, 2)
    e = expected_counts(Spec(syn_recv6=2))
    assert (e["ipv6"]["SYN_RECV"], e["ipv6"]["ESTABLISHED"], e["ipv6"]["LISTEN"]) == (2, 2, 1)
    assert expected_counts(Spec(bound_inactive4=7)) == expected_counts(Spec())


def test_small_spec_exercises_every_state_but_close():
    e = total(expected_counts(SMALL_SPEC))
    assert [s for s in STATES if e[s] == 0] == ["CLOSE"]


@pytest.mark.parametrize("n", [100, LARGE_TOTAL, 25_000])
def test_mixed_reaches_total_with_every_scenario(n):
    spec = Spec.mixed(n)
    assert all(v > 0 for v in spec.as_dict().values())
    visible = sum(total(expected_counts(spec)).values())
    # At least one of each scenario (and their helper sockets) may overshoot
    # a small total a little.
    assert n <= visible <= n + max(n // 50, 30)


def test_spec_rejects_negative_counts():
    with pytest.raises(ValueError):
        Spec(estab4=-1)


def test_fd_budget_is_checked_before_forking():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE is unlimited")
    spec = Spec(estab4=hard // 2 + 1)
    assert fds_needed(spec) > hard
    with pytest.raises(PopulationError, match="RLIMIT_NOFILE"):
        Population(spec)


# --------------------------------------------------------------------------
# The small population: every scenario, verified by independent readers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_small_ss_matches_expected(small_population, family):
    got = small_population.run(ss_counts, family, exclude_unconn=True)
    assert got == small_population.expected[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_small_proc_matches_expected(small_population, family):
    assert small_population.run(proc_counts, family) == small_population.expected[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_small_netlink_matches_expected(small_population, family):
    assert small_population.run(diag_counts, family) == small_population.expected[family]


def test_small_totals_match(small_population):
    want = total(small_population.expected)
    assert small_population.run(ss_counts, exclude_unconn=True) == want
    assert small_population.run(proc_counts) == want
    assert sum(want.values()) == small_population.total


def test_bound_inactive_invisible_to_proc(small_population):
    assert small_population.run(proc_counts)["CLOSE"] == 0


def test_bound_inactive_in_kernel_dump(small_population):
    """Asked for state bit 13, kernels >= 6.8 dump bound-only sockets (as
    CLOSE); older ones accept the request and send none."""
    got = small_population.run(diag_counts, "ipv4", population.BOUND_INACTIVE_MASK)
    dumped = SMALL_SPEC.bound_inactive4 if kernel.has("bound_inactive_dump") else 0
    assert SMALL_SPEC.bound_inactive4 > 0
    assert got == dict(dict.fromkeys(STATES, 0), CLOSE=dumped), kernel.release()


def test_bound_inactive_in_ss(small_population):
    unconn = small_population.run(ss_counts, "ipv4")["CLOSE"]
    if not kernel.has("bound_inactive_dump"):
        assert unconn == 0, kernel.release()     # the kernel never sends them
    elif ss_shows_bound_inactive():
        assert unconn == SMALL_SPEC.bound_inactive4
    else:
        # An `ss` older than the bound-inactive support (e.g. iproute2 6.1)
        # asks for states 0..11 only, so the kernel never sends them.
        assert unconn == 0


# --------------------------------------------------------------------------
# The large population
# --------------------------------------------------------------------------


def test_large_population_matches(large_population):
    pop = large_population
    assert pop.total >= LARGE_TOTAL
    for family in FAMILIES:
        assert pop.run(proc_counts, family) == pop.expected[family]
    assert pop.run(ss_counts, exclude_unconn=True) == total(pop.expected)
    # About 0.4 s here; no bound: speed is for bench/, and under QEMU's
    # software emulation (.ci/kernels) a build takes 10-40 times longer.
    print("10k build timings:", pop.timings)


# --------------------------------------------------------------------------
# run() and the holder's life cycle
# --------------------------------------------------------------------------


def _boom(msg):
    raise ValueError(msg)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling")


def _raise_unpicklable():
    raise _Unpicklable("odd")


def test_run_happens_in_the_namespace(small_population):
    inside = small_population.run(os.readlink, "/proc/self/ns/net")
    assert inside == os.readlink(small_population.ns_path)
    assert inside != os.readlink("/proc/self/ns/net")


def test_run_propagates_exceptions(small_population):
    with pytest.raises(ValueError, match="boom") as info:
        small_population.run(_boom, "boom")
    assert isinstance(info.value.__cause__, ChildTraceback)
    assert "_boom" in str(info.value.__cause__)


def test_run_reports_unpicklable_exceptions(small_population):
    with pytest.raises(RuntimeError, match="_Unpicklable"):
        small_population.run(_raise_unpicklable)


def test_close_is_idempotent_and_reaps_holder(require_netns):
    pop = Population(Spec(estab4=1))
    pid = pop.holder_pid
    pop.close()
    pop.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not os.path.exists("/proc/%d" % pid)
    with pytest.raises(PopulationError, match="closed"):
        pop.run(os.getpid)


def test_holder_exits_when_its_parent_dies(require_netns):
    # The parent never calls close(): the holder must notice EOF on its
    # control pipe and exit by itself.
    code = textwrap.dedent("""
        import os, sys
        sys.path.insert(0, %r)
        from tests.population import Population, Spec
        pop = Population(Spec(listen4=1))
        print(pop.holder_pid, flush=True)
        os._exit(0)
    """ % ROOT)
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    pid = int(out)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """True if pid exists and is not a zombie awaiting its new parent."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):   # gone before open / before read
        return False


def test_holder_convergence_failure_is_reported(require_netns, monkeypatch):
    # Make the spec promise a LISTEN socket that is never built.
    monkeypatch.setitem(population.SCENARIO_YIELDS, "listen4", (("ipv4", "LISTEN", 2),))
    with pytest.raises(PopulationError, match=r"did not converge.*'LISTEN': \(2, 1\)"):
        Population(Spec(listen4=1), settle_timeout=0.3)


def test_holder_build_failure_is_reported(require_netns, monkeypatch):
    def broken(self, n):
        raise OSError("simulated failure")

    monkeypatch.setattr(population._Builder, "estab4", broken)
    with pytest.raises(PopulationError, match="estab4=1 failed.*simulated failure"):
        Population(Spec(estab4=1))


def test_the_helpers_are_split_by_job():
    """tests/population.py was 1,346 lines doing five jobs; each now has its
    module, small enough to read, and every name the tests imported from
    tests.population still comes from there."""
    here = os.path.dirname(os.path.abspath(__file__))
    modules = ["population", "population_spec", "population_netns", "population_builder",
               "population_reference", "population_fork"]
    for name in modules:
        with open(os.path.join(here, name + ".py")) as f:
            assert len(f.read().splitlines()) <= 500, name
    for name in population.__all__ + ["SCENARIO_YIELDS", "BOUND_INACTIVE_MASK", "_Builder",
                                      "_unshare_net"]:
        assert hasattr(population, name), name


def test_a_test_gets_a_population_with_time_to_count_exactly(small_population):
    """On a loaded machine a module's tests can outlast the 60 s of its
    TIME_WAIT sockets: conftest rebuilds the population first."""
    from tests.conftest import FRESH_FOR_SECONDS

    left = small_population.fresh_until - time.monotonic()
    assert left >= FRESH_FOR_SECONDS - 1, left

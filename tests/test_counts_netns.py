"""Exact counts on real socket populations in private network namespaces.

Every backend and every netlink request form must give the counts the
population was built with, state by state and family by family, and agree
with `ss -tan` and /proc.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fasttcpstat

from .population import STATES, proc_counts, ss_counts
from tests.conftest import LARGE_TOTAL

# (backend, netlink request form)
METHODS = [
    ("netlink", "auto"),
    ("netlink", "v2"),
    ("netlink", "legacy"),
    ("procfs", "auto"),
]
METHOD_IDS = [f"{b}-{r}" for b, r in METHODS]


def _total(expected: dict) -> dict:
    return {s: expected["ipv4"][s] + expected["ipv6"][s] for s in STATES}


def _count_all_ways(backend: str, request: str) -> dict:
    """Runs inside the namespace: counts for both families and each one."""
    with fasttcpstat.Counter(backend, request=request) as counter:
        assert counter.backend == backend
        assert counter.fallback_reason is None
        return {
            None: counter.counts(),
            "ipv4": counter.counts(family="ipv4"),
            "ipv6": counter.counts(family="ipv6"),
        }


def _count_each_state(backend: str, request: str) -> dict:
    """Runs inside the namespace: one dump per state, the kernel filtering."""
    with fasttcpstat.Counter(backend, request=request) as counter:
        return {
            family: {s: counter.counts(family=family, states=[s])[s] for s in STATES}
            for family in (None, "ipv4", "ipv6")
        }


@pytest.mark.parametrize("backend, request_form", METHODS, ids=METHOD_IDS)
def test_exact_counts_small(require_netns, small_population, backend, request_form):
    pop = small_population
    got = pop.run(_count_all_ways, backend, request_form)
    assert got[None] == _total(pop.expected)
    assert got["ipv4"] == pop.expected["ipv4"]
    assert got["ipv6"] == pop.expected["ipv6"]


@pytest.mark.parametrize("backend, request_form", METHODS, ids=METHOD_IDS)
def test_state_filter_small(require_netns, small_population, backend, request_form):
    """One state at a time: the kernel's filter (idiag_states) must keep
    request sockets in SYN_RECV and orphaned FIN_WAIT2 timewait sockets in
    FIN_WAIT2, exactly as the unfiltered dump reports them."""
    pop = small_population
    got = pop.run(_count_each_state, backend, request_form)
    assert got[None] == _total(pop.expected)
    assert got["ipv4"] == pop.expected["ipv4"]
    assert got["ipv6"] == pop.expected["ipv6"]


@pytest.mark.parametrize("backend, request_form", METHODS, ids=METHOD_IDS)
def test_counts_by_family_small(require_netns, small_population, backend, request_form):
    """One dump, both families apart: what the CLI's --by-family and the
    Prometheus family label report."""
    def count():
        with fasttcpstat.Counter(backend, request=request_form) as counter:
            return (counter.counts_by_family(),
                    counter.counts_by_family(["listen", "ESTABLISHED"]),
                    counter.counts_by_family([]))

    pop = small_population
    full, subset, empty = pop.run(count)
    assert full == pop.expected
    assert list(full) == ["ipv4", "ipv6"]
    assert subset == {f: {"ESTABLISHED": pop.expected[f]["ESTABLISHED"],
                          "LISTEN": pop.expected[f]["LISTEN"]} for f in ("ipv4", "ipv6")}
    assert empty == {"ipv4": {}, "ipv6": {}}


def test_state_subsets(require_netns, small_population):
    pop = small_population
    wanted = ["time_wait", "SYN_RECV", "fin_wait2", "Listen"]

    def count():
        return [
            fasttcpstat.counts(states=wanted, backend="netlink"),
            fasttcpstat.counts(states=wanted, backend="procfs"),
            fasttcpstat.counts(states=wanted, family="ipv6"),
        ]

    total = _total(pop.expected)
    netlink, procfs, v6 = pop.run(count)
    keys = ["SYN_RECV", "FIN_WAIT2", "TIME_WAIT", "LISTEN"]  # kernel order
    assert list(netlink) == keys
    assert netlink == {k: total[k] for k in keys}
    assert procfs == netlink
    assert v6 == {k: pop.expected["ipv6"][k] for k in keys}


def test_every_interesting_state_is_present(require_netns, small_population):
    """Guard against a population that silently lost a scenario: the
    comparisons above mean little for a state that is always zero."""
    total = _total(small_population.expected)
    for state in STATES:
        if state == "CLOSE":
            continue  # not produced: bound-only sockets are deliberately not counted
        assert total[state] > 0, state
    assert small_population.expected["ipv6"]["ESTABLISHED"] > 0
    assert small_population.expected["ipv6"]["LISTEN"] > 0


def test_agrees_with_ss_and_proc(require_netns, small_population):
    def compare():
        return {
            family: (
                fasttcpstat.counts(family=family),
                ss_counts(family, exclude_unconn=True),
                proc_counts(family),
            )
            for family in (None, "ipv4", "ipv6")
        }

    for family, (ours, ss, proc) in small_population.run(compare).items():
        assert ours == ss, family
        assert ours == proc, family


def test_bound_inactive_sockets_are_not_close(require_netns, small_population):
    """Kernels >= 6.8 can dump bound-only sockets (as CLOSE) when asked;
    we never ask, so CLOSE stays what /proc says: 0 here."""
    assert small_population.spec.bound_inactive4 > 0

    def count():
        return fasttcpstat.counts(states=["CLOSE"], backend="netlink"), proc_counts()["CLOSE"]

    ours, proc = small_population.run(count)
    assert ours == {"CLOSE": 0}
    assert proc == 0


def test_module_cli_prints_json(require_netns, small_population):
    def run_cli():
        out = subprocess.run([sys.executable, "-m", "fasttcpstat"], check=True,
                             capture_output=True, text=True).stdout
        return out

    out = small_population.run(run_cli)
    assert out.endswith("\n") and out.count("\n") == 1
    report = json.loads(out)
    assert list(report) == list(STATES)
    assert report == _total(small_population.expected)


@pytest.mark.parametrize("backend, request_form", METHODS, ids=METHOD_IDS)
def test_exact_counts_large(require_netns, large_population, backend, request_form):
    pop = large_population
    assert sum(_total(pop.expected).values()) >= LARGE_TOTAL
    got = pop.run(_count_all_ways, backend, request_form)
    assert got[None] == _total(pop.expected)
    assert got["ipv4"] == pop.expected["ipv4"]
    assert got["ipv6"] == pop.expected["ipv6"]


def test_large_agrees_with_ss(require_netns, large_population):
    def compare():
        return fasttcpstat.counts(), ss_counts(exclude_unconn=True)

    ours, ss = large_population.run(compare)
    assert ours == ss
    assert ours == _total(large_population.expected)


def test_counter_reuse_is_stable(require_netns, small_population):
    def poll():
        with fasttcpstat.Counter() as counter:
            return [counter.counts() for _ in range(20)]

    results = small_population.run(poll)
    assert all(r == _total(small_population.expected) for r in results)


def test_counter_counts_the_namespace_it_was_created_in(require_netns, small_population):
    """A Counter's netlink socket stays in the namespace it was opened in,
    even after its thread moves to another (empty) namespace."""
    from .population import _unshare_net

    def count():
        with fasttcpstat.Counter("netlink") as counter:
            _unshare_net()  # now in a fresh namespace with no sockets
            fresh = fasttcpstat.counts(backend="netlink")
            kept = counter.counts()
        return fresh, kept

    fresh, kept = small_population.run(count)
    assert sum(fresh.values()) == 0
    assert kept == _total(small_population.expected)


def _auto_every_way() -> dict:
    """Runs inside the namespace: what Counter("auto") took, and its
    counts against the walk, bpf and ss."""
    with fasttcpstat.Counter() as counter:
        got = {"backend": counter.backend, "reason": counter.fallback_reason,
               None: counter.counts(), "ipv4": counter.counts(family="ipv4"),
               "ipv6": counter.counts(family="ipv6")}
    got["ss"] = ss_counts(exclude_unconn=True)
    return got


@pytest.mark.parametrize("table, large", [
    (16384, True),   # LARGE_TOTAL sockets, about one bucket each: the walk
    (1024, False),   # a handful of every scenario: bpf
], ids=["walk-sized", "bpf-sized"])
def test_auto_by_size_exact(request, require_netns, table, large):
    """The path a root user gets by default: "auto" picks by the table's
    size (_sizing), in namespaces with tables of their own so that the
    host's other sockets do not enter the choice; exact either way."""
    from .hardening import walk_as_auto
    from .population import Population, Spec
    from .population_spec import SMALL_SPEC

    want = walk_as_auto(request) if large else "bpf"
    request.getfixturevalue("require_bpf")
    built = Spec.mixed(LARGE_TOTAL) if large else SMALL_SPEC
    with Population(built, ehash_entries=table, workers="auto") as pop:
        got = pop.run(_auto_every_way)
        fresh = pop.is_fresh()
    assert (got["backend"], got["reason"]) == (want, None)
    assert got[None] == got["ss"]
    if fresh:
        assert got[None] == _total(pop.expected)
        assert got["ipv4"] == pop.expected["ipv4"]
        assert got["ipv6"] == pop.expected["ipv6"]

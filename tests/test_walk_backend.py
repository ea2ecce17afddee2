"""The walk backend (backend="walk", src/fasttcpstat/_walk.py) on real
populations: exact counts for every state and family against the spec,
`ss -tan` and netlink, the same state and port filters, another namespace
by pid, and its start-up self-check made to fail.

The closed-counter, fork and thread behaviour it shares with every backend
is tested with them (test_closed_counter.py, test_hardening_signals.py,
test_one_shot_arguments.py).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fasttcpstat

from .population import STATES, ss_counts
from .test_filters_netns import _cases, _listen_ports, from_listing, ss_filtered, ss_listing


WALK = pytest.mark.usefixtures("require_netns", "require_walk")


def _total(expected: dict) -> dict:
    return {s: expected["ipv4"][s] + expected["ipv6"][s] for s in STATES}


def _count_every_way() -> dict:
    """Runs in the namespace."""
    with fasttcpstat.Counter("walk") as counter:
        assert counter.backend == "walk"
        assert counter.fallback_reason is None
        return {
            "all": counter.counts(),
            "ipv4": counter.counts(family="ipv4"),
            "ipv6": counter.counts(family="ipv6"),
            "by_family": counter.counts_by_family(),
            "each_state": {s: counter.counts(states=[s])[s] for s in STATES},
            "subset": counter.counts(states=["time_wait", "SYN_RECV", "fin_wait2", "Listen"]),
            "ss": ss_counts(),
            "netlink": fasttcpstat.counts(backend="netlink"),
        }


@WALK
def test_exact_counts_every_state(small_population):
    pop = small_population
    got = pop.run(_count_every_way)
    total = _total(pop.expected)
    assert got["all"] == total
    assert got["ipv4"] == pop.expected["ipv4"]
    assert got["ipv6"] == pop.expected["ipv6"]
    assert got["by_family"] == pop.expected
    assert got["each_state"] == total
    assert got["subset"] == {k: total[k] for k in ("SYN_RECV", "FIN_WAIT2", "TIME_WAIT", "LISTEN")}
    assert got["netlink"] == total
    assert got["ss"] == total
    # The population holds every scenario the walk classifies specially.
    for state in ("SYN_RECV", "TIME_WAIT", "FIN_WAIT2", "LISTEN", "ESTABLISHED"):
        assert total[state] > 0, state


@WALK
def test_port_filters_match_ss(small_population):
    def check():
        rows = ss_listing()
        results = []
        with fasttcpstat.Counter("walk") as counter:
            for local, remote, expr in _cases(_listen_ports()):
                got = counter.counts(local_ports=local, remote_ports=remote)
                results.append((expr, ss_filtered(expr), from_listing(rows, local, remote), got))
        return results

    results = small_population.run(check)
    nonzero = 0
    for expr, reference, listing, got in results:
        assert reference == listing, expr
        assert got == reference, expr
        nonzero += sum(reference.values()) > 0
    assert nonzero >= 7  # the filters really select something


@WALK
def test_another_namespace_by_pid(small_population):
    """From the host namespace: the walk runs from a thread inside the
    population's namespace and tallies only its inode."""
    pop = small_population
    with fasttcpstat.Counter("walk", netns=pop.holder_pid) as counter:
        assert counter.counts() == _total(pop.expected)
        assert counter.counts_by_family() == pop.expected
    assert fasttcpstat.counts(backend="walk", netns=pop.holder_pid) == _total(pop.expected)


def _refused_with(index: int, delta: int) -> str:
    """Runs in a forked child: build the program from a wrong layout and
    return how the backend refused it."""
    from fasttcpstat import _walk

    _walk._layout_override[index] = _walk.layout()[index] + delta
    try:
        fasttcpstat.Counter("walk")
    except OSError as exc:
        return f"{exc.errno} {exc.strerror}"
    return "accepted"


# Layout indices (walk_layout()'s order, csrc/bind_walk.c).
NET_INUM, SKC_FAMILY = 9, 23


@WALK
def test_self_check_refuses_a_wrong_offset(small_population):
    # A wrong net.ns.inum offset: no anomaly, every socket seen in some
    # other namespace: only the comparison with sock_diag catches it.
    got = small_population.run(_refused_with, NET_INUM, 8)
    assert got.startswith("5 walk self-check failed"), got
    assert "counted by the walk as [0, 0, 0" in got
    # A wrong skc_family offset: the engine reports an anomaly.
    got = small_population.run(_refused_with, SKC_FAMILY, 4)
    assert got.startswith("5 walk: the pass met anomalies (bad_family="), got


@WALK
def test_self_check_passes_unmodified(small_population):
    got = small_population.run(_refused_with, NET_INUM, 0)
    assert got == "accepted"


def _env_run(value: str, code: str) -> str:
    env = dict(os.environ, FASTTCPSTAT_BACKEND=value)
    return subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


@WALK
def test_environment_can_force_or_exclude_walk():
    code = "import fasttcpstat; c = fasttcpstat.Counter(); print(c.backend)"
    assert _env_run("walk", code) == "walk"
    assert _env_run("walk,netlink", code) == "walk"
    assert _env_run("-walk", code) == "bpf"
    # This namespace: few sockets in a big table, where _sizing prefers bpf.
    assert _env_run("", code) == "bpf"
    assert fasttcpstat.auto_order() == ["bpf", "netlink", "procfs"]
    # A walk that fails its self-check: "auto" moves on and says why.
    broken = ("from fasttcpstat import _walk; "
              f"_walk._layout_override[{NET_INUM}] = _walk.layout()[{NET_INUM}] + 8; ")
    out = _env_run("walk,bpf", broken + code.replace("print(c.backend)",
                                                      "print(c.backend, c.fallback_reason)"))
    assert out.startswith("bpf walk: [Errno 5] walk self-check failed"), out


@WALK
def test_walk_refuses_per_port_breakdown_to_netlink(small_population):
    """Per-port breakdowns go to netlink, as for the iterator."""
    def check():
        with fasttcpstat.Counter("walk") as counter:
            ports = _listen_ports()[:2]
            return counter.counts_by_port(ports), fasttcpstat.counts_by_port(
                ports, backend="netlink")

    walk, netlink = small_population.run(check)
    assert walk == netlink


def test_refused_below_6_2():
    """Below 6.2 the backend refuses with the reason, and "auto" (told to
    try walk first) moves on to the iterator, saying why."""
    from fasttcpstat import _walk

    if _walk._kernel_release() >= _walk.MIN_KERNEL:
        pytest.skip("Linux >= 6.2: the walk is accepted (the other tests)")
    with pytest.raises(OSError, match=r"needs Linux >= 6\.2"):
        fasttcpstat.Counter("walk")
    code = ("import fasttcpstat; c = fasttcpstat.Counter(); "
            "print(c.backend, c.fallback_reason)")
    assert _env_run("walk,bpf", code).startswith("bpf walk: ")


@WALK
def test_command_line_backend_walk(small_population):
    """`fasttcpstat --backend walk` in the namespace: the population's counts."""
    import json

    def run():
        out = subprocess.run([sys.executable, "-m", "fasttcpstat", "--backend", "walk",
                              "--format", "json"], check=True, capture_output=True,
                             text=True).stdout
        return json.loads(out)

    got = small_population.run(run)
    total = _total(small_population.expected)
    assert {s: got[s] for s in STATES} == total, got

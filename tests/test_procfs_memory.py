"""The /proc backend with a port filter or a per-port breakdown keeps its
memory bounded by one read chunk, whatever the number of sockets.

Measured on 100,000 real sockets in a child process: the peak RSS
(VmHWM, reset to the current RSS through /proc/self/clear_refs) may grow
by at most 1 MiB during the count.  Collecting every line's ports before
filtering (the old way) grows it by tens of MiB.
"""
from __future__ import annotations

import gc

import pytest

import fasttcpstat

from .hardening import SANITIZERS
from .population import Population, Spec

TOTAL = 100_000
BOUND_KIB = 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _peak_growth(count) -> "tuple[int, object]":
    """(KiB the peak RSS grew during count(), its result)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status_kib("VmHWM")
    result = count()
    return _status_kib("VmHWM") - before, result


def _measure() -> dict:
    """Runs in the namespace."""
    ports = [(1, 32767)]  # the listeners' side, not everything: the slow path
    with fasttcpstat.Counter("procfs") as pf, fasttcpstat.Counter("netlink") as nl:
        pf.counts(local_ports=[(1, 2)])  # warm up: compile, allocate once
        pf.counts_by_port([1])
        filtered = _peak_growth(lambda: pf.counts(local_ports=ports))
        by_port = _peak_growth(lambda: pf.counts_by_port(range(10000, 10200)))
        return {
            "filtered": filtered[0], "by_port": by_port[0],
            "filtered_ok": filtered[1] == nl.counts(local_ports=ports),
            "by_port_ok": by_port[1] == nl.counts_by_port(range(10000, 10200)),
            "filtered_total": sum(filtered[1].values()),
        }


@pytest.mark.skipif(SANITIZERS, reason="ASan's quarantine holds freed memory back")
def test_port_filter_memory_is_bounded(require_netns):
    with Population(Spec.mixed(TOTAL), workers="auto", ehash_entries=131072) as pop:
        result = pop.run(_measure)
    assert result["filtered_ok"] and result["by_port_ok"], result
    assert result["filtered_total"] >= TOTAL // 4, result  # a real share of them
    assert result["filtered"] <= BOUND_KIB, result
    assert result["by_port"] <= BOUND_KIB, result

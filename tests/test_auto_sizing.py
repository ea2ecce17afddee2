""""auto" for one count weighs bpf's setup against the namespace's size.

Real namespaces with their own established-hash tables: a small empty
one (a BPF program load would cost more than its walk saves: netlink), a
large one (bpf's cheaper walk of the empty buckets pays for the load),
and a small table full of sockets.  The sizes come from the namespace's
own net.ipv4.tcp_ehash_entries and /proc/net/sockstat, not the host's.
A long-lived Counter("auto") takes bpf whatever the size (cheaper per
count at every measured size: bench/results/crossover.md).
"""
from __future__ import annotations

import pytest

import fasttcpstat
from fasttcpstat import _sizing
from fasttcpstat._counter import _OneBreakdown, _OneCount

from .hardening import STABLE_SPEC
from .population import Population, Spec


def _choices() -> dict:
    """Runs in the namespace."""
    with _OneCount() as one, _OneBreakdown() as breakdown, fasttcpstat.Counter() as kept:
        return {"table": _sizing.table_size(), "one_count": one.backend,
                "breakdown": breakdown.backend, "kept": kept.backend,
                "counts_equal": one.counts() == kept.counts()}


@pytest.mark.parametrize("spec, table, one_count", [
    (Spec(), 1024, "netlink"),
    (Spec(), 262144, "bpf"),
    (STABLE_SPEC, 1024, "netlink"),  # ~600 sockets: not enough to pay a load
], ids=["empty-small-table", "empty-large-table", "small-table-600-sockets"])
def test_one_count_choice(require_netns, require_bpf, spec, table, one_count):
    with Population(spec, ehash_entries=table) as pop:
        got = pop.run(_choices)
    assert got == {"table": table, "one_count": one_count, "breakdown": "netlink",
                   "kept": "bpf", "counts_equal": True}


def test_rule_boundaries():
    # The measured costs (see _sizing): a load is paid back by ~133k empty
    # buckets, or ~3,300 sockets on a small table.
    assert not _sizing.one_count_prefers_bpf(1024, 0)
    assert not _sizing.one_count_prefers_bpf(1024, 3000)
    assert _sizing.one_count_prefers_bpf(1024, 4000)
    assert _sizing.one_count_prefers_bpf(262144, 0)
    assert _sizing.one_count_prefers_bpf(None, 0)  # before Linux 6.1: as before

""""auto" for one namespace weighs walk, bpf and netlink by its size.

Real namespaces with their own established-hash tables: a small empty
one (a program load would cost more than its walk saves: netlink for one
count, bpf for a reused Counter), a large empty one (bpf's cheaper walk of
the empty buckets), and small tables full of sockets, where a reused
Counter takes the walk (and a one-shot count too, once the table is big
enough to pay the walk's program load).  The sizes come from the
namespace's own net.ipv4.tcp_ehash_entries and /proc/net/sockstat, not
the host's.  A long-lived Counter("auto") follows its namespace as it
grows and shrinks.  Every count is checked against ss.
"""
from __future__ import annotations

import resource
import socket

import pytest

import fasttcpstat
from fasttcpstat import _sizing, _walk
from fasttcpstat._counter import _OneBreakdown, _OneCount

from .hardening import STABLE_SPEC
from .population import Population, Spec
from .population_reference import ss_counts

# The layout's index of struct net's inode (as in test_walk_backend.py).
NET_INUM = 9
WALK_OK = _walk._kernel_release() >= _walk.MIN_KERNEL
# What "auto" takes where the model prefers the walk: below 6.2 the walk
# is not weighed at all (it would be refused).
WALK_OR_BPF = "walk" if WALK_OK else "bpf"


def _choices() -> dict:
    """Runs in the namespace."""
    with _OneCount() as one, _OneBreakdown() as breakdown, fasttcpstat.Counter() as kept:
        return {"table": _sizing.table_size(), "one_count": one.backend,
                "breakdown": breakdown.backend, "kept": kept.backend,
                "reason": kept.fallback_reason,
                "counts_equal": one.counts() == kept.counts() == ss_counts(exclude_unconn=True)}


@pytest.mark.parametrize("spec, table, one_count, kept", [
    (Spec(), 1024, "netlink", "bpf"),
    (Spec(), 262144, "bpf", "bpf"),
    # ~1,300 sockets: not enough to pay a load, enough for the walk.
    (STABLE_SPEC, 1024, "netlink", WALK_OR_BPF),
], ids=["empty-small-table", "empty-large-table", "small-table-1300-sockets"])
def test_choice_by_size(require_netns, require_bpf, spec, table, one_count, kept):
    with Population(spec, ehash_entries=table) as pop:
        got = pop.run(_choices)
    assert got == {"table": table, "one_count": one_count, "breakdown": "netlink",
                   "kept": kept, "reason": None, "counts_equal": True}


def test_rule_boundaries():
    # The measured costs (see _sizing): a bpf load is paid back by ~90k
    # empty buckets, or ~2,900 sockets on a small table.
    assert not _sizing.one_count_prefers_bpf(1024, 0)
    assert not _sizing.one_count_prefers_bpf(1024, 2800)
    assert _sizing.one_count_prefers_bpf(1024, 3000)
    assert _sizing.one_count_prefers_bpf(262144, 0)
    assert _sizing.one_count_prefers_bpf(None, 0)  # before Linux 6.1: as before
    every = ("walk", "bpf", "netlink")
    # Reused: the walk from a few hundred sockets of its own...
    assert _sizing.cheapest(every, 1024, 300) == "bpf"
    assert _sizing.cheapest(every, 1024, 600) == "walk"
    assert _sizing.cheapest(every, 1 << 20, 1_000_000) == "walk"
    # ...never on a big empty table (a bucket costs it more than bpf)...
    assert _sizing.cheapest(every, 262144, 0) == "bpf"
    # ...nor for a small namespace next to a big host in a shared table.
    assert _sizing.cheapest(every, 262144, 100, foreign=100_000) == "bpf"
    assert _sizing.cheapest(every, 262144, 100_000, foreign=10_000) == "walk"
    # One-shot: the walk's program load (and, first in a process, BTF and
    # the self-check) must be paid back.
    assert _sizing.cheapest(every, 16384, 10_000, one_shot=True) == "bpf"
    assert _sizing.cheapest(every, 32768, 30_000, one_shot=True) == "walk"
    assert _sizing.cheapest(every, 32768, 30_000, one_shot=True, walk_ready=False) == "bpf"
    assert _sizing.cheapest(every, 131072, 130_000, one_shot=True, walk_ready=False) == "walk"
    assert _sizing.cheapest(every, None, 10**6) == "bpf"  # no size: the default order


def test_switch_needs_a_clear_gain():
    # Near the crossover a reused Counter stays where it is.
    at = 600
    assert _sizing.cheapest(("walk", "bpf"), 1024, at) == "walk"
    walk = _sizing.estimate_ns("walk", 1024, at)
    bpf = _sizing.estimate_ns("bpf", 1024, at)
    assert walk < bpf < walk / _sizing.SWITCH_RATIO


# --- a namespace that grows under a long-lived Counter -------------------

def _connections(pairs: int) -> list:
    """`pairs` established loopback connections (2 * pairs sockets), and
    their listener, in the calling process's namespace."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * pairs + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    opened = [listener]
    for _ in range(pairs):
        client = socket.create_connection(listener.getsockname())
        server, _peer = listener.accept()
        opened += [client, server]
    return opened


def _close_without_time_wait(opened: list) -> None:
    import struct

    for s in opened:
        # A reset, not a TIME_WAIT that would keep the table "big".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def _counted(counter) -> tuple:
    counts = counter.counts()
    return (counter.backend, counts == ss_counts(exclude_unconn=True),
            counts["ESTABLISHED"], counts["LISTEN"])


def _grow_and_shrink(pairs: int, break_walk: bool) -> list:
    """Runs in an empty namespace with a 1,024-bucket table: a reused
    Counter("auto") counts it empty, with `pairs` connections, and empty
    again; returns what it used and counted each time."""
    _sizing.RECHECK_SECONDS = 0.0  # re-weigh at every count (default 10 s)
    if break_walk:
        # A walk that fails its self-check when the Counter moves to it.
        _walk._layout_override[NET_INUM] = _walk.layout()[NET_INUM] + 8
    seen = []
    with fasttcpstat.Counter() as counter:
        seen.append(_counted(counter) + (counter.fallback_reason,))
        opened = _connections(pairs)
        seen.append(_counted(counter) + (counter.fallback_reason,))
        seen.append(_counted(counter) + (counter.fallback_reason,))
        _close_without_time_wait(opened[1:])
        seen.append(_counted(counter) + (counter.fallback_reason,))
        opened[0].close()
        seen.append(_counted(counter) + (counter.fallback_reason,))
    return seen


def test_reused_counter_follows_its_namespace(require_netns, require_walk):
    """An exporter's Counter("auto") starts on bpf in an empty namespace,
    moves to the walk once 2,000 connections make it clearly cheaper (at
    the next re-weighing), and back to bpf when they are gone: exact
    against ss every time, without a fallback reason (a move is no
    fallback)."""
    with Population(Spec(), ehash_entries=1024) as pop:
        seen = pop.run(_grow_and_shrink, 2000, False)
    assert seen == [
        ("bpf", True, 0, 0, None),
        # The count that re-weighs opens the walk and counts with it.
        ("walk", True, 4000, 1, None),
        ("walk", True, 4000, 1, None),
        ("bpf", True, 0, 1, None),  # one listener left: bpf is cheaper again
        ("bpf", True, 0, 0, None),
    ]


def test_refused_walk_when_growing_is_noted_and_not_retried(require_netns, require_walk):
    """The walk refused when a growing Counter moves to it (its self-check
    fails): the count is made by the backend in use, the reason is in
    fallback_reason, and the Counter keeps counting exactly on bpf."""
    with Population(Spec(), ehash_entries=1024) as pop:
        seen = pop.run(_grow_and_shrink, 2000, True)
    assert seen[0] == ("bpf", True, 0, 0, None)
    for backend, exact, _estab, _listen, reason in seen[1:]:
        assert backend == "bpf" and exact
        assert reason is not None and reason.startswith("walk: [Errno 5] walk self-check failed")
        assert reason.count("walk:") == 1  # refused once, not at every count
    assert [s[2:4] for s in seen] == [(0, 0), (4000, 1), (4000, 1), (0, 1), (0, 0)]


def _one_shots() -> dict:
    """Runs in the namespace of 15,000 connections."""
    _walk._checked.clear()  # as in a new process (pytest's ran the self-check)
    first = _OneCount()
    first_backend = first.backend
    first.close()
    with fasttcpstat.Counter("walk"):
        pass  # BTF and the self-check now paid in this process
    _sizing._verdicts.clear()  # the per-thread verdict holds a second
    with _OneCount() as one, _OneBreakdown() as breakdown:
        counts = one.counts()
        return {"first": first_backend, "ready": one.backend,
                "breakdown": breakdown.backend,
                "exact": counts == fasttcpstat.counts() == ss_counts(exclude_unconn=True),
                "estab": counts["ESTABLISHED"]}


def test_one_shot_takes_the_walk_on_a_big_table(require_netns, require_walk):
    """counts() pays the walk's program load at every call, and the first
    call of a process BTF and the self-check too: 15,000 connections
    (30,001 sockets) pay back the load, not the first set-up."""
    with Population(Spec(estab4=15000), ehash_entries=32768, workers="auto") as pop:
        got = pop.run(_one_shots)
    assert got == {"first": "bpf", "ready": "walk", "breakdown": "netlink",
                   "exact": True, "estab": 30000}


def test_environment_keeps_the_walk_out(require_netns, require_walk):
    """FASTTCPSTAT_BACKEND=-walk (or a list without it): "auto" never
    weighs the walk, whatever the size."""
    def run(value: str) -> tuple:
        import os

        os.environ["FASTTCPSTAT_BACKEND"] = value
        _sizing.RECHECK_SECONDS = 0.0
        opened = _connections(2000)
        try:
            with fasttcpstat.Counter() as counter:
                counter.counts()
                return counter.backend, counter._policy._switchable
        finally:
            _close_without_time_wait(opened)

    with Population(Spec(), ehash_entries=1024) as pop:
        assert pop.run(run, "-walk") == ("bpf", ["bpf", "netlink"])
        assert pop.run(run, "bpf,netlink") == ("bpf", [])
        assert pop.run(run, "") == ("walk", ["walk", "bpf", "netlink"])


# --- the fallback order behind a walk chosen by size ----------------------

def _refusals() -> dict:
    """Runs in a namespace where "auto" takes the walk: a walk refused at
    its start (self-check) and one that meets an anomaly at a count both
    leave bpf, with the reason, and exact counts."""
    import errno

    exact = ss_counts(exclude_unconn=True)
    out = {}
    _walk._layout_override[NET_INUM] = _walk.layout()[NET_INUM] + 8
    with fasttcpstat.Counter() as counter:
        out["at_open"] = (counter.backend, counter.fallback_reason, counter.counts() == exact)
    _walk._layout_override.clear()

    def anomaly(program):
        raise OSError(errno.EIO, "walk: the pass met anomalies (giveups=1); its counts "
                                 "may be wrong and are not shown")

    with fasttcpstat.Counter() as counter:
        first = counter.backend
        _walk._walk_one = anomaly  # injected: this forked child only
        counts = counter.counts()
        out["at_count"] = (first, counter.backend, counter.fallback_reason, counts == exact)
    return out


def test_refused_walk_moves_on_to_bpf(require_netns, require_walk):
    with Population(STABLE_SPEC, ehash_entries=1024) as pop:
        got = pop.run(_refusals)
    backend, reason, exact = got["at_open"]
    assert (backend, exact) == ("bpf", True)
    assert reason.startswith("walk: [Errno 5] walk self-check failed"), reason
    first, backend, reason, exact = got["at_count"]
    assert (first, backend, exact) == ("walk", "bpf", True)
    assert reason == ("walk: [Errno 5] walk: the pass met anomalies (giveups=1); its "
                      "counts may be wrong and are not shown")


# --- the command ------------------------------------------------------------

def _command_backends() -> dict:
    """Runs in the namespace: the backend the command counted with, for a
    single sample and for samples at an interval, and what it printed."""
    import contextlib
    import io
    import json

    from fasttcpstat import _cli

    seen = {}
    opened = []
    real = _cli.open_source

    def spy(*args, **kwargs):
        source = real(*args, **kwargs)
        opened.append(source.backend)
        return source

    _cli.open_source = spy
    for name, argv in (("single", []), ("interval", ["--interval", "0.01", "--count", "1"])):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = _cli.main(argv)
        line = json.loads(out.getvalue().splitlines()[-1])
        line.pop("time", None)
        seen[name] = (status, opened.pop(), line == ss_counts(exclude_unconn=True))
    return seen


def test_command_weighs_a_single_sample_as_one_count(require_netns, require_bpf):
    """`fasttcpstat` (one sample) pays its backend's set-up once, as
    counts() does: netlink on this small table; with --interval it keeps
    one Counter, which takes the walk here (~1,300 sockets of its own)."""
    with Population(STABLE_SPEC, ehash_entries=1024) as pop:
        got = pop.run(_command_backends)
    assert got["single"] == (0, "netlink", True)
    assert got["interval"] == (0, WALK_OR_BPF, True)

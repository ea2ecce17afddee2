"""The benchmark's socket populations, built with the tests' builder.

tests/population.py does the work (a private network namespace, worker
processes for more sockets than one process may hold, the expected counts
derived from the spec); this module only chooses what a population of N
sockets is made of and gives its namespace its own established hash.

Why the composition differs with the size: TIME_WAIT sockets expire after a
fixed 60 s, and at 1M sockets one pyroute2 count alone takes minutes, so
the count could not stay stable.  Up to 100k the population holds TIME_WAIT
(refreshed by tests.population's refresh_time_wait() before any count that
could outlive it); at 1M it holds only sockets that keep a file descriptor
(and SYN_SENT/SYN_RECV made to last hours: long_lived=True).
"""
from __future__ import annotations

import os
import sys
from typing import Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.population import (  # noqa: E402 - after the path set-up
    FAMILIES, STATES, Population, Spec, expected_counts,
)

# Above this size TIME_WAIT is left out (see the module docstring).
TIME_WAIT_MAX_SIZE = 200_000

# Share of the visible sockets per scenario, and visible sockets per instance
# (both ends of a connection count).  Mostly ESTABLISHED (and TIME_WAIT when
# allowed), as on a busy server, with a little of every other state.
SHARES = (
    ("estab4", 0.50, 2), ("estab6", 0.12, 2), ("estab_mapped", 0.04, 2),
    ("time_wait4", 0.18, 1), ("time_wait6", 0.06, 1),
    ("close_wait4", 0.02, 2), ("close_wait6", 0.01, 2),
    ("fin_wait1_4", 0.001, 2), ("last_ack4", 0.001, 2), ("closing4", 0.001, 2),
    ("syn_sent4", 0.003, 1), ("syn_recv4", 0.004, 2), ("syn_recv6", 0.002, 2),
    ("listen4", 0.0005, 1), ("listen6", 0.0002, 1), ("listen_dual", 0.0002, 1),
)


def bench_spec(total: int, time_wait: bool) -> Spec:
    """A spec of about `total` visible sockets (at least `total`).

    No orphaned FIN_WAIT2 (they expire after 60 s and cannot be refreshed);
    a few bound-only sockets, which no method should count."""
    counts = {name: max(1, int(total * share / per)) for name, share, per in SHARES}
    if not time_wait:
        counts["time_wait4"] = counts["time_wait6"] = 0
    counts["bound_inactive4"] = max(1, total // 2000)
    spec = Spec(**counts)
    deficit = total - visible(spec)
    if deficit > 0:                      # top up with ESTABLISHED pairs
        counts["estab4"] += (deficit + 1) // 2
        spec = Spec(**counts)
    return spec


def visible(spec: Spec) -> int:
    e = expected_counts(spec)
    return sum(e[f][s] for f in FAMILIES for s in STATES)


def total_counts(per_family: Dict[str, Dict[str, int]]) -> Dict[str, int]:
    return {s: sum(per_family[f][s] for f in FAMILIES) for s in STATES}


EHASH_SYSCTL = "/proc/sys/net/ipv4/tcp_child_ehash_entries"


def has_own_ehash() -> bool:
    """Whether a Population(ehash_entries=...) gets its own established
    hash here (kernel >= 6.1).

    Why own tables: with a shared hash, a dump walks every bucket of the
    host's table and skips other namespaces' sockets, so the numbers would
    depend on the rest of the machine (and a 1M population would slow down
    every other namespace's counts).  The population is made through an
    intermediate namespace whose tcp_child_ehash_entries says so
    (tests/population_netns.py's _own_ehash): the host-wide sysctl, which
    every namespace created meanwhile would read, is never touched."""
    return os.path.exists(EHASH_SYSCTL)


def ehash_entries_for(total: int) -> int:
    """About one bucket per socket, as the kernel sizes the host's table on
    a machine with enough memory for that many connections."""
    entries = 1024
    while entries < total:
        entries *= 2
    return entries


def build(total: int, settle_timeout: float = 120.0) -> "tuple[Population, dict]":
    """Build the benchmark population of about `total` sockets.  Returns the
    Population (a context manager) and a description for the results."""
    time_wait = total <= TIME_WAIT_MAX_SIZE
    spec = bench_spec(total, time_wait)
    entries = ehash_entries_for(total)
    private = has_own_ehash()
    pop = Population(spec, settle_timeout=settle_timeout, workers="auto", long_lived=True,
                     ehash_entries=entries)
    expected = total_counts(pop.expected)
    info = {
        "requested_size": total,
        "sockets": sum(expected.values()),
        "expected": expected,
        "expected_per_family": pop.expected,
        "spec": spec.as_dict(),
        "time_wait": time_wait,
        "time_wait_note": ("TIME_WAIT refreshed (destroyed and rebuilt) before any count "
                           "that could outlive it" if time_wait else
                           "no TIME_WAIT: a count at this size can outlast its 60 s"),
        "workers": pop.workers,
        "build_timings": pop.timings,
        "ehash": ("own, %d buckets" % entries) if private
                 else "shared with the host (no tcp_child_ehash_entries)",
    }
    return pop, info

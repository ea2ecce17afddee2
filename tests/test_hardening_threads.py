"""Threads: 16 threads counting at once get the exact counts, every time.

The population is stable for minutes (no TIME_WAIT, no orphan FIN_WAIT2:
tests/hardening.STABLE_SPEC), so every single answer must equal the one
derived from the spec (or, for port filters and per-port breakdowns, the
one computed single-threaded before the threads start, by two backends
that must agree).  Half of the threads share one Counter (its lock
serialises their dumps on one socket); the other half each own a Counter,
over every backend and request form, and some call the one-shot module
functions.  10 s under FASTTCPSTAT_STRESS=1, 2 s by default, and at least
MIN_ITERATIONS calls per thread: no count of calls is expected in a fixed
time, which would depend on the machine's speed.

Free-threading: the C module does not declare Py_mod_gil NOT_USED (see
csrc/_fasttcpstat.c), so a free-threaded CPython re-enables the GIL when it
loads it; the declaration may come back only with a CI run of this test on
such a build.
"""
from __future__ import annotations

import threading
import time

import pytest

import fasttcpstat

from .hardening import STABLE_SPEC, open_fds, scale, total_expected
from .population import Population

pytestmark = pytest.mark.stress

THREADS = 16
DURATION = scale(10.0, 2.0)
MIN_ITERATIONS = 5  # calls by each thread, at the least


@pytest.fixture(scope="module")
def stable_population(require_netns):
    with Population(STABLE_SPEC, ehash_entries=4096) as pop:
        yield pop


def _queries(ports):
    """name -> function(counter) for the queries the threads repeat."""
    return {
        "all": lambda c: c.counts(),
        "ipv4": lambda c: c.counts(family="ipv4"),
        "ipv6": lambda c: c.counts(family="ipv6"),
        "states": lambda c: c.counts(states=["ESTABLISHED", "SYN_RECV", "LISTEN"]),
        "local-ports": lambda c: c.counts(local_ports=[(ports[0], ports[-1])]),
        "remote-ports": lambda c: c.counts(remote_ports=ports, states=["ESTABLISHED"]),
        "by-port": lambda c: c.counts_by_port(ports),
        "by-remote-port": lambda c: c.counts_by_port(ports, side="remote", family="ipv4"),
    }


def _walk_usable(request) -> bool:
    """The walk backend joins the threads where the kernel has it (>= 6.2)."""
    from fasttcpstat import _walk

    if _walk._kernel_release() < _walk.MIN_KERNEL:
        return False
    request.getfixturevalue("require_walk")
    return True


def _hammer(expected: dict, duration: float, nthreads: int, walk: bool) -> dict:
    """Runs in the namespace."""
    fds_before = open_fds()
    ports = list(range(10000, 10040))  # the population's listeners
    queries = _queries(ports)

    # Single-threaded answers: from the spec where it says, else from
    # netlink and /proc, which must agree.
    want = {}
    with fasttcpstat.Counter("netlink") as nl, fasttcpstat.Counter("procfs") as pf:
        for name, query in queries.items():
            a, b = query(nl), query(pf)
            assert a == b, (name, a, b)
            want[name] = a
    assert want["all"] == total_expected(expected)
    assert want["ipv4"] == expected["ipv4"]
    assert want["ipv6"] == expected["ipv6"]
    assert any(sum(v.values()) for v in want["by-port"].values())

    shared = fasttcpstat.Counter()
    owned_kinds = [("netlink", "auto"), ("netlink", "v2"), ("netlink", "legacy"),
                   ("procfs", "auto"), ("one-shot-netlink", None), ("one-shot-auto", None),
                   ("netlink", "auto"), ("walk" if walk else "procfs", "auto")]
    names = list(queries)
    barrier = threading.Barrier(nthreads)
    stats = [{"iterations": 0, "mismatches": [], "errors": []} for _ in range(nthreads)]

    def worker(index: int) -> None:
        stat = stats[index]
        own = None
        kind = None
        if index >= nthreads // 2:
            kind = owned_kinds[index % len(owned_kinds)]
            if not kind[0].startswith("one-shot"):
                own = fasttcpstat.Counter(kind[0], request=kind[1])
        barrier.wait()
        deadline = time.monotonic() + duration
        i = index
        try:
            # At least `duration`, and at least MIN_ITERATIONS calls however
            # slowly a loaded machine runs them.
            while time.monotonic() < deadline or i - index < MIN_ITERATIONS:
                name = names[i % len(names)]
                i += 1
                try:
                    if own is not None:
                        got = queries[name](own)
                    elif kind is not None:
                        backend = "netlink" if kind[0] == "one-shot-netlink" else "auto"
                        got = _one_shot(name, ports, backend)
                    else:
                        got = queries[name](shared)
                except Exception as exc:  # noqa: BLE001 - reported below
                    stat["errors"].append(repr(exc))
                    continue
                stat["iterations"] += 1
                if got != want[name] and len(stat["mismatches"]) < 3:
                    stat["mismatches"].append((name, got, want[name]))
        finally:
            if own is not None:
                own.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(nthreads)]
    for t in threads:
        t.start()
    # A thread stuck in a dump (say, two of them reading one socket) must
    # fail the test, not hang it: this child then exits with them inside.
    give_up = time.monotonic() + duration + 120
    for t in threads:
        t.join(max(0.0, give_up - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if hung:
        return {"hung": hung, "stats": stats}
    used = shared.backend
    shared.close()
    return {"hung": [], "stats": stats, "fds_before": fds_before, "fds_after": open_fds(),
            "shared_backend": used}


def _one_shot(name: str, ports, backend: str):
    if name == "by-port":
        return fasttcpstat.counts_by_port(ports, backend=backend)
    if name == "by-remote-port":
        return fasttcpstat.counts_by_port(ports, side="remote", family="ipv4", backend=backend)
    kwargs = {
        "all": {}, "ipv4": {"family": "ipv4"}, "ipv6": {"family": "ipv6"},
        "states": {"states": ["ESTABLISHED", "SYN_RECV", "LISTEN"]},
        "local-ports": {"local_ports": [(ports[0], ports[-1])]},
        "remote-ports": {"remote_ports": ports, "states": ["ESTABLISHED"]},
    }[name]
    return fasttcpstat.counts(backend=backend, **kwargs)


def test_sixteen_threads_exact_counts(request, stable_population):
    pop = stable_population
    walk = _walk_usable(request)
    result = pop.run(_hammer, pop.expected, DURATION, THREADS, walk)
    stats = result["stats"]
    assert not result["hung"], f"threads {result['hung']} never finished their counts"
    errors = [(i, s["errors"][:3]) for i, s in enumerate(stats) if s["errors"]]
    mismatches = [(i, s["mismatches"]) for i, s in enumerate(stats) if s["mismatches"]]
    assert not errors, errors
    assert not mismatches, mismatches
    # Every thread really counted, several times, while the others did (a
    # call that raised is an error above, not an iteration).
    iterations = [s["iterations"] for s in stats]
    assert min(iterations) >= MIN_ITERATIONS, iterations
    assert result["fds_after"] == result["fds_before"]
    # The shared Counter("auto"): the walk here (~1,300 sockets in a
    # 4,096-bucket table of their own: _sizing), as a root user gets it.
    assert result["shared_backend"] == ("walk" if walk else "bpf")

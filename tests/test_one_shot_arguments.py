"""Arguments are read exactly once: any iterable gives the list's result.

One row per iterable parameter of every public function and method; each
row is called with the list form, then with every one-shot and collection
form of the same values (a generator, an iterator, a tuple, a set, a
dict's keys, a range where the values are consecutive ports), on a real,
stable population.  The list's result must be non-trivial (some nonzero
count), so a row where both forms return nothing cannot pass.
"""
from __future__ import annotations

import pytest

import fasttcpstat
from fasttcpstat._report import Query, take

from .hardening import STABLE_SPEC
from .population import Population

LISTEN_FIRST = 10000  # tests/population.py: listeners from 10000 up
STATES = ["ESTABLISHED", "LISTEN", "CLOSE_WAIT"]


def _forms(values: list, port_filter: bool) -> dict:
    """name -> function making a fresh iterable of `values`.  A port
    filter takes a tuple as one (low, high) range (documented), so the
    tuple form is not a list of ports there."""
    forms = {
        "generator": lambda: (v for v in values),
        "iterator": lambda: iter(values),
        "set": lambda: set(values),
        "dict keys": lambda: dict.fromkeys(values).keys(),
        "map": lambda: map(lambda v: v, values),
    }
    if not port_filter:
        forms["tuple"] = lambda: tuple(values)
    if all(isinstance(v, int) for v in values) and values == list(
            range(values[0], values[0] + len(values))):
        forms["range"] = lambda: range(values[0], values[0] + len(values))
    return forms


def _busy_ports() -> list:
    """Six listener ports that have connections, found with netlink."""
    per_port = fasttcpstat.counts_by_port(range(LISTEN_FIRST, LISTEN_FIRST + 200),
                                          side="remote", backend="netlink")
    busy = [port for port, counts in per_port.items() if sum(counts.values())]
    assert len(busy) >= 6, per_port
    return busy[:6]


def _rows(ports: list) -> list:
    """(row name, values, call(counter, arg)); the module functions open
    their own counter."""
    return [
        ("counts(states)", STATES,
         lambda c, a: fasttcpstat.counts(states=a)),
        ("counts(local_ports)", ports,
         lambda c, a: fasttcpstat.counts(local_ports=a)),
        ("counts(remote_ports)", ports,
         lambda c, a: fasttcpstat.counts(remote_ports=a)),
        ("counts(local_ports=ranges)", [(ports[0], ports[2]), ports[4]],
         lambda c, a: fasttcpstat.counts(local_ports=a)),
        ("Counter.counts(states)", STATES,
         lambda c, a: c.counts(states=a)),
        ("Counter.counts(local_ports)", ports,
         lambda c, a: c.counts(local_ports=a)),
        ("Counter.counts(remote_ports)", ports,
         lambda c, a: c.counts(remote_ports=a, family="ipv4")),
        ("Counter.counts_by_family(states)", STATES,
         lambda c, a: c.counts_by_family(states=a)),
        ("Counter.counts_by_family(local_ports)", ports,
         lambda c, a: c.counts_by_family(local_ports=a)),
        ("Counter.counts_by_family(remote_ports)", ports,
         lambda c, a: c.counts_by_family(remote_ports=a)),
        ("counts_by_port(ports)", ports,
         lambda c, a: fasttcpstat.counts_by_port(a)),
        ("counts_by_port(states)", STATES,
         lambda c, a: fasttcpstat.counts_by_port(ports, states=a)),
        ("Counter.counts_by_port(ports)", ports,
         lambda c, a: c.counts_by_port(a, side="remote")),
        ("Counter.counts_by_port(states)", STATES,
         lambda c, a: c.counts_by_port(ports, states=a)),
        ("Query(states)", STATES,
         lambda c, a: take(c, Query(states=a))),
        ("Query(local_ports)", ports,
         lambda c, a: take(c, Query(local_ports=a, by_family=True))),
        ("Query(remote_ports)", ports,
         lambda c, a: take(c, Query(remote_ports=a))),
        ("Query(by_port)", ports,
         lambda c, a: take(c, Query(by_port=a, by_family=True))),
    ]


def _nonzero(result) -> bool:
    if isinstance(result, dict):
        return any(_nonzero(v) for v in result.values())
    if isinstance(result, list):  # take()'s series
        return any(_nonzero(counts) for _, counts in result)
    return bool(result)


def _compare(backend: str) -> list:
    """Runs in the namespace: (row, form, list result, form's result) for
    every row and form, and the rows whose list result was all zeros."""
    out = []
    empty = []
    rows = _rows(_busy_ports())
    with fasttcpstat.Counter(backend) as counter:
        for name, values, call in rows:
            want = call(counter, list(values))
            if not _nonzero(want):
                empty.append(name)
            for form, make in _forms(values, "_ports" in name).items():
                # The list this form stands for: a set iterates in its own
                # order, and counts_by_port keeps the order given.
                reference = call(counter, list(make()))
                got = call(counter, make())
                out.append((name, form, reference, got))
    return out, empty, len(rows)


@pytest.fixture(scope="module")
def stable_population(require_netns):
    with Population(STABLE_SPEC) as pop:
        yield pop


@pytest.mark.parametrize("backend", ["auto", "bpf", "netlink", "procfs", "walk"])
def test_every_iterable_reads_like_a_list(request, stable_population, backend):
    if backend == "bpf":
        request.getfixturevalue("require_bpf")
    if backend == "walk":
        request.getfixturevalue("require_walk")
    results, empty, nrows = stable_population.run(_compare, backend)
    assert not empty, f"rows that count nothing cannot tell forms apart: {empty}"
    assert nrows >= 18 and len(results) >= nrows * 4
    wrong = [(name, form, want, got) for name, form, want, got in results if got != want]
    assert not wrong, wrong[:3]

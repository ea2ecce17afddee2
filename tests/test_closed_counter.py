"""A closed Counter: the same ValueError on every backend, for every
method; it never reopens, and holds no descriptor afterwards.

One table: backends (auto, bpf, netlink, procfs, pinned, walk; with and
without netns=) x methods; "auto" is the walk in its own namespace here
(a small table holding ~1,300 sockets) and bpf with netns=.  Each case opens a Counter in a real population's
namespace, counts once (so every lazily opened part is open: BPF
programs with filters, the per-port netlink socket), closes it, then
calls every method twice; /proc/self/fd must be what it was before the
Counter was created.  Also: close() from another thread while threads
count: each count either finishes exactly or raises that ValueError.
"""
from __future__ import annotations

import os
import threading

import pytest

import fasttcpstat

from .hardening import STABLE_SPEC, open_fds, walk_as_auto
from .population import Population

MESSAGE = "I/O operation on a closed Counter"
PIN = f"/sys/fs/bpf/issue11p-closed-{os.getpid()}"

CALLS = {
    "counts": lambda c: c.counts(),
    "counts(states=[])": lambda c: c.counts(states=[]),
    "counts(family, ports)": lambda c: c.counts("ipv4", local_ports=[(1, 20000)]),
    "counts_by_port": lambda c: c.counts_by_port([10000, 10001]),
    "counts_by_port(states=[])": lambda c: c.counts_by_port([10000], states=[]),
    "counts_by_family": lambda c: c.counts_by_family(),
    "counts_by_family(states=[])": lambda c: c.counts_by_family(states=[]),
}

BACKENDS = ["auto", "bpf", "netlink", "procfs", "pinned", "walk"]


def _open(backend: str, netns) -> fasttcpstat.Counter:
    if backend == "pinned":
        return fasttcpstat.Counter("pinned", path=PIN, netns=netns)
    return fasttcpstat.Counter(backend, netns=netns)


def _use_everything(counter: fasttcpstat.Counter) -> None:
    counter.counts()
    counter.counts_by_port([10000, 10001])  # opens netlink beside bpf / pinned
    if counter.backend != "pinned":
        for low in range(1, 12):  # more BPF programs than its cache keeps
            counter.counts(local_ports=[(low, 20000)])


def _closed_behaviour(backend: str, netns) -> dict:
    """Runs in the namespace."""
    before = open_fds()
    counter = _open(backend, netns)
    _use_everything(counter)
    used = counter.backend
    counter.close()
    counter.close()  # idempotent
    outcomes = {}
    for name, call in CALLS.items():
        for _ in range(2):
            try:
                call(counter)
                outcomes[name] = "no error"
            except ValueError as exc:
                outcomes[name] = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported
                outcomes[name] = repr(exc)
    return {"outcomes": outcomes, "closed": counter.closed, "backend": used,
            "before": before, "after": open_fds()}


@pytest.fixture(scope="module")
def stable_population(require_netns):
    # A table of its own, small for its ~1,300 sockets: "auto" then takes
    # the walk there (_sizing), the path a root user gets on a busy host.
    with Population(STABLE_SPEC, ehash_entries=1024) as pop:
        yield pop


@pytest.fixture(scope="module")
def pinned_file(request):
    request.getfixturevalue("require_bpf")
    if os.path.lexists(PIN):
        os.unlink(PIN)
    fasttcpstat.pin(PIN)
    yield PIN
    os.unlink(PIN)


@pytest.mark.parametrize("with_netns", [False, True], ids=["own-ns", "netns=pid"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_counter_table(request, stable_population, backend, with_netns):
    want = backend
    if backend == "auto":
        # By size here; another namespace (netns=) keeps bpf first.
        want = "bpf" if with_netns else walk_as_auto(request)
    if backend in ("bpf", "pinned", "auto"):
        request.getfixturevalue("require_bpf")
    if backend == "walk":
        request.getfixturevalue("require_walk")
    if backend == "pinned":
        request.getfixturevalue("pinned_file")
    netns = stable_population.holder_pid if with_netns else None
    result = stable_population.run(_closed_behaviour, backend, netns)
    assert result["closed"] is True
    assert result["backend"] == want
    assert result["outcomes"] == {name: MESSAGE for name in CALLS}
    assert result["after"] == result["before"]


def _close_under_counts(backend: str) -> dict:
    """Runs in the namespace: 6 threads count while the main thread closes."""
    before = open_fds()
    counter = fasttcpstat.Counter(backend)
    want = counter.counts()
    used = counter.backend
    errors: list = []
    wrong: list = []
    started = threading.Barrier(7)

    def work(i: int) -> None:
        started.wait()
        while True:
            try:
                got = counter.counts() if i % 2 else counter.counts_by_port([10000])
            except ValueError as exc:
                if str(exc) != MESSAGE:
                    errors.append(repr(exc))
                return
            except Exception as exc:  # noqa: BLE001 - reported
                errors.append(repr(exc))
                return
            if i % 2 and got != want:
                wrong.append(got)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    started.wait()
    for _ in range(20):
        counter.counts()
    counter.close()
    for t in threads:
        t.join(60)
    return {"errors": errors, "wrong": wrong, "alive": [t.is_alive() for t in threads],
            "backend": used, "before": before, "after": open_fds()}


@pytest.mark.parametrize("backend", ["auto", "netlink", "procfs", "walk"])
def test_close_while_other_threads_count(request, stable_population, backend):
    want = walk_as_auto(request) if backend == "auto" else backend
    if backend == "walk":
        request.getfixturevalue("require_walk")
    result = stable_population.run(_close_under_counts, backend)
    assert result["backend"] == want
    assert not any(result["alive"])
    assert result["errors"] == []
    assert result["wrong"] == []
    assert result["after"] == result["before"]

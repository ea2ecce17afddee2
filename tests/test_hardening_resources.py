"""Resources: thousands of counts leave fds and memory unchanged.

Every backend and every failing path is run N times in a row (10,000 with
FASTTCPSTAT_STRESS=1, 1,000 by default) after a warm-up of N/10, then N
times again, in a child process inside a namespace with a small stable
population (and its own small established-hash table, so that 10,000
counts take seconds).  The paths: netlink (both request forms, filters,
per-port), procfs, other namespaces by path and by pid, summary(); refused
netlink (a seccomp filter: socket() refused, then sendmsg() refused), bad
namespaces, bad arguments in Python and in the C extension.

What is compared before and after each run of N calls, and the bounds:
- open file descriptors: exactly equal over both runs (fds are small
  integers the kernel reuses: a single leaked one shows);
- RSS: at most RSS_BOUND_KIB (256 KiB) more.  RSS alone is a weak leak
  detector (memory freed before the run is resident already and can
  absorb a leak), but it sees what malloc does not: mmap()ed memory,
  thread stacks.  Hence:
- bytes in use by malloc (glibc mallinfo2): at most HEAP_BOUND (64 KiB)
  more: caches such as the re module's settle during the warm-up, and a
  leak of one 16-byte allocation per call adds 160 KiB over 10,000 calls
  (16 KiB over 1,000: the default run catches leaks of >= 64 bytes a call);
- pymalloc blocks in use (sys.getallocatedblocks): at most BLOCK_BOUND
  (500) more (measured noise: up to ~150, from the threading module's
  bookkeeping for the namespace helper threads); one leaked Python object
  per call would add N (>= 1,000).
A leak grows memory in every run of N calls, by the same amount; the
allocator's own growth (glibc's heap and pymalloc's arenas grow by whole
pages, a page first touched counts) comes once, when it comes.  So a
memory figure fails only where it passed its bound in both runs: a single
run once grew RSS by 284 KiB on a loaded machine, with no leak.
Under the sanitizers (FASTTCPSTAT_SANITIZERS=1) only fds are compared:
ASan replaces malloc and holds freed memory in quarantine on purpose.
"""
from __future__ import annotations

import errno
import os
import time
from typing import Callable, Dict

import pytest

import fasttcpstat
from fasttcpstat import _fasttcpstat

from . import seccomp
from .hardening import (SANITIZERS, heap_in_use, open_fds, python_blocks, rss_kib,
                        scale)
from .population import Population, Spec

pytestmark = pytest.mark.stress

N = scale(10_000, 1_000)
RSS_BOUND_KIB = 256
HEAP_BOUND = 64 * 1024
BLOCK_BOUND = 500

SPEC = Spec(listen4=2, listen6=1, estab4=10, estab6=5, close_wait4=3, syn_recv4=2)


@pytest.fixture(scope="module")
def population(require_netns):
    with Population(SPEC, ehash_entries=1024) as pop:
        yield pop


def _expect(exc_type: type, call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except exc_type:
            return
        raise AssertionError(f"expected {exc_type.__name__}")
    return run


RUNS = 2
# Each memory figure of _usage(), its bound, and how a failure names it.
MEMORY = {
    "rss_kib": (RSS_BOUND_KIB, "RSS (KiB)"),
    "heap": (HEAP_BOUND, "malloc'd bytes in use"),
    "blocks": (BLOCK_BOUND, "pymalloc blocks in use"),
}


def _usage() -> Dict[str, int]:
    heap = heap_in_use()
    return {"blocks": python_blocks(), "heap": max(heap, 0), "rss_kib": rss_kib()}


def _measure(paths: Dict[str, Callable[[], object]], n: int) -> Dict[str, dict]:
    """Run each path n times after a warm-up, RUNS times over: the fds
    before and after, and each memory figure's growth in each run."""
    report = {}
    for name, call in paths.items():
        for _ in range(max(20, n // 10)):
            call()
        fds_before = open_fds()
        growth: Dict[str, list] = {key: [] for key in MEMORY}
        start = time.monotonic()
        for _ in range(RUNS):
            before = _usage()
            for _ in range(n):
                call()
            after = _usage()
            for key in MEMORY:
                growth[key].append(after[key] - before[key])
        elapsed = time.monotonic() - start
        fds_after = open_fds()
        report[name] = {
            "fds": (len(fds_before), len(fds_after)),
            "new_fds": {fd: t for fd, t in fds_after.items() if fds_before.get(fd) != t},
            **growth,
            "seconds": round(elapsed, 2),
        }
    return report


def _problems(report: Dict[str, dict], n: int) -> "list[str]":
    problems = []
    for name, r in report.items():
        if r["fds"][0] != r["fds"][1]:
            problems.append(f"{name}: fds {r['fds'][0]} -> {r['fds'][1]}: {r['new_fds']}")
        if SANITIZERS:
            continue
        for key, (bound, what) in MEMORY.items():
            if min(r[key]) > bound:
                problems.append(f"{name}: {what} grew by {r[key]} in each of {RUNS} runs "
                                f"of {n} calls (bound {bound})")
    return problems


def _check(report: Dict[str, dict]) -> None:
    worst = {key: max(max(r[key]) for r in report.values()) for key in MEMORY}
    print(f"largest growth in one run of {N} calls: {worst}")
    problems = _problems(report, N)
    assert not problems, "\n".join(problems) + f"\nfull report: {report}"


def _working_paths(ns_path: str, holder_pid: int, n: int) -> Dict[str, dict]:
    """Runs in the namespace: every backend, reused and one-shot."""
    auto = fasttcpstat.Counter("netlink")
    v2 = fasttcpstat.Counter("netlink", request="v2")
    procfs = fasttcpstat.Counter("procfs")
    raw = _fasttcpstat.NetlinkCounter()
    expected = auto.counts()
    assert sum(expected.values()) > 0
    ports = list(range(10000, 10040))  # the population's listeners are there

    def checked(call):
        def run():
            assert call() == expected
        return run

    paths = {
        "netlink-counter-auto": checked(auto.counts),
        "netlink-counter-v2": checked(v2.counts),
        "netlink-counter-legacy-v4": lambda: auto.counts(family="ipv4"),
        "netlink-filters": lambda: auto.counts(local_ports=[22, (10000, 10010), range(40000, 61000)],
                                               remote_ports=range(1, 65535), states=["LISTEN", "ESTABLISHED"]),
        "netlink-by-port": lambda: auto.counts_by_port(ports, states=["ESTABLISHED", "LISTEN"]),
        "netlink-by-remote-port": lambda: v2.counts_by_port(ports, side="remote"),
        "netlink-one-shot": checked(lambda: fasttcpstat.counts(backend="netlink")),
        "c-extension-direct": lambda: raw.count(3, _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2,
                                                local=[(0, 30000)], by_port=[10000, 10001]),
        "procfs-counter": checked(procfs.counts),
        "procfs-by-port": lambda: procfs.counts_by_port(ports, side="local"),
        "procfs-one-shot": checked(lambda: fasttcpstat.counts(backend="procfs")),
        "netns-path-netlink": checked(lambda: fasttcpstat.counts(netns=ns_path, backend="netlink")),
        "netns-path-procfs": checked(lambda: fasttcpstat.counts(netns=ns_path, backend="procfs")),
        "netns-pid-procfs": checked(lambda: fasttcpstat.counts(netns=holder_pid, backend="procfs")),
        "netns-counter-netlink": checked(_netns_counter(ns_path)),
        "summary": fasttcpstat.summary,
        "summary-netns-pid": lambda: fasttcpstat.summary(netns=holder_pid),
    }
    try:
        return _measure(paths, n)
    finally:
        for c in (auto, v2, procfs, raw):
            c.close()


def _netns_counter(ns_path: str) -> Callable[[], dict]:
    counter = fasttcpstat.Counter("netlink", netns=ns_path)
    return counter.counts


def _failing_paths(tmp: str, n: int) -> Dict[str, dict]:
    """Runs in the namespace: every way a call can fail before counting."""
    regular = os.path.join(tmp, "regular")
    with open(regular, "w") as f:
        f.write("x")
    fifo = os.path.join(tmp, "fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    raw = _fasttcpstat.NetlinkCounter()
    all_states, v2 = _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2
    paths = {
        "netns-missing-path": _expect(FileNotFoundError,
                                      lambda: fasttcpstat.counts(netns="/nonexistent/ns")),
        "netns-missing-pid": _expect(FileNotFoundError,
                                     lambda: fasttcpstat.counts(netns=4194305)),
        "netns-not-a-namespace": _expect(ValueError, lambda: fasttcpstat.counts(netns=regular)),
        "netns-fifo": _expect(ValueError, lambda: fasttcpstat.counts(netns=fifo)),
        "netns-wrong-type": _expect(ValueError,
                                    lambda: fasttcpstat.counts(netns="/proc/self/ns/uts")),
        "netns-counter-procfs-missing-pid": _expect(
            FileNotFoundError, lambda: fasttcpstat.Counter("procfs", netns=4194305)),
        "bad-states": _expect(ValueError, lambda: fasttcpstat.counts(states=["NOPE"])),
        "bad-family": _expect(ValueError, lambda: fasttcpstat.counts(family="ipv5")),
        "bad-backend": _expect(ValueError, lambda: fasttcpstat.counts(backend="fast")),
        "bad-ports": _expect(ValueError, lambda: fasttcpstat.counts(local_ports=70000)),
        "bad-ports-type": _expect(TypeError, lambda: fasttcpstat.counts(remote_ports="80")),
        "bad-by-port": _expect(ValueError, lambda: fasttcpstat.counts_by_port(range(1025))),
        "bad-side": _expect(ValueError, lambda: fasttcpstat.counts_by_port([1], side="x")),
        # The C extension's error paths, after it allocated its tables.
        "c-bad-range": _expect(ValueError, lambda: raw.count(3, all_states, v2,
                                                             local=[(1, 2)] * 100 + [(5, 4)])),
        "c-range-type": _expect(TypeError, lambda: raw.count(3, all_states, v2,
                                                             remote=[(1, 2), 3])),
        "c-by-port-twice": _expect(ValueError, lambda: raw.count(3, all_states, v2,
                                                                 by_port=[80, 81, 80])),
        "c-by-port-range": _expect(ValueError, lambda: raw.count(3, all_states, v2,
                                                                 by_port=[80, 65536])),
        "c-by-port-type": _expect(TypeError, lambda: raw.count(3, all_states, v2,
                                                               by_port=[80, "x"])),
        "c-bad-states": _expect(ValueError, lambda: raw.count(3, 1 << 13, v2)),
    }
    try:
        return _measure(paths, n)
    finally:
        raw.close()


def _refused_paths(refuse: str, n: int) -> Dict[str, dict]:
    """Runs in the namespace, in a child that a seccomp filter forbids
    `refuse` (socket() of AF_NETLINK, or sendmsg())."""
    import socket as socket_mod

    if refuse == "socket":
        seccomp.deny("bpf", errno.EPERM)  # so "auto" walks its whole list
        seccomp.deny("socket", errno.EPERM, arg0=socket_mod.AF_NETLINK)
    else:
        seccomp.deny("bpf", errno.EPERM)
        seccomp.deny("sendmsg", errno.EACCES)
    expected = fasttcpstat.counts(backend="procfs")
    netlink = None if refuse == "socket" else fasttcpstat.Counter("netlink")

    def auto_falls_back():
        with fasttcpstat.Counter() as counter:
            assert counter.counts() == expected
            assert counter.backend == "procfs"

    paths = {
        "auto-falls-back": auto_falls_back,
        "module-auto": lambda: fasttcpstat.counts(),
        "netlink-refused": _expect(PermissionError,
                                   lambda: fasttcpstat.counts(backend="netlink")),
    }
    if netlink is not None:
        # The socket opens but every dump is refused: the C side closes it
        # and the next count opens a new one.
        paths["netlink-counter-refused-each-count"] = _expect(PermissionError, netlink.counts)
    return _measure(paths, n)


def test_working_paths_leak_nothing(population):
    report = population.run(_working_paths, population.ns_path, population.holder_pid, N)
    _check(report)


def test_failing_paths_leak_nothing(population, tmp_path):
    report = population.run(_failing_paths, str(tmp_path), N)
    _check(report)


@pytest.mark.skipif(not seccomp.supported(), reason="seccomp filter for x86_64/aarch64 only")
@pytest.mark.parametrize("refuse", ["socket", "sendmsg"])
def test_refused_netlink_leaks_nothing(population, refuse):
    report = population.run(_refused_paths, refuse, N)
    _check(report)


def test_the_bounds_would_catch_a_leak():
    """The measuring itself: a leaked fd, a leaked 64-byte malloc, a leaked
    Python object and a leaked page of mmap()ed memory per call are each
    reported; a one-time growth (1 MiB of pages touched once) is not."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    n = 1000
    objects, pointers, fds, maps = [], [], [], []
    once = mmap.mmap(-1, 1 << 20)
    calls = [0]

    def page() -> None:
        m = mmap.mmap(-1, mmap.PAGESIZE)
        m[0] = 1  # touched: resident
        maps.append(m)

    def grows_once() -> None:
        calls[0] += 1
        if calls[0] == n:  # after the warm-up (n/10), in the first run
            for offset in range(0, len(once), mmap.PAGESIZE):
                once[offset] = 1

    report = _measure({
        "object": lambda: objects.append(object()),
        "malloc": lambda: pointers.append(libc.malloc(64)),
        "fd": lambda: fds.append(os.open("/dev/null", os.O_RDONLY)),
        "mmap": page,
    }, n)
    once_report = _measure({"once": grows_once}, n)
    for fd in fds:
        os.close(fd)
    for pointer in pointers:
        libc.free(ctypes.c_void_p(pointer))
    for m in maps:
        m.close()
    once.close()
    problems = "\n".join(_problems(report, n))
    assert f"fd: fds {report['fd']['fds'][0]} -> {report['fd']['fds'][0] + RUNS * n}" in problems
    if not SANITIZERS:  # ASan's malloc and PYTHONMALLOC=malloc hide these
        assert "object: pymalloc blocks" in problems, report
        assert "malloc: malloc'd bytes" in problems, report
        assert "mmap: RSS" in problems, report
        assert max(once_report["once"]["rss_kib"]) >= 1024, once_report
        assert _problems(once_report, n) == [], once_report

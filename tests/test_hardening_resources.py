"""Resources: thousands of counts leave fds and memory unchanged.

Every backend and every failing path is run N times in a row (10,000 with
FASTTCPSTAT_STRESS=1, 1,000 by default) after a warm-up of N/10, in a
child process inside a namespace with a small stable population (and its
own small established-hash table, so that 10,000 counts take seconds).
The paths: netlink (both request forms, filters, per-port), procfs, other
namespaces by path and by pid, summary(); refused netlink (a seccomp
filter: socket() refused, then sendmsg() refused), bad namespaces, bad
arguments in Python and in the C extension.

What is compared before and after the N calls, and the bounds:
- open file descriptors: exactly equal (fds are small integers the kernel
  reuses: a single leaked one shows);
- RSS: at most RSS_BOUND_KIB (256 KiB) more.  This is allocator noise:
  glibc's heap and pymalloc's arenas grow by whole pages, and a page first
  touched during the run counts.  RSS alone is a weak leak detector (memory
  freed before the run is resident already and can absorb a leak), hence:
- bytes in use by malloc (glibc mallinfo2): at most HEAP_BOUND (64 KiB)
  more: caches such as the re module's settle during the warm-up, and a
  leak of one 16-byte allocation per call adds 160 KiB over 10,000 calls
  (16 KiB over 1,000: the default run catches leaks of >= 64 bytes a call);
- pymalloc blocks in use (sys.getallocatedblocks): at most BLOCK_BOUND
  (500) more (measured noise: up to ~150, from the threading module's
  bookkeeping for the namespace helper threads); one leaked Python object
  per call would add N (>= 1,000).
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


def _measure(paths: Dict[str, Callable[[], object]], n: int) -> Dict[str, dict]:
    """Run each path n times after a warm-up; fd and RSS before and after."""
    report = {}
    for name, call in paths.items():
        for _ in range(max(20, n // 10)):
            call()
        fds_before, rss_before = open_fds(), rss_kib()
        heap_before, blocks_before = heap_in_use(), python_blocks()
        start = time.monotonic()
        for _ in range(n):
            call()
        elapsed = time.monotonic() - start
        heap_after, blocks_after = heap_in_use(), python_blocks()
        fds_after, rss_after = open_fds(), rss_kib()
        report[name] = {
            "fds": (len(fds_before), len(fds_after)),
            "new_fds": {fd: t for fd, t in fds_after.items() if fds_before.get(fd) != t},
            "rss_growth_kib": rss_after - rss_before,
            "heap_growth": heap_after - heap_before if heap_before >= 0 else 0,
            "block_growth": blocks_after - blocks_before,
            "seconds": round(elapsed, 2),
        }
    return report


def _check(report: Dict[str, dict]) -> None:
    problems = []
    for name, r in report.items():
        if r["fds"][0] != r["fds"][1]:
            problems.append(f"{name}: fds {r['fds'][0]} -> {r['fds'][1]}: {r['new_fds']}")
        if SANITIZERS:
            continue
        if r["rss_growth_kib"] > RSS_BOUND_KIB:
            problems.append(f"{name}: RSS grew by {r['rss_growth_kib']} KiB over {N} calls "
                            f"(bound {RSS_BOUND_KIB} KiB)")
        if r["heap_growth"] > HEAP_BOUND:
            problems.append(f"{name}: malloc'd bytes in use grew by {r['heap_growth']} "
                            f"over {N} calls (bound {HEAP_BOUND})")
        if r["block_growth"] > BLOCK_BOUND:
            problems.append(f"{name}: pymalloc blocks in use grew by {r['block_growth']} "
                            f"over {N} calls (bound {BLOCK_BOUND})")
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
    """The measuring itself: a leaked fd, a leaked 64-byte malloc and a
    leaked Python object per call are each reported."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    objects, pointers, fds = [], [], []
    report = _measure({
        "object": lambda: objects.append(object()),
        "malloc": lambda: pointers.append(libc.malloc(64)),
        "fd": lambda: fds.append(os.open("/dev/null", os.O_RDONLY)),
    }, 1000)
    n = 1000
    for fd in fds:
        os.close(fd)
    for pointer in pointers:
        libc.free(ctypes.c_void_p(pointer))
    assert report["fd"]["fds"][1] - report["fd"]["fds"][0] == n
    if not SANITIZERS:  # ASan's malloc and PYTHONMALLOC=malloc hide these
        assert report["object"]["block_growth"] >= n
        assert report["malloc"]["heap_growth"] > HEAP_BOUND

"""valgrind memcheck over 1,000 counts: no invalid access, no leak.

A child interpreter runs under valgrind (PYTHONMALLOC=malloc, so every
allocation is valgrind's to track) inside a population's namespace and
counts 1,000 times (each time: plain, v2 with filters, two per-port
breakdowns, two refused C calls; about 10 s in all) through the
netlink backend: plain, both request forms, port filters, per-port
breakdowns, one-shot counts (socket open and close each time), and C-level
argument errors (allocations made, then an error).  The walk backend the
same way: its load and self-check (a thread, a namespace, sockets), plain
and by-family counts, a port-filtered count every tenth time (a program
loaded and unloaded), one-shot counts, refused arguments.  The walk's
program runs in the kernel, out of valgrind's sight; what valgrind checks
is everything around it, and the bpf(2) arguments it knows.  The summary must say 0
errors and 0 bytes definitely or indirectly lost.  CPython 3.11's own
start-up reports are suppressed (tests/valgrind/cpython.supp); the test
checks that the suppressed count is the same as for a run of 5 counts, so
nothing that happens per count can hide behind them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from .hardening import ROOT, SANITIZERS, require_or_skip
from .population import Population, Spec

COUNTS = 1000
SUPPRESSIONS = ROOT / "tests/valgrind/cpython.supp"

SCRIPT = r"""
import os, sys, ctypes
import fasttcpstat
from fasttcpstat import _fasttcpstat
n, mode = int(sys.argv[1]), sys.argv[2]
if mode == "walk":
    from fasttcpstat import _walk
    w = fasttcpstat.Counter("walk")
    assert w.backend == "walk", w.fallback_reason
    for i in range(n):
        assert sum(w.counts().values()) > 0
        w.counts_by_family(states=["ESTABLISHED", "LISTEN"])
        if i % 10 == 0:
            w.counts(local_ports=[22, (10000, 10100)], remote_ports=range(1, 60000))
            fasttcpstat.counts(backend="walk")
            try:
                _fasttcpstat.WalkCounter(_walk.layout(), slots=3)
            except ValueError:
                pass
            # Every pass in one call: entering a namespace (ours), the
            # refusals of a job and of setns().
            walker = _fasttcpstat.WalkCounter(_walk.layout())
            here = os.open("/proc/self/ns/net", os.O_RDONLY)
            walker.walk_passes([(here, 2, 0), (-1, 2, 0)])
            for jobs in ([(-1, 4, 0)], [(here, 2)], 7, [(1 << 20, 2, 0)]):
                try:
                    walker.walk_passes(jobs)
                except (ValueError, TypeError, OSError):
                    pass
            os.close(here)
            walker.close()
    w.close()
    sys.exit(0)
c = fasttcpstat.Counter("netlink")
v2 = fasttcpstat.Counter("netlink", request="v2")
raw = _fasttcpstat.NetlinkCounter()
ports = list(range(10000, 10020))
for i in range(n):
    assert sum(c.counts().values()) > 0
    v2.counts(local_ports=[22, (10000, 10100)], remote_ports=range(1, 60000))
    c.counts_by_port(ports, states=["ESTABLISHED", "LISTEN"])
    v2.counts_by_port(ports, side="remote")
    try:
        raw.count(3, _fasttcpstat.STATES_ALL, 0, local=[(1, 2)] * 5 + [(5, 4)])
    except ValueError:
        pass
    try:
        raw.count(3, _fasttcpstat.STATES_ALL, 0, by_port=[80, 81, 80])
    except ValueError:
        pass
    if i % 10 == 0:
        fasttcpstat.counts(backend="netlink")
if mode == "leak":  # the canary: 100 bytes nobody frees
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc(100)
for x in (c, v2, raw):
    x.close()
"""


def _valgrind(n: int, mode: str = "ok") -> str:
    """Runs in the namespace; returns valgrind's report."""
    env = dict(os.environ, PYTHONMALLOC="malloc")
    cmd = ["valgrind", "--tool=memcheck", "-v", "--leak-check=full",
           "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
           "--num-callers=40", f"--suppressions={SUPPRESSIONS}",
           sys.executable, "-c", SCRIPT, str(n), mode]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return result.stderr


def _summary(report: str) -> dict:
    def number(pattern: str) -> int:
        match = re.search(pattern, report)
        assert match, f"no {pattern!r} in valgrind's report:\n{report[-3000:]}"
        return int(match.group(1).replace(",", ""))

    return {
        "errors": number(r"ERROR SUMMARY: ([\d,]+) errors"),
        "suppressed": number(r"ERROR SUMMARY: [\d,]+ errors from [\d,]+ contexts "
                             r"\(suppressed: ([\d,]+)"),
        "definitely": number(r"definitely lost: ([\d,]+) bytes"),
        "indirectly": number(r"indirectly lost: ([\d,]+) bytes"),
        "loaded_extension": "_fasttcpstat" in report,
        "python_failed": "Traceback (most recent call last)" in report,
    }


@pytest.fixture(scope="module")
def population(require_netns):
    if SANITIZERS:
        pytest.skip("valgrind cannot run an ASan-instrumented extension")
    require_or_skip(shutil.which("valgrind") is not None,
                    "valgrind is not installed (.ci/run installs it)")
    with Population(Spec(listen4=3, listen6=2, estab4=20, estab6=10, close_wait4=5),
                    ehash_entries=1024) as pop:
        yield pop


@pytest.mark.parametrize("mode", ["netlink", "walk"])
def test_memcheck_clean_over_many_counts(population, mode, request):
    if mode == "walk":
        request.getfixturevalue("require_walk")
    baseline = _summary(population.run(_valgrind, 5, mode))
    report = population.run(_valgrind, COUNTS, mode)
    summary = _summary(report)
    assert summary["loaded_extension"] and not summary["python_failed"], report[-3000:]
    problems = {k: summary[k] for k in ("errors", "definitely", "indirectly") if summary[k]}
    assert not problems, f"{problems}\n{report[-6000:]}"
    assert summary["suppressed"] == baseline["suppressed"], (summary, baseline)


def test_memcheck_would_report_a_leak(population):
    summary = _summary(population.run(_valgrind, 1, "leak"))
    assert summary["definitely"] == 100
    assert summary["errors"] >= 1

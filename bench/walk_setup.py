"""The walk backend's once-per-process cost, by phase: what Counter("walk")
pays before its first count.

    python bench/walk_setup.py [--samples 15] [--src DIR] [--host-sockets N]

--src: another tree's src/ with its built extension (a before/after).
--host-sockets: first build a population of about N sockets in the host's
shared table (tests' builder): a self-check that walks or dumps that table
pays for every socket in it.

Each sample is a fresh interpreter (the costs are once per process) that
imports fasttcpstat, then times, wall clock and CPU (on a loaded machine
the wall clock mostly measures the wait for a CPU):
  modules     the modules the self-check imports on first use;
  BTF         _fasttcpstat.walk_layout(): parse vmlinux BTF, resolve the layout;
  load        WalkCounter(slots=1): generate the program, verifier load;
  self-check  _walk.self_check(), split into: the thread (start + join),
              the private namespace (unshare + lo up), the known sockets,
              the sock_diag count (until it sees them), the walk count, and
              the rest (closing the sockets, the verdict);
  total       Counter("walk") in a further fresh interpreter.
Prints a markdown table of medians and maxima over the samples.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Runs in the fresh interpreter; prints one JSON object: phase -> [wall
# ms, CPU ms] (CPU: the process's, user + system, all threads).
SAMPLE = r"""
import json, sys, time

def now():
    return (time.perf_counter(), time.process_time())

def since(t0):
    t1 = now()
    return [(t1[0] - t0[0]) * 1e3, (t1[1] - t0[1]) * 1e3]

def minus(a, *bs):
    return [a[i] - sum(b[i] for b in bs) for i in (0, 1)]

import fasttcpstat
from fasttcpstat import _walk, _fasttcpstat as ext
ms = {}
t = now()
for name in _walk.SELF_CHECK_MODULES:
    __import__(name)
ms["modules"] = since(t)
t = now(); layout = _walk.layout(); ms["BTF"] = since(t)
t = now(); program = ext.WalkCounter(layout, slots=1); ms["load"] = since(t)
spent = {k: [0.0, 0.0] for k in ("namespace", "sock_diag", "walk", "inside")}

def add(key, t0):
    d = since(t0)
    spent[key] = [spent[key][i] + d[i] for i in (0, 1)]

def timed(key, func):
    def wrapper(*args, **kwargs):
        t0 = now()
        try:
            return func(*args, **kwargs)
        finally:
            add(key, t0)
    return wrapper

_walk._private_namespace = timed("namespace", _walk._private_namespace)
_walk._walk_one = timed("walk", _walk._walk_one)
_walk._known_sockets = timed("inside", _walk._known_sockets)
Real = ext.NetlinkCounter
class Diag:
    def __init__(self):
        self.real = Real()
    def count(self, *args):
        t0 = now()
        try:
            return self.real.count(*args)
        finally:
            add("sock_diag", t0)
    def close(self):
        self.real.close()
ext.NetlinkCounter = Diag
t = now()
_walk.self_check(program, layout)
ms["self-check"] = since(t)
ms["  thread"] = minus(ms["self-check"], spent["inside"])
ms["  namespace"] = spent["namespace"]
ms["  sock_diag"] = spent["sock_diag"]
ms["  walk"] = spent["walk"]
ms["  sockets, rest"] = minus(spent["inside"], spent["namespace"], spent["sock_diag"],
                              spent["walk"])
program.close()
print(json.dumps(ms))
"""

TOTAL = r"""
import json, time
import fasttcpstat
t = (time.perf_counter(), time.process_time())
c = fasttcpstat.Counter("walk")
print(json.dumps({"total: Counter('walk')": [(time.perf_counter() - t[0]) * 1e3,
                                             (time.process_time() - t[1]) * 1e3]}))
c.close()
"""


def sample(code: str, src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout)


def host_table_sockets() -> int:
    """Sockets in the host's shared table now (other sessions' included):
    what a self-check dumping or walking that table pays for."""
    from fasttcpstat import _fasttcpstat, _walk

    program = _fasttcpstat.WalkCounter(_walk.layout())
    try:
        return program.walk()[1]["sockets"]
    finally:
        program.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--src", default=os.path.join(ROOT, "src"))
    parser.add_argument("--host-sockets", type=int, default=0)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.host_sockets:
            sys.path.insert(0, os.path.join(ROOT, "bench"))
            from populations import bench_spec
            from tests.population import Population

            stack.enter_context(Population(bench_spec(args.host_sockets, time_wait=False),
                                           workers="auto", settle_timeout=300))
        runs = [dict(sample(SAMPLE, args.src), **sample(TOTAL, args.src))
                for _ in range(args.samples)]
        in_table = host_table_sockets()
    print(f"{args.samples} fresh interpreters, {args.host_sockets} sockets added to the "
          f"host's table, which held {in_table:,} (every namespace sharing it) at the end; "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| phase | wall ms, median | wall ms, max | CPU ms, median |")
    print("|---|--:|--:|--:|")
    for phase in runs[0]:
        wall = [r[phase][0] for r in runs]
        cpu = [r[phase][1] for r in runs]
        print(f"| {phase} | {statistics.median(wall):.1f} | {max(wall):.1f} | "
              f"{statistics.median(cpu):.1f} |")
    core = [[sum(r[p][i] for p in ("BTF", "load", "self-check")) for i in (0, 1)]
            for r in runs]
    print(f"| BTF + load + self-check | {statistics.median(c[0] for c in core):.1f} | "
          f"{max(c[0] for c in core):.1f} | {statistics.median(c[1] for c in core):.1f} |")

if __name__ == "__main__":
    main()

"""The walk backend's once-per-process cost, by phase: what Counter("walk")
pays before its first count.

    python bench/walk_setup.py [--samples 15] [--src DIR]

(--src: another tree's src/ with its built extension, e.g. a before/after.)

Each sample is a fresh interpreter (the costs are once per process) that
imports fasttcpstat, then times, wall clock:
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
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the fresh interpreter; prints one JSON object of ms per phase.
SAMPLE = r"""
import json, sys, time
clock = time.perf_counter
import fasttcpstat
from fasttcpstat import _walk, _fasttcpstat as ext
ms = {}
t = clock()
for name in _walk.SELF_CHECK_MODULES:
    __import__(name)
ms["modules"] = (clock() - t) * 1e3
t = clock(); layout = _walk.layout(); ms["BTF"] = (clock() - t) * 1e3
t = clock(); program = ext.WalkCounter(layout, slots=1); ms["load"] = (clock() - t) * 1e3
spent = {"namespace": 0.0, "sock_diag": 0.0, "walk": 0.0, "sockets_all": 0.0,
         "inside": 0.0}

def timed(key, func):
    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return func(*args, **kwargs)
        finally:
            spent[key] += (clock() - t0) * 1e3
    return wrapper

_walk._private_namespace = timed("namespace", _walk._private_namespace)
_walk._walk_one = timed("walk", _walk._walk_one)
_walk._known_sockets = timed("inside", _walk._known_sockets)
Real = ext.NetlinkCounter
class Diag:
    def __init__(self):
        self.real = Real()
    def count(self, *args):
        t0 = clock()
        try:
            return self.real.count(*args)
        finally:
            spent["sock_diag"] += (clock() - t0) * 1e3
    def close(self):
        self.real.close()
ext.NetlinkCounter = Diag
t = clock()
_walk.self_check(program, layout)
ms["self-check"] = (clock() - t) * 1e3
ms["  thread"] = ms["self-check"] - spent["inside"]
ms["  namespace"] = spent["namespace"]
ms["  sock_diag"] = spent["sock_diag"]
ms["  walk"] = spent["walk"]
ms["  sockets, rest"] = spent["inside"] - spent["namespace"] - spent["sock_diag"] - spent["walk"]
program.close()
print(json.dumps(ms))
"""

TOTAL = r"""
import json, time
import fasttcpstat
t = time.perf_counter()
c = fasttcpstat.Counter("walk")
print(json.dumps({"total: Counter('walk')": (time.perf_counter() - t) * 1e3}))
c.close()
"""


def sample(code: str, src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--src", default=os.path.join(ROOT, "src"))
    args = parser.parse_args()
    runs = [dict(sample(SAMPLE, args.src), **sample(TOTAL, args.src))
            for _ in range(args.samples)]
    print(f"{args.samples} fresh interpreters; load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print("| phase | median ms | max ms |")
    print("|---|--:|--:|")
    for phase in runs[0]:
        values = [r[phase] for r in runs]
        print(f"| {phase} | {statistics.median(values):.1f} | {max(values):.1f} |")
    core = [r["BTF"] + r["load"] + r["self-check"] for r in runs]
    print(f"| BTF + load + self-check | {statistics.median(core):.1f} | {max(core):.1f} |")


if __name__ == "__main__":
    main()

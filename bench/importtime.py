"""Import cost of fasttcpstat over a bare interpreter start.

Median wall time of N runs of `python -c 'import fasttcpstat'` minus the
median of N runs of `python -c pass`, alternating so that machine load
hits both alike; and the modules the import pulls in that a bare start
does not have.  Usage: python bench/importtime.py [--runs 30] [--path DIR]
(--path: a directory holding the fasttcpstat package to time instead of
the installed one, e.g. a copy of another version).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _run(code: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--path", help="directory holding the package to time")
    args = parser.parse_args()
    env = dict(os.environ)
    # An installed package has its .pyc files; time that, not compiling.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.path:
        env["PYTHONPATH"] = args.path
    _run("import fasttcpstat", env)  # write the .pyc files first
    bare, full = [], []
    for _ in range(args.runs):
        bare.append(_run("pass", env))
        full.append(_run("import fasttcpstat", env))
    # -X importtime's own figure for the package (cumulative µs), which
    # leaves out the interpreter's start and exit: steadier on a busy host.
    selfreported = []
    for _ in range(args.runs):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fasttcpstat"],
                             check=True, env=env, capture_output=True, text=True).stderr
        line = [row for row in err.splitlines() if row.rstrip().endswith("| fasttcpstat")][-1]
        selfreported.append(int(line.split("|")[1]) / 1000)
    listing = subprocess.run(
        [sys.executable, "-c",
         "import sys; before = set(sys.modules); import fasttcpstat; "
         "added = sorted(m for m in set(sys.modules) - before "
         "if not m.startswith('fasttcpstat')); import json; print(json.dumps(added))"],
        check=True, env=env, capture_output=True, text=True)
    print(json.dumps({
        "runs": args.runs,
        "bare_ms": round(statistics.median(bare) * 1e3, 2),
        "import_ms": round(statistics.median(full) * 1e3, 2),
        "import_over_bare_ms": round((statistics.median(full) - statistics.median(bare)) * 1e3, 2),
        "importtime_cumulative_ms": round(statistics.median(selfreported), 2),
        "modules_added": json.loads(listing.stdout),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

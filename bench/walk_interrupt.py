"""Ctrl-C during a walk count, and how long one run holds RCU.

    python bench/walk_interrupt.py [--sizes 100000,1000000] [--trials 20]

For each size: a population in the host's shared table (tests' builder,
bench/populations.py's mix without TIME_WAIT), then inside its namespace:
  count        Counter("walk").counts(), wall ms (median of 5);
  runs/pass    BPF_PROG_TEST_RUN runs of one pass (budget 16,384 loop
               iterations + up to 1,024 to reach a bucket boundary);
  RCU hold     the longest run's RCU read-side section, measured inside the
               program (bpf_ktime_get_ns), max over 5 passes of
               tests/c/walk_count (and the longest bpf(2) call, wall clock,
               preemption included);
  SIGINT       trials: SIGINT to the counting thread at a random point of
               a count (uniform over its duration); the time until
               KeyboardInterrupt, and whether the handler ran mid-walk
               (the counter still busy) rather than after it.
Writes bench/results/walk-interrupt.md (and .json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from populations import bench_spec  # noqa: E402
from walk_bench import compile_tools, shared_population, walk_passes  # noqa: E402


def _trials(trials: int) -> dict:
    """Runs in the namespace, in the main thread of the run() child."""
    import fasttcpstat

    counter = fasttcpstat.Counter("walk")
    assert counter.backend == "walk", counter.fallback_reason
    total = sum(counter.counts().values())
    walls = []
    for _ in range(5):
        t0 = time.monotonic()
        counter.counts()
        walls.append(time.monotonic() - t0)
    count_s = statistics.median(walls)
    mid = []

    def handler(signum, frame):
        try:
            counter.counts()
            mid.append(False)
        except RuntimeError:  # busy: the walk is still going
            mid.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    main = threading.main_thread().ident
    rng = random.Random(5)
    latencies = []
    try:
        for _ in range(trials):
            sent = []
            go = threading.Event()

            def fire(delay=rng.uniform(0.05, 0.95) * count_s):
                go.wait()
                time.sleep(delay)
                sent.append(time.monotonic())
                signal.pthread_kill(main, signal.SIGINT)

            thread = threading.Thread(target=fire, daemon=True)
            thread.start()
            try:
                go.set()
                counter.counts()
                time.sleep(5)
            except KeyboardInterrupt:
                latencies.append((time.monotonic() - sent[0]) * 1e3)
            thread.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    counter.close()
    return {"total": total, "count_ms": count_s * 1e3, "latencies_ms": latencies,
            "mid_walk": sum(mid), "trials": trials}


def _passes(walk: str) -> "tuple[dict, list]":
    """Runs in the namespace: its own inode only, as counts() does."""
    inum = os.stat("/proc/thread-self/ns/net").st_ino
    return walk_passes(walk, 5, "--quiet", "--only", str(inum))


def measure(size: int, trials: int, walk: str) -> dict:
    pop = shared_population(walk, bench_spec(size, time_wait=False), workers="auto",
                            settle_timeout=300)
    try:
        _, passes = pop.run(_passes, walk)
        out = pop.run(_trials, trials)
    finally:
        pop.close()
    lat = out["latencies_ms"]
    return {
        "size": size, "sockets": out["total"], "count_ms": out["count_ms"],
        "walked": passes[-1]["stats"]["sockets"], "runs": passes[-1]["runs"],
        "longest_rcu_ms": max(p["longest_rcu_ms"] for p in passes),
        "longest_call_ms": max(p["longest_run_ms"] for p in passes),
        "sigint_median_ms": statistics.median(lat) if lat else None,
        "sigint_max_ms": max(lat) if lat else None, "raised": len(lat),
        "mid_walk": out["mid_walk"], "trials": out["trials"],
    }


def report(rows: list, argv: list) -> str:
    load = os.getloadavg()
    lines = [
        "# Walk backend: Ctrl-C and RCU hold", "",
        f"Run {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, `python "
        f"bench/walk_interrupt.py {' '.join(argv)}`. Machine: {os.cpu_count()} CPUs, Linux "
        f"{platform.release()}; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the "
        "end (other sessions' work). See the script's docstring.", "",
        "| population | sockets walked (host table) | count ms wall | runs/pass "
        "| longest RCU hold ms | longest bpf(2) call ms | SIGINT to KeyboardInterrupt ms, "
        "median / max | raised | handled mid-walk |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sockets']:,} | {r['walked']:,} | {r['count_ms']:.1f} | {r['runs']} | "
            f"{r['longest_rcu_ms']:.2f} | {r['longest_call_ms']:.2f} | "
            f"{r['sigint_median_ms']:.1f} / {r['sigint_max_ms']:.1f} | "
            f"{r['raised']}/{r['trials']} | {r['mid_walk']}/{r['trials']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--name", default="walk-interrupt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="issue13d-") as tmp:
        walk, _ = compile_tools(tmp)
        rows = []
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(size, args.trials, walk))
            print(json.dumps(rows[-1]), flush=True)
    out = os.path.join(ROOT, "bench/results", args.name)
    with open(out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    text = report(rows, sys.argv[1:])
    with open(out + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()

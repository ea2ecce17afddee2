"""The walk engine against per-namespace counting, same populations, one run.

    python bench/walk_bench.py --sizes 100000,1000000 --small 10,50 --rounds 5

For each size: one big population in the host's *shared* table (the case the
walk is for: every per-namespace count walks that whole table) plus the
largest N of --small small namespaces; the "every ns" sums are given for
the first N of them for each N (the walk's one pass sees them all).  Measured, CPU per call (user + system of the counting process):
  walk, all      one pass of tests/c/walk_count from the host namespace,
                 counting every namespace (median of the rounds); its
                 longest run's RCU hold (measured inside the program) and
                 the longest bpf(2) call (wall clock, preemption included);
  walk, one ns   the same pass keeping only the big namespace's inode;
  iterator, big / netlink, big / bare C v2, big
                 one count inside the big namespace;
  iterator, every ns / netlink, every ns
                 one count inside each namespace, summed.
  walk at REF    with --baseline REF: the same pass by the engine as it was
                 at git revision REF, run alternately with ours (before and
                 after in one session, under the same load).
Every walk count is checked against each population's expected counts.
No Python binding of the walk exists yet: the walk is the C engine, the
others fasttcpstat's Python API (whose overhead is ~0.1 ms, negligible here).
Writes bench/results/walk-<name>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from populations import bench_spec  # noqa: E402
from tests.population import FAMILIES, STATES, Population, Spec  # noqa: E402

ENGINE = ["walk_run.c", "walk_prog.c", "btf_walk.c", "btf.c"]
SMALL = Spec(listen4=1, listen6=1, estab4=10, estab6=4, estab_mapped=2, close_wait4=1,
             syn_recv4=1)


def compile_walk(src: str, exe: str) -> str:
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I" + os.path.join(src, "csrc"),
                    os.path.join(src, "tests/c/walk_count.c"),
                    *(os.path.join(src, "csrc", s) for s in ENGINE), "-o", exe], check=True)
    return exe


def compile_baseline(tmp: str, ref: str) -> str:
    """walk_count as it was at git revision `ref`."""
    src = os.path.join(tmp, "baseline")
    files = subprocess.run(["git", "-C", ROOT, "ls-tree", "-r", "--name-only", ref, "csrc",
                            "tests/c/walk_count.c"], check=True, capture_output=True,
                           text=True).stdout.split()
    for name in files:
        os.makedirs(os.path.join(src, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(src, name), "wb") as f:
            f.write(subprocess.run(["git", "-C", ROOT, "show", f"{ref}:{name}"], check=True,
                                   capture_output=True).stdout)
    return compile_walk(src, os.path.join(tmp, "walk_count_baseline"))


def compile_tools(tmp: str) -> "tuple[str, str]":
    walk = compile_walk(ROOT, os.path.join(tmp, "walk_count"))
    bare = os.path.join(tmp, "bare_diag")
    subprocess.run(["cc", "-O2", os.path.join(ROOT, "bench/c/bare_diag.c"), "-o", bare],
                   check=True)
    return walk, bare


def walk_passes(exe: str, rounds: int, *args: str) -> "tuple[dict, list]":
    out = subprocess.run([exe, "--passes", str(rounds + 1), *args], check=True,
                         capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    return lines[0]["load"], lines[2:]  # the first pass warms caches: dropped


def per_ns(slot: dict) -> dict:
    return {f: {s: slot[f][i + 1] for i, s in enumerate(STATES)} for f in FAMILIES}


def _count_cpu(backend: str, rounds: int) -> "tuple[float, dict]":
    import fasttcpstat
    with fasttcpstat.Counter(backend) as counter:
        counter.counts_by_family()
        costs = []
        for _ in range(rounds):
            t0 = time.process_time()
            got = counter.counts_by_family()
            costs.append((time.process_time() - t0) * 1e3)
    return statistics.median(costs), got


def _bare(exe: str, rounds: int) -> float:
    out = subprocess.run([exe, "--loop", str(rounds + 1)], check=True, capture_output=True,
                         text=True).stdout
    rows = [json.loads(line) for line in out.splitlines()][1:]
    return statistics.median((r["user"] + r["sys"]) * 1e3 for r in rows)


def in_shared_table(walk: str, pop: Population) -> bool:
    """Whether the host's pass sees the population's non-listening sockets.
    Another process on the host (a benchmark, a test) may set the host's
    net.ipv4.tcp_child_ehash_entries for a moment: a namespace created
    then gets its own table, which the host's pass does not walk."""
    inum = os.stat(pop.ns_path).st_ino
    _, passes = walk_passes(walk, 1, "--tables", "1", "--only", str(inum))
    slot = passes[-1]["ns"].get(str(inum))
    want = sum(n for f in FAMILIES for s, n in pop.expected[f].items() if s != "LISTEN")
    return slot is not None and sum(map(sum, (slot["ipv4"], slot["ipv6"]))) == want


def shared_population(walk: str, spec: Spec, **options) -> Population:
    for _ in range(5):
        pop = Population(spec, long_lived=True, **options)
        if in_shared_table(walk, pop):
            return pop
        pop.close()
    raise RuntimeError("could not build a namespace in the host's shared table")


def mismatches(passes: list, inums: list, pops: list) -> list:
    out = []
    for inum, pop in zip(inums, pops):
        slot = passes[-1]["ns"].get(str(inum))
        got = per_ns(slot) if slot else None
        if got != pop.expected:
            out.append({"inum": inum, "expected": pop.expected, "walk": got})
    return out


def alternate(walk: str, baseline: str, rounds: int) -> "tuple[float, float]":
    """Median CPU ms of a pass counting every namespace: ours, the baseline's."""
    ours, theirs = [], []
    for _ in range(rounds):
        ours += [p["cpu_ms"] for p in walk_passes(walk, 1, "--quiet")[1]]
        theirs += [p["cpu_ms"] for p in walk_passes(baseline, 1, "--quiet")[1]]
    return statistics.median(ours), statistics.median(theirs)


def measure(size: int, nsmalls: list, rounds: int, walk: str, bare: str,
            baseline: "tuple[str, str] | None" = None) -> dict:
    nsmall = max(nsmalls)
    t0 = time.monotonic()
    big = shared_population(walk, bench_spec(size, time_wait=False), workers="auto",
                            settle_timeout=300)
    smalls = []
    try:
        for _ in range(nsmall):
            smalls.append(shared_population(walk, SMALL))
        built = time.monotonic() - t0
        pops = [big] + smalls
        inums = [os.stat(p.ns_path).st_ino for p in pops]
        load, passes = walk_passes(walk, rounds)
        wrong = mismatches(passes, inums, pops)
        exact = not wrong
        anomalies = sum(p["stats"]["anomalies"] for p in passes)
        _, one = walk_passes(walk, rounds, "--quiet", "--only", str(inums[0]))
        iter_big, got = big.run(_count_cpu, "bpf", rounds)
        exact_iter = got == big.expected
        net_big, _ = big.run(_count_cpu, "netlink", rounds)
        bare_big = big.run(_bare, bare, rounds)
        iter_each = [p.run(_count_cpu, "bpf", rounds)[0] for p in pops]
        net_each = [p.run(_count_cpu, "netlink", rounds)[0] for p in pops]
        walk_all = statistics.median(p["cpu_ms"] for p in passes)
        walk_one = statistics.median(p["cpu_ms"] for p in one)
        versus = alternate(walk, baseline[1], rounds) if baseline else None
        return {
            "baseline": {"ref": baseline[0], "walk_all_cpu_ms": versus[0],
                         "baseline_all_cpu_ms": versus[1]} if versus else None,
            "size": size, "sockets_big": big.total, "small_namespaces": nsmall,
            "sockets_all": sum(p.total for p in pops), "build_s": round(built, 1),
            "load": load, "walk_exact": exact, "iterator_exact": exact_iter,
            "walk_anomalies": anomalies, "walk_mismatches": wrong[:5],
            "walk_all_cpu_ms": walk_all, "walk_one_cpu_ms": walk_one,
            "walk_wall_ms": statistics.median(p["wall_ms"] for p in passes),
            "walk_runs": passes[-1]["runs"],
            # Sockets of other namespaces on the host (other processes'
            # populations) are in the shared table too: the walk counts them.
            "walk_counted": passes[-1]["stats"]["counted"],
            "walk_namespaces": len(passes[-1]["ns"]),
            "longest_rcu_ms": max(p["longest_rcu_ms"] for p in passes + one),
            "longest_call_ms": max(p["longest_run_ms"] for p in passes + one),
            "iterator_big_cpu_ms": iter_big, "netlink_big_cpu_ms": net_big,
            "bare_v2_big_cpu_ms": bare_big,
            "every_ns": {k: {"iterator_cpu_ms": sum(iter_each[:k + 1]),
                             "netlink_cpu_ms": sum(net_each[:k + 1])} for k in nsmalls},
        }
    finally:
        for p in smalls:
            p.close()
        big.close()


def report(results: list, argv: list) -> str:
    lines = [
        "# Walk engine benchmark", "",
        "Run %s, `python %s`. Machine: %d CPUs, Linux %s; load average %s at the end."
        % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), " ".join(argv), os.cpu_count(),
           platform.release(), "/".join("%.1f" % x for x in os.getloadavg())),
        "",
        "CPU ms per call (user + system of the counting process), medians of the rounds; "
        "big namespace in the host's shared table. See bench/walk_bench.py.", "",
        "| sockets (big ns + small ns) | walk, all ns | walk, big ns only "
        "| iterator, big ns | netlink, big ns | bare C v2, big ns "
        "| walk one / iterator big | walk one / bare C v2 | longest RCU hold ms "
        "| longest bpf(2) call ms | runs/pass | exact |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        lines.append(
            "| %s + %d x %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | %.2f | %.2f "
            "| %d | %s |" % (
                f"{r['sockets_big']:,}", r["small_namespaces"],
                (r["sockets_all"] - r["sockets_big"]) // max(1, r["small_namespaces"]),
                r["walk_all_cpu_ms"], r["walk_one_cpu_ms"], r["iterator_big_cpu_ms"],
                r["netlink_big_cpu_ms"], r["bare_v2_big_cpu_ms"],
                r["walk_one_cpu_ms"] / r["iterator_big_cpu_ms"],
                r["walk_one_cpu_ms"] / r["bare_v2_big_cpu_ms"],
                r["longest_rcu_ms"], r["longest_call_ms"], r["walk_runs"],
                "yes" if r["walk_exact"] and r["iterator_exact"] and not r["walk_anomalies"]
                else "NO"))
    lines += ["", "Sockets the walk counted in a pass (all namespaces on the host, other "
              "processes' included): " + ", ".join(
                  "%s in %d namespaces" % (f"{r.get('walk_counted', 0):,}",
                                           r.get("walk_namespaces", 0)) for r in results) + ".",
              "", "Every namespace (the big one and the first N small ones): one walk pass "
              "against one count per namespace, summed.", "",
              "| sockets in the big ns | small ns | walk, all ns | iterator, every ns "
              "| netlink, every ns | walk / iterator | walk / netlink |",
              "|---|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        for k, e in sorted(r["every_ns"].items(), key=lambda kv: int(kv[0])):
            lines.append("| %s | %s | %.1f | %.1f | %.1f | %.3fx | %.3fx |" % (
                f"{r['sockets_big']:,}", k, r["walk_all_cpu_ms"], e["iterator_cpu_ms"],
                e["netlink_cpu_ms"], r["walk_all_cpu_ms"] / e["iterator_cpu_ms"],
                r["walk_all_cpu_ms"] / e["netlink_cpu_ms"]))
    versus = [r for r in results if r.get("baseline")]
    if versus:
        ref = versus[0]["baseline"]["ref"]
        lines += ["", "Before and after (--baseline %s): passes over every namespace, "
                  "the two engines alternately, medians." % ref, "",
                  "| sockets in the big ns | walk now | walk at %s | now / before |" % ref,
                  "|---|--:|--:|--:|"]
        for r in versus:
            b = r["baseline"]
            lines.append("| %s | %.1f | %.1f | %.2fx |" % (
                f"{r['sockets_big']:,}", b["walk_all_cpu_ms"], b["baseline_all_cpu_ms"],
                b["walk_all_cpu_ms"] / b["baseline_all_cpu_ms"]))
    load = results[0]["load"] if results else {}
    lines += ["", "Program: %s instructions; the verifier processed %s; BTF read %.1f ms, "
              "load %.1f ms (wall)." % (load.get("insns"), load.get("verified_insns"),
                                       load.get("btf_ms", 0), load.get("load_ms", 0)), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--small", default="10,50")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="walk-" + time.strftime("%Y%m%d-%H%M%S"))
    ap.add_argument("--baseline", metavar="REF",
                    help="also time the engine at this git revision, alternately with ours")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="issue13-walk-bench-") as tmp:
        walk, bare = compile_tools(tmp)
        baseline = ((args.baseline, compile_baseline(tmp, args.baseline))
                    if args.baseline else None)
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            nsmalls = [int(k) for k in args.small.split(",")]
            results.append(measure(size, nsmalls, args.rounds, walk, bare, baseline))
            print(json.dumps(results[-1]), flush=True)
    text = report(results, sys.argv)
    out = os.path.join(ROOT, "bench", "results", args.name)
    with open(out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0 if all(r["walk_exact"] and not r["walk_anomalies"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

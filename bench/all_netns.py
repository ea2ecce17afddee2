"""Benchmark: every network namespace, one full scrape, by method.

    python bench/all_netns.py [--total 100000] [--ns 1,10,100] [--rounds 4]
                              [--tables own,shared] [--out DIR] [--name NAME]

Builds N populations (tests/population.py) holding `total` sockets in all,
spread evenly or as one big namespace (90 %) plus N-1 small ones, with each
namespace's own established-hash table (net.ipv4.tcp_child_ehash_entries)
or sharing the host's; then measures one full scrape of every namespace:

  fts-walk, fts-auto,    fasttcpstat.AllNetnsCounter(backend).counts(), the
  fts-bpf, fts-netlink,  reusable form an exporter keeps (the /proc scan that
  fts-procfs             finds the namespaces is part of each scrape); walk:
                         one pass per distinct table; auto: the walk where it
                         is accepted; the others: one count per namespace
  cadvisor-c             cAdvisor's method: /proc/PID/net/tcp and tcp6 of one
                         process per namespace, the state column counted, in
                         one process (c/cadvisor_tcp.c)
  nsenter-ss             `nsenter -t PID -n ss -tan` per namespace

Each method runs in its own process for `rounds` + 1 scrapes (the first, a
warm-up, is dropped): CPU per scrape (user + system, children included),
wall time, and the process's peak RSS (VmHWM; nsenter-ss: of the Python
process that starts them, not of each ss); the warm-up's CPU is kept as
"first" (the walk's program load and self-check, and each namespace's
table size, are paid there, once per process).  Every scrape's count of every
namespace is checked against `ss -tan` run inside it before the methods.

Isolation: the run re-executes itself in new PID, mount and network
namespaces, with a private /proc and an empty /run, so a scan finds
exactly the benchmark's namespaces (plus its own, empty, with a table of
its own), not the host's or other programs' that come and go.  As root.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from populations import bench_spec, ehash_entries_for, total_counts  # noqa: E402
from tests.population import STATES, Population, ss_counts  # noqa: E402

ISOLATED = "FASTTCPSTAT_BENCH_ISOLATED"
FTS_METHODS = ["fts-walk", "fts-auto", "fts-bpf", "fts-netlink", "fts-procfs"]
METHODS = FTS_METHODS + ["cadvisor-c", "nsenter-ss"]
BIG_SHARE = 0.9


# ---------------------------------------------------------------- workers

def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _peak_rss_kib() -> int:
    """This process's peak RSS.  Not ru_maxrss: it survives exec, so a
    process forked from a big one would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def ss_inside(spec: str) -> Dict[str, int]:
    """`ss -tan` in a namespace: spec is a pid or a namespace path.
    Bound-only sockets (UNCONN in a recent ss) are never counted."""
    return ss_counts(netns=spec, exclude_unconn=True)


def worker(method: str, rounds: int) -> None:
    """Body of a method's process: one JSON line per scrape."""
    from fasttcpstat._netns_list import scan

    if method.startswith("fts-"):
        import fasttcpstat

        counter = fasttcpstat.AllNetnsCounter(method[4:])

        def scrape() -> Dict[int, Dict[str, int]]:
            return counter.counts()
    else:
        assert method == "nsenter-ss"

        def scrape() -> Dict[int, Dict[str, int]]:
            return {inode: ss_inside(str(ns.pids[0]))
                    for inode, ns in scan().namespaces.items() if ns.pids}
    for _ in range(rounds):
        cpu0, t0 = _cpu(), time.perf_counter()
        counts = scrape()
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        extra = {"backends": sorted(set(counter.backends().values())),
                 "walk_passes": len(counter.walk_passes)} if method.startswith("fts-") else {}
        print(json.dumps({"cpu": cpu, "wall": wall, "maxrss_kib": _peak_rss_kib(),
                          "counts": counts, **extra}), flush=True)


def run_method(method: str, rounds: int, cadvisor: str) -> List[dict]:
    if method == "cadvisor-c":
        from fasttcpstat._netns_list import scan

        by_pid = {str(ns.pids[0]): inode for inode, ns in scan().namespaces.items() if ns.pids}
        out = subprocess.run([cadvisor, "--rounds", str(rounds), *by_pid],
                             check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
        scrapes = []
        for line in out.splitlines():
            raw = json.loads(line)
            raw["counts"] = {by_pid[pid]: {s: n[i + 1] for i, s in enumerate(STATES)}
                             for pid, n in raw["counts"].items()}
            scrapes.append(raw)
        return scrapes
    out = subprocess.run([sys.executable, __file__, "--worker", method, "--rounds", str(rounds)],
                         check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    scrapes = [json.loads(line) for line in out.splitlines()]
    for raw in scrapes:
        raw["counts"] = {int(k): v for k, v in raw["counts"].items()}
    return scrapes


# ---------------------------------------------------------------- layouts

SLABS = ("TCP", "TCPv6", "tw_sock_TCP", "tw_sock_TCPv6", "request_sock_TCP",
         "request_sock_TCPv6")


def host_sockets() -> int:
    """TCP sockets of the whole machine, every namespace (the kernel's slab
    objects): with shared tables, what each namespace's walk goes through."""
    total = 0
    with open("/proc/slabinfo") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in SLABS:
                total += int(fields[1])
    return total


def sizes_for(total: int, n: int, layout: str) -> List[int]:
    if n == 1:
        return [total]
    if layout == "even":
        return [total // n] * n
    small = max(1, int(total * (1 - BIG_SHARE)) // (n - 1))
    return [total - small * (n - 1)] + [small] * (n - 1)


def build(sizes: List[int], tables: str, log) -> List[Population]:
    pops: List[Population] = []
    try:
        for size in sizes:
            spec = bench_spec(size, time_wait=False)  # stable for the whole run
            entries = ehash_entries_for(size) if tables == "own" else 0
            pops.append(Population(spec, workers="auto", long_lived=True, settle_timeout=120,
                                   ehash_entries=entries))
        log(f"  built {len(pops)} namespaces")
        return pops
    except BaseException:
        for pop in pops:
            pop.close()
        raise


# ---------------------------------------------------------------- the run

def measure_config(n: int, layout: str, tables: str, total: int, rounds: int,
                   methods: List[str], cadvisor: str, log) -> dict:
    sizes = sizes_for(total, n, layout)
    t0 = time.monotonic()
    pops = build(sizes, tables, log)
    try:
        build_s = time.monotonic() - t0
        reference = {}
        for pop in pops:
            inode = os.stat(pop.ns_path).st_ino
            expected = total_counts(pop.expected)
            seen = ss_inside(pop.ns_path)
            if seen != expected:
                raise RuntimeError(f"ss disagrees with the spec in {pop.ns_path}: "
                                   f"{seen} != {expected}")
            reference[inode] = expected
        own = os.stat("/proc/self/ns/net").st_ino
        reference[own] = ss_inside("/proc/self/ns/net")
        sockets = sum(sum(c.values()) for c in reference.values())
        result = {"namespaces": n, "layout": layout, "tables": tables,
                  "sockets": sockets, "sizes": sizes, "build_s": build_s, "methods": {},
                  "host_sockets_before": host_sockets()}
        for method in methods:
            try:
                scrapes = run_method(method, rounds + 1, cadvisor)
            except subprocess.CalledProcessError as exc:
                result["methods"][method] = {"error": str(exc)}
                log(f"  {method}: failed: {exc}")
                continue
            mismatches = sum(1 for s in scrapes if s["counts"] != reference)
            kept = scrapes[1:]
            entry = {
                "cpu_s": statistics.median(s["cpu"] for s in kept),
                "wall_s": statistics.median(s["wall"] for s in kept),
                "maxrss_kib": max(s["maxrss_kib"] for s in scrapes),
                "first_cpu_s": scrapes[0]["cpu"],
                "scrapes": len(scrapes),
                "mismatches": mismatches,
            }
            if "backends" in scrapes[-1]:
                entry["backends"] = scrapes[-1]["backends"]
                entry["walk_passes"] = scrapes[-1]["walk_passes"]
            if mismatches:
                bad = next(s for s in scrapes if s["counts"] != reference)
                entry["first_mismatch"] = {
                    str(k): (reference.get(k), bad["counts"].get(k))
                    for k in set(reference) | set(bad["counts"])
                    if reference.get(k) != bad["counts"].get(k)}
            result["methods"][method] = entry
            entry["host_sockets_after"] = host_sockets()
            log(f"  {method}: cpu {entry['cpu_s'] * 1e3:.1f} ms, wall "
                f"{entry['wall_s'] * 1e3:.1f} ms, rss {entry['maxrss_kib']} KiB, "
                f"mismatches {mismatches}")
        return result
    finally:
        for pop in pops:
            pop.close()


def report(results: List[dict], meta: dict) -> str:
    methods = [m for m in METHODS if any(m in r["methods"] for r in results)]
    lines = [f"# All namespaces, one scrape: CPU per scrape (ms), {meta['total']} sockets in all",
             "", f"{meta['when']}; kernel {meta['kernel']}; {meta['cpus']} CPUs; "
             f"{meta['rounds']} scrapes per method (after a warm-up); medians. "
             "Counts of every namespace checked against `ss -tan` inside it at every scrape.",
             "", "| tables | N | layout | host sockets | " + " | ".join(methods)
             + " | cAdvisor / fts-auto |",
             "|---|---|---|---|" + "---|" * len(methods) + "---|"]
    for r in results:
        cells = []
        for m in methods:
            e = r["methods"].get(m)
            if e is None or "error" in e:
                cells.append("failed" if e else "-")
            else:
                flag = "" if not e["mismatches"] else f" ({e['mismatches']} wrong)"
                cells.append(f"{e['cpu_s'] * 1e3:.1f}{flag}")
        auto, cad = r["methods"].get("fts-auto"), r["methods"].get("cadvisor-c")
        ratio = (f"{cad['cpu_s'] / auto['cpu_s']:.1f}x"
                 if auto and cad and "cpu_s" in auto and "cpu_s" in cad and auto["cpu_s"] else "-")
        seen = [r.get("host_sockets_before")] + [e.get("host_sockets_after")
                                                  for e in r["methods"].values()]
        seen = [x for x in seen if x is not None]
        host = f"{min(seen) // 1000}k-{max(seen) // 1000}k" if seen else "-"
        lines.append(f"| {r['tables']} | {r['namespaces']} | {r['layout']} | {host} | "
                     + " | ".join(cells) + f" | {ratio} |")
    lines += ["", "Wall time per scrape (ms) and peak RSS (MiB) of each method's process:", "",
              "| tables | N | layout | " + " | ".join(methods) + " |",
              "|---|---|---|" + "---|" * len(methods)]
    for r in results:
        cells = []
        for m in methods:
            e = r["methods"].get(m)
            cells.append("-" if not e or "error" in e else
                         f"{e['wall_s'] * 1e3:.0f} / {e['maxrss_kib'] / 1024:.1f}")
        lines.append(f"| {r['tables']} | {r['namespaces']} | {r['layout']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "All namespaces against one walk of the same sockets (N = 1), CPU ratio:", "",
              "| tables | N | layout | " + " | ".join(FTS_METHODS) + " |",
              "|---|---|---|" + "---|" * len(FTS_METHODS)]
    for r in results:
        one = next((x for x in results if x["tables"] == r["tables"] and x["namespaces"] == 1),
                   None)
        if one is None or r is one:
            continue
        cells = []
        for m in FTS_METHODS:
            a, b = r["methods"].get(m), one["methods"].get(m)
            cells.append(f"{a['cpu_s'] / b['cpu_s']:.2f}x"
                         if a and b and "cpu_s" in a and "cpu_s" in b and b["cpu_s"] else "-")
        lines.append(f"| {r['tables']} | {r['namespaces']} | {r['layout']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "The walk (one pass per distinct table) against the others, CPU per scrape "
              "(targets at N = 100: cAdvisor >= 10x, walk / bpf <= 0.10, walk / netlink "
              "<= 0.05); first scrape: the warm-up, with the walk's load and self-check:", "",
              "| tables | N | layout | walk passes | walk ms | first ms | cAdvisor / walk "
              "| walk / bpf | walk / netlink | walk RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r["methods"].get("fts-walk")
        if not w or "cpu_s" not in w:
            continue

        def ratio(other: str, inverse: bool = False) -> str:
            e = r["methods"].get(other)
            if not e or "cpu_s" not in e or not w["cpu_s"]:
                return "-"
            return (f"{e['cpu_s'] / w['cpu_s']:.1f}x" if inverse
                    else f"{w['cpu_s'] / e['cpu_s']:.3f}")
        lines.append(f"| {r['tables']} | {r['namespaces']} | {r['layout']} | "
                     f"{w.get('walk_passes', '-')} | {w['cpu_s'] * 1e3:.1f} | "
                     f"{w['first_cpu_s'] * 1e3:.1f} | {ratio('cadvisor-c', True)} | "
                     f"{ratio('fts-bpf')} | {ratio('fts-netlink')} | "
                     f"{w['maxrss_kib'] / 1024:.1f} |")
    backends = sorted({b for r in results for m, e in r["methods"].items()
                       if m == "fts-auto" for b in e.get("backends", [])})
    lines += ["", f"fts-auto used: {', '.join(backends) or '-'}.  N counts the benchmark's "
              "namespaces; each scrape also counts the benchmark's own (empty) one.",
              "Shared tables: every namespace's walk covers the host's whole established "
              "table (its buckets and every namespace's sockets); host sockets: all TCP "
              "sockets of the machine (/proc/slabinfo) while each method ran, this "
              "benchmark's and other programs' alike.", ""]
    return "\n".join(lines)


def isolate() -> None:
    """Re-execute in new PID, mount and network namespaces (see above)."""
    os.environ[ISOLATED] = "1"
    # The benchmark's own namespace gets a small table of its own (created
    # from an intermediate one whose tcp_child_ehash_entries says so), or
    # each scrape would also walk the host's table once, for it.  The
    # populations made from it with tcp_child_ehash_entries at 0 share the
    # host's table (the kernel falls back to the global one).
    inner = ("mount --make-rprivate / && mount -t tmpfs issue12-bench-run /run && "
             "{ echo 1024 > /proc/sys/net/ipv4/tcp_child_ehash_entries || true; } && "
             'exec unshare --net "$@"')
    # --kill-child: stopping the outer process stops the run (the inner one
    # is its PID namespace's init, which ignores SIGTERM without a handler).
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net",
            "sh", "-c", inner, "sh", sys.executable, *sys.argv]
    os.execvp("unshare", argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--ns", default="1,10,100")
    parser.add_argument("--tables", default="own,shared")
    parser.add_argument("--layouts", default="big+small,even")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", default="all-netns-latest")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rounds)
        return 0
    if os.geteuid() != 0:
        print("all_netns.py: needs root (namespaces)", file=sys.stderr)
        return 2
    if not os.environ.get(ISOLATED):
        isolate()
    # As its PID namespace's init, this process would ignore SIGTERM: exit
    # through the finally clauses that stop the populations.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    tmp = tempfile.mkdtemp(prefix="issue12-bench-")
    try:
        cadvisor = os.path.join(tmp, "cadvisor_tcp")
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", cadvisor,
                        os.path.join(HERE, "c", "cadvisor_tcp.c")], check=True)
        methods = args.methods.split(",")
        results = []
        for tables in args.tables.split(","):
            for n in (int(x) for x in args.ns.split(",")):
                for layout in (["even"] if n == 1 else args.layouts.split(",")):
                    log(f"{tables} tables, {n} namespaces, {layout}:")
                    results.append(measure_config(n, layout, tables, args.total, args.rounds,
                                                  methods, cadvisor, log))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"total": args.total, "rounds": args.rounds, "kernel": os.uname().release,
            "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.name + ".json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    text = report(results, meta)
    with open(os.path.join(args.out, args.name + ".md"), "w") as f:
        f.write(text)
    print(text)
    bad = any(e.get("mismatches") or "error" in e
              for r in results for e in r["methods"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Where walk, bpf and netlink cross: CPU per count by population size.

For each size, a population is built in its own namespace (bench's
builder: its own established hash of about one bucket per socket, at
least 1,024), and, in that namespace, one long-lived Counter per method
counts repeatedly: walk, bpf, netlink and auto (what "auto" chose is
reported), plus the bare-C inet_diag_req_v2 pair (bench/c/bare_diag.c).
"One-shot" rows open a Counter per count, as fasttcpstat.counts() does
(the walk's BTF reading and self-check are paid once per process, before
the batches; its program load is paid at every one-shot count).

--shared N,...: a population of N sockets in the host's shared table,
measured from inside it ("shared, N sockets") and from an empty namespace
next to it that shares the table too ("shared, empty ns next to N"): both
walk every socket of the host's table, the second counts none of them.  CPU is
CLOCK_PROCESS_CPUTIME_ID (user + system) around a batch of counts,
divided by the batch, median of the batches.  Rows "table N" are empty
namespaces with an N-bucket table: the per-bucket cost alone, and the
host-sized table (net.ipv4.tcp_ehash_entries of the initial namespace).

--rss: instead of CPU, the peak RSS (VmHWM) of a fresh interpreter in
the population's namespace that imports fasttcpstat and counts 20 times
with a reused Counter("walk"), 5 times with counts(backend="walk"), and 5
times every namespace with counts_all_netns(backend="walk"), each step's
peak reported (the walk's memory must not grow with the table).

Usage (root):  python bench/crossover.py [--sizes 0,100,1000,...]
               [--tables 1024,262144,1048576] [--shared 10000,100000]
               [--methods walk,bpf,netlink,auto] [--batches 7] [--out FILE.json]
Writes a Markdown table to stdout (and the raw figures to --out).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
sys.path.insert(0, BENCH_DIR)

import fasttcpstat  # noqa: E402
from fasttcpstat import _sizing  # noqa: E402

from populations import TIME_WAIT_MAX_SIZE, bench_spec, build  # noqa: E402
from tests.population import Population, Spec  # noqa: E402

METHODS = ("walk", "bpf", "netlink", "auto")


def _batch_size(seconds_per_count: float) -> int:
    """Counts per batch: about 30 ms of CPU, at least 1."""
    return max(1, min(2000, int(0.03 / max(seconds_per_count, 1e-6))))


def _cpu_per_count(counts: dict, batches: int) -> dict:
    """name -> median CPU seconds per call of counts[name](); batches of
    the methods alternate, so that load changes hit them alike."""
    sizes = {}
    for name, count in counts.items():
        count()  # warm up (first-use costs: BTF, program load, regexes)
        start = time.process_time()
        count()
        sizes[name] = _batch_size(time.process_time() - start)
    samples: dict = {name: [] for name in counts}
    for _ in range(batches):
        for name, count in counts.items():
            n = sizes[name]
            start = time.process_time()
            for _ in range(n):
                count()
            samples[name].append((time.process_time() - start) / n)
    return {name: statistics.median(values) for name, values in samples.items()}


def _bare_c(bare_diag: str, batches: int, seconds_per_count: float) -> float:
    loops = max(3, min(20, int(0.2 / max(seconds_per_count, 1e-6))))
    per = []
    for _ in range(batches):
        out = subprocess.run([bare_diag, "--loop", str(loops)], check=True,
                             capture_output=True, text=True).stdout
        rows = [json.loads(line) for line in out.splitlines()][1:]  # first: warm-up
        per.append(sum(r["user"] + r["sys"] for r in rows) / len(rows))
    return statistics.median(per)


def _measure(batches: int, bare_diag: str, methods: tuple = METHODS) -> dict:
    """Runs in the population's namespace."""
    row = {"buckets": _sizing.table_size(), "sockstat": _sizing.sockstat(),
           "sockets": sum(fasttcpstat.counts(backend="netlink").values())}
    counters = {method: fasttcpstat.Counter(method) for method in methods}
    if "auto" in counters:
        row["auto_chose"] = counters["auto"].backend
    calls = {method: counter.counts for method, counter in counters.items()}
    # One-shot: a Counter per count, as fasttcpstat.counts() does.
    calls.update({f"oneshot_{method}": (lambda m=method: fasttcpstat.counts(backend=m))
                  for method in methods})
    row.update(_cpu_per_count(calls, batches))
    for counter in counters.values():
        counter.close()
    from fasttcpstat._counter import _OneCount

    with _OneCount() as counter:  # what fasttcpstat.counts() uses
        row["oneshot_auto_chose"] = counter.backend
    if bare_diag:
        row["bare_v2"] = _bare_c(bare_diag, batches, row["netlink"])
    return row


# The fresh interpreter of --rss: peak RSS after each step, in KiB.
RSS_CHILD = r"""
import json, sys
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
out = {"python": hwm()}
import fasttcpstat
out["import"] = hwm()
with fasttcpstat.Counter("walk") as c:
    assert c.backend == "walk"
    for _ in range(20):
        c.counts()
out["counter_walk"] = hwm()
for _ in range(5):
    fasttcpstat.counts(backend="walk")
out["counts_walk"] = hwm()
for _ in range(5):
    n = len(fasttcpstat.counts_all_netns(backend="walk"))
out["all_netns_walk"] = hwm()
out["namespaces"] = n
print(json.dumps(out))
"""


def _rss() -> dict:
    """Runs in the population's namespace."""
    src = os.path.join(os.path.dirname(BENCH_DIR), "src")
    out = subprocess.run([sys.executable, "-c", RSS_CHILD], check=True, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=src)).stdout
    row = json.loads(out)
    row.update(buckets=_sizing.table_size(),
               sockets=sum(fasttcpstat.counts(backend="netlink").values()))
    return row


def _rss_table(rows: list) -> str:
    lines = ["| population | table buckets | sockets | python | + import fasttcpstat "
             "| + Counter(\"walk\") x 20 | + counts(backend=\"walk\") x 5 "
             "| + counts_all_netns(backend=\"walk\") x 5 (namespaces) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        mib = [f"{row[k] / 1024:.1f}" for k in
               ("python", "import", "counter_walk", "counts_walk", "all_netns_walk")]
        lines.append(f"| {row['label']} | {row['buckets']:,} | {row['sockets']:,} | "
                     + " | ".join(mib[:-1]) + f" | {mib[-1]} ({row['namespaces']}) |")
    return "\n".join(lines)


def _compile_bare_diag(tmp: str) -> str:
    out = os.path.join(tmp, "bare_diag")
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out,
                    os.path.join(BENCH_DIR, "c", "bare_diag.c")], check=True)
    return out


def _fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _table(rows: list) -> str:
    lines = [
        "| population | table buckets | sockets | walk µs | bpf µs | netlink µs "
        "| auto µs (chose) | auto / cheapest | walk / bpf | bare-C v2 pair µs "
        "| one-shot walk µs | one-shot bpf µs | one-shot netlink µs "
        "| one-shot auto µs (chose) | one-shot auto / cheapest |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cheapest = min(row[m] for m in ("walk", "bpf", "netlink") if m in row)
        cheapest1 = min(row[f"oneshot_{m}"] for m in ("walk", "bpf", "netlink")
                        if f"oneshot_{m}" in row)
        bare = row.get("bare_v2")

        def us(key: str) -> str:
            return _fmt_us(row[key]) if key in row else "-"

        cells = [
            row["label"], f"{row['buckets']:,}", f"{row['sockets']:,}",
            us("walk"), us("bpf"), us("netlink"),
            f"{_fmt_us(row['auto'])} ({row['auto_chose']})",
            f"{row['auto'] / cheapest:.2f}x",
            f"{row['walk'] / row['bpf']:.2f}x" if "walk" in row and "bpf" in row else "-",
            _fmt_us(bare) if bare else "-",
            us("oneshot_walk"), us("oneshot_bpf"), us("oneshot_netlink"),
            f"{_fmt_us(row['oneshot_auto'])} ({row['oneshot_auto_chose']})",
            f"{row['oneshot_auto'] / cheapest1:.2f}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _own_table(size: int) -> Population:
    """`size` sockets in a namespace with a table of its own."""
    return Population(Spec(), ehash_entries=1024) if size == 0 else build(size)[0]


def _shared_table(size: int) -> Population:
    """`size` sockets in the host's table: every namespace that shares it
    walks them, an empty one next door included."""
    return Population(bench_spec(size, size <= TIME_WAIT_MAX_SIZE), settle_timeout=120.0,
                      workers="auto", long_lived=True)


def _add(rows: list, pop: Population, label: str, func, *args) -> None:
    """Run func in pop's namespace; its row, labelled, joins rows."""
    row = pop.run(func, *args)
    row["label"] = label
    rows.append(row)
    print(json.dumps(row), file=sys.stderr)


def _finish(args: argparse.Namespace, table: str, rows: list, **extra) -> int:
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(extra, rows=rows), f, indent=1)
    return 0


def _sizes(text: str) -> list:
    return [int(s) for s in text.split(",") if s]


def _main_rss(args: argparse.Namespace) -> int:
    rows: list = []
    print(f"load {os.getloadavg()}", file=sys.stderr)
    for size in _sizes(args.sizes):
        with _own_table(size) as pop:
            _add(rows, pop, f"{size:,} sockets, own table", _rss)
    for size in _sizes(args.shared):
        with _shared_table(size) as pop:
            _add(rows, pop, f"{size:,} sockets, shared table", _rss)
    return _finish(args, _rss_table(rows), rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,1000,10000,100000,1000000")
    parser.add_argument("--tables", default="262144,1048576",
                        help="empty namespaces with these table sizes")
    parser.add_argument("--shared", default="",
                        help="populations of these sizes in the host's shared table")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--out")
    parser.add_argument("--no-bare-c", action="store_true")
    parser.add_argument("--rss", action="store_true",
                        help="peak RSS of a fresh process counting with the walk, not CPU")
    args = parser.parse_args()
    if args.rss:
        return _main_rss(args)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="fasttcpstat-crossover-")
    bare_diag = "" if args.no_bare_c else _compile_bare_diag(tmp)
    rows: list = []
    host = _sizing.table_size()
    print(f"host table: {host} buckets; load {os.getloadavg()}", file=sys.stderr)
    measure = (_measure, args.batches, bare_diag)
    for entries in _sizes(args.tables):
        with Population(Spec(), ehash_entries=entries) as pop:
            _add(rows, pop, f"empty, table {entries:,}", *measure)
    for size in _sizes(args.sizes):
        with _own_table(size) as pop:
            _add(rows, pop, f"{size:,} sockets", *measure)
    for size in _sizes(args.shared):
        with _shared_table(size) as pop:
            _add(rows, pop, f"shared, {size:,} sockets", *measure)
            with Population(Spec()) as small:
                _add(rows, small, f"shared, empty ns next to {size:,}", *measure)
    return _finish(args, _table(rows), rows, host_table=host)


if __name__ == "__main__":
    sys.exit(main())

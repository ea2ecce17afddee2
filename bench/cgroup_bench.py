"""counts_by_cgroup() with the bpf backend (the owner's cgroup id read by
the iterator program, tallied in a BPF hash map) against netlink (one
dump, INET_DIAG_CGROUP_ID parsed per socket), in the same run, and the
bpf backend's plain counts() beside them for what the breakdown adds.

    python bench/cgroup_bench.py [TOTAL ...]     (default: 100000)

As root.  Counted inside the population's namespace with one Counter per
backend; every breakdown must equal netlink's first one (the same ids, the
same unowned sockets) and sum to the population's sockets.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fasttcpstat  # noqa: E402
from tests.population import Population, Spec  # noqa: E402

ROUNDS = 20
# (label, backend, method)
METHODS = (
    ("netlink counts_by_cgroup", "netlink", "counts_by_cgroup"),
    ("bpf counts_by_cgroup", "bpf", "counts_by_cgroup"),
    ("bpf counts (no breakdown)", "bpf", "counts"),
)


def measure() -> dict:
    """Runs in the population's namespace: {label: (cpu ms, wall ms,
    sockets, cgroups, equal to netlink's breakdown every round)}."""
    out = {}
    reference = None
    for label, backend, method in METHODS:
        with fasttcpstat.Counter(backend) as counter:
            count = getattr(counter, method)
            first = count()  # loads the program, walks the cgroup tree once
            if method == "counts_by_cgroup" and reference is None:
                reference = first
            results = []
            c0, t0 = time.process_time(), time.monotonic()
            for _ in range(ROUNDS):
                results.append(count())
            cpu = (time.process_time() - c0) / ROUNDS * 1e3
            wall = (time.monotonic() - t0) / ROUNDS * 1e3
        if method == "counts_by_cgroup":
            sockets = sum(sum(c.values()) for c in first.values())
            same = all(r == reference for r in results) and first == reference
            owners = len(first) - 1  # "unowned" is always there
        else:
            sockets, same, owners = sum(first.values()), all(r == first for r in results), 0
        out[label] = (cpu, wall, sockets, owners, same)
    return out


def main() -> None:
    print("| sockets | method | CPU ms per count | wall ms per count | "
          "cgroups | exact, equal to netlink |")
    print("|---|---|---|---|---|---|")
    for total in [int(a) for a in sys.argv[1:]] or [100000]:
        with Population(Spec.mixed(total), workers="auto") as pop:
            rows = pop.run(measure)
        expected = sum(sum(pop.expected[f].values()) for f in ("ipv4", "ipv6"))
        for label, (cpu, wall, sockets, owners, same) in rows.items():
            print(f"| {total} | {label} | {cpu:.2f} | {wall:.2f} | {owners or '-'} | "
                  f"{sockets == expected and same} |", flush=True)
        ratio = rows["netlink counts_by_cgroup"][0] / rows["bpf counts_by_cgroup"][0]
        print(f"\nnetlink / bpf CPU per counts_by_cgroup at {total} sockets: {ratio:.1f}x")


if __name__ == "__main__":
    main()

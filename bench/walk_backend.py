"""The Python backends through Counter(), one namespace, same run:
backend="walk" against "bpf" and "netlink" on mixed populations.

    python bench/walk_backend.py [TOTAL ...]     (default: 10000 50000)

Per backend: Counter() set-up (for walk: BTF, program load and the
start-up self-check) and the mean CPU and wall time of counts(), counted
inside the population's namespace; the count must equal the first one.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fasttcpstat  # noqa: E402
from tests.population import Population, Spec  # noqa: E402

BACKENDS = ("walk", "bpf", "netlink")
ROUNDS = 30


def measure() -> dict:
    out = {}
    for b in BACKENDS:
        t, c0 = time.monotonic(), time.process_time()
        c = fasttcpstat.Counter(b)
        setup = ((time.monotonic() - t) * 1e3, (time.process_time() - c0) * 1e3)
        first = c.counts()
        c0, t = time.process_time(), time.monotonic()
        same = all(c.counts() == first for _ in range(ROUNDS))
        out[b] = (setup, (time.process_time() - c0) / ROUNDS * 1e3,
                  (time.monotonic() - t) / ROUNDS * 1e3, sum(first.values()), same)
        c.close()
    return out


def main() -> None:
    print("| sockets | backend | set-up ms wall (CPU) | count ms CPU | count ms wall | exact, stable |")
    print("|---|---|---|---|---|---|")
    for total in [int(a) for a in sys.argv[1:]] or [10000, 50000]:
        with Population(Spec.mixed(total), workers="auto") as pop:
            for b, (setup, cpu, wall, n, same) in pop.run(measure).items():
                exact = n == sum(pop.expected["ipv4"].values()) + sum(pop.expected["ipv6"].values())
                print(f"| {total} | {b} | {setup[0]:.1f} ({setup[1]:.1f}) | {cpu:.3f} | "
                      f"{wall:.3f} | {exact and same} |", flush=True)


if __name__ == "__main__":
    main()

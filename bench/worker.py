"""In-process measurement worker: one counting method, many counts.

    python bench/worker.py METHOD

Started (by bench/measure.py, through execwrap -n) inside the population's
network namespace.  It sets METHOD up once (imports, sockets: excluded from
the measurements), prints one JSON line {"ready": ...}, then does one
measured count per line read on stdin and prints one JSON line per count:

    wall, user, sys       seconds for the call; CPU includes children the
                          call waited for (`ss -tan` runs as a subprocess)
    child_user/child_sys  that children's part
    rss_before_kib        VmRSS just before the call
    hwm_after_kib         peak RSS during the call (VmHWM, reset before it
                          through /proc/self/clear_refs)
    counts                the method's result
"""
from __future__ import annotations

import json
import resource
import sys
import time


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def reset_peak_rss() -> None:
    # proc(5): writing 5 to clear_refs resets the peak RSS (VmHWM) to the
    # current RSS, so each call's peak is its own.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass                    # then the peak covers the worker's life


def measured(count) -> dict:
    reset_peak_rss()
    rss_before = status_kib("VmRSS")
    s0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    counts = count()
    t1 = time.perf_counter()
    s1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    hwm_after = status_kib("VmHWM")
    child_user = c1.ru_utime - c0.ru_utime
    child_sys = c1.ru_stime - c0.ru_stime
    return {
        "wall": t1 - t0,
        "user": s1.ru_utime - s0.ru_utime + child_user,
        "sys": s1.ru_stime - s0.ru_stime + child_sys,
        "child_user": child_user,
        "child_sys": child_sys,
        "rss_before_kib": rss_before,
        "hwm_after_kib": hwm_after,
        "counts": counts,
    }


def main() -> int:
    key = sys.argv[1]
    t0 = time.perf_counter()
    from methods import SETUP       # noqa: E402 - after the clock starts
    count = SETUP[key]()
    ready = {"ready": True, "setup_seconds": time.perf_counter() - t0,
             "rss_kib": status_kib("VmRSS")}
    print(json.dumps(ready), flush=True)
    for _line in sys.stdin:
        print(json.dumps(measured(count)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark fasttcpstat against its peers at 10k, 100k and 1M TCP sockets.

    python bench/run.py [--sizes 10000,100000,1000000] [--rounds 5] [--quick]
                        [--out bench/results] [--name NAME] [--methods a,b,...]

Needs root (network namespaces), gcc, iproute2's `ss`, and the bench extra
(pip install '.[bench]': psutil, pyroute2).  For each size it builds a
population in a private network namespace (tests/population.py), measures
every method in interleaved rounds, checks every count, and writes
<out>/<name>.json, <out>/<name>.md and <out>/latest.md.

--quick: 10k sockets, one round (the CI smoke test).  The exit status is
non-zero only for errors or count mismatches, never for timings or targets.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

import measure  # noqa: E402
import methods as M  # noqa: E402
import populations  # noqa: E402
import report  # noqa: E402
from tests.population import netns_supported  # noqa: E402 - populations set the path


def log(msg: str) -> None:
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="comma-separated socket counts (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    p.add_argument("--quick", action="store_true",
                   help="10k sockets, one round: the CI smoke test")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "results"),
                   help="results directory (default: bench/results)")
    p.add_argument("--name", help="results file name (default: a UTC timestamp; "
                   "'quick-<timestamp>' with --quick)")
    p.add_argument("--methods", help="comma-separated subset of: " +
                   ", ".join(m.key for m in M.METHODS))
    p.add_argument("--report-only", metavar="JSON",
                   help="rewrite the Markdown of an earlier run's JSON and exit")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = "10000", 1
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.rounds < 1 or not args.size_list or min(args.size_list) < 1:
        p.error("need at least one round and one size >= 1")
    keys = [m.key for m in M.METHODS]
    if args.methods:
        wanted = [k.strip() for k in args.methods.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in keys]
        if unknown:
            p.error("unknown methods %s; known: %s" % (unknown, ", ".join(keys)))
        if M.REFERENCE not in wanted:
            wanted.insert(0, M.REFERENCE)     # ratios need it
        keys = [k for k in keys if k in wanted]
    args.keys = keys
    return args


def machine_facts(python: str) -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ss = subprocess.run(["ss", "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        universal_newlines=True).stdout.strip()
    fts = subprocess.run([python, "-c", "import fasttcpstat as f; print(f.__version__)"],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": measure.python_version(python),
        "python_executable": python,
        "ss_version": ss,
        "fasttcpstat": fts or "not importable",
        "mem_total_kib": _meminfo("MemTotal"),
        # Other work on the machine inflates wall times (CPU times less so).
        "loadavg_at_start": os.getloadavg(),
        "rlimit_nofile": _nofile(),
    }


def package_fingerprint(python: str) -> dict:
    """What fasttcpstat code was measured: the repository's commit and a
    hash of the installed package's files (an editable install follows the
    working tree, so a change during the run would mix versions)."""
    code = ("import fasttcpstat, hashlib, os\n"
            "d = os.path.dirname(fasttcpstat.__file__); h = hashlib.sha256()\n"
            "for n in sorted(os.listdir(d)):\n"
            "    p = os.path.join(d, n)\n"
            "    if os.path.isfile(p) and n.endswith(('.py', '.so')):\n"
            "        h.update(n.encode()); h.update(open(p, 'rb').read())\n"
            "print(h.hexdigest()[:16])\n")
    digest = subprocess.run([python, "-c", code], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.strip()
    git = subprocess.run(["git", "-C", populations.ROOT, "describe", "--always", "--dirty"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         universal_newlines=True).stdout.strip()
    return {"files_sha256": digest, "git": git or None}


def _meminfo(field: str):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _nofile():
    import resource
    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


def preflight(keys) -> "tuple[list, dict]":
    """Errors that stop the run before anything is built, and optional
    methods to skip here (with why)."""
    errors, skipped = [], {}
    if os.geteuid() != 0:
        errors.append("must run as root (network namespaces, sysctls)")
    ok, why = netns_supported()
    if not ok:
        errors.append("network namespaces unavailable: " + why)
    try:
        import fasttcpstat
        if fasttcpstat.Counter("netlink").backend != "netlink":
            errors.append("fasttcpstat's netlink backend is unavailable")
    except Exception as exc:  # noqa: BLE001 - report whatever it is
        errors.append("fasttcpstat unusable: %r" % (exc,))
    for key in keys:
        why = M.optional_import_error(key)
        if why:
            # The bench extra is part of the command's contract: a missing
            # peer is an error, not a silent skip.
            errors.append(why)
    for key in keys:
        why = M.unavailable(key) if key in M.OPTIONAL else None
        if why:
            skipped[key] = why
    return errors, skipped


def run_size(size: int, args, helpers, python: str) -> dict:
    log("building a population of %s sockets" % format(size, ","))
    pop, info = populations.build(size)
    try:
        log("  built: %d sockets, %d workers, %.1f s (%s)"
            % (info["sockets"], info["workers"], sum(info["build_timings"].values()), info["ehash"]))
        t0 = time.monotonic()
        raw = measure.run_population(pop, size, args.keys, args.rounds, helpers, python, log)
        measured = time.monotonic() - t0
    finally:
        pop.close()
    tw_fw2 = info["spec"]["orphan_fin_wait2_4"]
    summary = {key: report.summarize(raw["methods"][key]) for key in args.keys}
    report.add_ratios(summary)
    mismatches = {}
    for key in args.keys:
        m = report.check_counts(key, raw["methods"], info["expected"], tw_fw2)
        if m:
            mismatches[key] = m
    return {
        "population": info,
        "rounds": args.rounds,
        "measure_seconds": measured,
        "time_wait_refreshes": raw["time_wait_refreshes"],
        "time_wait_refresh_seconds": raw["time_wait_refresh_seconds"],
        "stale_counts": raw["stale_counts"],
        "summary": summary,
        "mismatches": mismatches,
        "raw": raw["methods"],
    }


def rewrite_report(json_path: str) -> int:
    """Regenerate <name>.md (not latest.md) from a results JSON."""
    with open(json_path) as f:
        result = json.load(f)
    for r in result["sizes"]:       # medians and ratios with this report.py
        r["summary"] = {key: report.summarize(raw) for key, raw in r["raw"].items()}
        report.add_ratios(r["summary"])
    result["memory_check"] = report.memory_check(result["sizes"])
    largest = max(result["sizes"], key=lambda r: r["population"]["sockets"])
    result["targets"] = report.targets(largest, result["memory_check"])
    md_path = os.path.splitext(json_path)[0] + ".md"
    with open(md_path, "w") as f:
        f.write(report.markdown(result))
    print(md_path)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return rewrite_report(args.report_only)
    python = sys.executable
    started = datetime.now(timezone.utc)
    t_start = time.monotonic()
    errors, skipped = preflight(args.keys)
    if errors:
        for e in errors:
            print("bench: " + e, file=sys.stderr)
        return 2
    for key, why in skipped.items():
        log("skipping %s: %s" % (key, why))
    args.keys = [k for k in args.keys if k not in skipped]
    name = args.name or (("quick-" if args.quick else "") + started.strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(args.out, exist_ok=True)
    helpers = measure.Helpers()
    result = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py"] + (sys.argv[1:] if argv is None else argv)),
        "machine": machine_facts(python),
        "methods": {m.key: {"label": m.label, "kind": m.kind, "note": m.note}
                    for m in M.METHODS if m.key in args.keys},
        "skipped": skipped,
        "package_at_start": package_fingerprint(python),
        "sizes": [],
    }
    try:
        for size in args.size_list:
            r = run_size(size, args, helpers, python)
            result["sizes"].append(r)
            _print_size(r)
    finally:
        helpers.close()
    result["package_at_end"] = package_fingerprint(python)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    result["memory_check"] = report.memory_check(result["sizes"])
    largest = max(result["sizes"], key=lambda r: r["population"]["sockets"])
    result["targets"] = report.targets(largest, result["memory_check"])
    result["duration_seconds"] = time.monotonic() - t_start
    failures = sum(len(r["mismatches"]) + sum(len(x["errors"]) for x in r["raw"].values())
                   for r in result["sizes"])
    result["failures"] = failures

    json_path = os.path.join(args.out, name + ".json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=False)
    md = report.markdown(result)
    for path in (os.path.join(args.out, name + ".md"), os.path.join(args.out, "latest.md")):
        with open(path, "w") as f:
            f.write(md)
    print()
    print(md)
    log("results: %s, %s" % (json_path, os.path.join(args.out, "latest.md")))
    log("total %.0f s; %s" % (result["duration_seconds"],
                              "%d count mismatches/errors" % failures if failures else "all counts agree"))
    return 1 if failures else 0


def _print_size(r: dict) -> None:
    for line in report.size_table(r):
        print(line)


if __name__ == "__main__":
    sys.exit(main())

"""Turning raw samples into medians, ratios, count checks, targets and tables."""
from __future__ import annotations

from typing import Dict, List, Optional

import methods as M
from measure import median

MIB = 1024.0


# --------------------------------------------------------------------------
# Count checks
# --------------------------------------------------------------------------

def diff(got: dict, want: dict) -> Dict[str, int]:
    """{key: got - want} for every key that differs (missing counts as 0)."""
    out = {}
    for key in sorted(set(got) | set(want), key=_state_order):
        d = got.get(key, 0) - want.get(key, 0)
        if d:
            out[key] = d
    return out


def _state_order(key: str):
    return (M.STATES.index(key), "") if key in M.STATES else (len(M.STATES), key)


def check_counts(key: str, raw: dict, expected: dict, tw_fin_wait2: int) -> List[dict]:
    """Every sample of method `key` compared with the population's expected
    counts and with fasttcpstat's (the reference) in the same round and mode.
    Returns the mismatches."""
    method = M.BY_KEY[key]
    ref_raw = raw.get(M.REFERENCE)
    mismatches = []
    for mode in ("inproc", "whole"):
        samples = list(raw[key][mode])
        if mode == "inproc" and raw[key].get("warmup"):
            samples.append(dict(raw[key]["warmup"], round="warm-up"))
        for sample in samples:
            got = sample["counts"]
            if method.kind == "filtered":
                # One port's sockets: the population's spec does not say how
                # many; the one-port methods must agree with each other.
                wants = {}
                fref = raw.get(M.FILTERED_REFERENCE)
                same = _same_round(fref, mode, sample["round"]) if fref else None
                if same is not None and key != M.FILTERED_REFERENCE:
                    wants["fasttcpstat netlink, same port"] = same["counts"]
            else:
                wants = {"expected": _want(method, expected, tw_fin_wait2)}
                ref = _same_round(ref_raw, mode, sample["round"]) if ref_raw else None
                if ref is not None and key != M.REFERENCE:
                    wants["fasttcpstat"] = _want(method, ref["counts"], tw_fin_wait2)
            for against, want in wants.items():
                d = diff(got, want)
                if d:
                    mismatches.append({"mode": mode, "round": sample["round"],
                                       "against": against, "difference": d})
    return mismatches


def _want(method, counts: dict, tw_fin_wait2: int) -> dict:
    if method.kind == "totals":
        return M.totals_expected(counts, tw_fin_wait2)[method.key]
    return counts


def _same_round(ref_raw: dict, mode: str, rnd) -> Optional[dict]:
    if rnd == "warm-up":
        return ref_raw.get("warmup")
    for s in ref_raw[mode]:
        if s["round"] == rnd:
            return s
    return None


# --------------------------------------------------------------------------
# Medians and ratios
# --------------------------------------------------------------------------

def summarize(raw_method: dict) -> dict:
    out = {}
    inproc = raw_method["inproc"]
    if inproc:
        out["inproc"] = {
            "n": len(inproc),
            "wall": median([s["wall"] for s in inproc]),
            "user": median([s["user"] for s in inproc]),
            "sys": median([s["sys"] for s in inproc]),
            "cpu": median([s["user"] + s["sys"] for s in inproc]),
            # Linux splits CPU time into user and system by sampling at timer
            # ticks (4 ms at HZ=250): a share over all rounds is less noisy
            # than a ratio of medians.
            "user_share": _share([s["user"] for s in inproc], [s["sys"] for s in inproc]),
            "rss_growth_kib": median([s["hwm_after_kib"] - s["rss_before_kib"] for s in inproc]),
            "rss_before_kib": median([s["rss_before_kib"] for s in inproc]),
        }
    whole = raw_method["whole"]
    if whole:
        out["whole"] = {
            "n": len(whole),
            "wall": median([s["wall"] for s in whole]),
            "user": median([s["user"] for s in whole]),
            "sys": median([s["sys"] for s in whole]),
            "cpu": median([s["user"] + s["sys"] for s in whole]),
            "maxrss_kib": median([s["maxrss_kib"] for s in whole]),
        }
    return out


def _share(user: List[float], system: List[float]) -> Optional[float]:
    total = sum(user) + sum(system)
    return sum(user) / total if total > 0 else None


def add_ratios(summaries: Dict[str, dict]) -> None:
    """ratio = method / fasttcpstat netlink (request=auto), same size, same
    run; > 1 means the method costs more."""
    ref = summaries.get(M.REFERENCE, {})
    for s in summaries.values():
        ratios = {}
        for mode in ("inproc", "whole"):
            for metric in ("wall", "cpu"):
                mine = s.get(mode, {}).get(metric)
                base = ref.get(mode, {}).get(metric)
                if mine is not None and base:
                    ratios["%s_%s" % (mode, metric)] = mine / base
        s["ratios"] = ratios


# --------------------------------------------------------------------------
# Targets (issue 3): reported, never asserted
# --------------------------------------------------------------------------

def targets(size_result: dict, memory: dict) -> List[dict]:
    s = size_result["summary"]
    size = size_result["population"]["sockets"]

    def cpu(key):
        return s.get(key, {}).get("inproc", {}).get("cpu")

    fts = cpu(M.REFERENCE)
    out = []

    def ratio_target(name, key, minimum):
        other = cpu(key)
        value = other / fts if other and fts else None
        out.append({"target": name, "want": ">= %gx" % minimum,
                    "value": value, "shown": _x(value),
                    "met": None if value is None else value >= minimum})

    ratio_target("CPU per count: psutil / fasttcpstat", "psutil", 25)
    ratio_target("CPU per count: /proc reader (1 MiB) / fasttcpstat", "proc-reader-1m", 3.5)
    ratio_target("CPU per count: /proc reader (default buffering) / fasttcpstat", "proc-reader", 3.5)
    ratio_target("CPU per count: ss -tan / fasttcpstat", "ss-tan", 3.5)
    ratio_target("CPU per count: pyroute2 / fasttcpstat", "pyroute2", 100)
    bare = cpu("bare-c-v2")
    value = fts / bare if fts and bare else None
    out.append({"target": "CPU per count: fasttcpstat / bare C v2 pair", "want": "<= 0.85x",
                "value": value, "shown": _x(value),
                "met": None if value is None else value <= 0.85})
    share = s.get(M.REFERENCE, {}).get("inproc", {}).get("user_share")
    out.append({"target": "fasttcpstat user time / its CPU time (all rounds)", "want": "<= 1%",
                "value": share, "shown": "n/a" if share is None else "%.2f%%" % (100 * share),
                "met": None if share is None else share <= 0.01})
    growth = memory.get("growth_kib")
    out.append({"target": "peak RSS growth, counts() process, %s" % memory.get("between", "n/a"),
                "want": "<= 1024 KiB", "value": growth,
                "shown": "n/a" if growth is None else "%+d KiB" % growth,
                "met": None if growth is None or not memory.get("is_10k_to_1m") else growth <= 1024})
    for t in out:
        t["at_sockets"] = size
    return out


def _x(value: Optional[float]) -> str:
    return "n/a" if value is None else "%.2fx" % value


# The whole-process runs that are "a process calling counts()".
MEMORY_METHODS = ("fts-netlink-auto", "fts-bpf")


def memory_check(size_results: List[dict]) -> dict:
    """Peak RSS of a fresh process calling fasttcpstat.counts() (the
    whole-process runs of MEMORY_METHODS) at the largest size minus at the
    smallest, same run.  growth_kib: the largest growth among them."""
    per_method = {}
    sizes = sorted(size_results, key=lambda r: r["population"]["sockets"])
    if len(sizes) < 2:
        return {"note": "needs two sizes (e.g. 10k and 1M)"}
    small, large = sizes[0], sizes[-1]
    for key in MEMORY_METHODS:
        a = small["summary"].get(key, {}).get("whole", {}).get("maxrss_kib")
        b = large["summary"].get(key, {}).get("whole", {}).get("maxrss_kib")
        if a is not None and b is not None:
            per_method[key] = {"small_maxrss_kib": a, "large_maxrss_kib": b, "growth_kib": b - a}
    if not per_method:
        return {"note": "no whole-process runs of %s" % (MEMORY_METHODS,)}
    return {
        "between": "%d -> %d sockets" % (small["population"]["sockets"],
                                         large["population"]["sockets"]),
        "is_10k_to_1m": (small["population"]["requested_size"] <= 10_000
                         and large["population"]["requested_size"] >= 1_000_000),
        "per_method": per_method,
        "growth_kib": max(m["growth_kib"] for m in per_method.values()),
    }


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------

def _ms(v: Optional[float]) -> str:
    if v is None:
        return "–"
    ms = v * 1000
    return "%.0f" % ms if ms >= 100 else ("%.1f" % ms if ms >= 1 else "%.2f" % ms)


def _kib(v) -> str:
    return "–" if v is None else "%+d" % v


def _mib(v) -> str:
    return "–" if v is None else "%.1f" % (v / MIB)


def size_table(r: dict) -> List[str]:
    pop = r["population"]
    lines = [
        "### %s sockets" % format(pop["sockets"], ","),
        "",
        "Population: %s. Workers holding it: %d; established hash: %s; built in %.1f s. %s."
        % (_composition(pop["expected"]), pop["workers"], pop["ehash"],
           pop["build_timings"].get("build_seconds", 0.0), pop["time_wait_note"]),
        "Rounds: %d%s." % (r["rounds"], (", TIME_WAIT refreshed %d times" % r["time_wait_refreshes"])
                           if r["time_wait_refreshes"] else ""),
        "",
        "| method | in-process wall ms | CPU ms (user+sys) | CPU vs fasttcpstat | user % "
        "| peak RSS growth KiB | whole-process wall ms | CPU ms | peak RSS MiB | counts |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for m in M.METHODS:
        if m.key not in r["summary"]:
            continue
        s = r["summary"][m.key]
        i, w = s.get("inproc", {}), s.get("whole", {})
        ratio = s.get("ratios", {}).get("inproc_cpu")
        user = "%.1f" % (100 * i["user_share"]) if i.get("user_share") is not None else "–"
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            m.label, _ms(i.get("wall")), _ms(i.get("cpu")),
            "–" if ratio is None else "%.2fx" % ratio, user, _kib(i.get("rss_growth_kib")),
            _ms(w.get("wall")), _ms(w.get("cpu")), _mib(w.get("maxrss_kib")),
            _count_cell(r, m.key)))
    lines.append("")
    return lines


def _load(avg) -> str:
    return "n/a" if not avg else "/".join("%.1f" % x for x in avg)


def _composition(expected: dict) -> str:
    parts = ["%s %s" % (format(n, ","), s) for s, n in expected.items() if n]
    return ", ".join(parts)


def _count_cell(r: dict, key: str) -> str:
    errors = r["raw"][key]["errors"]
    mism = r["mismatches"].get(key, [])
    if errors:
        return "ERROR (%d)" % len(errors)
    if mism:
        return "MISMATCH (%d)" % len(mism)
    kind = "totals " if M.BY_KEY[key].kind == "totals" else ""
    return "%sok" % kind


def markdown(result: dict) -> str:
    mach = result["machine"]
    lines = [
        "# fasttcpstat benchmark",
        "",
        "Run %s, `%s`, %.0f s in all." % (result["started"], result["command"], result["duration_seconds"]),
        "Machine: %s CPUs (%s), Linux %s, Python %s, %s, fasttcpstat %s (%s); "
        "load average %s at the start, %s at the end."
        % (mach["nproc"], mach["cpu_model"], mach["kernel"], mach["python"], mach["ss_version"],
           mach["fasttcpstat"], (result.get("package_at_start") or {}).get("git"),
           _load(mach.get("loadavg_at_start")), _load(mach.get("loadavg_at_end"))),
        "",
        "Per count, medians of the rounds. In-process: a long-lived process per method, imports "
        "excluded, first call dropped; CPU includes child processes (`ss`); peak RSS growth is the "
        "call's peak RSS minus the RSS before it. Whole process: a fresh process per count, "
        "start-up included, peak RSS from wait4(). \"CPU vs fasttcpstat\" is the method's in-process "
        "CPU divided by fasttcpstat netlink (request=auto)'s, same population, same run. "
        "See bench/README.md.",
        "",
    ]
    for r in result["sizes"]:
        lines += size_table(r)
    lines += ["## Targets (issue 3), at the largest size", ""]
    if result["targets"]:
        lines += ["| target | want | measured | met |", "|---|---|--:|---|"]
        for t in result["targets"]:
            met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            lines.append("| %s | %s | %s | %s |" % (t["target"], t["want"], t["shown"], met))
        lines.append("")
        lines.append("Measured at %s sockets%s." % (
            format(result["targets"][0]["at_sockets"], ","),
            "" if result["targets"][0]["at_sockets"] >= 1_000_000 else
            " (the targets are defined at 1M sockets: indicative only)"))
    lines += ["", "## Memory check", ""]
    mem = result["memory_check"]
    if "growth_kib" in mem:
        lines.append("Peak RSS of a fresh process calling `fasttcpstat.counts(backend=...)` "
                     "(%s):" % mem["between"])
        lines.append("")
        for key, m in mem["per_method"].items():
            lines.append("- backend=\"%s\": %d KiB -> %d KiB, growth %+d KiB"
                         % (key.split("-")[1], m["small_maxrss_kib"], m["large_maxrss_kib"],
                            m["growth_kib"]))
    else:
        lines.append("Not computed: %s." % mem.get("note"))
    if result.get("package_at_start") != result.get("package_at_end", result.get("package_at_start")):
        lines += ["", "**Warning: the installed fasttcpstat changed during the run (%s -> %s): "
                  "the figures mix versions.**" % (result["package_at_start"], result["package_at_end"])]
    for key, why in result.get("skipped", {}).items():
        lines += ["", "Skipped %s: %s" % (key, why)]
    lines += ["", "## Count checks", ""]
    problems = 0
    for r in result["sizes"]:
        for key, mism in r["mismatches"].items():
            for m in mism[:5]:
                problems += 1
                lines.append("- %s sockets, %s (%s, round %s) vs %s: %s" % (
                    format(r["population"]["sockets"], ","), key, m["mode"], m["round"],
                    m["against"], ", ".join("%s %+d" % kv for kv in m["difference"].items())))
            if len(mism) > 5:
                lines.append("  - ... %d more" % (len(mism) - 5))
        for key, raw in r["raw"].items():
            for e in raw["errors"]:
                problems += 1
                lines.append("- %s sockets, %s: ERROR %s" % (
                    format(r["population"]["sockets"], ","), key, e.splitlines()[0][:300]))
        for s in r.get("stale_counts", []):
            lines.append("- %s sockets: count not kept within TIME_WAIT's lifetime: %s"
                         % (format(r["population"]["sockets"], ","), s))
    if not problems:
        lines.append("Every method's counts equal the population's expected counts and "
                     "fasttcpstat's, in every round (totals-only references: their totals).")
    lines.append("")
    return "\n".join(lines)

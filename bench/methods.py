"""The counting methods the benchmark compares, and how each is run.

Every method is run two ways on the same population:

- in-process: a long-lived worker process (bench/worker.py, or bare_diag
  --serve for the C yardstick) sets the method up once (imports, sockets)
  and then counts on request, so a call's cost excludes start-up;
- whole process: one fresh process per count, start-up included
  (bench/oneshot.py for the Python methods, the program itself for `ss`,
  `cat` and the C yardstick), launched through bench/c/execwrap.

A counting callable returns {state: n} over STATES (full methods), possibly
with extra "?NAME" keys for names it could not map (e.g. psutil's NONE), or
a dict of totals (totals-only references: `ss -s`, /proc/net/sockstat).

Imports of psutil and pyroute2 happen inside the setup functions, so a
worker pays only for its own method and a one-shot run's start-up cost is
that method's.
"""
from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
from typing import Callable, Dict, List, NamedTuple, Optional

# Kernel order, as fasttcpstat.STATES (not imported here: this module must
# load without the package for the orchestrator's own bookkeeping).
STATES = (
    "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
)

# `ss` state names -> kernel names.  UNCONN is handled separately.
SS_NAMES = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
    "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK", "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


class Method(NamedTuple):
    key: str            # stable id, used on command lines and in the JSON
    label: str          # for the table
    kind: str           # "full": per-state counts; "totals": totals-only reference;
                        # "filtered": one port's per-state counts
    runner: str         # "python" (bench/worker.py) or "c" (bare_diag --serve)
    note: str = ""


METHODS: List[Method] = [
    Method("fts-netlink-auto", "fasttcpstat netlink (request=auto)", "full", "python",
           "Counter('netlink'); whole process: fasttcpstat.counts(backend='netlink')"),
    Method("fts-netlink-v2", "fasttcpstat netlink (request=v2)", "full", "python",
           "inet_diag_req_v2, AF_INET then AF_INET6"),
    Method("fts-netlink-legacy", "fasttcpstat netlink (request=legacy)", "full", "python",
           "one TCPDIAG_GETSOCK walk for both families"),
    Method("fts-procfs", "fasttcpstat procfs", "full", "python",
           "Counter('procfs'): /proc/net/tcp{,6}, st column only"),
    Method("fts-bpf", "fasttcpstat bpf (tcp iterator)", "full", "python",
           "Counter('bpf'): counts in the kernel; needs root/CAP_BPF+CAP_PERFMON and BTF; "
           "what backend='auto' picks as root"),
    Method("fts-netlink-port", "fasttcpstat netlink, one local port", "filtered", "python",
           "Counter('netlink').counts(local_ports=P), P = the lowest listening port: "
           "the kernel runs the bytecode filter before building any message"),
    Method("fts-bpf-port", "fasttcpstat bpf, one local port", "filtered", "python",
           "Counter('bpf').counts(local_ports=P): the filter runs in the BPF program"),
    Method("bare-c-v2", "bare C, inet_diag_req_v2 pair", "full", "c",
           "bench/c/bare_diag.c: the yardstick"),
    Method("bare-c-legacy", "bare C, legacy single walk", "full", "c",
           "bench/c/bare_diag.c --legacy"),
    Method("proc-reader-1m", "Python /proc reader, 1 MiB buffering", "full", "python",
           "line.split()[3] per line of /proc/net/tcp{,6}"),
    Method("proc-reader", "Python /proc reader, default buffering", "full", "python",
           "same, open() default buffering"),
    Method("psutil", "psutil.net_connections('tcp') + Counter", "full", "python"),
    Method("pyroute2", "pyroute2 DiagSocket (AF_INET + AF_INET6)", "full", "python",
           "get_sock_stats(states=SS_ALL), idiag_state counted"),
    Method("ss-tan", "ss -tan (subprocess), lines counted", "full", "python",
           "UNCONN lines dropped; whole process: ss itself"),
    Method("ss-s", "ss -s (totals only)", "totals", "python",
           "estab = ESTABLISHED + CLOSE_WAIT, timewait = timewait socks"),
    Method("sockstat", "/proc/net/sockstat{,6} (totals only)", "totals", "python",
           "inuse = full sockets, tw = timewait socks"),
]
BY_KEY: Dict[str, Method] = {m.key: m for m in METHODS}

# The reference all ratios are relative to.
REFERENCE = "fts-netlink-auto"
# The reference the one-port ("filtered") methods are checked against.
FILTERED_REFERENCE = "fts-netlink-port"


# --------------------------------------------------------------------------
# Python counting functions (set up once, then called per count)
# --------------------------------------------------------------------------

def _fasttcpstat(backend: str, request: str = "auto") -> Callable[[], dict]:
    import fasttcpstat

    if backend == "netlink":
        counter = fasttcpstat.Counter(backend, request=request)
    else:
        counter = fasttcpstat.Counter(backend)
    if counter.backend != backend:
        raise RuntimeError("fasttcpstat fell back to %s: %s"
                           % (counter.backend, counter.fallback_reason))
    return counter.counts


def _lowest_listening_port() -> int:
    """The population's first service port (its listeners' local ports)."""
    ports = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    if not ports:
        raise RuntimeError("no listening socket to filter on")
    return min(ports)


def _fasttcpstat_port(backend: str) -> Callable[[], dict]:
    import fasttcpstat

    port = _lowest_listening_port()
    counter = fasttcpstat.Counter(backend)
    if counter.backend != backend:
        raise RuntimeError("fasttcpstat fell back to %s: %s"
                           % (counter.backend, counter.fallback_reason))
    return lambda: counter.counts(local_ports=port)


def _hex_state_counts(raw: Dict[str, int]) -> dict:
    """{"0A": n, ...} (the st column) -> {STATE: n}; unknown codes as "?XX"."""
    out = dict.fromkeys(STATES, 0)
    for code, n in raw.items():
        value = int(code, 16)
        if 1 <= value <= len(STATES):
            out[STATES[value - 1]] += n
        else:
            out["?" + code] = out.get("?" + code, 0) + n
    return out


def _proc_reader(buffering: int) -> Callable[[], dict]:
    # The article's reader: every line after the header, split(), 4th
    # field.  buffering=-1 is open()'s default.
    def count() -> dict:
        tally: Dict[str, int] = {}
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(path, buffering=buffering) as f:
                next(f)
                for line in f:
                    st = line.split()[3]
                    tally[st] = tally.get(st, 0) + 1
        return _hex_state_counts(tally)
    return count


def _psutil() -> Callable[[], dict]:
    import psutil

    def count() -> dict:
        tally = collections.Counter(c.status for c in psutil.net_connections("tcp"))
        out = dict.fromkeys(STATES, 0)
        for status, n in tally.items():
            # psutil's status strings are the kernel names, plus "NONE".
            name = str(getattr(status, "value", status))
            if name in out:
                out[name] += n
            else:
                out["?" + name] = out.get("?" + name, 0) + n
        return out
    return count


def _pyroute2() -> Callable[[], dict]:
    from pyroute2 import DiagSocket

    ds = DiagSocket()
    ds.bind()

    def count() -> dict:
        tally: collections.Counter = collections.Counter()
        for family in (socket.AF_INET, socket.AF_INET6):
            # states defaults to SS_ALL (0xFFF): bits 0..11, not 13
            # (bound-inactive), so it matches the others.
            for msg in ds.get_sock_stats(family=family):
                tally[msg["idiag_state"]] += 1
        out = dict.fromkeys(STATES, 0)
        for state, n in tally.items():
            if 1 <= state <= len(STATES):
                out[STATES[state - 1]] += n
            else:
                out["?%d" % state] = n
        return out
    return count


def parse_ss_tan(text: str) -> dict:
    """Count `ss -tan` output lines per state.  UNCONN lines are dropped:
    an `ss` that knows TCP_BOUND_INACTIVE lists bound-only sockets there,
    which fasttcpstat (and /proc/net/tcp) deliberately do not count."""
    out = dict.fromkeys(STATES, 0)
    lines = iter(text.splitlines())
    next(lines, None)                       # header
    for line in lines:
        if not line:
            continue
        name = line.split(None, 1)[0]
        if name == "UNCONN":
            continue
        state = SS_NAMES.get(name)
        if state is None:
            out["?" + name] = out.get("?" + name, 0) + 1
        else:
            out[state] += 1
    return out


def _ss_tan() -> Callable[[], dict]:
    def count() -> dict:
        text = subprocess.run(["ss", "-tan"], stdout=subprocess.PIPE, check=True,
                              universal_newlines=True).stdout
        return parse_ss_tan(text)
    return count


_SS_S_TCP = re.compile(r"^TCP:\s+(\d+) \(estab (\d+), closed (\d+), orphaned (\d+), "
                       r"timewait (\d+)\)", re.M)


def parse_ss_s(text: str) -> dict:
    m = _SS_S_TCP.search(text)
    if not m:
        raise ValueError("unexpected `ss -s` output: %r" % text[:200])
    # "total" and "closed" come from sockets_allocated, which is global
    # (all namespaces): not comparable, so not returned.
    return {"estab": int(m.group(2)), "timewait": int(m.group(5))}


def _ss_s() -> Callable[[], dict]:
    def count() -> dict:
        text = subprocess.run(["ss", "-s"], stdout=subprocess.PIPE, check=True,
                              universal_newlines=True).stdout
        return parse_ss_s(text)
    return count


def parse_sockstat(text: str) -> dict:
    """/proc/net/sockstat + sockstat6 text -> per-namespace TCP totals."""
    v4 = re.search(r"^TCP: inuse (\d+) orphan \d+ tw (\d+)", text, re.M)
    v6 = re.search(r"^TCP6: inuse (\d+)", text, re.M)
    if not v4:
        raise ValueError("unexpected sockstat text: %r" % text[:200])
    return {"inuse": int(v4.group(1)) + (int(v6.group(1)) if v6 else 0),
            "tw": int(v4.group(2))}


def _sockstat() -> Callable[[], dict]:
    def count() -> dict:
        text = ""
        for path in ("/proc/net/sockstat", "/proc/net/sockstat6"):
            with open(path) as f:
                text += f.read()
        return parse_sockstat(text)
    return count


SETUP: Dict[str, Callable[[], Callable[[], dict]]] = {
    "fts-netlink-auto": lambda: _fasttcpstat("netlink", "auto"),
    "fts-netlink-v2": lambda: _fasttcpstat("netlink", "v2"),
    "fts-netlink-legacy": lambda: _fasttcpstat("netlink", "legacy"),
    "fts-procfs": lambda: _fasttcpstat("procfs"),
    "fts-bpf": lambda: _fasttcpstat("bpf"),
    "fts-netlink-port": lambda: _fasttcpstat_port("netlink"),
    "fts-bpf-port": lambda: _fasttcpstat_port("bpf"),
    "proc-reader-1m": lambda: _proc_reader(1 << 20),
    "proc-reader": lambda: _proc_reader(-1),
    "psutil": _psutil,
    "pyroute2": _pyroute2,
    "ss-tan": _ss_tan,
    "ss-s": _ss_s,
    "sockstat": _sockstat,
}


def oneshot_count(key: str) -> dict:
    """What a one-shot process does: the method's plainest use, once."""
    if key in ("fts-netlink-auto", "fts-bpf"):
        # The documented one-liner (what the memory check is about).
        import fasttcpstat
        return fasttcpstat.counts(backend=key.split("-")[1])
    return SETUP[key]()()


# --------------------------------------------------------------------------
# Whole-process command lines
# --------------------------------------------------------------------------

def whole_process_argv(key: str, python: str, bench_dir: str, bare_diag: str) -> List[str]:
    """argv of a fresh process doing one count (its stdout is parsed by
    parse_whole_process_output)."""
    if key == "bare-c-v2":
        return [bare_diag]
    if key == "bare-c-legacy":
        return [bare_diag, "--legacy"]
    if key == "ss-tan":
        return ["ss", "-tan"]
    if key == "ss-s":
        return ["ss", "-s"]
    if key == "sockstat":
        return ["cat", "/proc/net/sockstat", "/proc/net/sockstat6"]
    # -s: no user site-packages; the environment's own packages only.
    return [python, "-s", os.path.join(bench_dir, "oneshot.py"), key]


def parse_whole_process_output(key: str, text: str) -> dict:
    import json

    if key == "ss-tan":
        return parse_ss_tan(text)
    if key == "ss-s":
        return parse_ss_s(text)
    if key == "sockstat":
        return parse_sockstat(text)
    return json.loads(text)


def totals_expected(counts: dict, tw_fin_wait2: int = 0) -> Dict[str, Dict[str, int]]:
    """What the totals-only references should show, derived from full
    per-state counts (fasttcpstat's).  tw_fin_wait2: orphaned FIN_WAIT2
    sockets living as timewait socks (known from the population spec; the
    per-state counts cannot tell them from full FIN_WAIT2 sockets).

    - `ss -s` estab is /proc/net/snmp CurrEstab: ESTABLISHED + CLOSE_WAIT
      (RFC 1213 tcpCurrEstab); its timewait is sockstat's tw.
    - sockstat's tw counts timewait socks; inuse counts hashed full sockets
      (TCP + TCP6), i.e. everything but request socks (SYN_RECV here) and
      timewait socks.
    """
    tw = counts["TIME_WAIT"] + tw_fin_wait2
    total = sum(counts[s] for s in STATES)
    return {
        "ss-s": {"estab": counts["ESTABLISHED"] + counts["CLOSE_WAIT"], "timewait": tw},
        "sockstat": {"inuse": total - counts["SYN_RECV"] - tw, "tw": tw},
    }


# Methods that may be unavailable on a machine without it being an error
# (the BPF iterator needs BTF, a recent kernel and privileges).
OPTIONAL = ("fts-bpf", "fts-bpf-port")


def unavailable(key: str) -> Optional[str]:
    """Why an OPTIONAL method cannot run here, or None."""
    if key in ("fts-bpf", "fts-bpf-port"):
        try:
            import fasttcpstat
            fasttcpstat.Counter("bpf").close()
        except Exception as exc:  # noqa: BLE001 - any refusal means "skip"
            return "BPF iterator unavailable: %r" % (exc,)
    return None


def optional_import_error(key: str) -> Optional[str]:
    """Why a method cannot run here (a missing optional dependency), or None."""
    module = {"psutil": "psutil", "pyroute2": "pyroute2"}.get(key)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as exc:
        return "%s not installed (pip install '.[bench]'): %s" % (module, exc)
    return None

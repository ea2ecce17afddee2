"""Port filters, per-port breakdown, other namespaces and summary() on real
populations.

Filters are checked against `ss -tan` with the same filter expression and
against a listing of every socket's ports (from `ss -tanH`), so a wrong
bytecode program shows up as a count difference.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fasttcpstat

from .population import STATES

SS_NAMES = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
    "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK", "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}
BACKENDS = [("netlink", "v2"), ("netlink", "legacy"), ("procfs", "auto")]
BACKEND_IDS = ["netlink-v2", "netlink-legacy", "procfs"]


def _ss(*args: str) -> list:
    out = subprocess.run(["ss", "-tanH", *args], check=True, capture_output=True,
                         text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def ss_filtered(expr: str) -> dict:
    """Per-state counts of `ss -tan EXPR` (UNCONN, i.e. bound-only, left out)."""
    result = dict.fromkeys(STATES, 0)
    for fields in _ss(expr):
        if fields[0] in SS_NAMES:
            result[SS_NAMES[fields[0]]] += 1
    return result


def ss_listing() -> list:
    """(state, local port, remote port) of every socket."""
    rows = []
    for fields in _ss():
        if fields[0] in SS_NAMES:
            local = int(fields[3].rsplit(":", 1)[1])
            peer = fields[4].rsplit(":", 1)[1]
            rows.append((SS_NAMES[fields[0]], local, 0 if peer == "*" else int(peer)))
    return rows


def _in(port: int, spec) -> bool:
    if spec is None:
        return True
    items = spec if isinstance(spec, list) else [spec]
    for item in items:
        if isinstance(item, tuple) and item[0] <= port <= item[1]:
            return True
        if isinstance(item, range) and port in item:
            return True
        if isinstance(item, int) and port == item:
            return True
    return False


def from_listing(rows: list, local=None, remote=None) -> dict:
    result = dict.fromkeys(STATES, 0)
    for state, lport, rport in rows:
        if _in(lport, local) and _in(rport, remote):
            result[state] += 1
    return result


def _cases(listen_ports: list) -> list:
    """(local, remote, ss expression) covering every filter form."""
    a, b, c = listen_ports[:3]
    return [
        (a, None, f"sport = :{a}"),
        ([a, c], None, f"( sport = :{a} or sport = :{c} )"),
        ((a, b), None, f"( sport >= :{a} and sport <= :{b} )"),
        ([(a, b), c], None, f"( ( sport >= :{a} and sport <= :{b} ) or sport = :{c} )"),
        (range(a, c + 1), None, f"( sport >= :{a} and sport <= :{c} )"),
        (None, a, f"dport = :{a}"),
        (None, [b, (c, c + 5)], f"( dport = :{b} or ( dport >= :{c} and dport <= :{c + 5} ) )"),
        ((32768, 60999), b, f"( sport >= :32768 and sport <= :60999 ) and dport = :{b}"),
        (1, None, "sport = :1"),  # matches nothing
        ((0, 65535), None, ""),  # everything
    ]


def _listen_ports() -> list:
    return sorted({lport for state, lport, _ in ss_listing() if state == "LISTEN"})


def test_filters_match_ss(require_netns, small_population):
    def check():
        ports = _listen_ports()
        rows = ss_listing()
        results = []
        for local, remote, expr in _cases(ports):
            reference = ss_filtered(expr) if expr else ss_filtered("")
            ours = {
                f"{b}-{r}": fasttcpstat.Counter(b, request=r).counts(
                    local_ports=local, remote_ports=remote)
                for b, r in BACKENDS
            }
            results.append((local, remote, expr, reference,
                            from_listing(rows, local, remote), ours))
        return ports, results

    ports, results = small_population.run(check)
    assert len(ports) >= 3
    nonzero = 0
    for local, remote, expr, reference, listing, ours in results:
        assert reference == listing, expr
        for name, got in ours.items():
            assert got == reference, (name, local, remote, expr)
        nonzero += sum(reference.values()) > 0
    assert nonzero >= 7  # the filters really select something


def test_random_filters_against_the_kernel(require_netns, small_population):
    """Random port sets, compiled and run by the real kernel (whose audit
    would refuse a bad program with EINVAL), against the listing."""
    import random

    def check():
        rng = random.Random(2026)
        rows = ss_listing()
        ports = sorted({p for _, lport, rport in rows for p in (lport, rport)})
        mismatches = []
        with fasttcpstat.Counter("netlink", request="v2") as counter:
            for _ in range(200):
                sides = []
                for _side in range(2):
                    if rng.random() < 0.3:
                        sides.append(None)
                        continue
                    spec = []
                    for _item in range(rng.randint(1, 6)):
                        p = rng.choice(ports) if rng.random() < 0.7 else rng.randint(0, 65535)
                        if rng.random() < 0.5:
                            spec.append(p)
                        else:
                            spec.append((p, min(65535, p + rng.randint(0, 3000))))
                    sides.append(spec)
                local, remote = sides
                got = counter.counts(local_ports=local, remote_ports=remote)
                want = from_listing(rows, local, remote)
                if got != want:
                    mismatches.append((local, remote, got, want))
        return mismatches

    assert small_population.run(check) == []


def test_filters_with_family_and_states(require_netns, small_population):
    def check():
        port = _listen_ports()[0]
        return [
            (fasttcpstat.counts(family=fam, states=["LISTEN", "ESTABLISHED"],
                                local_ports=port, backend=b),
             ss_filtered(f"{'-4' if fam == 'ipv4' else '-6'}"))
            for fam in ("ipv4", "ipv6") for b in ("netlink", "procfs")
        ], port

    results, port = small_population.run(check)
    for got, _ in results:
        assert set(got) == {"ESTABLISHED", "LISTEN"}
    assert results[0][0] == results[1][0]
    assert results[2][0] == results[3][0]


def test_by_port_equals_separate_filtered_counts(require_netns, small_population):
    def check():
        ports = _listen_ports() + [1]  # and one port with no socket at all
        out = {}
        for b, r in BACKENDS:
            with fasttcpstat.Counter(b, request=r) as counter:
                out[(b, r, "local")] = (
                    counter.counts_by_port(ports),
                    {p: counter.counts(local_ports=p) for p in ports},
                )
                out[(b, r, "remote")] = (
                    counter.counts_by_port(ports, side="remote", family="ipv4",
                                           states=["ESTABLISHED", "SYN_SENT"]),
                    {p: counter.counts(remote_ports=p, family="ipv4",
                                       states=["ESTABLISHED", "SYN_SENT"]) for p in ports},
                )
        return ports, out

    ports, out = small_population.run(check)
    for key, (by_port, separate) in out.items():
        assert list(by_port) == ports, key
        assert by_port == separate, key
    assert out[("netlink", "v2", "local")][0][1] == dict.fromkeys(STATES, 0)
    assert sum(sum(c.values()) for c in out[("netlink", "v2", "remote")][0].values()) > 0


def test_by_port_module_function(require_netns, small_population):
    def check():
        port = _listen_ports()[0]
        return port, fasttcpstat.counts_by_port([port, port]), fasttcpstat.counts(local_ports=port)

    port, by_port, single = small_population.run(check)
    assert by_port == {port: single}


def _thread_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@pytest.mark.parametrize("backend", ["netlink", "procfs", "auto"])
@pytest.mark.parametrize("by", ["path", "pid"])
def test_count_another_namespace(require_netns, small_population, backend, by):
    pop = small_population
    total = {s: pop.expected["ipv4"][s] + pop.expected["ipv6"][s] for s in STATES}
    target = pop.ns_path if by == "path" else pop.holder_pid
    before = _thread_netns()
    with fasttcpstat.Counter(backend, netns=target) as counter:
        assert _thread_netns() == before
        assert counter.counts() == total
        assert counter.counts(family="ipv6") == pop.expected["ipv6"]
        assert counter.fallback_reason is None
    assert fasttcpstat.counts(netns=target, backend=backend) == total
    assert _thread_netns() == before


def test_namespace_counter_survives_fork(require_netns, small_population):
    """After fork() the child must not share the parent's socket; a Counter
    of another namespace reopens there, not in the child's namespace."""
    pop = small_population
    total = {s: pop.expected["ipv4"][s] + pop.expected["ipv6"][s] for s in STATES}
    with fasttcpstat.Counter("netlink", netns=pop.ns_path) as counter:
        assert counter.counts() == total
        pid = os.fork()
        if pid == 0:
            ok = counter.counts() == total and _thread_netns() != pop.ns_path
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0  # exited with 0 (not os.waitstatus_to_exitcode: 3.9+)
        assert counter.counts() == total


def test_namespace_by_name_in_var_run_netns(require_netns, small_population, tmp_path):
    """`ip netns`-style names are bind mounts of a namespace file; any
    nsfs file that is not under /proc/PID works the same way."""
    pop = small_population
    total = {s: pop.expected["ipv4"][s] + pop.expected["ipv6"][s] for s in STATES}
    alias = tmp_path / "netns"
    alias.touch()
    subprocess.run(["mount", "--bind", pop.ns_path, str(alias)], check=True)
    try:
        for backend in ("netlink", "procfs"):
            assert fasttcpstat.counts(netns=str(alias), backend=backend) == total
    finally:
        subprocess.run(["umount", str(alias)], check=True)


def test_namespace_errors_leave_the_thread_at_home(require_netns, tmp_path):
    before = _thread_netns()
    not_ns = tmp_path / "plain"
    not_ns.write_text("x")
    cases = [
        ({"netns": str(tmp_path / "missing")}, FileNotFoundError, "no such file"),
        ({"netns": str(not_ns)}, ValueError, "not a namespace file"),
        ({"netns": "/proc/self/ns/uts"}, ValueError, "not a network namespace"),
        ({"netns": 2 ** 22 + 12345}, FileNotFoundError, "no process with pid"),
        ({"netns": -3}, ValueError, "pid must be positive"),
        ({"netns": 1.5}, TypeError, "netns must be a path or a pid"),
        ({"netns": True}, TypeError, "not bool"),
    ]
    for backend in ("netlink", "procfs", "auto"):
        for kwargs, exc, words in cases:
            with pytest.raises(exc, match=words):
                fasttcpstat.counts(backend=backend, **kwargs)
            assert _thread_netns() == before


# Privileges are dropped after the imports: the interpreter's own files may
# live where nobody cannot read them (e.g. under /root/.pyenv).
_UNPRIVILEGED = r"""
import ctypes, json, os, sys, threading
import fasttcpstat
os.setgroups([]); os.setgid(65534); os.setuid(65534)
out = {"own": fasttcpstat.counts(backend="netlink") == fasttcpstat.counts(backend="procfs")}
try:
    fasttcpstat.counts(netns=sys.argv[1], backend="netlink")
    out["netlink"] = None
except PermissionError as exc:
    out["netlink"] = str(exc)
for key, target in (("auto_path", sys.argv[1]), ("auto_pid", int(sys.argv[2]))):
    c = fasttcpstat.Counter(netns=target)
    out[key] = [c.backend, c.fallback_reason, c.counts()]
print(json.dumps(out))
"""


def test_unprivileged_gets_permission_error(require_netns, small_population):
    pop = small_population
    total = {s: pop.expected["ipv4"][s] + pop.expected["ipv6"][s] for s in STATES}
    result = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED, pop.ns_path, str(pop.holder_pid)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    import json

    out = json.loads(result.stdout)
    assert out["own"] is True  # its own namespace still counts, both ways
    assert out["netlink"] is not None
    assert "CAP_SYS_ADMIN" in out["netlink"] or "ptrace" in out["netlink"]
    assert "backend='procfs'" in out["netlink"]
    # "auto" reads /proc/PID/net instead, which needs no switch.
    for key in ("auto_path", "auto_pid"):
        backend, reason, counts = out[key]
        assert backend == "procfs", key
        assert "netlink: " in reason and "CAP_SYS_ADMIN" in reason
        assert counts == total


def test_summary_matches_the_population_and_ss(require_netns, small_population):
    pop = small_population

    def check():
        out = subprocess.run(["ss", "-s"], check=True, capture_output=True,
                             text=True).stdout
        return fasttcpstat.summary(), out

    summary, ss_s = small_population.run(check)
    total = {s: pop.expected["ipv4"][s] + pop.expected["ipv6"][s] for s in STATES}
    # Timewait sockets: TIME_WAIT proper and orphaned FIN_WAIT2.
    assert summary["tcp_timewait"] == total["TIME_WAIT"] + pop.spec.orphan_fin_wait2_4
    assert summary["tcp_curr_estab"] == total["ESTABLISHED"] + total["CLOSE_WAIT"]
    assert f"timewait {summary['tcp_timewait']}" in ss_s
    assert f"orphaned {summary['tcp_orphan']}" in ss_s
    assert f"estab {summary['tcp_curr_estab']}" in ss_s
    # The same read from outside the namespace, by pid.
    assert fasttcpstat.summary(netns=pop.holder_pid)["tcp_timewait"] == summary["tcp_timewait"]
    with pytest.raises(ValueError, match="needs a pid"):
        fasttcpstat.summary(netns=pop.ns_path.replace("/proc/", "/proc/./"))

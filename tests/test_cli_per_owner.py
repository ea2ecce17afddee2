"""--all-netns and --by-cgroup on the command line, on real populations.

Two populations of our own (one named by an `ip netns attach` bind mount),
each checked in every format and mode against its spec and against the
library (counts_all_netns, counts_by_cgroup), whose counts are checked
against ss in test_all_netns and test_counts_by_cgroup.  Other namespaces
of the host (other tests, other users) change under us: only ours are
compared.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import pytest

import fasttcpstat

from .cli_tools import cli, main_in_process, parse_exposition, read_line, start, stop, total
from .population import STATES, Population, Spec

PREFIX = f"issue12c-{os.getpid()}"
NAME = f"{PREFIX}-a"
# No TIME_WAIT: exact for as long as the population is held.
SPEC_A = Spec(listen4=2, listen6=1, estab4=4, estab6=2, close_wait4=1)
SPEC_B = Spec(listen4=1, estab4=3, close_wait6=2, syn_recv4=2)
FORMATS = ["json", "table", "prometheus"]
BACKENDS = ["auto", "bpf", "netlink", "procfs"]


@pytest.fixture(scope="module")
def two(require_netns):
    with Population(SPEC_A, long_lived=True) as a, Population(SPEC_B, long_lived=True) as b:
        subprocess.run(["ip", "netns", "attach", NAME, str(a.holder_pid)], check=True)
        try:
            yield {os.stat(a.ns_path).st_ino: a, os.stat(b.ns_path).st_ino: b}
        finally:
            subprocess.run(["ip", "netns", "delete", NAME], check=False)


def _ok(code: int, err: str) -> bool:
    """Done, and at most the note about namespaces out of reach (even root
    cannot read /proc/PID/ns/net of a non-dumpable process)."""
    return code == 0 and (err == "" or (err.startswith("fasttcpstat: note: ")
                                        and err.count("\n") == 1))


def _expected(pops: dict) -> dict:
    return {inode: total(pop.expected) for inode, pop in pops.items()}


def _parse_rows(text: str) -> dict:
    """{first column: {STATE: n}} from the one-row-per-series table; the
    TOTAL column checked.  Identity cells may hold spaces (a command), so
    the numbers are read from the right."""
    header, *rows = [line.split() for line in text.splitlines() if line.strip()]
    states = header[-len(STATES) - 1:-1]
    assert states == list(STATES) and header[-1] == "TOTAL", header
    parsed = {}
    for row in rows:
        numbers = [int(cell) for cell in row[-len(STATES) - 1:]]
        assert numbers[-1] == sum(numbers[:-1]), row
        parsed[row[0]] = dict(zip(STATES, numbers[:-1]))
    return parsed


def _per_netns(fmt: str, out: str) -> dict:
    """{inode: {STATE: n}} from any format; Prometheus labels returned too."""
    if fmt == "json":
        return {int(key): value for key, value in json.loads(out).items()}
    if fmt == "table":
        return {int(key): value for key, value in _parse_rows(out).items()}
    return {int(dict(key)["netns"]): value for key, value in parse_exposition(out).items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_all_netns_one_shot(two, fmt, backend):
    code, out, err = cli("--all-netns", "--format", fmt, "--backend", backend)
    assert _ok(code, err), err
    got = _per_netns(fmt, out)
    library = fasttcpstat.counts_all_netns(backend=backend)
    for inode, expected in _expected(two).items():
        assert got[inode] == expected == library[inode], inode


def test_all_netns_prometheus_labels(two):
    code, out, err = cli("--all-netns", "--format", "prometheus")
    assert _ok(code, err), err
    series = parse_exposition(out)
    by_inode = {int(dict(key)["netns"]): dict(key) for key in series}
    named = next(inode for inode, pop in two.items() if pop.spec == SPEC_A)
    assert by_inode[named]["netns_name"] == NAME
    unnamed = next(inode for inode, pop in two.items() if pop.spec == SPEC_B)
    # Unknown labels are absent, not empty; pid and command are never labels.
    assert set(by_inode[unnamed]) == {"netns"}
    assert not any({"pid", "command", "table"} & set(labels) for labels in by_inode.values())
    # Bounded by what exists: one series per namespace and state.
    assert len(series) == len(by_inode)
    assert all(len(counts) == len(STATES) for counts in series.values())


def _ehash_entries() -> int:
    with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
        return int(f.read())


def _table_samples(text: str) -> dict:
    """{netns inode: (labels, value)} of the shared-table gauge."""
    from prometheus_client.parser import text_string_to_metric_families

    from fasttcpstat._formats import TABLE_METRIC

    [family] = [f for f in text_string_to_metric_families(text) if f.name == TABLE_METRIC]
    assert family.type == "gauge" and family.documentation
    got = {}
    for sample in family.samples:
        assert sample.timestamp is None and sample.value in (0, 1)
        got[int(sample.labels["netns"])] = (sample.labels, int(sample.value))
    return got


def test_all_netns_shares_host_table_metric(two):
    """One 0/1 sample per namespace, with the namespace's labels: 1 where
    the kernel says the namespace shares the host's table (a negative
    tcp_ehash_entries inside it, Linux >= 6.1)."""
    code, out, err = cli("--all-netns", "--format", "prometheus")
    assert _ok(code, err), err
    tables = _table_samples(out)
    connections = {int(dict(key)["netns"]): dict(key) for key in parse_exposition(out)}
    assert set(tables) == set(connections)  # bounded: one per namespace counted
    for inode, pop in two.items():
        labels, shared = tables[inode]
        assert shared == (1 if pop.run(_ehash_entries) < 0 else 0), inode
        assert labels == connections[inode]
    code, out, err = cli("--format", "prometheus")
    assert code == 0 and "shares_host_table" not in out


def test_all_netns_table_identity(two):
    code, out, err = cli("--all-netns", "--format", "table")
    assert _ok(code, err), err
    header = out.splitlines()[0].split()
    assert header[:1] == ["NETNS"] and {"NAME", "PID", "COMMAND", "TABLE"} <= set(header)
    for inode, pop in two.items():
        [line] = [line for line in out.splitlines() if line.startswith(f"{inode} ")]
        cells = line.split()
        # NAME (when any namespace has one) and PID come before COMMAND.
        assert cells[header.index("PID")] == str(pop.holder_pid)
        assert cells[header.index("TABLE")] in ("shared", "own")
    [line_a] = [line for line in out.splitlines() if f" {NAME} " in line]
    assert line_a.split()[0] in map(str, two)


def test_all_netns_interval_and_textfile(two, tmp_path):
    code, out, err = cli("--all-netns", "--interval", "0.2", "--count", "2")
    assert _ok(code, err), err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert "time" in line
        for inode, expected in _expected(two).items():
            assert line[str(inode)] == expected
    path = tmp_path / "issue12c.prom"
    code, out, err = cli("--all-netns", "--textfile", str(path))
    assert _ok(code, err) and out == "", err
    got = _per_netns("prometheus", path.read_text())
    for inode, expected in _expected(two).items():
        assert got[inode] == expected
    assert set(two) <= set(_table_samples(path.read_text()))


def _serve_and_scrape(extra: list) -> dict:
    """Runs in a population's namespace: --serve on a free loopback port,
    one scrape, stop with SIGTERM."""
    proc = start("--serve", "0", *extra)
    result: dict = {}
    try:
        url = read_line(proc.stderr, timeout=30).split()[-1]
        with urllib.request.urlopen(url, timeout=30) as response:
            result["scrape"] = response.read().decode()
    finally:
        result["stopped"] = stop(proc, signal.SIGTERM)
    return result


def test_all_netns_serve(two):
    # The server in a third namespace: its scrape leaves a TIME_WAIT behind
    # that would upset the exact counts of the other tests.
    with Population(SPEC_A, long_lived=True) as server:
        result = server.run(_serve_and_scrape, ["--all-netns"])
        server_inode = os.stat(server.ns_path).st_ino
        expected = _expected(two)
        # The server's listener and the scrape's connection, both ends.
        expected[server_inode] = dict(total(server.expected))
        expected[server_inode]["LISTEN"] += 1
        expected[server_inode]["ESTABLISHED"] += 2
    assert result["stopped"] == (0, "", "")
    got = _per_netns("prometheus", result["scrape"])
    for inode, counts in expected.items():
        assert got[inode] == counts, inode
    # prometheus_client writes unknown labels empty (to Prometheus: absent).
    labels = {dict(key)["netns"]: dict(key) for key in parse_exposition(result["scrape"])}
    assert labels[str(server_inode)]["netns_name"] == ""
    tables = _table_samples(result["scrape"])
    assert set(expected) <= set(tables)
    assert tables[server_inode][0]["netns_name"] == ""


def test_watch_rows(two):
    """Off a terminal --watch appends plain frames: two header lines, a
    blank, the table."""
    pop_b = next(p for p in two.values() if p.spec == SPEC_B)
    for argv, keys in ((["--all-netns"], {str(i): total(p.expected) for i, p in two.items()}),
                       (["--by-cgroup", "--netns", pop_b.ns_path], None)):
        code, out, err = cli(*argv, "--watch", "--count", "2", "--interval", "0.2")
        assert _ok(code, err), err
        # Each frame: the header, a blank line, the table, a blank line.
        parts = [part for part in out.split("\n\n") if part.strip()]
        assert len(parts) == 4, out
        for top, table in zip(parts[0::2], parts[1::2]):
            assert top.startswith("fasttcpstat ") and "count took" in top
            rows = _parse_rows(table)
            if keys is None:
                assert rows == fasttcpstat.counts_by_cgroup(netns=pop_b.ns_path)
            else:
                assert {k: rows[k] for k in keys} == keys


def _holder_cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line for line in f if line.startswith("0::")).strip()[3:]


@pytest.mark.parametrize("fmt", FORMATS)
def test_by_cgroup_every_format(two, fmt):
    inode, pop = next((i, p) for i, p in two.items() if p.spec == SPEC_B)
    code, out, err = cli("--by-cgroup", "--netns", pop.ns_path, "--format", fmt)
    assert (code, err) == (0, "")
    if fmt == "json":
        got = json.loads(out)
    elif fmt == "table":
        got = _parse_rows(out)
    else:
        got = {dict(key)["cgroup"]: value for key, value in parse_exposition(out).items()}
    assert got == fasttcpstat.counts_by_cgroup(netns=pop.ns_path)
    expected = total(pop.expected)
    assert {s: sum(c[s] for c in got.values()) for s in STATES} == expected
    # Listeners are full sockets owned by the holder; handshakes in progress
    # (request sockets) have no owner.
    assert got[_holder_cgroup(pop.holder_pid)]["LISTEN"] == expected["LISTEN"]
    assert got["unowned"]["SYN_RECV"] == expected["SYN_RECV"]


def test_by_cgroup_interval_and_textfile(two, tmp_path):
    pop = next(p for p in two.values() if p.spec == SPEC_B)
    code, out, err = cli("--by-cgroup", "--netns", pop.ns_path, "--interval", "0.2",
                         "--count", "2", "--format", "table")
    assert (code, err) == (0, "")
    expected = fasttcpstat.counts_by_cgroup(netns=pop.ns_path)
    samples = [block for block in out.split("\n\n") if block.strip()]
    assert len(samples) == 2
    for block in samples:
        assert _parse_rows(block.split("\n", 1)[1]) == expected
    path = tmp_path / "issue12c-cgroup.prom"
    code, out, err = cli("--by-cgroup", "--netns", pop.ns_path, "--textfile", str(path))
    assert (code, out, err) == (0, "", "")
    got = {dict(key)["cgroup"]: value
           for key, value in parse_exposition(path.read_text()).items()}
    assert got == expected


@pytest.mark.parametrize("argv, words", [
    (["--all-netns", "--netns", "1"], ["--all-netns", "--netns"]),
    (["--all-netns", "--by-cgroup"], ["--all-netns", "--by-cgroup"]),
    (["--all-netns", "--by-family"], ["--all-netns", "--by-family"]),
    (["--all-netns", "--pinned", "/sys/fs/bpf/x"], ["--all-netns", "--pinned"]),
    (["--all-netns", "--backend", "pinned"], ["--all-netns", "--backend pinned"]),
    (["--by-cgroup", "--by-port", "80"], ["--by-cgroup", "--by-port"]),
    (["--by-cgroup", "--by-family"], ["--by-cgroup", "--by-family"]),
    (["--all-netns", "--watch", "--format", "json"], ["--watch", "--format"]),
])
def test_bad_combinations(capsys, argv, words):
    code, out, err = main_in_process(capsys, *argv)
    assert (code, out) == (2, "")
    last = err.strip().splitlines()[-1]
    assert last.startswith("fasttcpstat: error: ")
    for word in words:
        assert word in last, (word, last)


def _cli_as_nobody(*argv: str) -> tuple:
    """The command in this (forked) process as nobody: the interpreter
    may live where nobody cannot run it."""
    import contextlib
    import io

    from fasttcpstat._cli import main

    from .hardening import drop_to_nobody

    drop_to_nobody()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_all_netns_as_nobody(two):
    """As nobody, in a namespace of our own: that namespace is counted
    (exactly), root's are not, and one line on stderr says why."""
    inode, pop = next((i, p) for i, p in two.items() if p.spec == SPEC_B)
    code, out, err = pop.run(_cli_as_nobody, "--all-netns")
    assert code == 0
    got = {int(key): value for key, value in json.loads(out).items()}
    assert got == {inode: total(pop.expected)}
    assert err.startswith("fasttcpstat: note: ") and err.count("\n") == 1, err
    assert "CAP_SYS_PTRACE" in err


def test_collector_all_netns_reads_its_arguments_once(two):
    """The Python collector: a one-shot iterator of states still counts at
    every scrape (it is read once, then kept)."""
    from fasttcpstat.prometheus import FastTCPStatCollector

    collector = FastTCPStatCollector(all_netns=True, states=iter(["established"]))
    try:
        for _ in range(2):
            gauge, tables = collector.collect()
            got = {int(sample.labels["netns"]): int(sample.value) for sample in gauge.samples}
            for inode, pop in two.items():
                assert got[inode] == total(pop.expected)["ESTABLISHED"]
            assert all(sample.labels["state"] == "established" for sample in gauge.samples)
            # and whether each namespace shares the host's table: one each
            assert tables.name == "fasttcpstat_netns_shares_host_table"
            assert sorted(int(s.labels["netns"]) for s in tables.samples) == sorted(got)
    finally:
        collector.close()

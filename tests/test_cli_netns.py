"""The fasttcpstat command on a real socket population: every format and
option, run as a subprocess inside the population's namespace (or aimed at
it with --netns), against the counts the population was built with.

Port filters are checked against a listing of every socket's ports taken
with `ss` in the same namespace, as tests/test_filters_netns.py does.
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import stat

import pytest

from .cli_tools import cli, cli_many, parse_exposition, parse_table, total
from .population import STATES
from .test_filters_netns import from_listing, ss_listing


def _listen_ports() -> list:
    return sorted({lport for state, lport, _ in ss_listing() if state == "LISTEN"})


def _busiest_remote_port(rows: list) -> int:
    """The port most connections talk to: a remote-port filter on it selects
    something (the first listening ports may have no connection at all)."""
    ports = collections.Counter(rport for _, _, rport in rows if rport)
    return ports.most_common(1)[0][0]


def _run_in_namespace(pop, argvs: list) -> list:
    results = pop.run(cli_many, argvs)
    for argv, (code, out, err) in zip(argvs, results):
        assert code == 0, (argv, err)
        assert err == "", (argv, err)
    return [out for _, out, _ in results]


def _json(out: str) -> dict:
    assert out.endswith("\n") and out.count("\n") == 1, out  # exactly one line
    return json.loads(out)


def test_json_default_and_filters(require_netns, small_population):
    pop = small_population
    everything = total(pop.expected)
    argvs = [
        [],
        ["--format", "json"],
        ["--family", "ipv4"],
        ["--family", "ipv6"],
        ["--state", "time-wait", "--state", "ESTABLISHED"],
        ["--state", "listen,syn_recv,Fin_Wait2"],
        ["--family", "ipv6", "--state", "established"],
        ["--backend", "netlink"],
        ["--backend", "procfs"],
        ["--backend", "procfs", "--family", "ipv4", "--state", "closing,last_ack"],
    ]
    outs = [_json(out) for out in _run_in_namespace(pop, argvs)]
    default, as_json, v4, v6, two, three, v6_estab, netlink, procfs, procfs_v4 = outs
    assert list(default) == list(STATES)  # scripts rely on the order too
    assert default == everything
    assert as_json == default
    assert v4 == pop.expected["ipv4"] and v6 == pop.expected["ipv6"]
    assert list(two) == ["ESTABLISHED", "TIME_WAIT"]  # kernel order, canonical names
    assert two == {s: everything[s] for s in two}
    assert list(three) == ["SYN_RECV", "FIN_WAIT2", "LISTEN"]
    assert three == {s: everything[s] for s in three}
    assert v6_estab == {"ESTABLISHED": pop.expected["ipv6"]["ESTABLISHED"]}
    assert netlink == everything and procfs == everything
    assert procfs_v4 == {"LAST_ACK": pop.expected["ipv4"]["LAST_ACK"],
                         "CLOSING": pop.expected["ipv4"]["CLOSING"]}


def test_by_family_in_every_format(require_netns, small_population):
    pop = small_population
    argvs = [
        ["--by-family"],
        ["--by-family", "--family", "ipv6"],
        ["--by-family", "--format", "table"],
        ["--by-family", "--format", "prometheus"],
        ["--by-family", "--format", "prometheus", "--backend", "procfs", "--state", "listen"],
        ["--format", "table"],
        ["--format", "prometheus"],
    ]
    (by_family, only_v6, table, prom, prom_listen,
     plain_table, plain_prom) = _run_in_namespace(pop, argvs)
    assert _json(by_family) == pop.expected
    assert list(_json(by_family)) == ["ipv4", "ipv6"]
    assert _json(only_v6) == {"ipv6": pop.expected["ipv6"]}
    assert parse_table(table) == {"ipv4": pop.expected["ipv4"], "ipv6": pop.expected["ipv6"]}
    assert parse_exposition(prom) == {
        (("family", family),): pop.expected[family] for family in ("ipv4", "ipv6")
    }
    assert parse_exposition(prom_listen) == {
        (("family", family),): {"LISTEN": pop.expected[family]["LISTEN"]}
        for family in ("ipv4", "ipv6")
    }
    assert parse_table(plain_table) == {"COUNT": total(pop.expected)}
    assert parse_exposition(plain_prom) == {(): total(pop.expected)}


def test_exposition_text_is_the_documented_one(require_netns, small_population):
    """Explicit zeros, every node_exporter state, HELP and TYPE first, no
    timestamps: checked on the text itself, not only through a parser."""
    pop = small_population
    [text] = _run_in_namespace(pop, [["--format", "prometheus"]])
    lines = text.splitlines()
    assert lines[0].startswith("# HELP fasttcpstat_connections ")
    assert lines[1] == "# TYPE fasttcpstat_connections gauge"
    everything = total(pop.expected)
    assert lines[2:] == [
        f'fasttcpstat_connections{{state="{s.lower()}"}} {everything[s]}' for s in STATES
    ]
    assert 'state="close"} 0' in text  # a zero is written, not left out


def _port_commands(ports: list, busy: int) -> list:
    """(argv, local filter, remote filter) for every port syntax."""
    a, b, c = ports[:3]
    return [
        (["--local-port", str(a)], a, None),
        (["--local-port", f"{a},{c}"], [a, c], None),
        (["--local-port", f"{a}-{b}"], (a, b), None),
        (["--local-port", f"{a}-{b},{c}"], [(a, b), c], None),
        (["--local-port", str(a), "--local-port", str(c)], [a, c], None),
        (["--remote-port", str(busy)], None, busy),
        (["--remote-port", f"{b}, {busy}-{busy + 5}"], None, [b, (busy, busy + 5)]),
        (["--local-port", "32768-60999", "--remote-port", str(busy)], (32768, 60999), busy),
        (["--local-port", "1"], 1, None),
    ]


def test_port_filters(require_netns, small_population):
    def check():
        rows = ss_listing()
        cases = _port_commands(_listen_ports(), _busiest_remote_port(rows))
        results = cli_many([argv for argv, _, _ in cases]
                           + [argv + ["--backend", "procfs"] for argv, _, _ in cases])
        wanted = [from_listing(rows, local, remote) for _, local, remote in cases]
        return [argv for argv, _, _ in cases], wanted, results

    argvs, wanted, results = small_population.run(check)
    nonzero = 0
    for argv, want, (code, out, err) in zip(argvs + argvs, wanted + wanted, results):
        assert code == 0, (argv, err)
        assert _json(out) == want, argv
        nonzero += sum(want.values()) > 0
    assert nonzero >= 16  # all but "port 1" select something, on both backends


def test_by_port_in_every_format(require_netns, small_population):
    def check():
        rows = ss_listing()
        a, _, c = _listen_ports()[:3]
        b = _busiest_remote_port(rows)
        ports = [a, c, 1]
        outs = cli_many([
            ["--by-port", f"{a},{c},1"],
            ["--by-port", str(a), "--by-port", f"{c},1", "--format", "table"],
            ["--by-port", f"{a},{c},1", "--format", "prometheus"],
            ["--by-port", str(b), "--side", "remote", "--by-family"],
            ["--by-port", str(b), "--side", "remote", "--by-family", "--format", "prometheus"],
            ["--by-port", f"{a},{c}", "--by-family", "--format", "table", "--backend", "procfs"],
        ])
        local = {p: from_listing(rows, local=p) for p in ports}
        remote_b = from_listing(rows, remote=b)
        return ports, b, local, remote_b, outs

    pop = small_population
    ports, b, local, remote_b, outs = pop.run(check)
    for code, _, err in outs:
        assert code == 0, err
    by_port, table, prom, remote_json, remote_prom, both_table = [out for _, out, _ in outs]
    assert _json(by_port) == {str(p): local[p] for p in ports}
    assert list(_json(by_port)) == [str(p) for p in ports]  # the order given
    assert parse_table(table) == {f"local:{p}": local[p] for p in ports}
    assert parse_exposition(prom) == {
        (("port", str(p)), ("side", "local")): local[p] for p in ports
    }
    assert sum(sum(c.values()) for c in local.values()) > 0
    # Remote side, per family: the v4 and v6 halves add up to the listing.
    per_family = _json(remote_json)
    assert list(per_family) == ["ipv4", "ipv6"]
    assert {s: per_family["ipv4"][str(b)][s] + per_family["ipv6"][str(b)][s]
            for s in STATES} == remote_b
    assert sum(remote_b.values()) > 0
    assert parse_exposition(remote_prom) == {
        (("family", f), ("port", str(b)), ("side", "remote")): per_family[f][str(b)]
        for f in ("ipv4", "ipv6")
    }
    columns = parse_table(both_table)
    assert list(columns) == [f"{f} local:{p}" for f in ("ipv4", "ipv6") for p in ports[:2]]
    for p in ports[:2]:
        assert {s: columns[f"ipv4 local:{p}"][s] + columns[f"ipv6 local:{p}"][s]
                for s in STATES} == local[p]


def test_interval_json_lines(require_netns, small_population):
    pop = small_population
    argvs = [
        ["--interval", "0.05", "--count", "3"],
        ["--interval", "0.05", "--count", "2", "--by-family", "--state", "listen"],
        ["--interval", "0.05", "--count", "2", "--format", "table"],
    ]
    plain, by_family, table = _run_in_namespace(pop, argvs)
    lines = plain.splitlines()
    assert len(lines) == 3 and plain.endswith("\n")
    times = []
    for line in lines:
        sample = json.loads(line)
        assert list(sample) == ["time", *STATES]
        when = sample.pop("time")
        assert when.endswith("Z") and len(when) == len("2025-11-25T21:05:00.123Z")
        times.append(datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ"))
        assert sample == total(pop.expected)
    assert times == sorted(times) and times[0] < times[-1]
    assert (times[-1] - times[0]).total_seconds() >= 0.09  # two intervals apart
    for line in by_family.splitlines():
        sample = json.loads(line)
        assert list(sample) == ["time", "ipv4", "ipv6"]
        assert sample["ipv4"] == {"LISTEN": pop.expected["ipv4"]["LISTEN"]}
    blocks = [b for b in table.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    for block in blocks:
        when, rest = block.split("\n", 1)
        assert when.endswith("Z")
        assert parse_table(rest) == {"COUNT": total(pop.expected)}


@pytest.mark.parametrize("by", ["path", "pid"])
@pytest.mark.parametrize("backend", ["auto", "netlink", "procfs"])
def test_netns_option(require_netns, small_population, by, backend):
    """From this (the host's) namespace, aimed at the population's."""
    pop = small_population
    target = pop.ns_path if by == "path" else str(pop.holder_pid)
    code, out, err = cli("--netns", target, "--backend", backend, "--by-family")
    assert (code, err) == (0, "")
    assert _json(out) == pop.expected


def test_textfile_once(require_netns, small_population, tmp_path):
    pop = small_population
    path = tmp_path / "tcp.prom"
    code, out, err = cli("--netns", str(pop.holder_pid), "--textfile", str(path), "--by-family")
    assert (code, out, err) == (0, "", "")
    assert os.listdir(tmp_path) == ["tcp.prom"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter runs as another user
    assert parse_exposition(path.read_text()) == {
        (("family", f),): pop.expected[f] for f in ("ipv4", "ipv6")
    }
    # The file is the same text --format prometheus prints.
    code, printed, _ = cli("--netns", str(pop.holder_pid), "--format", "prometheus",
                           "--by-family")
    assert printed == path.read_text()

"""Helpers for the tests of the fasttcpstat command: run it as a
subprocess, read what it prints, parse the table and the exposition."""
from __future__ import annotations

import concurrent.futures
import select
import subprocess
import sys
import time

from .population import STATES

# node_exporter's tcpstat spellings, in kernel order.
NODE_EXPORTER_STATES = (
    "established", "syn_sent", "syn_recv", "fin_wait1", "fin_wait2", "time_wait",
    "close", "close_wait", "last_ack", "listen", "closing",
)
METRIC = "fasttcpstat_connections"
COMMAND = [sys.executable, "-m", "fasttcpstat"]


def main_in_process(capsys, *argv: str) -> tuple:
    """The command in this process (argument checks need no fresh
    interpreter): (exit status, stdout, stderr), as `sys.exit(main())`
    would give them."""
    from fasttcpstat._cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    """The command's error contract: one line, prefixed, no traceback,
    naming each of `words`."""
    assert err.startswith("fasttcpstat: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


def cli(*args: str, timeout: float = 60) -> tuple:
    """Run the command to its end: (exit status, stdout, stderr)."""
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def cli_many(argvs: list) -> list:
    """cli() for each argument list, a few at a time (most of a run is the
    interpreter starting); results in order.  Picklable, for Population.run()."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda argv: cli(*argv), argvs))


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def read_line(stream, timeout: float) -> str:
    """One line from a pipe, or AssertionError after `timeout` seconds (a
    stuck command must fail the test, not hang it)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line within {timeout} s")
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            return stream.readline()


def stop(proc: subprocess.Popen, signum: int, timeout: float = 20) -> tuple:
    """Send `signum`, wait (bounded): (exit status, rest of stdout, stderr)."""
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the command did not stop within {timeout} s of signal {signum}")
    return proc.returncode, out, err


def total(expected: dict) -> dict:
    return {s: expected["ipv4"][s] + expected["ipv6"][s] for s in STATES}


def parse_table(text: str) -> dict:
    """{column title: {STATE: n}} from --format table, TOTAL row checked."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    header, *body = rows
    assert header[0] == "STATE"
    titles = header[1:]
    if len(body[0]) - 1 != len(titles):  # titles with a space ("ipv4 local:443")
        titles = [" ".join(header[i:i + 2]) for i in range(1, len(header), 2)]
    columns = {title: {} for title in titles}
    for name, *cells in body:
        for title, cell in zip(titles, cells):
            columns[title][name] = int(cell)
    for title, column in columns.items():
        assert column.pop("TOTAL") == sum(column.values()), title
    return columns


def parse_exposition(text: str) -> dict:
    """{(labels except state, as sorted items): {STATE: n}} from the
    Prometheus text format, parsed by prometheus_client's own parser; the
    structure (one gauge, HELP, no timestamps, node_exporter state names)
    is asserted on the way."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    ours = [f for f in families if f.name == METRIC]
    assert len(ours) == 1, [f.name for f in families]
    family = ours[0]
    assert family.type == "gauge"
    assert family.documentation
    assert f"# TYPE {METRIC} gauge\n" in text and f"# HELP {METRIC} " in text
    series: dict = {}
    for sample in family.samples:
        assert sample.name == METRIC
        assert sample.timestamp is None  # the textfile collector refuses timestamps
        labels = dict(sample.labels)
        state = labels.pop("state")
        assert state in NODE_EXPORTER_STATES, state
        key = tuple(sorted(labels.items()))
        series.setdefault(key, {})[state.upper()] = int(sample.value)
        assert sample.value == int(sample.value)
    return series


# Privileges are dropped after the imports (the interpreter's files may sit
# where nobody cannot read them, e.g. under /root/.pyenv), then the command
# runs as nobody.
AS_NOBODY = """
import os, sys, threading  # fasttcpstat sets up threads and counts with it
from fasttcpstat._cli import main
from fasttcpstat._options import build_parser
build_parser().format_help()  # argparse loads gettext and locale lazily
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(main(sys.argv[1:]))
"""

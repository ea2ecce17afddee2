"""The long-running modes on a real population: --interval until a signal,
--textfile rewritten under a concurrent reader, --serve scraped over the
namespace's loopback, --watch under a pseudo-terminal, and the
prometheus_client collector itself.

Everything is bounded: each wait has a deadline and every started
command is stopped (or killed) by the test that started it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
import urllib.request

import pytest

import fasttcpstat

from .cli_tools import COMMAND, cli, parse_exposition, read_line, start, stop, total
from .population import STATES, Population, Spec

ENTER_SCREEN = "\x1b[?1049h"
LEAVE_SCREEN = "\x1b[?1049l"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


# ---- --interval: flushed lines, clean stop on signals ------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interval_streams_lines_and_stops_on_signal(require_netns, small_population, signum):
    """Each line is readable while the command still runs (flushed, not
    block-buffered in the pipe), and a signal ends it with status 0 after
    a whole last line."""
    pop = small_population
    proc = start("--netns", str(pop.holder_pid), "--interval", "0.05")
    try:
        lines = [read_line(proc.stdout, timeout=20) for _ in range(3)]
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    code, rest, err = stop(proc, signum)
    assert (code, err) == (0, "")
    assert rest == "" or rest.endswith("\n")
    for line in lines + rest.splitlines():
        sample = json.loads(line)
        assert sample.pop("time").endswith("Z")
        assert sample == total(pop.expected)


def test_closed_pipe_ends_quietly(require_netns, small_population):
    """`fasttcpstat --interval 1 | head -1`: the reader leaving is not an error."""
    pop = small_population
    proc = start("--netns", str(pop.holder_pid), "--interval", "0.01")
    try:
        read_line(proc.stdout, timeout=20)
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (code, err) == (0, "")


# ---- --textfile: atomic rewrites ---------------------------------------------


def test_textfile_reader_never_sees_a_partial_file(require_netns, small_population, tmp_path):
    """node_exporter reads whenever it is scraped: while the command
    rewrites the file every few milliseconds, a reader looping as fast as
    it can must always find the whole file, with exact counts."""
    pop = small_population
    path = tmp_path / "tcp.prom"
    expected = {(("family", f),): pop.expected[f] for f in ("ipv4", "ipv6")}
    proc = start("--netns", str(pop.holder_pid), "--textfile", str(path),
                 "--interval", "0.002", "--by-family")
    files = set()
    reads = 0
    try:
        deadline = time.monotonic() + 20
        while not path.exists():
            assert time.monotonic() < deadline, "the textfile never appeared"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.001)
        # 50 rewrites and 500 reads (a fraction of a second on an idle
        # machine), or as many as come within 25 s on a loaded one: the
        # population's exact counts last ~30 s from the test's start.
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and (len(files) < 50 or reads < 500):
            with open(path) as f:  # os.replace keeps the name: never missing
                info = os.fstat(f.fileno())
                # Inode numbers are recycled at once; with the mtime they name one file.
                files.add((info.st_ino, info.st_mtime_ns))
                text = f.read()
            reads += 1
            assert text.endswith("\n"), text
            assert parse_exposition(text) == expected
    finally:
        code, out, err = stop(proc, signal.SIGTERM)
    assert (code, out, err) == (0, "", "")
    assert len(files) >= 10, (len(files), reads)  # it really was rewritten meanwhile
    assert os.listdir(tmp_path) == ["tcp.prom"]  # no temporary file left behind
    assert parse_exposition(path.read_text()) == expected


# ---- --serve -----------------------------------------------------------------

SERVE_SPEC = Spec(listen4=2, listen6=1, estab4=3, estab6=2, time_wait4=2, close_wait6=1)


def _serve_and_scrape(extra: list) -> dict:
    """Runs inside the namespace: start --serve on a free loopback port,
    scrape it twice, start a second server on the same port (which must
    fail), stop the first with SIGTERM."""
    proc = start("--serve", "0", *extra)
    result: dict = {}
    try:
        announce = read_line(proc.stderr, timeout=30)
        result["announce"] = announce
        url = announce.split()[-1]
        with urllib.request.urlopen(url, timeout=10) as response:
            result["first"] = response.read().decode()
            result["content_type"] = response.headers["Content-Type"]
        with urllib.request.urlopen(url, timeout=10) as response:
            result["second"] = response.read().decode()
        port = url.rsplit(":", 1)[1].split("/")[0]
        result["busy"] = cli("--serve", f"127.0.0.1:{port}", timeout=30)
    finally:
        result["stopped"] = stop(proc, signal.SIGTERM)
    return result


def test_serve_scraped_over_loopback(require_netns):
    # A population of its own: the server and its scrapes leave sockets
    # behind (TIME_WAIT) that would upset the exact counts of other tests.
    with Population(SERVE_SPEC) as pop:
        result = pop.run(_serve_and_scrape, ["--by-family"])
    assert result["stopped"] == (0, "", "")
    # Default address: loopback only, on the free port the kernel picked.
    assert result["announce"].startswith("fasttcpstat: serving http://127.0.0.1:")
    assert result["announce"].rstrip().endswith("/metrics")
    assert result["content_type"].startswith("text/plain")
    first = parse_exposition(result["first"])
    # During the first scrape the namespace also holds the server's
    # listener and the scrape's own connection (both ends): IPv4 only.
    ipv4 = dict(pop.expected["ipv4"])
    ipv4["LISTEN"] += 1
    ipv4["ESTABLISHED"] += 2
    assert first == {(("family", "ipv4"),): ipv4, (("family", "ipv6"),): pop.expected["ipv6"]}
    # Counted afresh at every scrape; IPv6 is untouched by the scrapes.
    second = parse_exposition(result["second"])
    assert second[(("family", "ipv6"),)] == pop.expected["ipv6"]
    assert second[(("family", "ipv4"),)]["LISTEN"] == ipv4["LISTEN"]
    # The exporter's own process metrics come along, as with other exporters.
    assert "process_cpu_seconds_total" in result["first"]
    code, out, err = result["busy"]
    assert (code, out) == (1, "")
    assert err.startswith("fasttcpstat: error: cannot listen on 127.0.0.1 port ")
    assert err.count("\n") == 1 and "Traceback" not in err


def _collect_in_process() -> tuple:
    from prometheus_client import CollectorRegistry, generate_latest

    from fasttcpstat.prometheus import FastTCPStatCollector, register

    registry = CollectorRegistry()
    collector = register(registry, by_family=True, states=["established", "listen"])
    texts = [generate_latest(registry).decode() for _ in range(2)]
    # A second collector of the same metric in the same registry is refused.
    try:
        register(registry)
        duplicate = None
    except ValueError as exc:
        duplicate = str(exc)
    registry.unregister(collector)
    collector.close()
    by_port = FastTCPStatCollector(by_port=[1, 2], side="remote", backend="procfs")
    ports_registry = CollectorRegistry()
    ports_registry.register(by_port)
    ports_text = generate_latest(ports_registry).decode()
    by_port.close()
    return texts, duplicate, ports_text


def test_collector_and_register(require_netns, small_population):
    pop = small_population
    texts, duplicate, ports_text = pop.run(_collect_in_process)
    for text in texts:
        assert parse_exposition(text) == {
            (("family", f),): {"ESTABLISHED": pop.expected[f]["ESTABLISHED"],
                               "LISTEN": pop.expected[f]["LISTEN"]}
            for f in ("ipv4", "ipv6")
        }
    assert duplicate is not None and "fasttcpstat_connections" in duplicate
    zeros = dict.fromkeys(STATES, 0)
    assert parse_exposition(ports_text) == {
        (("port", "1"), ("side", "remote")): zeros,
        (("port", "2"), ("side", "remote")): zeros,
    }


def test_collector_refuses_bad_options_at_registration():
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from fasttcpstat.prometheus import register

    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="unknown TCP state"):
        register(registry, states=["nope"])
    with pytest.raises(ValueError, match="by_port cannot be combined"):
        register(registry, by_port=[443], local_ports=443)
    assert list(registry.collect()) == []


# ---- --watch under a pseudo-terminal ------------------------------------------


def _read_pty(fd: int, until, timeout: float) -> str:
    """Read the pty master until until(text) holds or the child closes it
    (EIO on Linux), with a deadline."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        text = b"".join(chunks).decode(errors="replace")
        if until(text):
            return text
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"pty: condition not met within {timeout} s:\n{text!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(data)


def test_watch_renders_in_a_terminal_and_restores_it(require_netns, small_population):
    pop = small_population
    everything = total(pop.expected)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the pty's slave side
        try:
            os.execv(sys.executable, [*COMMAND, "--watch", "--interval", "0.1",
                                      "--netns", str(pop.holder_pid)])
        finally:
            os._exit(127)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        # Two frames: the second one shows the change since the first.
        shown = _read_pty(fd, lambda text: text.count("STATE") >= 2 and "+0" in text, 30)
        os.kill(pid, signal.SIGINT)
        rest = _read_pty(fd, lambda text: False, 30)
    finally:
        status = _reap(pid, 30)
        os.close(fd)
    assert status == 0
    assert shown.startswith(ENTER_SCREEN + HIDE_CURSOR)
    assert f"total {sum(everything.values())}" in shown
    with fasttcpstat.Counter(netns=pop.holder_pid) as counter:  # what "auto" picks here
        backend = counter.backend
    assert f"backend {backend}" in shown and f"netns {pop.holder_pid}" in shown
    for state in STATES:
        assert state in shown
    largest = max(everything, key=everything.get)
    bars = [line for line in shown.splitlines() if line.startswith(largest + " ")]
    assert bars and all(("\u2588" * 20) in line or ("#" * 20) in line for line in bars)
    output = shown + rest
    assert output.rindex(SHOW_CURSOR) > output.rindex("STATE")
    assert output.rindex(LEAVE_SCREEN) > output.rindex("STATE")
    assert "Traceback" not in output


def _reap(pid: int, timeout: float) -> int:
    """The child's exit code, killing it if it has not exited in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:  # (os.waitstatus_to_exitcode needs Python 3.9)
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the command did not exit within {timeout} s")


def test_watch_without_a_terminal_prints_plain_frames(require_netns, small_population):
    pop = small_population
    code, out, err = cli("--watch", "--interval", "0.05", "--count", "2",
                         "--netns", str(pop.holder_pid))
    assert (code, err) == (0, "")
    assert "\x1b" not in out
    frames = re.split(r"(?m)^(?=fasttcpstat )", out)[1:]
    assert len(frames) == 2
    tables = []
    for frame in frames:
        assert f"total {pop.total}" in frame
        tables.append({line.split()[0]: line.split()[1:] for line in frame.splitlines()
                       if line.split()[:1] and line.split()[0] in STATES})
        assert {s: int(cells[0]) for s, cells in tables[-1].items()} == total(pop.expected)
    # The change column: empty at first, then +0 (nothing moved).
    assert all(len(cells) == 1 or not cells[1].startswith(("+", "-"))
               for cells in tables[0].values())
    assert all(cells[1] == "+0" for cells in tables[1].values())

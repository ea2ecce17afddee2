"""The README's and docs/'s examples, run: they cannot drift from the code.

The examples run in fresh network namespaces holding the population they
describe (EXAMPLE below: a web server on 443 and 8443, 20 connections to a
database on 5432, 35 closed connections in TIME_WAIT), checked against
`ss` first; a namespace serves for SERVES_FOR_SECONDS, well within the 60 s
its TIME_WAIT sockets last, then the next examples get a new one.  There:
- `console` blocks: each `$ COMMAND` runs in bash (stdout and stderr
  together) and its output must match the lines under it, after
  normalising what changes from run to run (ISO times, durations,
  namespace numbers); `...` matches anything, as in doctest.  A command
  ending in `&` runs in the background: its first line is its output, and
  it is stopped with SIGTERM at the end of the block;
- `pycon` blocks run as doctests (ELLIPSIS, NORMALIZE_WHITESPACE), with
  `fasttcpstat` imported;
- `python` blocks must compile; `sh` blocks are not run.
"""
from __future__ import annotations

import doctest
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .cli_tools import read_line
from .population import STATES, Population, Spec, ss_counts

ROOT = Path(__file__).resolve().parent.parent
# docs/kernels.md belongs to the kernel matrix (.ci/kernels) and is not run here.
DOCUMENTS = ["README.md", "docs/api.md", "docs/cli.md", "docs/prometheus.md",
             "docs/backends.md", "docs/semantics.md", "docs/benchmark.md",
             "docs/troubleshooting.md", "docs/development.md"]

WEB, WEB_DUAL, DATABASE = 443, 8443, 5432
EXAMPLE = {**dict.fromkeys(STATES, 0), "ESTABLISHED": 320, "TIME_WAIT": 35, "LISTEN": 3}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
VARIABLE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"), "<TIME>"),
    (re.compile(r"count took \d+\.\d+ ms"), "count took <MS> ms"),
    (re.compile(r"net:\[\d+\]"), "net:[<NS>]"),
]


def blocks(document: str) -> list:
    """[(language, first line number, text)] of a Markdown file."""
    text = (ROOT / document).read_text()
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
            for m in FENCE.finditer(text)]


def console_steps(text: str) -> list:
    """[(command, expected output)] of a console block."""
    steps: list = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append([line[2:], []])
        else:
            assert steps, f"output before any command: {line!r}"
            steps[-1][1].append(line)
    return [(command, "\n".join(out) + "\n" if out else "") for command, out in steps]


def _normal(text: str) -> str:
    for pattern, replacement in VARIABLE:
        text = pattern.sub(replacement, text)
    # A block cannot show the blank line --watch ends a frame with.
    return text.rstrip("\n") + "\n"


def matches(want: str, got: str) -> bool:
    return doctest.OutputChecker().check_output(_normal(want), _normal(got),
                                                doctest.ELLIPSIS)


# ---- the example population ---------------------------------------------------


def _listener(family: int, address: str, port: int, v6only: bool = True) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((address, port))
    s.listen(256)
    return s


def _pairs(listener: socket.socket, family: int, address: str, n: int) -> list:
    held = []
    for _ in range(n):
        client = socket.create_connection((address, listener.getsockname()[1]))
        assert client.family == family
        server, _ = listener.accept()
        held += [client, server]
    return held


def build_example() -> list:
    """The sockets of EXAMPLE, in the current namespace; keep the list alive."""
    web = _listener(socket.AF_INET, "127.0.0.1", WEB)
    dual = _listener(socket.AF_INET6, "::", WEB_DUAL, v6only=False)
    database = _listener(socket.AF_INET, "127.0.0.1", DATABASE)
    held = [web, dual, database]
    held += _pairs(web, socket.AF_INET, "127.0.0.1", 120)
    held += _pairs(dual, socket.AF_INET, "127.0.0.1", 6)    # IPv4 clients, v4-mapped servers
    held += _pairs(dual, socket.AF_INET6, "::1", 14)
    held += _pairs(database, socket.AF_INET, "127.0.0.1", 20)
    # Clients that closed first: TIME_WAIT on their side, nothing left on the server's.
    for client, server in zip(*[iter(_pairs(web, socket.AF_INET, "127.0.0.1", 35))] * 2):
        client.close()
        assert server.recv(1) == b""
        server.close()
    deadline = time.monotonic() + 30
    while ss_counts(exclude_unconn=True) != EXAMPLE:
        assert time.monotonic() < deadline, ss_counts(exclude_unconn=True)
        time.sleep(0.05)
    return held


# ---- running a document ---------------------------------------------------------


def _shell(command: str, env: dict) -> str:
    done = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, timeout=120)
    return done.stdout


def _console(text: str, env: dict) -> list:
    results = []
    background = []
    try:
        for command, want in console_steps(text):
            if command.endswith("&"):
                proc = subprocess.Popen(["bash", "-c", "exec " + command[:-1]],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=env)
                background.append(proc)
                got = read_line(proc.stdout, timeout=60)
            else:
                got = _shell(command, env)
            results.append((command, want, got))
    finally:
        for proc in background:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    return results


def _doctest(text: str, name: str, line: int, globs: dict) -> list:
    test = doctest.DocTestParser().get_doctest(text, globs, name, name, line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    globs.update(test.globs)  # get_doctest() ran on a copy: later blocks see the names
    return [report.getvalue()] if runner.failures else []


# TIME_WAIT lasts 60 s: a namespace serves examples for this long after its
# build, then the next ones get a fresh namespace (however slow the machine).
SERVES_FOR_SECONDS = 25.0


def run_blocks(document: str, first: int) -> dict:
    """Runs in the namespace: build EXAMPLE, then the examples of
    `document` from block `first` on, for SERVES_FOR_SECONDS at most (a
    block started is finished).  Returns the results and the next block."""
    import fasttcpstat

    held = build_example()
    started = time.monotonic()
    wrappers = tempfile.TemporaryDirectory(prefix="fasttcpstat-docs-")
    env = _command_env(wrappers.name)
    out: dict = {"console": [], "pycon": [], "last_block_seconds": 0.0}
    # Every page takes `import fasttcpstat` as done.
    globs: dict = {"fasttcpstat": fasttcpstat}
    found = blocks(document)
    index = first
    while index < len(found) and time.monotonic() - started < SERVES_FOR_SECONDS:
        language, line, text = found[index]
        index += 1
        where = f"{document}:{line}"
        block_started = time.monotonic()
        if language == "console":
            out["console"] += [(where, *result) for result in _console(text, env)]
        elif language == "pycon":
            out["pycon"] += _doctest(text, document, line, globs)
        elif language == "python":
            compile(text, where, "exec")
        out["last_block_seconds"] = time.monotonic() - block_started
    out["next"] = index
    out["fresh"] = time.monotonic() - started < 55
    for s in held:
        s.close()
    wrappers.cleanup()
    return out


def _command_env(wrappers: str) -> dict:
    """The commands' environment: the console script beside this
    interpreter comes first in PATH.  Under .ci/sanitize, the ASan runtime
    (LD_PRELOAD) goes only to the commands that load the extension, through
    wrappers in `wrappers`: curl, preloaded with it, deadlocks at start-up
    (in setlocale(), on glibc's locale lock: gcc 12's libasan, glibc 2.36),
    and docs/prometheus.md's `curl ... | grep` waited for its 120 s."""
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + ":" + os.environ["PATH"]}
    env.pop("COLUMNS", None)
    preload = env.pop("LD_PRELOAD", None)
    if preload:
        for name in ("fasttcpstat", "python", "python3"):
            wrapper = Path(wrappers, name)
            wrapper.write_text(f"#!/bin/sh\nLD_PRELOAD={shlex.quote(preload)} "
                               f"exec {shlex.quote(os.path.join(bindir, name))} \"$@\"\n")
            wrapper.chmod(0o755)
        env["PATH"] = wrappers + ":" + env["PATH"]
    return env


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_examples_of(document, require_netns):
    if not (ROOT / document).is_file():
        pytest.skip(f"{document} is not here (tests run against an installed wheel)")
    total = len(blocks(document))
    wrong, failed, first = [], [], 0
    while first < total:
        with Population(Spec()) as pop:
            out = pop.run(run_blocks, document, first)
        assert out["next"] > first
        # Within the 60 s of the TIME_WAIT sockets the outputs show.
        assert out["fresh"], f"a block of {document} took {out['last_block_seconds']:.0f} s"
        first = out["next"]
        wrong += [f"{where}: $ {command}\n--- documented\n{want}--- printed\n{got}"
                  for where, command, want, got in out["console"] if not matches(want, got)]
        failed += out["pycon"]
    assert not wrong, "\n".join(wrong)
    assert not failed, "\n".join(failed)


def test_every_document_is_checked():
    """A new page in docs/ is run too (or knowingly left out)."""
    if not (ROOT / "docs").is_dir():
        pytest.skip("docs/ is not here (tests run against an installed wheel)")
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} - {"docs/kernels.md"}
    assert pages <= set(DOCUMENTS), pages - set(DOCUMENTS)


def test_the_readme_fits_on_two_screens():
    if not (ROOT / "README.md").is_file():
        pytest.skip("README.md is not here (tests run against an installed wheel)")
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 120, len(lines)
    # The README's test command is the one CI runs verbatim.
    command = ("python3 -m venv .venv && .venv/bin/pip install -q '.[test]' && "
               ".venv/bin/python -m pytest")
    assert command in lines
    ci = ROOT / ".ci" / "run"
    if ci.is_file():  # not in an sdist
        assert command in ci.read_text()


def test_a_wrong_output_is_caught():
    """The comparison is not vacuous: a changed number fails it."""
    assert matches("{\"LISTEN\": 3}\n", "{\"LISTEN\": 3}\n")
    assert not matches("{\"LISTEN\": 3}\n", "{\"LISTEN\": 4}\n")
    assert matches("at <x> 2026-11-25T21:32:14.796Z\n", "at <x> 2027-01-01T00:00:00.000Z\n")
    assert matches("a\n...\nz\n", "a\nb\nc\nz\n")

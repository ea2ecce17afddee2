"""Bad input, one row per public parameter and wrong value.

Every row must raise exactly the exception class given (TypeError for a
wrong type, ValueError for a wrong value, FileNotFoundError for a missing
namespace, PermissionError for a namespace we may not enter), with a
message that names the parameter and says what is allowed, and must leave
no file descriptor open.  Rows marked as nobody run in a child process that
dropped to nobody:nogroup (no capability) after its imports.

The C extension's own argument checks are in tests/test_arguments.py.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import pytest

import fasttcpstat

from .hardening import drop_to_nobody, fd_count, open_fds
from .population_fork import _read_all, settle_threads
from .population_netns import _unshare_net

MISSING = "/nonexistent/fasttcpstat-netns"
NO_SUCH_PID = 4194304 + 1  # above the largest pid_max: never a process
PORT_HELP = "a port (0..65535)"
NETNS_HELP = "/var/run/netns/NAME"
HANG_LIMIT = 30.0  # seconds: a call that never returns is a failure


@dataclass
class Row:
    id: str
    call: Callable[[dict], object]   # gets the context (paths of odd files)
    exc: type
    words: List[str] = field(default_factory=list)
    as_nobody: bool = False


def counter_method(method: str, *args, **kwargs):
    def call(ctx):
        with fasttcpstat.Counter("netlink") as counter:
            return getattr(counter, method)(*args, **kwargs)
    return call


ROWS = [
    # ---- counts(): states ----
    Row("states-unknown-name", lambda c: fasttcpstat.counts(states=["LISTEN", "BOGUS"]),
        ValueError, ["states", "'BOGUS'", "allowed", "ESTABLISHED", "CLOSING"]),
    Row("states-not-iterable", lambda c: fasttcpstat.counts(states=5),
        TypeError, ["states", "iterable of state names", "int"]),
    Row("states-item-type", lambda c: fasttcpstat.counts(states=["LISTEN", 10]),
        TypeError, ["states", "state names (str)", "int"]),
    Row("states-bytes", lambda c: fasttcpstat.counts(states=b"LISTEN"),
        TypeError, ["states", "state names (str)", "int"]),
    # ---- family ----
    Row("family-ipv5", lambda c: fasttcpstat.counts(family="ipv5"),
        ValueError, ["family", "None", "'ipv4'", "'ipv6'", "'ipv5'"]),
    Row("family-int", lambda c: fasttcpstat.counts(family=4),
        TypeError, ["family", "'ipv4'", "'ipv6'", "int"]),
    Row("family-list", lambda c: fasttcpstat.counts(family=["ipv4"]),
        TypeError, ["family", "'ipv4'", "list"]),
    # ---- backend ----
    Row("backend-fast", lambda c: fasttcpstat.counts(backend="fast"),
        ValueError, ["backend", "'auto'", "'netlink'", "'procfs'", "'fast'"]),
    Row("backend-none", lambda c: fasttcpstat.counts(backend=None),
        TypeError, ["backend", "'auto'", "NoneType"]),
    Row("counter-backend-bytes", lambda c: fasttcpstat.Counter(b"netlink"),
        TypeError, ["backend", "'netlink'", "bytes"]),
    # ---- local_ports / remote_ports ----
    Row("local-port-70000", lambda c: fasttcpstat.counts(local_ports=70000),
        ValueError, ["local_ports", "70000", "0..65535"]),
    Row("local-port-negative", lambda c: fasttcpstat.counts(local_ports=-1),
        ValueError, ["local_ports", "-1", "0..65535"]),
    Row("remote-range-low-gt-high", lambda c: fasttcpstat.counts(remote_ports=(10, 5)),
        ValueError, ["remote_ports", "(10, 5)", "low <= high"]),
    Row("remote-range-3-items", lambda c: fasttcpstat.counts(remote_ports=(1, 2, 3)),
        ValueError, ["remote_ports", "(low, high)", "3 items"]),
    Row("remote-range-70000", lambda c: fasttcpstat.counts(remote_ports=[(1, 70000)]),
        ValueError, ["remote_ports", "70000", "0..65535"]),
    Row("local-ports-str", lambda c: fasttcpstat.counts(local_ports="443"),
        TypeError, ["local_ports", PORT_HELP, "str"]),
    Row("local-ports-bool", lambda c: fasttcpstat.counts(local_ports=True),
        TypeError, ["local_ports", PORT_HELP, "bool"]),
    Row("local-ports-float-item", lambda c: fasttcpstat.counts(local_ports=[80, 1.5]),
        TypeError, ["local_ports", PORT_HELP, "float"]),
    Row("local-ports-empty", lambda c: fasttcpstat.counts(local_ports=[]),
        ValueError, ["local_ports", "no ports", "None"]),
    Row("local-ports-empty-range", lambda c: fasttcpstat.counts(local_ports=range(10, 10)),
        ValueError, ["local_ports", "step 1", "not be empty"]),
    Row("local-ports-range-step", lambda c: fasttcpstat.counts(local_ports=range(1, 10, 2)),
        ValueError, ["local_ports", "step 1"]),
    Row("method-local-ports-70000", counter_method("counts", local_ports=70000),
        ValueError, ["local_ports", "70000", "0..65535"]),
    Row("method-remote-ports-dict", counter_method("counts", remote_ports={"a": 1}),
        TypeError, ["remote_ports", PORT_HELP, "str"]),
    # ---- counts_by_port(): ports, side ----
    Row("ports-empty", lambda c: fasttcpstat.counts_by_port([]),
        ValueError, ["ports", "no ports"]),
    Row("ports-70000", lambda c: fasttcpstat.counts_by_port([80, 70000]),
        ValueError, ["ports", "70000", "0..65535"]),
    Row("ports-str-item", lambda c: fasttcpstat.counts_by_port(["80"]),
        TypeError, ["ports", "0..65535", "str"]),
    Row("ports-none", lambda c: fasttcpstat.counts_by_port(None),
        TypeError, ["ports", "list of ports", "NoneType"]),
    Row("ports-too-many", lambda c: fasttcpstat.counts_by_port(range(1025)),
        ValueError, ["ports", "at most 1024", "1025"]),
    Row("side-both", lambda c: fasttcpstat.counts_by_port([80], side="both"),
        ValueError, ["side", "'local'", "'remote'", "'both'"]),
    Row("side-int", lambda c: fasttcpstat.counts_by_port([80], side=1),
        TypeError, ["side", "'local'", "'remote'", "int"]),
    Row("by-port-family", lambda c: fasttcpstat.counts_by_port([80], family="inet"),
        ValueError, ["family", "'ipv4'", "'inet'"]),
    Row("by-port-states", lambda c: fasttcpstat.counts_by_port([80], states=["OPEN"]),
        ValueError, ["states", "'OPEN'", "ESTABLISHED"]),
    Row("method-ports-70000", counter_method("counts_by_port", [70000]),
        ValueError, ["ports", "70000", "0..65535"]),
    Row("method-side", counter_method("counts_by_port", [80], "peer"),
        ValueError, ["side", "'local'", "'remote'", "'peer'"]),
    # ---- Counter(): request ----
    Row("request-v3", lambda c: fasttcpstat.Counter("netlink", request="v3"),
        ValueError, ["request", "'auto'", "'v2'", "'legacy'", "'v3'"]),
    Row("request-int", lambda c: fasttcpstat.Counter(request=2),
        TypeError, ["request", "'v2'", "int"]),
    Row("request-with-procfs", lambda c: fasttcpstat.Counter("procfs", request="v2"),
        ValueError, ["request", "netlink backend only"]),
    # ---- netns (counts, counts_by_port, Counter, summary) ----
    Row("netns-missing-path", lambda c: fasttcpstat.counts(netns=MISSING),
        FileNotFoundError, ["netns", "no such file", NETNS_HELP, MISSING]),
    Row("netns-missing-pid", lambda c: fasttcpstat.counts(netns=NO_SUCH_PID),
        FileNotFoundError, ["netns", f"no process with pid {NO_SUCH_PID}", NETNS_HELP]),
    Row("netns-missing-pid-procfs",
        lambda c: fasttcpstat.counts(netns=NO_SUCH_PID, backend="procfs"),
        FileNotFoundError, ["netns", "no process", NETNS_HELP]),
    Row("netns-under-a-file", lambda c: fasttcpstat.counts(netns=c["file"] + "/x"),
        FileNotFoundError, ["netns", "no such file", NETNS_HELP]),
    Row("netns-regular-file", lambda c: fasttcpstat.counts(netns=c["file"]),
        ValueError, ["netns", "not a namespace file", NETNS_HELP]),
    Row("netns-directory", lambda c: fasttcpstat.counts(netns=c["dir"]),
        ValueError, ["netns", "not a namespace file", NETNS_HELP]),
    Row("netns-fifo", lambda c: fasttcpstat.counts(netns=c["fifo"]),
        ValueError, ["netns", "not a namespace file", NETNS_HELP]),
    Row("netns-device", lambda c: fasttcpstat.counts(netns="/dev/null"),
        ValueError, ["netns", "not a namespace file", NETNS_HELP]),
    Row("netns-other-namespace-type", lambda c: fasttcpstat.counts(netns="/proc/self/ns/uts"),
        ValueError, ["netns", "not a network namespace"]),
    Row("netns-nul-byte", lambda c: fasttcpstat.counts(netns="/proc/self/ns/net\0"),
        ValueError, ["netns", "not a usable path", NETNS_HELP]),
    Row("netns-pid-zero", lambda c: fasttcpstat.counts(netns=0),
        ValueError, ["netns", "pid must be positive", "0"]),
    Row("netns-bool", lambda c: fasttcpstat.counts(netns=True),
        TypeError, ["netns", "a path or a pid", "bool"]),
    Row("netns-float", lambda c: fasttcpstat.counts(netns=1.5),
        TypeError, ["netns", "a path or a pid", "float"]),
    Row("counter-netns-bytes", lambda c: fasttcpstat.Counter(netns=b"/proc/1/ns/net"),
        TypeError, ["netns", "a path or a pid", "bytes"]),
    Row("by-port-netns-missing", lambda c: fasttcpstat.counts_by_port([80], netns=MISSING),
        FileNotFoundError, ["netns", "no such file", NETNS_HELP]),
    Row("summary-netns-path", lambda c: fasttcpstat.summary(netns="/var/run/netns/x"),
        ValueError, ["summary(netns=...)", "needs a pid or /proc/PID/ns/net"]),
    Row("summary-netns-missing-pid", lambda c: fasttcpstat.summary(netns=NO_SUCH_PID),
        FileNotFoundError, ["netns", "no process", NETNS_HELP]),
    Row("summary-netns-str-type", lambda c: fasttcpstat.summary(netns=[1]),
        TypeError, ["netns", "a path or a pid", "list"]),
    # ---- privileges (as nobody) ----
    Row("netns-pid-1-not-ours", lambda c: fasttcpstat.counts(netns=1, backend="netlink"),
        PermissionError, ["netns", "ptrace access", "backend='procfs'"], as_nobody=True),
    Row("netns-setns-needs-cap", lambda c: fasttcpstat.counts(netns=c["other_ns"], backend="netlink"),
        PermissionError, ["netns", "CAP_SYS_ADMIN", "backend='procfs'"], as_nobody=True),
    Row("counter-netns-setns-needs-cap", lambda c: fasttcpstat.Counter(netns=c["other_ns"]),
        PermissionError, ["netns", "CAP_SYS_ADMIN"], as_nobody=True),
]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    os.chmod(base, 0o755)
    regular = base / "regular"
    regular.write_text("not a namespace\n")
    directory = base / "dir"
    directory.mkdir()
    fifo = base / "fifo"
    os.mkfifo(fifo)
    return {"file": str(regular), "dir": str(directory), "fifo": str(fifo)}


def _run(row: Row, ctx: dict) -> Tuple[str, str]:
    """(exception class name, message), or ("", "") if nothing was raised."""
    try:
        row.call(ctx)
    except Exception as exc:  # noqa: BLE001 - the class is what is checked
        return type(exc).__name__, str(exc)
    return "", ""


def _run_as_nobody(row: Row, ctx: dict) -> Tuple[str, str]:
    # No watchdog thread here: a fork() while a thread starts or ends can
    # copy the ASan runtime's locks held (.ci/sanitize), and the child would
    # hang; settle_threads() lets a finished thread go, and the wait for
    # the child's answer is bounded instead.
    settle_threads()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            # A namespace file nobody can open (opened while still root)
            # but not enter: setns() needs CAP_SYS_ADMIN.  Not our own
            # namespace, which is counted without entering it.
            other = os.open("/proc/self/ns/net", os.O_RDONLY)
            _unshare_net()
            drop_to_nobody()
            name, message = _run(row, dict(ctx, other_ns=f"/proc/self/fd/{other}"))
            os.write(w, f"{name}\n{message}".encode())
        except BaseException:  # noqa: BLE001
            os.write(w, ("ChildError\n" + traceback.format_exc()).encode())
            code = 1
        os._exit(code)
    os.close(w)
    try:
        out = _read_all(r, time.monotonic() + HANG_LIMIT).decode()
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the call as nobody did not return within {HANG_LIMIT:.0f} s")
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    name, _, message = out.partition("\n")
    return name, message


def _run_watched(row: Row, ctx: dict) -> Tuple[str, str]:
    # A FIFO or a device must never be opened: a hang here is a failure.
    faulthandler.dump_traceback_later(HANG_LIMIT, exit=True)
    try:
        return _run(row, ctx)
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row: Row, context: dict) -> None:
    before = open_fds()
    name, message = (_run_as_nobody if row.as_nobody else _run_watched)(row, context)
    after = open_fds()
    assert name == row.exc.__name__, f"raised {name or 'nothing'}: {message}"
    missing = [word for word in row.words if word not in message]
    assert not missing, f"message {message!r} lacks {missing}"
    assert after == before, "a failed call left file descriptors open"


def test_every_public_parameter_has_a_row() -> None:
    """Adding a parameter to the API without a bad-input row fails here."""
    import inspect

    public = {
        "counts": inspect.signature(fasttcpstat.counts).parameters,
        "counts_by_port": inspect.signature(fasttcpstat.counts_by_port).parameters,
        "Counter": inspect.signature(fasttcpstat.Counter).parameters,
        "Counter.counts": inspect.signature(fasttcpstat.Counter.counts).parameters,
        "Counter.counts_by_port": inspect.signature(fasttcpstat.Counter.counts_by_port).parameters,
        "summary": inspect.signature(fasttcpstat.summary).parameters,
    }
    words = {name for params in public.values() for name in params if name != "self"}
    row_text = " ".join(row.id + " " + " ".join(row.words) for row in ROWS)
    uncovered = sorted(w for w in words if w not in row_text)
    assert not uncovered, f"public parameters without a bad-input row: {uncovered}"


def test_fd_count_helper_sees_opens() -> None:
    """The fd check above would notice a leak."""
    before = fd_count()
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        assert fd_count() == before + 1
    finally:
        os.close(fd)


def test_too_many_port_ranges_says_how_many():
    # Every other port: 3,000 ranges that cannot merge.
    with pytest.raises(ValueError, match=r"local ports: at most 2048 port ranges.*got 3000"):
        fasttcpstat.counts(local_ports=list(range(0, 6000, 2)), backend="netlink")

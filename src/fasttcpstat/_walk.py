"""The walk backend: one BPF program that walks the kernel's TCP tables.

A BPF_PROG_TYPE_SYSCALL program, run with BPF_PROG_TEST_RUN by the C
extension (csrc/walk_run.c), walks the hash tables of the calling thread's
namespace under RCU and tallies sockets per namespace, family and state;
counts() keeps only the counted namespace's inode.  The walk runs from a
thread inside the counted namespace, so a namespace with its own ehash
table (net.ipv4.tcp_child_ehash_entries) has that table walked.

It must never show a wrong count silently: before the first count of a
process it counts a private namespace holding known sockets with the walk
and with sock_diag and refuses unless both give exactly what was built;
a pass that reports an anomaly raises.  Needs Linux >= 6.2 with BTF and
CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).  Chosen only by name
(backend="walk"): "auto" does not try it yet.
"""
from __future__ import annotations

import _thread
import errno
import os

from . import _netlink
from ._backend import Backend, Tally
from ._states import _STATE_NUMBER, ALL_STATES_MASK, FAMILY_IPV4, FAMILY_IPV6, masked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple, TypeVar

    from ._fasttcpstat import WalkCounter
    from ._netns import Netns
    from ._ports import Range

    Ranges = Tuple[Range, ...]
    from ._query import CountQuery

    T = TypeVar("T")
    Counts = Tuple[int, ...]

try:
    from . import _fasttcpstat
except ImportError:  # no C extension: _netlink.IMPORT_ERROR says why
    _fasttcpstat = None  # type: ignore[assignment]

MIN_KERNEL = (6, 2)  # bpf_rcu_read_lock and BPF_PROG_TYPE_SYSCALL's kfuncs

# Tests only: {layout index: value} applied to the BTF layout, to build a
# program with a wrong offset and see the self-check refuse it.
_layout_override: Dict[int, int] = {}

_lock = _thread.allocate_lock()
_layout: Optional[Tuple[int, ...]] = None
# layout -> None (passed) or the refusal, so a process checks each once.
_checked: Dict[Tuple[int, ...], Optional[OSError]] = {}


def _kernel_release() -> Tuple[int, int]:
    release = os.uname().release
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def layout() -> Tuple[int, ...]:
    """The kernel's BTF layout for the walk program, read once (plus the
    test override)."""
    global _layout
    with _lock:
        if _layout is None:
            if _fasttcpstat is None:
                raise ImportError(
                    "the walk backend needs fasttcpstat's C extension, which is not "
                    f"built here ({_netlink.IMPORT_ERROR})"
                )
            if _kernel_release() < MIN_KERNEL:
                raise OSError(errno.EOPNOTSUPP,
                              f"the walk backend needs Linux >= 6.2 (this is "
                              f"{os.uname().release})")
            _layout = _fasttcpstat.walk_layout()
        values = list(_layout)
    for index, value in _layout_override.items():
        values[index] = value
    return tuple(values)


def _inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _check_pass(stats: Dict[str, int]) -> None:
    if stats["anomalies"]:
        found = ", ".join(f"{k}={v}" for k, v in sorted(stats.items())
                          if k in ("giveups", "unreadable", "bad_family", "bad_state",
                                   "bad_ns", "full", "log_overflow") and v)
        raise OSError(errno.EIO, f"walk: the pass met anomalies ({found}); its "
                                 "counts may be wrong and are not shown")


def _walk_one(program: WalkCounter) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The calling thread's namespace's (ipv4, ipv6), from its tables."""
    inum = _inode()
    tallies, stats = program.walk(only_inum=inum)
    _check_pass(stats)
    none = (0,) * _fasttcpstat.NSTATES
    return tallies.get(inum, (none, none))


# --- the self-check -------------------------------------------------------

# What the self-check imports on first use (bench/walk_setup.py times it):
# _socket, not socket (which pulls in enum and selectors), and ctypes only
# where os.unshare is missing (Python < 3.12).
SELF_CHECK_MODULES = ("_socket", "fcntl", "struct", "time") + (
    () if hasattr(os, "unshare") else ("ctypes",))

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
# Buckets of the self-check namespace's own established table: its counts
# then walk 64 buckets, not the host's table (262,144 buckets here, and
# every socket of the host: 180 ms of walk and 500 ms of sock_diag at 1M).
OWN_EHASH_ENTRIES = 64
# The self-check's sockets, per state, as built by _known_sockets().
KNOWN = (("LISTEN", 1), ("ESTABLISHED", 3), ("SYN_RECV", 1), ("TIME_WAIT", 1))
# TCP_DEFER_ACCEPT's seconds: the handshake's last ACK is dropped that
# long, so a connection that sends nothing stays a request socket.
DEFER_ACCEPT_SECONDS = 60
SOCKET_TIMEOUT = 2.0  # seconds, for each socket call of the self-check


def _unshare_net() -> None:
    unshare = getattr(os, "unshare", None)
    if unshare is not None:
        unshare(CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _private_namespace() -> None:
    """Move the calling thread into a new network namespace with its own
    small established table (where /proc/sys is writable), lo up."""
    import _socket
    import fcntl
    import struct

    try:
        _unshare_net()
        try:
            # Read at the next namespace's creation; /proc/sys/net is the
            # writing thread's namespace, the one just made.
            with open("/proc/sys/net/ipv4/tcp_child_ehash_entries", "w") as f:
                f.write(str(OWN_EHASH_ENTRIES))
        except OSError:
            pass  # /proc/sys read-only (a container): the shared table, slower
        else:
            _unshare_net()
    except OSError as exc:
        raise OSError(exc.errno, "walk self-check: cannot make a private namespace: "
                                 f"{exc.strerror}") from None
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def _known_sockets(program: WalkCounter) -> Tuple[Counts, Counts, Counts, Counts, Counts]:
    """In a private namespace: a listener, three established sockets, a
    request socket and a TIME_WAIT, counted by the walk, by sock_diag and
    as built."""
    import _socket
    import time

    _private_namespace()
    opened: List[_socket.socket] = []

    def tcp(fd: Optional[int] = None) -> _socket.socket:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, fileno=fd)
        opened.append(s)
        s.settimeout(SOCKET_TIMEOUT)  # a refusal (OSError), never a hang
        return s

    try:
        listener = tcp()
        listener.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_DEFER_ACCEPT,
                            DEFER_ACCEPT_SECONDS)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        for _ in range(2):
            client = tcp()
            client.connect(address)
            client.send(b"x")  # completes the deferred accept
            # Read, or closing with unread data would reset, not linger.
            # (_socket's accept is _accept, which socket.socket wraps.)
            fd, _peer = listener._accept()  # type: ignore[attr-defined]
            tcp(fd).recv(1)
        # The second pair closes (the accepted end first): one TIME_WAIT.
        opened.pop().close()
        opened.pop().close()
        # Connected, silent: ESTABLISHED here, a request socket (SYN_RECV)
        # at the listener.
        tcp().connect(address)
        diag = _fasttcpstat.NetlinkCounter()
        try:
            expected = [0] * _fasttcpstat.NSTATES
            for state, n in KNOWN:
                expected[_STATE_NUMBER[state]] = n
            deadline = time.monotonic() + 2.0
            while True:
                netlink = diag.count(3, ALL_STATES_MASK, _fasttcpstat.FORM_V2)
                if list(netlink[0]) == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.001)
            walked = _walk_one(program)
            return tuple(expected), netlink[0], netlink[1], walked[0], walked[1]
        finally:
            diag.close()
    finally:
        for s in opened:
            s.close()


def _in_thread(func: Callable[[], T]) -> T:
    """func() in a short-lived thread (it may leave its namespace behind).

    Joined, not just waited for: a thread still tearing down (freeing its
    frames) when the process forks can leave an allocator lock held in the
    child, which AddressSanitizer's allocator does not guard against.
    """
    import threading

    result: List[T] = []
    failure: List[BaseException] = []

    def run() -> None:
        try:
            result.append(func())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name="fasttcpstat-walk-check")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _prove(program: WalkCounter) -> None:
    """Raise OSError unless walk and sock_diag count exactly the sockets
    built in a private namespace."""
    expected, n4, n6, w4, w6 = _in_thread(lambda: _known_sockets(program))
    none = (0,) * _fasttcpstat.NSTATES
    if not (tuple(n4) == expected and tuple(n6) == none
            and tuple(w4) == expected and tuple(w6) == none):
        raise OSError(errno.EIO,
                      "walk self-check failed: a private namespace with known sockets "
                      f"(per state: {list(expected)}) counted by the walk as "
                      f"{list(w4)} (IPv6 {list(w6)}) and by sock_diag as {list(n4)}; "
                      "the walk is not exact on this kernel")


def self_check(program: WalkCounter, key: Tuple[int, ...]) -> None:
    """Refuse (OSError) unless the walk counts known sockets exactly on
    this kernel; once per layout and process."""
    with _lock:
        checked = key in _checked
        refusal = _checked.get(key)
    if not checked:
        try:
            _prove(program)
        except OSError as exc:
            refusal = exc
        with _lock:
            _checked[key] = refusal
    if refusal is not None:
        raise refusal


# --- the backend ----------------------------------------------------------

class WalkBackend(Backend):
    """Counts one namespace with the walk program.

    The program counts totals: per-port breakdowns go elsewhere (the
    policy sends them to netlink).  A port-filtered count loads a program
    for its filter and unloads it after.
    """

    name = "walk"
    per_port = False

    def __init__(self, netns: Optional[Netns] = None) -> None:
        self._layout = layout()
        _netlink.import_threading()
        self._netns = netns
        self._program = self._load()
        try:
            self_check(self._program, self._layout)
        except BaseException:
            self._program.close()
            raise

    def _load(self, local: Ranges = (), remote: Ranges = ()) -> WalkCounter:
        # One tally slot: a count keeps only its namespace's inode (the
        # default, 4096, is for a pass over every namespace: 1 MB).
        return _fasttcpstat.WalkCounter(self._layout, local=local, remote=remote, slots=1)

    def count(self, query: CountQuery) -> Tally:
        filtered = bool(query.local or query.remote)
        program = self._program
        if filtered:
            program = self._load(query.local or (), query.remote or ())
        try:
            if self._netns is not None:
                v4, v6 = self._netns.run_inside(lambda: _walk_one(program))
            else:
                v4, v6 = _walk_one(program)
        finally:
            if filtered:
                program.close()
        none = (0,) * _fasttcpstat.NSTATES
        if not query.families & FAMILY_IPV4:
            v4 = none
        if not query.families & FAMILY_IPV6:
            v6 = none
        if query.mask == ALL_STATES_MASK:
            return Tally(v4, v6)
        return Tally(masked(v4, query.mask), masked(v6, query.mask))

    def close(self) -> None:
        self._program.close()

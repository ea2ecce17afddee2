"""The walk backend: one BPF program that walks the kernel's TCP tables.

A BPF_PROG_TYPE_SYSCALL program, run with BPF_PROG_TEST_RUN by the C
extension (csrc/walk_run.c), walks the hash tables of the calling thread's
namespace under RCU and tallies sockets per namespace, family and state;
counts() keeps only the counted namespace's inode.  The walk runs from a
thread inside the counted namespace, so a namespace with its own ehash
table (net.ipv4.tcp_child_ehash_entries) has that table walked.
WalkBackend.count_tables() makes the passes of counts_all_netns(): each
distinct table once, every namespace in it tallied (_all_netns.py plans
which tables those are), all in one call of WalkCounter.walk_passes(),
which enters each namespace in turn.

It must never show a wrong count silently: before the first count of a
process it counts a private namespace holding known sockets with the walk
and with sock_diag and refuses unless both give exactly what was built;
a pass that reports an anomaly raises.  Needs Linux >= 6.2 with BTF and
CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).  Chosen only by name
(backend="walk") for one namespace; "auto" of counts_all_netns() tries it
first (_all_netns.py).
"""
from __future__ import annotations

import errno
import os

from . import _netlink
from ._backend import Backend, Tally
from ._forklock import ForkSafeLock
from ._netns import in_thread
from ._states import _STATE_NUMBER, ALL_STATES_MASK, FAMILY_IPV4, FAMILY_IPV6, masked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional, Tuple

    from ._fasttcpstat import WalkCounter
    from ._backend import Pair
    from ._netns import Netns
    from ._ports import Range

    Ranges = Tuple[Range, ...]
    from ._query import CountQuery

    Counts = Tuple[int, ...]

try:
    from . import _fasttcpstat
except ImportError:  # no C extension: _netlink.IMPORT_ERROR says why
    _fasttcpstat = None  # type: ignore[assignment]

MIN_KERNEL = (6, 2)  # bpf_rcu_read_lock and BPF_PROG_TYPE_SYSCALL's kfuncs

# Tests only: {layout index: value} applied to the BTF layout, to build a
# program with a wrong offset and see the self-check refuse it.
_layout_override: Dict[int, int] = {}

_lock = ForkSafeLock()
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
    with _lock():
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


def _shape(v4: Counts, v6: Counts, query: CountQuery) -> Tally:
    """A walk's (ipv4, ipv6) narrowed to the query's families and states
    (the program counts every state)."""
    none = (0,) * _fasttcpstat.NSTATES
    if not query.families & FAMILY_IPV4:
        v4 = none
    if not query.families & FAMILY_IPV6:
        v6 = none
    if query.mask == ALL_STATES_MASK:
        return Tally(v4, v6)
    return Tally(masked(v4, query.mask), masked(v6, query.mask))


EHASH = 1   # established, request and timewait sockets
LHASH2 = 2  # listeners: one table for the whole host (see _all_netns.py)


class Walk:
    """One pass of a plan: `tables` (EHASH, LHASH2 or both) as seen from
    inside `netns` (an open Netns, checked to be the namespace planned;
    None: the calling thread's namespace), tallying every namespace, or
    only inode `only` if not 0.  `gone`: its namespace went away before
    it could be opened; the pass is not made."""

    __slots__ = ("netns", "tables", "only", "where", "gone")

    def __init__(self, netns: Optional[Netns], tables: int, only: int = 0,
                 where: str = "here", gone: bool = False) -> None:
        self.netns = netns
        self.tables = tables
        self.only = only
        self.where = where
        self.gone = gone

    def __repr__(self) -> str:
        return f"Walk(tables={self.tables}, only={self.only}, where={self.where!r})"


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


def _prove(program: WalkCounter) -> None:
    """Raise OSError unless walk and sock_diag count exactly the sockets
    built in a private namespace."""
    expected, n4, n6, w4, w6 = in_thread(lambda: _known_sockets(program),
                                         name="fasttcpstat-walk-check")
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
    with _lock():
        checked = key in _checked
        refusal = _checked.get(key)
    if not checked:
        try:
            _prove(program)
        except OSError as exc:
            refusal = exc
        with _lock():
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

    def __init__(self, netns: Optional[Netns] = None, every_namespace: bool = False) -> None:
        # One tally slot: a count keeps only its namespace's inode.  For
        # count_tables(): the engine's default, one per namespace (4096
        # namespaces in 1 MB; more give a "full" anomaly, never a wrong count).
        self._slots = {} if every_namespace else {"slots": 1}
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
        return _fasttcpstat.WalkCounter(self._layout, local=local, remote=remote,
                                        **self._slots)

    def _program_for(self, query: CountQuery) -> Tuple[WalkCounter, bool]:
        """The program that counts `query`, and whether it was loaded for
        it (a port filter) and must be closed after."""
        if query.local or query.remote:
            return self._load(query.local or (), query.remote or ()), True
        return self._program, False

    def count(self, query: CountQuery) -> Tally:
        program, loaded = self._program_for(query)
        try:
            if self._netns is not None:
                v4, v6 = self._netns.run_inside(lambda: _walk_one(program))
            else:
                v4, v6 = _walk_one(program)
        finally:
            if loaded:
                program.close()
        return _shape(v4, v6, query)

    def count_tables(self, walks: Iterable[Walk], query: CountQuery
                     ) -> Tuple[Dict[int, Tally], List[Dict[str, object]]]:
        """Make each pass of `walks` and add up what they tally, per
        namespace inode; with each pass's statistics (its "where" added).

        Every socket lives in exactly one ehash table or in the one lhash2
        every table shares, so the sum is exact as long as `walks` covers
        each distinct table once: that is the caller's plan.  A pass whose
        namespace is gone is not made (its stats say "gone"): the
        namespaces it would have counted are not in the result unless
        another pass tallied them.
        """
        walks = list(walks)
        made = [walk for walk in walks if not walk.gone]
        jobs = [(-1 if walk.netns is None else walk.netns.fd, walk.tables, walk.only)
                for walk in made]
        program, loaded = self._program_for(query)
        try:
            if any(walk.netns is not None for walk in made):
                # All passes in one C call, with no Python between them:
                # it enters each namespace in turn (setns() per pass) and
                # comes back; from a thread that ends after, whatever fails.
                tallies, stats = in_thread(lambda: program.walk_passes(jobs),
                                           name="fasttcpstat-walk")
            else:
                tallies, stats = program.walk_passes(jobs)
        finally:
            if loaded:
                program.close()
        made_stats = iter(stats)
        passes: List[Dict[str, object]] = []
        for walk in walks:
            if walk.gone:
                passes.append({"gone": 1, "tables": walk.tables, "where": walk.where})
                continue
            one = next(made_stats)
            _check_pass(one)
            passes.append(dict(one, tables=walk.tables, where=walk.where))
        return ({inum: _shape(v4, v6, query) for inum, (v4, v6) in tallies.items()},
                passes)

    def close(self) -> None:
        self._program.close()

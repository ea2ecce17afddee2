"""Build real TCP socket populations inside a private network namespace.

A :class:`Population` forks a *holder* process that unshares a fresh network
namespace, brings ``lo`` up, tunes a few per-namespace sysctls, creates the
sockets a :class:`Spec` asks for (loopback only: 127.0.0.0/8 and ::1), waits
until the kernel shows exactly the intended per-family per-state counts, and
then keeps every socket alive until told to stop.  ``Population.run()`` forks
a short-lived child that joins that namespace and calls a function there, so
counting code under test sees only the population.

Large populations (the benchmark's 100k-1M sockets) do not fit in one process's
RLIMIT_NOFILE: ``Population(spec, workers="auto")`` splits the spec
(:func:`split_spec`) over worker processes that the holder forks after
unsharing, so they share its namespace; each builds and holds its part.

``Population.expected`` is derived from the spec alone (:func:`expected_counts`),
never from a measurement; the holder's convergence wait compares the kernel's
view against it and reports the difference if they never match.

Lifetimes: TIME_WAIT and orphaned FIN_WAIT2 sockets live ~60 s after the build,
so a population is exact only for about a minute (see ``Population.fresh_until``).
SYN_SENT lives ~4 min (tcp_syn_retries=7), SYN_RECV ~10 min (TCP_DEFER_ACCEPT).
For long measurements, ``long_lived=True`` keeps SYN_SENT and SYN_RECV for
hours, and ``Population.refresh_time_wait()`` replaces the TIME_WAIT sockets
with fresh ones (another ~60 s).

Only the standard library is used; Python >= 3.8 (no os.unshare/os.setns: libc
is called through ctypes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import pickle
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields

__all__ = [
    "STATES",
    "FAMILIES",
    "Spec",
    "SMALL_SPEC",
    "Population",
    "PopulationError",
    "split_spec",
    "ChildTraceback",
    "expected_counts",
    "fds_needed",
    "ss_counts",
    "ss_shows_bound_inactive",
    "proc_counts",
    "diag_counts",
    "diff_counts",
    "netns_supported",
]

# Kernel order: the TCP state number is the index + 1 (include/net/tcp_states.h).
STATES = (
    "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
)
FAMILIES = ("ipv4", "ipv6")

CLONE_NEWNET = 0x40000000

# Listener ports come from below the ephemeral range (32768-60999, set
# explicitly in the namespace) so they never compete with connect()'s choice.
LISTEN_PORT_FIRST = 10000
LISTEN_PORT_LAST = 32767
# The top of that range is kept for Population.refresh_time_wait(), whose
# short-lived listeners must not collide with the ones the holder keeps.
REFRESH_PORT_FIRST = 32700

# At most this many connections go through one listener.  connect() picks a
# local port unique per (src ip, dst ip, dst port), from ~28k ephemeral ports;
# staying well below keeps its port search short.  ::1 is the only IPv6
# loopback address, so spreading over listener ports is what scales both
# families alike.
PER_LISTENER = 10000

# Small buffers make the "fill the peer's window" scenarios cheap: a few KiB
# per socket instead of megabytes.  The kernel doubles and clamps these.
SMALL_BUF = 4096

# Value for TCP_DEFER_ACCEPT: a bare ACK is dropped for this long, so the
# server side stays a request socket (SYN_RECV) while the client is ESTABLISHED.
DEFER_ACCEPT_SECONDS = 600
# With long_lived=True: ~4 h, about as long as SYN_SENT with tcp_syn_retries
# at its maximum (the kernel turns both into a retransmission count).
LONG_DEFER_ACCEPT_SECONDS = 4 * 3600

# TIME_WAIT (TCP_TIMEWAIT_LEN) and orphaned FIN_WAIT2 (tcp_fin_timeout) last
# 60 s; leave a margin for the tests that count them.
EXACT_FOR_SECONDS = 55.0

# fds the holder keeps besides the population (stdio, pipes, /proc reads, ...).
FD_RESERVE = 64

# Sysctls written inside the new namespace only (never in the host's).
NETNS_SYSCTLS = (
    # Without it, a stray RST on loopback "assassinates" TIME_WAIT sockets.
    ("net/ipv4/tcp_rfc1337", "1"),
    # Default loopback TIME_WAIT reuse (2) would let connect() recycle our
    # TIME_WAIT sockets once they are 1 s old.
    ("net/ipv4/tcp_tw_reuse", "0"),
    ("net/ipv4/tcp_max_tw_buckets", "4000000"),
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "1000000"),
    # A dropped SYN is retried at 1, 3, 7, ... 127 s: SYN_SENT lives ~255 s.
    ("net/ipv4/tcp_syn_retries", "7"),
    ("net/ipv4/tcp_fin_timeout", "60"),
    # Pinned so LISTEN_PORT_* is guaranteed to be outside of it.
    ("net/ipv4/ip_local_port_range", "32768 60999"),
)

# Written after NETNS_SYSCTLS with long_lived=True.  SYN retries back off to
# TCP_RTO_MAX (120 s), so 127 (MAX_TCP_SYNCNT) keeps SYN_SENT ~4 h.
LONG_LIVED_SYSCTLS = (
    ("net/ipv4/tcp_syn_retries", "127"),
)

# ioctls (linux/sockios.h)
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCOUTQNSD = 0x894B  # bytes in the send queue not yet sent
IFF_UP = 0x1

# Socket options missing from older Python builds of the socket module.
TCP_DEFER_ACCEPT = getattr(socket, "TCP_DEFER_ACCEPT", 9)


class PopulationError(RuntimeError):
    """The holder could not build (or converge) the requested population."""


# --------------------------------------------------------------------------
# libc helpers
# --------------------------------------------------------------------------

_libc = None


def _libc_call(name: str, *args: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (name, os.strerror(err)))


def _unshare_net() -> None:
    _libc_call("unshare", CLONE_NEWNET)


def _setns_net(ns_path: str) -> None:
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc_call("setns", fd, CLONE_NEWNET)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# The spec and what it must yield
# --------------------------------------------------------------------------


@dataclass
class Spec:
    """How many of each scenario to create.  See SCENARIO_YIELDS for what each
    one leaves in the kernel (both ends of a connection are counted)."""

    listen4: int = 0
    listen6: int = 0
    listen_dual: int = 0          # AF_INET6 on "::" with IPV6_V6ONLY=0
    estab4: int = 0
    estab6: int = 0
    estab_mapped: int = 0         # AF_INET client -> dual-stack AF_INET6 listener
    time_wait4: int = 0
    time_wait6: int = 0
    close_wait4: int = 0          # peer shutdown(SHUT_WR), keeps its fd
    close_wait6: int = 0
    orphan_fin_wait2_4: int = 0   # peer close()d: orphan FIN_WAIT2 (a timewait sock)
    fin_wait1_4: int = 0
    last_ack4: int = 0
    closing4: int = 0
    syn_sent4: int = 0
    syn_recv4: int = 0
    syn_recv6: int = 0
    bound_inactive4: int = 0      # bind() only: invisible to /proc and to the package

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 0:
                raise ValueError("Spec.%s must be an int >= 0, got %r" % (f.name, value))

    @classmethod
    def mixed(cls, total: int) -> "Spec":
        """Every scenario, adding up to about `total` visible sockets (both
        ends counted), mostly ESTABLISHED and TIME_WAIT, as on a busy server.
        Each scenario gets at least one instance."""
        # (field, share of the sockets, sockets per instance)
        shares = (
            ("estab4", 0.30, 2), ("estab6", 0.10, 2), ("estab_mapped", 0.05, 2),
            ("time_wait4", 0.25, 1), ("time_wait6", 0.10, 1),
            ("close_wait4", 0.04, 2), ("close_wait6", 0.02, 2),
            ("orphan_fin_wait2_4", 0.03, 2),
            ("fin_wait1_4", 0.02, 2), ("last_ack4", 0.02, 2), ("closing4", 0.02, 2),
            ("syn_sent4", 0.015, 1), ("syn_recv4", 0.015, 2), ("syn_recv6", 0.005, 2),
            ("listen4", 0.005, 1), ("listen6", 0.0025, 1), ("listen_dual", 0.0025, 1),
        )
        counts = {name: max(1, int(total * share / per)) for name, share, per in shares}
        counts["bound_inactive4"] = max(1, total // 200)
        # Rounding (and helper sockets) leave a small deficit: top up with
        # TIME_WAIT, one visible socket each, so the total is at least `total`.
        visible = sum(sum(per.values()) for per in expected_counts(cls(**counts)).values())
        counts["time_wait4"] += max(0, total - visible)
        return cls(**counts)

    def as_dict(self) -> dict:
        return asdict(self)


# A handful of every scenario, with distinct counts so that mix-ups show.
SMALL_SPEC = Spec(
    listen4=3, listen6=2, listen_dual=2,
    estab4=5, estab6=4, estab_mapped=3,
    time_wait4=6, time_wait6=4,
    close_wait4=3, close_wait6=2, orphan_fin_wait2_4=2,
    fin_wait1_4=2, last_ack4=2, closing4=2,
    syn_sent4=3, syn_recv4=3, syn_recv6=2,
    bound_inactive4=3,
)


def _zero() -> dict:
    return {family: dict.fromkeys(STATES, 0) for family in FAMILIES}


# What ONE instance of each scenario leaves, as (family, state, count) items;
# verified with `ss -tan` and /proc/net/tcp{,6} (see tests/test_population.py).
# Helper listeners are not included here: see _helper_listeners().
SCENARIO_YIELDS = {
    "listen4": (("ipv4", "LISTEN", 1),),
    "listen6": (("ipv6", "LISTEN", 1),),
    "listen_dual": (("ipv6", "LISTEN", 1),),
    "estab4": (("ipv4", "ESTABLISHED", 2),),
    "estab6": (("ipv6", "ESTABLISHED", 2),),
    # The accepted end is an AF_INET6 socket with a ::ffff:127.0.0.1 peer.
    "estab_mapped": (("ipv4", "ESTABLISHED", 1), ("ipv6", "ESTABLISHED", 1)),
    # Only the active closer remains; the server's LAST_ACK is gone once acked.
    "time_wait4": (("ipv4", "TIME_WAIT", 1),),
    "time_wait6": (("ipv6", "TIME_WAIT", 1),),
    "close_wait4": (("ipv4", "CLOSE_WAIT", 1), ("ipv4", "FIN_WAIT2", 1)),
    "close_wait6": (("ipv6", "CLOSE_WAIT", 1), ("ipv6", "FIN_WAIT2", 1)),
    "orphan_fin_wait2_4": (("ipv4", "CLOSE_WAIT", 1), ("ipv4", "FIN_WAIT2", 1)),
    # Client FIN stuck behind unsent data; the server never saw it.
    "fin_wait1_4": (("ipv4", "FIN_WAIT1", 1), ("ipv4", "ESTABLISHED", 1)),
    # Server FIN stuck behind unsent data; the client, which closed first,
    # waits in FIN_WAIT2 for it.
    "last_ack4": (("ipv4", "LAST_ACK", 1), ("ipv4", "FIN_WAIT2", 1)),
    # A's FIN stuck, B's FIN got through: A CLOSING, B FIN_WAIT2.
    "closing4": (("ipv4", "CLOSING", 1), ("ipv4", "FIN_WAIT2", 1)),
    "syn_sent4": (("ipv4", "SYN_SENT", 1),),
    # The server end is a request socket, reported as SYN_RECV.
    "syn_recv4": (("ipv4", "SYN_RECV", 1), ("ipv4", "ESTABLISHED", 1)),
    "syn_recv6": (("ipv6", "SYN_RECV", 1), ("ipv6", "ESTABLISHED", 1)),
    "bound_inactive4": (),
}

# fds one instance holds once built (TIME_WAIT and orphans hold none).
SCENARIO_FDS = {
    "listen4": 1, "listen6": 1, "listen_dual": 1,
    "estab4": 2, "estab6": 2, "estab_mapped": 2,
    "time_wait4": 0, "time_wait6": 0,
    "close_wait4": 2, "close_wait6": 2, "orphan_fin_wait2_4": 1,
    "fin_wait1_4": 2, "last_ack4": 2, "closing4": 2,
    "syn_sent4": 1, "syn_recv4": 1, "syn_recv6": 1,
    "bound_inactive4": 1,
}


def _chunks(n: int, size: int = PER_LISTENER) -> list:
    """Split n connections into per-listener batches."""
    return [min(size, n - start) for start in range(0, n, size)]


def _helper_listeners(spec: Spec) -> dict:
    """Listeners that must stay open and therefore show up as LISTEN.

    Connection scenarios close their listener once everything is accepted
    (accepted sockets outlive it), except SYN_SENT and SYN_RECV: those need
    a live listener (a closed one would answer the SYN with a RST, or drop
    its request sockets).  The SYN_SENT listener also holds one queued,
    never-accepted connection that keeps its accept queue full: 2 ESTABLISHED.
    """
    return {
        "syn_sent4": len(_chunks(spec.syn_sent4)),
        "syn_recv4": len(_chunks(spec.syn_recv4)),
        "syn_recv6": len(_chunks(spec.syn_recv6)),
    }


def expected_counts(spec: Spec) -> dict:
    """{"ipv4": {STATE: n}, "ipv6": {...}} implied by the spec (all 11 keys)."""
    out = _zero()
    for name, n in spec.as_dict().items():
        for family, state, per in SCENARIO_YIELDS[name]:
            out[family][state] += per * n
    helpers = _helper_listeners(spec)
    out["ipv4"]["LISTEN"] += helpers["syn_sent4"] + helpers["syn_recv4"]
    out["ipv6"]["LISTEN"] += helpers["syn_recv6"]
    out["ipv4"]["ESTABLISHED"] += 2 * helpers["syn_sent4"]  # the queue fillers
    return out


def fds_needed(spec: Spec) -> int:
    """fds one holder needs to keep the whole spec alive (excluding reserve)."""
    helpers = _helper_listeners(spec)
    total = sum(SCENARIO_FDS[name] * n for name, n in spec.as_dict().items())
    # helper listeners, plus the queue filler's client + accepted-but-unaccepted
    # child (the child has no fd), during the build a transient listener too.
    return total + sum(helpers.values()) + helpers["syn_sent4"] + 1


def _fd_budget() -> int:
    """fds one process may use for sockets (RLIMIT_NOFILE hard limit less
    the reserve), or 0 if unlimited."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 0 if hard == resource.RLIM_INFINITY else hard - FD_RESERVE


def split_spec(spec: Spec, parts: "int | None" = None, budget: "int | None" = None) -> list:
    """Split `spec` into specs for worker processes, each needing at most
    `budget` fds (default: what RLIMIT_NOFILE allows one process).

    Scenarios are dealt out in BUILD_ORDER, filling one part before the next,
    so small scenarios stay whole (splitting SYN_SENT/SYN_RECV would add a
    helper listener per part).  With `parts`, the fds are spread evenly over
    that many parts instead (for parallel building); there may be more parts
    if the budget requires it.  Expected counts of the parts add up to those
    of the spec only approximately (helper listeners are per part): use
    expected_counts() per part.
    """
    budget = budget or _fd_budget() or fds_needed(spec) + 1
    # Helper listeners and queue fillers are not in SCENARIO_FDS: keep room.
    slack = 8 + 3 * len(_chunks(max(1, spec.syn_sent4 + spec.syn_recv4 + spec.syn_recv6)))
    room_per_part = budget - slack
    if parts:
        total_fds = sum(SCENARIO_FDS[name] * n for name, n in spec.as_dict().items())
        room_per_part = min(room_per_part, -(-total_fds // parts))
    if room_per_part < 2:
        raise PopulationError("fd budget %d too small to split %r" % (budget, spec))
    out = [dict.fromkeys(spec.as_dict(), 0)]
    used = [0]
    for name in BUILD_ORDER:
        n = getattr(spec, name)
        per = SCENARIO_FDS[name]
        while n > 0:
            take = n if per == 0 else min(n, (room_per_part - used[-1]) // per)
            if take <= 0:
                out.append(dict.fromkeys(spec.as_dict(), 0))
                used.append(0)
                continue
            out[-1][name] += take
            used[-1] += take * per
            n -= take
    specs = [Spec(**d) for d in out if any(d.values())]
    for part in specs:
        if fds_needed(part) > budget:
            raise PopulationError("split_spec: a part needs %d fds, over the budget %d: %r"
                                  % (fds_needed(part), budget, part))
    return specs or [Spec()]


def _sum_counts(many: list) -> dict:
    out = _zero()
    for counts in many:
        for family in FAMILIES:
            for state in STATES:
                out[family][state] += counts[family][state]
    return out


# --------------------------------------------------------------------------
# Reference counters (test cross-checks; simple on purpose)
# --------------------------------------------------------------------------

# ss -tan state names -> kernel names.
SS_STATE_NAMES = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
    "UNCONN": "CLOSE", "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}


def _family_name(family) -> "str | None":
    """Accept None, "ipv4"/"ipv6", 4/6 or socket.AF_INET/AF_INET6."""
    if family is None:
        return None
    aliases = {
        "ipv4": "ipv4", "ipv6": "ipv6", "4": "ipv4", "6": "ipv6",
        4: "ipv4", 6: "ipv6", socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6",
    }
    try:
        return aliases[family]
    except (KeyError, TypeError):
        raise ValueError("unknown family %r" % (family,)) from None


def ss_counts(family=None, *, exclude_unconn: bool = False) -> dict:
    """Count `ss -tan` lines per state in the current network namespace.

    family: None (both), "ipv4" or "ipv6" (also 4/6, AF_INET/AF_INET6).
    Returns all 11 STATES keys.

    Caveat: a kernel >= 6.8 (commit 91051f003948, TCP_BOUND_INACTIVE) dumps
    bound-but-inactive sockets when asked for state bit 13, and an `ss` new
    enough to ask for it (iproute2 released after 2023-12) lists them as
    UNCONN, i.e. CLOSE here.  fasttcpstat deliberately does not count those
    (nor does /proc/net/tcp show them), so pass exclude_unconn=True to compare
    against it: CLOSE is then reported as 0.  Older `ss` builds (iproute2 6.1
    asks for 0xFFF) never show them, whatever the kernel.
    """
    fam = _family_name(family)
    cmd = ["ss", "-tan"] + ({"ipv4": ["-4"], "ipv6": ["-6"]}[fam] if fam else [])
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    counts = dict.fromkeys(STATES, 0)
    for line in out.splitlines()[1:]:           # skip the header line
        if not line.strip():
            continue
        name = line.split(None, 1)[0]
        counts[SS_STATE_NAMES[name]] += 1       # an unknown name is a bug: KeyError
    if exclude_unconn:
        counts["CLOSE"] = 0
    return counts


def ss_shows_bound_inactive() -> bool:
    """True if the installed `ss` knows TCP_BOUND_INACTIVE (it then has a
    -B/--bound-inactive option and `-a` includes those sockets as UNCONN)."""
    out = subprocess.run(["ss", "-h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True).stdout
    return "bound-inactive" in out


def proc_counts(family=None) -> dict:
    """Count sockets per state from /proc/self/net/tcp{,6} (current namespace).

    An independent, deliberately naive reader: the 4th column (`st`) is the
    state number in hex.  Request sockets print 03 (SYN_RECV); timewait socks
    print their substate (TIME_WAIT or FIN_WAIT2).  tcp6 includes v4-mapped
    sockets.  Returns all 11 STATES keys.
    """
    fam = _family_name(family)
    files = {"ipv4": ("tcp",), "ipv6": ("tcp6",), None: ("tcp", "tcp6")}[fam]
    counts = dict.fromkeys(STATES, 0)
    for name in files:
        try:
            with open("/proc/self/net/" + name) as f:
                lines = f.readlines()[1:]       # skip the header line
        except FileNotFoundError:               # e.g. IPv6 disabled
            continue
        for line in lines:
            counts[STATES[int(line.split()[3], 16) - 1]] += 1
    return counts


# netlink / sock_diag constants (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
ALL_STATES_MASK = 0xFFE              # bits 1..11: what fasttcpstat asks for
BOUND_INACTIVE_MASK = 1 << 13        # TCP_BOUND_INACTIVE, kernels >= 6.8


def diag_counts(family, states: int = ALL_STATES_MASK) -> dict:
    """Count sockets per reported state with a plain inet_diag_req_v2 dump
    (current namespace).  A slow, obvious reference for tests, e.g. to see
    bound-inactive sockets (states=BOUND_INACTIVE_MASK; reported as CLOSE)
    independently of the installed `ss`.  Returns all 11 STATES keys."""
    fam = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}[_family_name(family)]
    req = struct.pack("=BBBxI48x", fam, socket.IPPROTO_TCP, 0, states)
    msg = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                      _NLM_F_REQUEST_DUMP, 1, 0) + req
    counts = dict.fromkeys(STATES, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(msg, (0, 0))
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return counts
                if kind == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, offset + 16)[0]
                    raise OSError(err, "inet_diag dump: " + os.strerror(err))
                counts[STATES[data[offset + 17] - 1]] += 1   # inet_diag_msg.idiag_state
                offset += (length + 3) & ~3


def _proc_counts_by_family() -> dict:
    return {family: proc_counts(family) for family in FAMILIES}


def diff_counts(expected: dict, actual: dict) -> dict:
    """{family: {state: (expected, actual)}} for every mismatch."""
    out = {}
    for family in FAMILIES:
        d = {s: (expected[family][s], actual[family][s])
             for s in STATES if expected[family][s] != actual[family][s]}
        if d:
            out[family] = d
    return out


# --------------------------------------------------------------------------
# Namespace support probe
# --------------------------------------------------------------------------

_netns_support = None


def netns_supported() -> "tuple[bool, str]":
    """(True, "") if this process may create a network namespace, else
    (False, reason).  Probed once, in a forked child, so the caller's own
    namespace is never touched."""
    global _netns_support
    if _netns_support is None:
        _netns_support = _probe_netns()
    return _netns_support


def _probe_netns() -> "tuple[bool, str]":
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux (platform is %s)" % sys.platform
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        msg = b""
        try:
            _unshare_net()
            _bring_lo_up()
        except BaseException as exc:  # noqa: BLE001 - report anything
            msg = ("unshare(CLONE_NEWNET) failed: %r" % (exc,)).encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    try:
        msg = _read_all(r)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if msg:
        return False, msg.decode(errors="replace")
    return True, ""


# --------------------------------------------------------------------------
# Small process/pipe helpers
# --------------------------------------------------------------------------

# Write ends of the holders' control pipes.  Every process this module forks
# closes the ones it does not own, so a holder sees EOF as soon as the process
# that created it dies, even if other holders or run() children are alive.
_CONTROL_FDS: set = set()


def _close_inherited_control_fds(keep: int = -1) -> None:
    for fd in list(_CONTROL_FDS):
        if fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass
    _CONTROL_FDS.clear()


def _read_all(fd: int, deadline: "float | None" = None) -> bytes:
    """Read until EOF; raise TimeoutError past `deadline` (monotonic)."""
    chunks = []
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no EOF before the deadline")
        data = os.read(fd, 1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reap(pid: int, timeout: float) -> "int | None":
    """waitpid with a timeout; returns the raw status or None if still alive."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _describe_status(status: "int | None") -> str:
    if status is None:
        return "still running"
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


# --------------------------------------------------------------------------
# The holder: namespace setup
# --------------------------------------------------------------------------


def _bring_lo_up() -> None:
    """ifconfig lo up, via SIOCSIFFLAGS (a new namespace starts with lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _write_sysctls(long_lived: bool = False) -> None:
    # /proc/sys/net resolves to the writer's current namespace: these affect
    # only the freshly unshared one.
    for key, value in NETNS_SYSCTLS + (LONG_LIVED_SYSCTLS if long_lived else ()):
        with open("/proc/sys/" + key, "w") as f:
            f.write(value)


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --------------------------------------------------------------------------
# The holder: building sockets
# --------------------------------------------------------------------------

V4 = (socket.AF_INET, "127.0.0.1")
V6 = (socket.AF_INET6, "::1")


class _Builder:
    """Creates the sockets of a spec and keeps them referenced (a socket
    object that is garbage-collected closes its fd)."""

    def __init__(self, timeout: float, ports: "tuple[int, int]" = (
                     LISTEN_PORT_FIRST, REFRESH_PORT_FIRST - 1),
                 defer_accept: int = DEFER_ACCEPT_SECONDS) -> None:
        self.keep: list = []
        self.timeout = timeout            # per blocking socket operation
        self.defer_accept = defer_accept
        self._next_port, self._last_port = ports
        self._first_port = self._next_port

    # ---- primitives -----------------------------------------------------

    def port(self) -> int:
        if self._next_port > self._last_port:
            raise PopulationError("out of listener ports (%d-%d)"
                                  % (self._first_port, self._last_port))
        self._next_port += 1
        return self._next_port - 1

    def listener(self, family: int, addr: str, backlog: int = 65535, *,
                 v6only: bool = True, rcvbuf: int = 0, defer_accept: int = 0) -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        if rcvbuf:
            # Set before listen(): accepted sockets inherit it, and the window
            # scale is chosen from it at SYN time.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if defer_accept:
            s.setsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, defer_accept)
        s.bind((addr, self.port()))
        s.listen(backlog)
        s.settimeout(self.timeout)
        return s

    def client(self, family: int, *, sndbuf: int = 0, rcvbuf: int = 0) -> socket.socket:
        c = socket.socket(family, socket.SOCK_STREAM)
        if sndbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.settimeout(self.timeout)
        return c

    def connections(self, n: int, family=V4, *, listen_family=None, v6only: bool = True,
                    client_sndbuf: int = 0, client_rcvbuf: int = 0, server_rcvbuf: int = 0):
        """Yield n (client, server) pairs, each connected then accepted (so
        the pair really is one connection).  One listener per PER_LISTENER
        pairs; it is closed after its batch: accepted sockets outlive it, and
        a closed helper listener does not disturb the expected LISTEN count."""
        cfam, caddr = family
        lfam, laddr = listen_family or family
        for size in _chunks(n):
            lst = self.listener(lfam, laddr, v6only=v6only, rcvbuf=server_rcvbuf)
            port = lst.getsockname()[1]
            try:
                for _ in range(size):
                    c = self.client(cfam, sndbuf=client_sndbuf, rcvbuf=client_rcvbuf)
                    c.connect((caddr, port))
                    s, _addr = lst.accept()
                    s.settimeout(self.timeout)
                    yield c, s
            finally:
                lst.close()

    # ---- scenarios: one method per Spec field ----------------------------

    def listen4(self, n: int) -> None:
        self.keep += [self.listener(*V4) for _ in range(n)]

    def listen6(self, n: int) -> None:
        self.keep += [self.listener(*V6) for _ in range(n)]

    def listen_dual(self, n: int) -> None:
        self.keep += [self.listener(socket.AF_INET6, "::", v6only=False) for _ in range(n)]

    def estab4(self, n: int) -> None:
        for pair in self.connections(n, V4):
            self.keep += pair

    def estab6(self, n: int) -> None:
        for pair in self.connections(n, V6):
            self.keep += pair

    def estab_mapped(self, n: int) -> None:
        # AF_INET client to a dual-stack AF_INET6 listener on "::".
        for pair in self.connections(n, V4, listen_family=(socket.AF_INET6, "::"),
                                     v6only=False):
            self.keep += pair

    def _time_wait(self, n: int, family) -> None:
        for c, s in self.connections(n, family):
            c.close()                       # active close: client FIN_WAIT1/2
            if s.recv(1) != b"":            # wait for the FIN (CLOSE_WAIT) ...
                raise PopulationError("TIME_WAIT: unexpected data")
            s.close()                       # ... then close: client TIME_WAIT

    def time_wait4(self, n: int) -> None:
        self._time_wait(n, V4)

    def time_wait6(self, n: int) -> None:
        self._time_wait(n, V6)

    def _close_wait(self, n: int, family) -> None:
        for c, s in self.connections(n, family):
            c.shutdown(socket.SHUT_WR)      # client FIN_WAIT2 (full socket), server CLOSE_WAIT
            self.keep += (c, s)

    def close_wait4(self, n: int) -> None:
        self._close_wait(n, V4)

    def close_wait6(self, n: int) -> None:
        self._close_wait(n, V6)

    def orphan_fin_wait2_4(self, n: int) -> None:
        for c, s in self.connections(n, V4):
            # No fd left: once its FIN is acked the client becomes a timewait
            # sock with substate FIN_WAIT2 for tcp_fin_timeout (60 s).  The
            # server keeps its fd and never reads: CLOSE_WAIT.
            c.close()
            self.keep.append(s)

    def fin_wait1_4(self, n: int) -> None:
        for c, s in self.connections(n, V4, client_sndbuf=SMALL_BUF, server_rcvbuf=SMALL_BUF):
            _fill_until_stuck(c, self.timeout)   # server never reads
            c.shutdown(socket.SHUT_WR)           # FIN queued behind unsent data
            self.keep += (c, s)

    def last_ack4(self, n: int) -> None:
        for c, s in self.connections(n, V4, client_rcvbuf=SMALL_BUF):
            c.shutdown(socket.SHUT_WR)      # client FIN_WAIT2, server CLOSE_WAIT
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
            _wait_readable_eof(s)  # server has seen the FIN
            _fill_until_stuck(s, self.timeout)   # client never reads
            s.shutdown(socket.SHUT_WR)      # server LAST_ACK, its FIN stuck
            self.keep += (c, s)

    def closing4(self, n: int) -> None:
        for a, b in self.connections(n, V4, client_sndbuf=SMALL_BUF, server_rcvbuf=SMALL_BUF):
            _fill_until_stuck(a, self.timeout)   # b never reads
            a.shutdown(socket.SHUT_WR)           # a FIN_WAIT1 (FIN stuck)
            b.shutdown(socket.SHUT_WR)           # b's FIN reaches a: a CLOSING, b FIN_WAIT2
            self.keep += (a, b)

    def syn_sent4(self, n: int) -> None:
        for size in _chunks(n):
            # listen(0) admits exactly one connection to the accept queue;
            # with it never accepted, the queue stays full and every later
            # SYN is dropped (and retried, tcp_syn_retries=7): SYN_SENT.
            lst = self.listener(*V4, backlog=0)
            addr = lst.getsockname()
            filler = self.client(socket.AF_INET)
            filler.connect(addr)
            self.keep += (lst, filler)
            for _ in range(size):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                err = c.connect_ex(addr)
                if err != errno.EINPROGRESS:
                    raise PopulationError("SYN_SENT: connect_ex gave %s" % errno.errorcode.get(err, err))
                self.keep.append(c)

    def _syn_recv(self, n: int, family) -> None:
        for size in _chunks(n):
            # With TCP_DEFER_ACCEPT the bare ACK that completes the handshake
            # is dropped: the server end stays a request socket (SYN_RECV),
            # the client (which sends nothing) is ESTABLISHED.  The backlog
            # must exceed the batch, else SYN cookies replace request socks.
            lst = self.listener(*family, backlog=size + 64, defer_accept=self.defer_accept)
            addr = lst.getsockname()[:2]
            self.keep.append(lst)
            for _ in range(size):
                c = self.client(family[0])
                c.connect(addr)
                self.keep.append(c)

    def syn_recv4(self, n: int) -> None:
        self._syn_recv(n, V4)

    def syn_recv6(self, n: int) -> None:
        self._syn_recv(n, V6)

    def bound_inactive4(self, n: int) -> None:
        # bind() only.  A port below the ephemeral range so connect() never
        # has to skip it.
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", self.port()))
            self.keep.append(s)


def _wait_readable_eof(s: socket.socket) -> None:
    """Block (up to the socket's timeout) until the peer's FIN has arrived."""
    if s.recv(1, socket.MSG_PEEK) != b"":
        raise PopulationError("expected EOF, got data")


def _fill_until_stuck(s: socket.socket, timeout: float) -> None:
    """Write until the peer's receive window is closed and some of our data
    is still unsent, so a FIN queued next stays stuck behind it.

    EAGAIN alone is not enough: it only says our send buffer is full.  The
    FIN is stuck only if unsent bytes remain (SIOCOUTQNSD > 0) in front of it.
    """
    s.setblocking(False)
    chunk = b"x" * 65536
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                while True:
                    s.send(chunk)
            except BlockingIOError:
                pass
            if _unsent_bytes(s) > 0:
                return
            if time.monotonic() > deadline:
                raise PopulationError("could not get data stuck in the send queue")
            time.sleep(0.001)  # let the peer's window close, then top up
    finally:
        s.settimeout(timeout)


def _unsent_bytes(s: socket.socket) -> int:
    buf = fcntl.ioctl(s.fileno(), SIOCOUTQNSD, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]


# Build order hardly matters for correctness.  TIME_WAIT goes late so its
# fixed 60 s lifetime starts as close to "ready" as possible; SYN_SENT goes
# last so its connects do not race the other scenarios' handshakes.
BUILD_ORDER = (
    "bound_inactive4", "listen4", "listen6", "listen_dual",
    "estab4", "estab6", "estab_mapped",
    "close_wait4", "close_wait6", "orphan_fin_wait2_4",
    "fin_wait1_4", "last_ack4", "closing4",
    "syn_recv4", "syn_recv6",
    "time_wait4", "time_wait6",
    "syn_sent4",
)
assert sorted(BUILD_ORDER) == sorted(f.name for f in fields(Spec))


def _build(spec: Spec, timeout: float, **builder_options) -> _Builder:
    builder = _Builder(timeout, **builder_options)
    for name in BUILD_ORDER:
        n = getattr(spec, name)
        if n:
            try:
                getattr(builder, name)(n)
            except PopulationError:
                raise
            except Exception as exc:
                raise PopulationError("building %s=%d failed: %r" % (name, n, exc)) from exc
    return builder


def _wait_converged(expected: dict, timeout: float) -> dict:
    """Poll /proc/net/tcp{,6} until the per-family counts equal `expected`.
    Returns the last diff ({} when converged)."""
    deadline = time.monotonic() + timeout
    while True:
        diff = diff_counts(expected, _proc_counts_by_family())
        if not diff or time.monotonic() >= deadline:
            return diff
        time.sleep(0.05)


def _ports_needed(spec: Spec) -> int:
    """Listener ports _build(spec) binds (connection scenarios: one per chunk)."""
    bound = spec.listen4 + spec.listen6 + spec.listen_dual + spec.bound_inactive4
    return bound + sum(len(_chunks(n)) for name, n in spec.as_dict().items()
                       if SCENARIO_YIELDS[name] and not name.startswith("listen"))


def _port_ranges(parts: list) -> list:
    """Disjoint listener port ranges, one per part, each as large as that
    part needs plus an equal share of the spare ports."""
    first, last = LISTEN_PORT_FIRST, REFRESH_PORT_FIRST - 1
    needs = [_ports_needed(p) for p in parts]
    spare = (last - first + 1) - sum(needs)
    if spare < 0:
        raise PopulationError("the spec needs %d listener ports, more than the %d "
                              "available" % (sum(needs), last - first + 1))
    ranges = []
    for need in needs:
        size = need + spare // len(parts)
        ranges.append((first, first + size - 1))
        first += size
    return ranges


def _worker_main(part: Spec, ports, options: dict, hold_r: int, status_w: int) -> None:
    """Body of a worker process (forked by the holder, so in its namespace):
    build one part, report, hold it until the holder goes away.  Never returns."""
    try:
        t0 = time.monotonic()
        _raise_nofile()
        builder = _build(part, ports=ports, **options)  # noqa: F841 - keeps the sockets
        report = {"build_seconds": time.monotonic() - t0}
    except BaseException:  # noqa: BLE001 - everything must reach the holder
        report = {"error": "worker %d failed:\n%s" % (os.getpid(), traceback.format_exc())}
    try:
        _write_all(status_w, pickle.dumps(report))
        os.close(status_w)
    except OSError:
        os._exit(3)
    if "error" in report:
        os._exit(2)
    try:
        os.read(hold_r, 1)          # EOF: the holder has exited
    except BaseException:  # noqa: BLE001 - e.g. KeyboardInterrupt: just exit
        pass
    os._exit(0)


def _build_in_workers(parts: list, options: dict, keep_fds: "tuple[int, ...]") -> list:
    """Fork one worker per part, wait until each has built its part.
    Returns the write ends of the pipes the workers hold on (close them, or
    exit, to release the workers).  Raises PopulationError on any failure,
    after killing the workers."""
    pids, holds = [], []
    try:
        started = []
        for part, ports in zip(parts, _port_ranges(parts)):
            hold_r, hold_w = os.pipe()
            status_r, status_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    # Our pipes to the parent and the other workers' ends:
                    # a worker that kept them would hide EOFs.
                    for fd in keep_fds + tuple(holds) + (hold_w, status_r):
                        os.close(fd)
                finally:
                    _worker_main(part, ports, options, hold_r, status_w)
            os.close(hold_r)
            os.close(status_w)
            pids.append(pid)
            holds.append(hold_w)
            started.append(status_r)
        errors = []
        for status_r in started:
            try:
                raw = _read_all(status_r)
            finally:
                os.close(status_r)
            report = pickle.loads(raw) if raw else {"error": "a worker died without a report"}
            if "error" in report:
                errors.append(report["error"])
        if errors:
            raise PopulationError("%d of %d workers failed; first: %s"
                                  % (len(errors), len(parts), errors[0]))
        return holds
    except BaseException:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise


def _own_ehash(entries: int) -> None:
    """Go through an intermediate namespace whose tcp_child_ehash_entries
    gives the next one a private established-hash table of `entries`
    buckets (kernels >= 6.1).  Dumps and /proc/net/tcp then walk that small
    table instead of the host's global one (262144 buckets on a 24 GiB
    machine): ~20x faster counts, for tests that count thousands of times.
    On older kernels the global table is used, which is only slower."""
    _unshare_net()
    try:
        with open("/proc/sys/net/ipv4/tcp_child_ehash_entries", "w") as f:
            f.write(str(entries))
    except OSError:
        pass


def _holder_main(spec: Spec, settle_timeout: float, control_r: int, status_w: int,
                 parts: "list | None" = None, long_lived: bool = False,
                 ehash_entries: int = 0) -> None:
    """Body of the holder process; never returns (os._exit)."""
    try:
        report = {"pid": os.getpid()}
        t0 = time.monotonic()
        if ehash_entries:
            _own_ehash(ehash_entries)
        _unshare_net()
        _bring_lo_up()
        _write_sysctls(long_lived)
        _raise_nofile()
        t1 = time.monotonic()
        options = {"timeout": max(5.0, settle_timeout),
                   "defer_accept": LONG_DEFER_ACCEPT_SECONDS if long_lived else DEFER_ACCEPT_SECONDS}
        # `builder` (or the workers' pipes) keeps every socket alive: it must
        # stay referenced (this frame never returns).
        if parts is None:
            builder = _build(spec, **options)  # noqa: F841
            expected = expected_counts(spec)
        else:
            builder = _build_in_workers(parts, options, (control_r, status_w))  # noqa: F841
            expected = _sum_counts([expected_counts(p) for p in parts])
        t2 = time.monotonic()
        diff = _wait_converged(expected, settle_timeout)
        t3 = time.monotonic()
        report.update(setup_seconds=t1 - t0, build_seconds=t2 - t1, settle_seconds=t3 - t2)
        if diff:
            report["error"] = ("kernel counts did not converge to the expected ones "
                               "within %.1f s; {family: {state: (expected, actual)}}: %r"
                               % (settle_timeout, diff))
    except BaseException:  # noqa: BLE001 - everything must reach the parent
        report = {"error": "holder failed:\n" + traceback.format_exc()}
    try:
        _write_all(status_w, pickle.dumps(report))
        os.close(status_w)
    except OSError:
        os._exit(3)
    if "error" in report:
        os._exit(2)
    # Hold every socket until the parent says stop or goes away (EOF).
    try:
        os.read(control_r, 64)
    except BaseException:  # noqa: BLE001 - e.g. KeyboardInterrupt: just exit
        pass
    os._exit(0)


# --------------------------------------------------------------------------
# The public handle
# --------------------------------------------------------------------------


class Population:
    """A socket population held by a forked process in its own network
    namespace.  Use as a context manager, or call close()."""

    def __init__(self, spec: Spec, *, settle_timeout: float = 30.0,
                 workers: "int | str | None" = None, long_lived: bool = False,
                 ehash_entries: int = 0) -> None:
        """workers: None builds and holds everything in the holder (the spec
        must fit its RLIMIT_NOFILE); "auto" splits the spec over as few
        worker processes as the fd limit allows; an int N spreads it over at
        least N workers (building in parallel).
        long_lived: keep SYN_SENT and SYN_RECV for hours instead of minutes.
        ehash_entries: give the namespace its own established-hash table
        of that many buckets (see _own_ehash); 0 shares the host's."""
        self.spec = spec
        self.long_lived = long_lived
        self.ehash_entries = ehash_entries
        self.parts = None if workers is None else self._split(spec, workers)
        if self.parts is None:
            self.expected = expected_counts(spec)
        else:
            self.expected = _sum_counts([expected_counts(p) for p in self.parts])
        self.holder_pid = 0
        self.ns_path = ""
        self.timings: dict = {}
        self.fresh_until = 0.0          # time.monotonic() bound for exact counts
        self._control_w = -1
        if self.parts is None:
            self._check_fd_budget()
        self._start(settle_timeout)

    @staticmethod
    def _split(spec: Spec, workers: "int | str") -> list:
        if workers == "auto":
            return split_spec(spec)
        if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
            return split_spec(spec, parts=workers)
        raise ValueError("workers must be None, 'auto' or an int >= 1, not %r" % (workers,))

    @property
    def workers(self) -> int:
        """Number of worker processes holding sockets (0: the holder alone)."""
        return len(self.parts) if self.parts is not None else 0

    # ---- lifecycle -------------------------------------------------------

    def _check_fd_budget(self) -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        need = fds_needed(self.spec) + FD_RESERVE
        if hard != resource.RLIM_INFINITY and need > hard:
            raise PopulationError(
                "spec needs ~%d file descriptors in one holder process but the "
                "RLIMIT_NOFILE hard limit is %d (pass workers='auto' to split it "
                "over worker processes, or raise the limit)" % (need, hard))

    def _start(self, settle_timeout: float) -> None:
        control_r, control_w = os.pipe()
        status_r, status_w = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # holder
            try:
                _close_inherited_control_fds()
                os.close(control_w)
                os.close(status_r)
            finally:
                _holder_main(self.spec, settle_timeout, control_r, status_w,
                             self.parts, self.long_lived, self.ehash_entries)
        os.close(control_r)
        os.close(status_w)
        self.holder_pid = pid
        self._control_w = control_w
        _CONTROL_FDS.add(control_w)
        try:
            # Generous: the holder enforces settle_timeout itself; this only
            # guards against a hung build.
            raw = _read_all(status_r, deadline=t0 + settle_timeout + 300)
        except TimeoutError:
            self.close()
            raise PopulationError("holder %d did not report within %.0f s"
                                  % (pid, settle_timeout + 300)) from None
        finally:
            os.close(status_r)
        report = pickle.loads(raw) if raw else None
        if report is None or "error" in report:
            status = _reap(pid, 5.0)
            self.close()
            detail = report["error"] if report else "no report (%s)" % _describe_status(status)
            raise PopulationError("population %r: %s" % (self.spec, detail))
        self.timings = {k: v for k, v in report.items() if k.endswith("_seconds")}
        self.fresh_until = time.monotonic() + EXACT_FOR_SECONDS
        self.ns_path = "/proc/%d/ns/net" % pid

    def close(self) -> None:
        """Tell the holder to exit and reap it.  Idempotent."""
        if self._control_w >= 0:
            _CONTROL_FDS.discard(self._control_w)
            try:
                os.write(self._control_w, b"stop")
            except OSError:
                pass                        # holder already gone
            os.close(self._control_w)
            self._control_w = -1
        if self.holder_pid:
            if _reap(self.holder_pid, 10.0) is None:
                os.kill(self.holder_pid, signal.SIGKILL)
                _reap(self.holder_pid, 10.0)
            self.holder_pid = 0

    def __enter__(self) -> "Population":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def total(self) -> int:
        """Expected number of visible sockets, both families."""
        return sum(sum(per.values()) for per in self.expected.values())

    def is_fresh(self) -> bool:
        """False once TIME_WAIT / orphan FIN_WAIT2 sockets may start expiring."""
        return time.monotonic() < self.fresh_until

    def refresh_time_wait(self) -> float:
        """Replace the spec's TIME_WAIT sockets with new ones, exact for
        another EXACT_FOR_SECONDS; returns the seconds it took.

        The old ones are destroyed first (SOCK_DESTROY, through `ss -K`: the
        kernel needs CONFIG_INET_DIAG_DESTROY), so the counts are the
        expected ones again once this returns; while it runs they are not.
        Orphaned FIN_WAIT2 sockets cannot be refreshed this way (their peer's
        fd lives in the holder): a spec with them is refused."""
        if self.spec.orphan_fin_wait2_4:
            raise PopulationError("refresh_time_wait: orphaned FIN_WAIT2 sockets cannot "
                                  "be refreshed; use a spec without orphan_fin_wait2_4")
        t0 = time.monotonic()
        self.run(_refresh_time_wait, self.spec.time_wait4, self.spec.time_wait6)
        self.fresh_until = t0 + EXACT_FOR_SECONDS
        return time.monotonic() - t0

    # ---- running code inside the namespace ---------------------------------

    def run(self, func, *args, **kwargs):
        """Call func(*args, **kwargs) in a forked child that joined the
        population's network namespace; return its (picklable) result, or
        re-raise its exception here."""
        if not self.holder_pid:
            raise PopulationError("population is closed")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _run_child(self.ns_path, w, func, args, kwargs)  # never returns
        os.close(w)
        try:
            raw = _read_all(r)
        finally:
            os.close(r)
            status = _reap(pid, 60.0)
        return _unpack_run_result(raw, func, status)


TIME_WAIT_MASK = 1 << 6   # TCPF_TIME_WAIT: timewait socks whose substate is TIME_WAIT


def _time_wait_counts() -> "tuple[int, int]":
    return tuple(diag_counts(f, TIME_WAIT_MASK)["TIME_WAIT"] for f in FAMILIES)


def _refresh_time_wait(n4: int, n6: int, timeout: float = 10.0) -> None:
    """Body of refresh_time_wait(), in a run() child (in the namespace)."""
    subprocess.run(["ss", "-K", "-tan", "state", "time-wait"], check=True,
                   stdout=subprocess.DEVNULL)
    left = _time_wait_counts()
    if any(left):
        raise PopulationError("`ss -K state time-wait` left %r TIME_WAIT sockets: "
                              "SOCK_DESTROY unsupported by this kernel?" % (left,))
    _raise_nofile()
    # TIME_WAIT sockets hold no fd: they outlive this short-lived child.
    builder = _Builder(timeout, ports=(REFRESH_PORT_FIRST, LISTEN_PORT_LAST))
    builder.time_wait4(n4)
    builder.time_wait6(n6)
    deadline = time.monotonic() + timeout
    while _time_wait_counts() != (n4, n6):
        if time.monotonic() > deadline:
            raise PopulationError("refresh_time_wait: expected (%d, %d) TIME_WAIT "
                                  "sockets, have %r" % (n4, n6, _time_wait_counts()))
        time.sleep(0.01)


def _run_child(ns_path: str, w: int, func, args, kwargs) -> None:
    """Body of a run() child; never returns."""
    code = 0
    try:
        _close_inherited_control_fds()
        _setns_net(ns_path)
        payload = ("ok", func(*args, **kwargs), None)
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
        payload = ("error", exc, traceback.format_exc())
        code = 1
    try:
        data = pickle.dumps(payload)
    except Exception:  # the result or the exception is not picklable
        if payload[0] == "ok":
            payload = ("error", None, "result of %r is not picklable:\n%s"
                       % (func, traceback.format_exc()))
        else:
            payload = ("error", None, payload[2])
        data = pickle.dumps(payload)
        code = 1
    try:
        _write_all(w, data)
    finally:
        os._exit(code)


class ChildTraceback(Exception):
    """Carries a run() child's traceback text (as the re-raised exception's cause)."""


def _unpack_run_result(raw: bytes, func, status):
    if not raw:
        raise RuntimeError("run(%r): child died without a result (%s)"
                           % (func, _describe_status(status)))
    try:
        kind, value, tb_text = pickle.loads(raw)
    except Exception as exc:  # e.g. an exception class that does not unpickle
        raise RuntimeError("run(%r): could not unpickle the child's answer: %r"
                           % (func, exc)) from None
    if kind == "ok":
        return value
    if isinstance(value, BaseException):
        raise value from ChildTraceback("in the namespace child:\n" + tb_text)
    raise RuntimeError("run(%r) failed in the namespace child:\n%s" % (func, tb_text))

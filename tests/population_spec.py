"""What a Population is asked to build, and what it must then count.

A :class:`Spec` says how many of each scenario to create; SCENARIO_YIELDS
says what one instance of each leaves in the kernel, so
:func:`expected_counts` derives the exact per-family per-state counts from
the spec alone, never from a measurement.  :func:`split_spec` deals a large
spec out to worker processes that each fit RLIMIT_NOFILE.
"""
from __future__ import annotations

import resource
from dataclasses import asdict, dataclass, fields

# Kernel order: the TCP state number is the index + 1 (include/net/tcp_states.h).
STATES = (
    "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
)
FAMILIES = ("ipv4", "ipv6")
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
# TIME_WAIT (TCP_TIMEWAIT_LEN) and orphaned FIN_WAIT2 (tcp_fin_timeout) last
# 60 s; leave a margin for the tests that count them.
EXACT_FOR_SECONDS = 55.0
# fds the holder keeps besides the population (stdio, pipes, /proc reads, ...).
FD_RESERVE = 64

class PopulationError(RuntimeError):
    """The holder could not build (or converge) the requested population."""


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

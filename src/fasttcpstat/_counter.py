"""Counter, counts(), counts_by_port() and counts_by_cgroup(): the query API.

Arguments become one CountQuery (_query.py), read once; the Policy
(_policy.py) picks the backend and falls back; this module shapes the
tallies into {state: count}.
"""
from __future__ import annotations

from . import _netlink, _sizing
from ._netns import Netns
from ._policy import (AUTO_BACKENDS, CLOSED, ENV_BACKEND, Policy, auto_order, open_backend,
                      sized_order)
from ._query import (
    MAX_BY_PORT,
    SIDES,
    CountQuery,
    check_side,
    parse_by_cgroup,
    parse_by_family,
    parse_by_port,
    parse_counts,
)
from ._states import FAMILIES, FAMILY_IPV4, FAMILY_IPV6, shape_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional, Tuple

    from ._backend import Backend, Pair
    from ._cgroup import CgroupNames
    from ._netns import NetnsSpec
    from ._ports import PortSpec

    StateCounts = Dict[str, int]
else:
    StateCounts = dict  # importable name for annotations elsewhere

BACKENDS = ("auto", "bpf", "netlink", "procfs", "pinned", "walk")

__all__ = ["AUTO_BACKENDS", "BACKENDS", "ENV_BACKEND", "MAX_BY_PORT", "SIDES",
           "Counter", "StateCounts", "auto_order", "counts", "counts_by_cgroup",
           "counts_by_port"]

#: The keys of counts_by_cgroup() that are not cgroup paths.
UNOWNED = "unowned"
OVERFLOW = "overflow"
UNKNOWN_CGROUP = "cgroup-id:{}"


# The old name, still imported by tests/test_hardening_properties.py.
_check_side = check_side


def _check_backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
            f"not {type(backend).__name__}"
        )
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}"
        )
    return backend


class Counter:
    """A reusable TCP state counter for polling loops.

    ``Counter(backend="auto")`` sets up the fastest backend that works here
    once and reuses it: for the namespace's size (_sizing.py) the walk
    (Linux >= 6.2, a table with enough sockets) or the BPF iterator (root,
    or CAP_BPF + CAP_PERFMON), else a netlink sock_diag socket, else
    /proc/net/tcp{,6}; it says why it did not get its first choice in
    :attr:`fallback_reason`.  It re-weighs walk and bpf as the namespace
    grows or shrinks (at most every 10 s).  The
    environment variable FASTTCPSTAT_BACKEND overrides the order "auto"
    tries (see :func:`auto_order`).  Use it as a context manager or call
    :meth:`close`.

    netns: count another network namespace: a path (/var/run/netns/NAME,
        /proc/PID/ns/net) or the pid of a process in it.  bpf and netlink
        need CAP_SYS_ADMIN for that; the procfs backend reads /proc/PID/net
        without switching.  Without netns, a Counter counts the namespace
        of the thread that created it.
    request: the netlink request form ("auto", "v2", "legacy").
    path: with backend="pinned", the pinned iterator file to read.

    Counts from several threads are serialised.
    """

    # The module functions count once: "auto" then weighs bpf's setup.
    _one_count = False
    _breakdown = False

    def __init__(self, backend: str = "auto", *, netns: NetnsSpec = None,
                 request: str = "auto", path: Optional[str] = None) -> None:
        self._requested = _check_backend(backend)
        _netlink.check_request(request)
        if request != "auto" and self._requested not in ("netlink", "auto"):
            raise ValueError("request applies to the netlink backend only")
        if (path is not None) != (self._requested == "pinned"):
            raise ValueError("path goes with backend='pinned', and only with it")
        self._request = request
        self._path = path
        self._cgroup_names: Optional[CgroupNames] = None
        self._netns = Netns(netns) if netns is not None else None
        try:
            candidates, reason, switchable = self._candidates()
            target = self._netns

            def opener(name: str) -> Backend:
                # Not a bound method: the policy must not hold the Counter
                # (a cycle would keep every closed one for the collector).
                return open_backend(name, target, request, path)

            self._policy = Policy(opener, candidates, netns=target, reason=reason,
                                  switchable=switchable,
                                  home=_sizing.netns_inode() if switchable else 0)
        except BaseException:
            if self._netns is not None:
                self._netns.close()
            raise

    def _candidates(self) -> Tuple[List[str], Optional[str], List[str]]:
        """The backends to try, in order, why the first choices are
        already out (or None), and those a long-lived "auto" Counter may
        move between as its namespace's size changes."""
        if self._requested != "auto":
            return [self._requested], None, []
        if _netlink.IMPORT_ERROR is not None and "procfs" in auto_order():
            # A source install without a compiler: only /proc is left.
            return ["procfs"], f"the C extension is not available ({_netlink.IMPORT_ERROR})", []
        # The cheapest first for this namespace's size (_sizing.py): the
        # walk on a big table, netlink where one count cannot pay back a
        # program load; the rest of the order stays as the fallback.
        order, switchable = sized_order(self._netns, self._one_count, self._breakdown)
        return order, None, switchable

    @property
    def fallback_reason(self) -> Optional[str]:
        """Why "auto" is not using its first choice, or None."""
        return self._policy.fallback_reason

    @property
    def _backend(self) -> Backend:
        # The backend in use; tests look inside it.
        return self._policy.backend

    @property
    def backend(self) -> str:
        """The backend in use: "walk", "bpf", "netlink", "procfs" or "pinned"."""
        return self._policy.backend.name

    @property
    def request(self) -> Optional[str]:
        """The netlink request form setting, or None for other backends."""
        return self._policy.backend.request

    @property
    def closed(self) -> bool:
        """True after close(): every count raises ValueError."""
        return self._policy.closed

    def counts(
        self,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
        *,
        local_ports: PortSpec = None,
        remote_ports: PortSpec = None,
    ) -> StateCounts:
        """Count TCP sockets per state; see :func:`fasttcpstat.counts`."""
        return self._count(parse_counts(family, states, local_ports, remote_ports))

    def _count(self, query: CountQuery) -> StateCounts:
        """counts() for an already parsed query."""
        if self.closed:
            raise ValueError(CLOSED)
        if not query.names:
            return {}
        tally = self._policy.count(query)
        return shape_result((tally.v4, tally.v6), query.families, query.names)

    def counts_by_port(
        self,
        ports: Iterable[int],
        side: str = "local",
        *,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
    ) -> Dict[int, StateCounts]:
        """Per-port counts in one dump; see :func:`fasttcpstat.counts_by_port`."""
        return self._count_by_port(parse_by_port(ports, side, family, states))

    def _count_by_port(self, query: CountQuery) -> Dict[int, StateCounts]:
        """counts_by_port() for an already parsed query."""
        if self.closed:
            raise ValueError(CLOSED)
        if not query.names:
            return {port: {} for port in query.by_port}
        tally = self._policy.count(query)
        return {
            port: shape_result(pair, query.families, query.names)
            for port, pair in zip(query.by_port, tally.per_port)
        }

    def counts_by_family(
        self,
        states: Optional[Iterable[str]] = None,
        *,
        local_ports: PortSpec = None,
        remote_ports: PortSpec = None,
    ) -> Dict[str, StateCounts]:
        """``{"ipv4": {state: count}, "ipv6": {...}}`` from one dump.

        The same as counts(family="ipv4") and counts(family="ipv6"), but
        the kernel walks its tables once, and both halves come from the
        same walk.
        """
        return self._count_by_family(parse_by_family(states, local_ports, remote_ports))

    def _count_by_family(self, query: CountQuery) -> Dict[str, StateCounts]:
        """counts_by_family() for an already parsed query (both families)."""
        if self.closed:
            raise ValueError(CLOSED)
        if not query.names:
            return {family: {} for family in FAMILIES}
        tally = self._policy.count(query)
        pair = (tally.v4, tally.v6)
        return {
            "ipv4": shape_result(pair, FAMILY_IPV4, query.names),
            "ipv6": shape_result(pair, FAMILY_IPV6, query.names),
        }

    def counts_by_cgroup(
        self,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
        *,
        local_ports: PortSpec = None,
        remote_ports: PortSpec = None,
    ) -> Dict[str, StateCounts]:
        """Counts per owner cgroup in one dump; see
        :func:`fasttcpstat.counts_by_cgroup`."""
        return self._count_by_cgroup(
            parse_by_cgroup(family, states, local_ports, remote_ports))

    def _count_by_cgroup(self, query: CountQuery) -> Dict[str, StateCounts]:
        """counts_by_cgroup() for an already parsed query."""
        if self.closed:
            raise ValueError(CLOSED)
        if self._cgroup_names is None:
            from ._cgroup import CgroupNames  # re and os.scandir: not at import

            self._cgroup_names = CgroupNames()
        if not query.names:
            return {UNOWNED: {}}
        tally = self._policy.count(query)
        assert tally.per_cgroup is not None
        by_id, unowned, overflow = tally.per_cgroup
        paths = self._cgroup_names.paths(by_id)
        result: Dict[str, StateCounts] = {}
        for cgroup_id in sorted(by_id, key=lambda i: (paths[i] is None, paths[i] or "", i)):
            path = paths[cgroup_id]
            key = UNKNOWN_CGROUP.format(cgroup_id) if path is None else path
            result[key] = shape_result(by_id[cgroup_id], query.families, query.names)
        result[UNOWNED] = shape_result(unowned, query.families, query.names)
        if any(map(any, overflow)):
            result[OVERFLOW] = shape_result(overflow, query.families, query.names)
        return result

    def close(self) -> None:
        """Release the socket or program and the namespace.  Idempotent;
        every count afterwards raises ValueError."""
        self._policy.close()
        if self._netns is not None:
            self._netns.close()

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fasttcpstat.Counter backend={self.backend!r}>"


class _OneCount(Counter):
    """The Counter of counts(): used for one count."""

    _one_count = True


class _OneBreakdown(_OneCount):
    """The Counter of counts_by_port(): one per-port count."""

    _breakdown = True


def counts(
    *,
    family: Optional[str] = None,
    states: Optional[Iterable[str]] = None,
    backend: str = "auto",
    local_ports: PortSpec = None,
    remote_ports: PortSpec = None,
    netns: NetnsSpec = None,
    path: Optional[str] = None,
) -> StateCounts:
    """Count the TCP sockets of this network namespace per state.

    Returns ``{state: count}`` for every name of :data:`STATES` (zeros
    included) in kernel order, or exactly the names given in `states`.

    family: None (IPv4 and IPv6), "ipv4" or "ipv6".  IPv4 peers of
        dual-stack IPv6 sockets (v4-mapped) belong to "ipv6", as in
        /proc/net/tcp6.
    states: an iterable of state names (case-insensitive), or None.
    backend: "auto" (the cheapest here first, then bpf, netlink, /proc;
        see auto_order()), "walk", "bpf", "netlink", "procfs", or "pinned"
        (with `path`).  For this one count, "auto" weighs the set-up too
        (_sizing.py): netlink on a small, sparse table, the walk on a big,
        full one, else bpf.
    local_ports, remote_ports: count only sockets whose local (remote) port
        is one of these: a port, a (low, high) inclusive range, a range(),
        or a list of those.  Both given: both must hold.  Netlink applies
        the filter in the kernel (inet_diag bytecode).
    netns: another network namespace, by path or pid (see Counter).
    path: the file pinned by fasttcpstat.pin(), for backend="pinned".

    Semantics are those of ``ss -tan``: request sockets count as SYN_RECV,
    timewait sockets by their sub-state (an orphaned FIN_WAIT2 is
    FIN_WAIT2), bound-but-inactive sockets are not counted.
    """
    # Parsed before opening anything, so bad arguments cost nothing; and
    # once, so iterators are read once.
    query = parse_counts(family, states, local_ports, remote_ports)
    with _OneCount(backend, netns=netns, path=path) as counter:
        return counter._count(query)


def counts_by_port(
    ports: Iterable[int],
    side: str = "local",
    *,
    family: Optional[str] = None,
    states: Optional[Iterable[str]] = None,
    backend: str = "auto",
    netns: NetnsSpec = None,
) -> Dict[int, StateCounts]:
    """Count TCP sockets per state for each of `ports`, in one dump.

    Returns ``{port: {state: count}}`` with every listed port (in the order
    given, duplicates dropped) and every state, zeros included.  `side`:
    "local" keys sockets on their local port (a server's listening port),
    "remote" on their peer's port.  At most MAX_BY_PORT (1024) ports.
    The kernel drops sockets on other ports before building any message;
    the breakdown is tallied in C.
    """
    query = parse_by_port(ports, side, family, states)
    with _OneBreakdown(backend, netns=netns) as counter:
        return counter._count_by_port(query)


def counts_by_cgroup(
    *,
    family: Optional[str] = None,
    states: Optional[Iterable[str]] = None,
    local_ports: PortSpec = None,
    remote_ports: PortSpec = None,
    netns: NetnsSpec = None,
) -> Dict[str, StateCounts]:
    """Count the TCP sockets of a network namespace per state, broken
    down by the cgroup (v2) of each socket's owner, in one netlink dump.

    Returns ``{path: {state: count}}``: paths relative to the cgroup2 mount
    (``/system.slice/nginx.service``; on hybrid hosts the mount at
    /sys/fs/cgroup/unified), in path order, only cgroups that own a
    counted socket; then ``"unowned"`` (always present): timewait and
    request sockets, which the kernel keeps without an owner.  A socket
    belongs to the cgroup of the process that created it (an accepted one
    to its listener's).  A cgroup removed since (sockets can outlive it)
    is reported as ``"cgroup-id:<id>"``; sockets of cgroups beyond
    _query.MAX_BY_CGROUP (4096) are summed under ``"overflow"`` (present only
    then).  The sum over all keys equals counts() with the same arguments.

    The arguments are those of counts().  This one-shot call uses netlink
    (a Counter on the bpf backend reads the same ids in the kernel): the
    kernel sends each socket's cgroup id (INET_DIAG_CGROUP_ID) since Linux
    5.7; older kernels raise OSError(EOPNOTSUPP).  Works unprivileged in one's own
    namespace.  Raises FileNotFoundError when no cgroup2 is mounted.
    """
    query = parse_by_cgroup(family, states, local_ports, remote_ports)
    with _OneBreakdown("netlink", netns=netns) as counter:
        return counter._count_by_cgroup(query)

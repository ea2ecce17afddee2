"""Counter, counts() and counts_by_port(): backend selection, fallback,
argument checking and result shaping."""
from __future__ import annotations

import errno
import os
from typing import Any, Dict, Iterable, List, Optional, Union

from . import _netlink
from ._netns import Netns, NetnsSpec
from ._ports import PortSpec, parse_port_list, parse_ports
from ._bpf import BpfBackend, PinnedBackend
from ._procfs import ProcfsBackend
from ._states import (
    FAMILIES,
    FAMILY_BOTH,
    FAMILY_IPV4,
    FAMILY_IPV6,
    parse_family,
    parse_states,
    shape_result,
    states_mask,
)

BACKENDS = ("auto", "bpf", "netlink", "procfs", "pinned")
AUTO_BACKENDS = ("bpf", "netlink", "procfs")
ENV_BACKEND = "FASTTCPSTAT_BACKEND"
SIDES = ("local", "remote")

#: The most ports one counts_by_port() call breaks down (one dump, tallied
#: in C; the kernel's filter program grows 20 bytes a port).
MAX_BY_PORT = 1024

# Errors that mean "netlink sock_diag is not available to us here" (a
# seccomp or LSM policy, a kernel without the module, a container that
# forbids it) rather than a bug or a transient failure.
_NETLINK_REFUSALS = frozenset(
    {
        errno.EPERM,
        errno.EACCES,
        errno.EPROTONOSUPPORT,
        errno.EAFNOSUPPORT,
        errno.ESOCKTNOSUPPORT,
        errno.EOPNOTSUPP,
        errno.ENOENT,
        errno.EINVAL,
        errno.ENOSYS,
    }
)

Backend = Union[_netlink.NetlinkBackend, ProcfsBackend, BpfBackend, PinnedBackend]


def auto_order() -> List[str]:
    """The backends "auto" tries, in order.

    Default: bpf, netlink, procfs.  FASTTCPSTAT_BACKEND changes it for
    sites with a policy: a list of names ("netlink,procfs") is the order to
    try, so a single name ("netlink") forces that backend; names prefixed
    with "-" ("-bpf") are left out of the default order.
    """
    value = os.environ.get(ENV_BACKEND, "").strip()
    if not value:
        return list(AUTO_BACKENDS)
    chosen: List[str] = []
    excluded = set()
    for item in (part.strip() for part in value.split(",")):
        name = item.lstrip("-!")
        if name not in AUTO_BACKENDS:
            raise ValueError(
                f"{ENV_BACKEND}={value!r}: unknown backend {name!r}; allowed: "
                f"{', '.join(AUTO_BACKENDS)}, each optionally prefixed with '-' to exclude it"
            )
        if item != name:
            excluded.add(name)
        else:
            chosen.append(name)
    if chosen and excluded:
        raise ValueError(f"{ENV_BACKEND}={value!r}: list backends to use or to exclude, not both")
    order = chosen or [name for name in AUTO_BACKENDS if name not in excluded]
    if not order:
        raise ValueError(f"{ENV_BACKEND}={value!r} excludes every backend")
    return order
StateCounts = Dict[str, int]


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


def _check_side(side: object) -> bool:
    """True for "remote"."""
    if not isinstance(side, str):
        raise TypeError(f"side must be 'local' or 'remote', not {type(side).__name__}")
    if side not in SIDES:
        raise ValueError(f"side must be 'local' or 'remote', not {side!r}")
    return side == "remote"


class Counter:
    """A reusable TCP state counter for polling loops.

    ``Counter(backend="auto")`` sets up the fastest backend that works here
    once and reuses it: the BPF iterator (root, or CAP_BPF + CAP_PERFMON),
    else a netlink sock_diag socket, else /proc/net/tcp{,6}; it says why
    it did not get its first choice in :attr:`fallback_reason`.  The
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

    def __init__(self, backend: str = "auto", *, netns: NetnsSpec = None,
                 request: str = "auto", path: "Optional[str]" = None) -> None:
        self._requested = _check_backend(backend)
        _netlink.check_request(request)
        if request != "auto" and self._requested not in ("netlink", "auto"):
            raise ValueError("request applies to the netlink backend only")
        if (path is not None) != (self._requested == "pinned"):
            raise ValueError("path goes with backend='pinned', and only with it")
        self._request = request
        self._path = path
        #: Why "auto" is not using its first choice, or None.
        self.fallback_reason: Optional[str] = None
        self._netns = Netns(netns) if netns is not None else None
        self._backend: Backend
        self._by_port_backend: Optional[Backend] = None
        self._candidates: List[str] = []
        try:
            if self._requested == "auto":
                self._candidates = auto_order()
                if _netlink.IMPORT_ERROR is not None and "procfs" in self._candidates:
                    # A source install without a compiler: only /proc is left.
                    self._candidates = ["procfs"]
                    self.fallback_reason = (
                        f"the C extension is not available ({_netlink.IMPORT_ERROR})"
                    )
                self._backend = self._open_first()
            else:
                self._backend = self._open(self._requested)
        except BaseException:
            if self._netns is not None:
                self._netns.close()
            raise

    def _open(self, name: str) -> Backend:
        if name == "procfs":
            if self._netns is not None:
                if self._netns.pid is None:
                    self._netns.open()  # a path: read through a visiting thread
                else:
                    self._netns.check_proc_net()
            return ProcfsBackend(netns=self._netns)
        if name == "pinned":
            assert self._path is not None
            return PinnedBackend(self._path, netns=self._netns)
        if name == "bpf":
            return BpfBackend(netns=self._netns)
        return _netlink.NetlinkBackend(self._request, netns=self._netns)

    def _refused(self, name: str, exc: BaseException) -> bool:
        """Whether "auto" may move on from `name` after `exc`."""
        if isinstance(exc, ImportError):
            return True  # no C extension: only procfs is left
        if not isinstance(exc, OSError):
            return False
        if name == "bpf":
            # The iterator is an optimisation: any kernel refusal (no BTF,
            # no iterator, no privilege, a verifier this program does not
            # suit) leaves netlink, which counts the same.
            return exc.errno != errno.EINTR
        if exc.errno not in _NETLINK_REFUSALS:
            return False
        # Another namespace by path (no pid) is out of reach of /proc
        # without switching either: nothing to fall back to.
        return not (self._netns is not None and self._netns.pid is None)

    def _open_first(self) -> Backend:
        """Open the first of the remaining candidates that works."""
        while True:
            name = self._candidates.pop(0)
            try:
                return self._open(name)
            except (OSError, ImportError) as exc:
                if not self._candidates or not self._refused(name, exc):
                    raise
                self._note_fallback(name, exc)

    def _note_fallback(self, name: str, exc: BaseException) -> None:
        reason = f"{name}: {exc}"
        self.fallback_reason = f"{self.fallback_reason}; {reason}" if self.fallback_reason else reason

    @property
    def backend(self) -> str:
        """The backend in use: "bpf", "netlink", "procfs" or "pinned"."""
        return self._backend.name

    @property
    def request(self) -> Optional[str]:
        """The netlink request form setting, or None for other backends."""
        return getattr(self._backend, "request", None)

    def _count(self, families: int, mask: int, **options: Any) -> Any:
        while True:
            try:
                return self._backend.count(families, mask, **options)
            except OSError as exc:
                # Set up fine, refused at the first count (a dump refused by
                # policy): "auto" moves on to the next backend.
                if not self._candidates or not self._refused(self._backend.name, exc):
                    raise
                self._backend.close()
                self._note_fallback(self._backend.name, exc)
                self._backend = self._open_first()

    def counts(
        self,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
        *,
        local_ports: PortSpec = None,
        remote_ports: PortSpec = None,
    ) -> StateCounts:
        """Count TCP sockets per state; see :func:`fasttcpstat.counts`."""
        families = parse_family(family)
        names = parse_states(states)
        local = parse_ports(local_ports, "local_ports")
        remote = parse_ports(remote_ports, "remote_ports")
        if not names:
            return {}
        tallies = self._count(families, states_mask(names), local=local, remote=remote)
        return shape_result(tallies, families, names)

    def counts_by_port(
        self,
        ports: Iterable[int],
        side: str = "local",
        *,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
    ) -> Dict[int, StateCounts]:
        """Per-port counts in one dump; see :func:`fasttcpstat.counts_by_port`."""
        port_list = parse_port_list(ports, "ports", MAX_BY_PORT)
        by_remote = _check_side(side)
        families = parse_family(family)
        names = parse_states(states)
        if not names:
            return {port: {} for port in port_list}
        ranges = parse_ports(list(port_list), "ports")
        filters = {"remote": ranges} if by_remote else {"local": ranges}
        options: Dict[str, Any] = dict(by_port=port_list, by_remote=by_remote, **filters)
        if self._backend.name in ("bpf", "pinned"):
            # The iterator programs count totals; the per-port breakdown
            # is netlink's (tallied in C from one filtered dump).
            _, per_port = self._by_port().count(families, states_mask(names), **options)
        else:
            _, per_port = self._count(families, states_mask(names), **options)
        return {
            port: shape_result(tallies, families, names)
            for port, tallies in zip(port_list, per_port)
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
        names = parse_states(states)
        local = parse_ports(local_ports, "local_ports")
        remote = parse_ports(remote_ports, "remote_ports")
        if not names:
            return {family: {} for family in FAMILIES}
        tallies = self._count(FAMILY_BOTH, states_mask(names), local=local, remote=remote)
        return {
            "ipv4": shape_result(tallies, FAMILY_IPV4, names),
            "ipv6": shape_result(tallies, FAMILY_IPV6, names),
        }

    def _by_port(self) -> Backend:
        if self._by_port_backend is None:
            try:
                self._by_port_backend = self._open("netlink")
            except (OSError, ImportError) as exc:
                if not self._refused("netlink", exc):
                    raise
                self._by_port_backend = self._open("procfs")
        return self._by_port_backend

    def close(self) -> None:
        """Release the socket or program and the namespace.  Idempotent."""
        self._backend.close()
        if self._by_port_backend is not None:
            self._by_port_backend.close()
        if self._netns is not None:
            self._netns.close()

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fasttcpstat.Counter backend={self.backend!r}>"


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
    backend: "auto" (bpf, else netlink, else /proc; see auto_order()),
        "bpf", "netlink", "procfs", or "pinned" (with `path`).
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
    # Validate before opening anything, so bad arguments cost nothing.
    parse_family(family)
    parse_states(states)
    parse_ports(local_ports, "local_ports")
    parse_ports(remote_ports, "remote_ports")
    with Counter(backend, netns=netns, path=path) as counter:
        return counter.counts(family=family, states=states,
                              local_ports=local_ports, remote_ports=remote_ports)


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
    parse_port_list(ports, "ports", MAX_BY_PORT)
    _check_side(side)
    parse_family(family)
    parse_states(states)
    with Counter(backend, netns=netns) as counter:
        return counter.counts_by_port(ports, side, family=family, states=states)

"""Counter, counts() and counts_by_port(): backend selection, fallback,
argument checking and result shaping."""
from __future__ import annotations

import errno
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

from . import _netlink
from ._netns import Netns, NetnsSpec, permission_message
from ._ports import PortSpec, parse_port_list, parse_ports
from ._procfs import ProcfsBackend
from ._states import parse_family, parse_states, shape_result, states_mask

BACKENDS = ("auto", "netlink", "procfs")
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

Backend = Union[_netlink.NetlinkBackend, ProcfsBackend]
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

    ``Counter(backend="auto")`` opens a netlink sock_diag socket once and
    reuses it; where netlink is refused it falls back to /proc/net/tcp{,6}
    and says why in :attr:`fallback_reason`.  Use it as a context manager
    or call :meth:`close`.

    netns: count another network namespace: a path (/var/run/netns/NAME,
        /proc/PID/ns/net) or the pid of a process in it.  Netlink needs
        CAP_SYS_ADMIN for that; the procfs backend reads /proc/PID/net
        without switching.  Without netns, the netlink socket counts the
        namespace of the thread that created the Counter.

    Counts from several threads are serialised.
    """

    def __init__(self, backend: str = "auto", *, netns: NetnsSpec = None,
                 request: str = "auto") -> None:
        self._requested = _check_backend(backend)
        _netlink.check_request(request)
        #: Why "auto" is not using netlink, or None.
        self.fallback_reason: Optional[str] = None
        self._netns = Netns(netns) if netns is not None else None
        self._backend: Backend
        try:
            if self._requested == "procfs":
                if request != "auto":
                    raise ValueError("request applies to the netlink backend only")
                self._backend = self._open_procfs()
            elif self._requested == "netlink":
                self._backend = self._open_netlink(request)
            else:
                self._backend = self._open_auto(request)
        except BaseException:
            if self._netns is not None:
                self._netns.close()
            raise

    def _open_procfs(self) -> ProcfsBackend:
        if self._netns is not None:
            if self._netns.pid is None:
                self._netns.open()  # a path: read through a visiting thread
            else:
                self._netns.check_proc_net()
        return ProcfsBackend(netns=self._netns)

    def _open_netlink(self, request: str) -> _netlink.NetlinkBackend:
        try:
            return _netlink.NetlinkBackend(request, netns=self._netns)
        except PermissionError as exc:
            if self._netns is None:
                raise
            raise PermissionError(exc.errno, permission_message(self._netns, exc)) from exc

    def _open_auto(self, request: str) -> Backend:
        if _netlink.IMPORT_ERROR is not None:
            self.fallback_reason = (
                f"the C extension is not available ({_netlink.IMPORT_ERROR})"
            )
            return self._open_procfs()
        try:
            return self._open_netlink(request)
        except OSError as exc:
            if exc.errno not in _NETLINK_REFUSALS:
                raise
            # Another namespace by path (no pid) is out of reach of /proc
            # without switching either: nothing to fall back to.
            if self._netns is not None and self._netns.pid is None:
                raise
            self._fall_back(exc)
            return self._open_procfs()

    def _fall_back(self, exc: OSError) -> None:
        self.fallback_reason = f"netlink sock_diag refused: {exc}"

    @property
    def backend(self) -> str:
        """The backend in use: "netlink" or "procfs"."""
        return self._backend.name

    @property
    def request(self) -> Optional[str]:
        """The netlink request form setting, or None for procfs."""
        return getattr(self._backend, "request", None)

    def _count(self, families: int, mask: int, **options: Any) -> Any:
        try:
            return self._backend.count(families, mask, **options)
        except OSError as exc:
            if (self._requested != "auto" or self._backend.name != "netlink"
                    or exc.errno not in _NETLINK_REFUSALS):
                raise
            if self._netns is not None and self._netns.pid is None:
                raise
            # The socket opened but the kernel refused the dump.
            self._backend.close()
            self._fall_back(exc)
            self._backend = self._open_procfs()
            return self._backend.count(families, mask, **options)

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
        _, per_port = self._count(families, states_mask(names), by_port=port_list,
                                  by_remote=by_remote, **filters)
        return {
            port: shape_result(tallies, families, names)
            for port, tallies in zip(port_list, per_port)
        }

    def close(self) -> None:
        """Release the netlink socket and the namespace.  Idempotent."""
        self._backend.close()
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
) -> StateCounts:
    """Count the TCP sockets of this network namespace per state.

    Returns ``{state: count}`` for every name of :data:`STATES` (zeros
    included) in kernel order, or exactly the names given in `states`.

    family: None (IPv4 and IPv6), "ipv4" or "ipv6".  IPv4 peers of
        dual-stack IPv6 sockets (v4-mapped) belong to "ipv6", as in
        /proc/net/tcp6.
    states: an iterable of state names (case-insensitive), or None.
    backend: "auto" (netlink, else /proc), "netlink" or "procfs".
    local_ports, remote_ports: count only sockets whose local (remote) port
        is one of these: a port, a (low, high) inclusive range, a range(),
        or a list of those.  Both given: both must hold.  Netlink applies
        the filter in the kernel (inet_diag bytecode).
    netns: another network namespace, by path or pid (see Counter).

    Semantics are those of ``ss -tan``: request sockets count as SYN_RECV,
    timewait sockets by their sub-state (an orphaned FIN_WAIT2 is
    FIN_WAIT2), bound-but-inactive sockets are not counted.
    """
    # Validate before opening anything, so bad arguments cost nothing.
    parse_family(family)
    parse_states(states)
    parse_ports(local_ports, "local_ports")
    parse_ports(remote_ports, "remote_ports")
    with Counter(backend, netns=netns) as counter:
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

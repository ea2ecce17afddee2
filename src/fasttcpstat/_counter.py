"""Counter and counts(): backend selection, fallback, result shaping."""
from __future__ import annotations

import errno
from typing import Dict, Iterable, Optional, Union

from . import _netlink
from ._procfs import ProcfsBackend
from ._states import parse_family, parse_states, shape_result, states_mask

BACKENDS = ("auto", "netlink", "procfs")

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

    ``Counter(backend="auto")`` opens a netlink sock_diag socket once and
    reuses it; where netlink is refused it falls back to /proc/net/tcp{,6}
    and says why in :attr:`fallback_reason`.  Use it as a context manager
    or call :meth:`close`.

    The netlink socket counts the network namespace of the thread that
    created the Counter.  Counts from several threads are serialised.
    """

    def __init__(self, backend: str = "auto", *, request: str = "auto") -> None:
        self._requested = _check_backend(backend)
        #: Why "auto" is not using netlink, or None.
        self.fallback_reason: Optional[str] = None
        self._backend: Backend
        if self._requested == "procfs":
            if request != "auto":
                raise ValueError("request applies to the netlink backend only")
            self._backend = ProcfsBackend()
        elif self._requested == "netlink":
            self._backend = _netlink.NetlinkBackend(request)
        else:
            self._backend = self._open_auto(request)

    def _open_auto(self, request: str) -> Backend:
        if _netlink.IMPORT_ERROR is not None:
            self.fallback_reason = (
                f"the C extension is not available ({_netlink.IMPORT_ERROR})"
            )
            return ProcfsBackend()
        try:
            return _netlink.NetlinkBackend(request)
        except OSError as exc:
            if exc.errno not in _NETLINK_REFUSALS:
                raise
            self._fall_back(exc)
            return ProcfsBackend()

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

    def counts(
        self,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
    ) -> Dict[str, int]:
        """Count TCP sockets per state; see :func:`fasttcpstat.counts`."""
        families = parse_family(family)
        names = parse_states(states)
        if not names:
            return {}
        mask = states_mask(names)
        try:
            tallies = self._backend.count(families, mask)
        except OSError as exc:
            if self._requested != "auto" or self._backend.name != "netlink":
                raise
            if exc.errno not in _NETLINK_REFUSALS:
                raise
            # The socket opened but the kernel refused the dump.
            self._backend.close()
            self._fall_back(exc)
            self._backend = ProcfsBackend()
            tallies = self._backend.count(families, mask)
        return shape_result(tallies, families, names)

    def close(self) -> None:
        """Release the netlink socket.  Idempotent."""
        self._backend.close()

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
) -> Dict[str, int]:
    """Count the TCP sockets of this network namespace per state.

    Returns ``{state: count}`` for every name of :data:`STATES` (zeros
    included) in kernel order, or exactly the names given in `states`.

    family: None (IPv4 and IPv6), "ipv4" or "ipv6".  IPv4 peers of
        dual-stack IPv6 sockets (v4-mapped) belong to "ipv6", as in
        /proc/net/tcp6.
    states: an iterable of state names (case-insensitive), or None.
    backend: "auto" (netlink, else /proc), "netlink" or "procfs".

    Semantics are those of ``ss -tan``: request sockets count as SYN_RECV,
    timewait sockets by their sub-state (an orphaned FIN_WAIT2 is
    FIN_WAIT2), bound-but-inactive sockets are not counted.
    """
    # Validate before opening anything, so bad arguments cost nothing.
    parse_family(family)
    parse_states(states)
    with Counter(backend) as counter:
        return counter.counts(family=family, states=states)

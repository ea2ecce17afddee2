"""Which backend counts, and what happens when the kernel refuses one.

:class:`Policy` owns the backends of one Counter: the one in use, the one
that breaks counts down per port when that one cannot, and the candidates
"auto" has not tried yet.  All of that changes only under its lock, and a
backend it replaces or closes is closed only once no count holds it
(Lease), so threads that see a refusal at the same moment move on once,
together, and never close a backend under another thread's count.
"""
from __future__ import annotations

import errno
import os
import time

from . import _netlink, _sizing
from ._backend import Lease
from ._forklock import ForkSafeLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Collection, List, Optional, Set, Tuple

    from ._backend import Backend, Tally
    from ._netns import Netns
    from ._query import CountQuery

ENV_BACKEND = "FASTTCPSTAT_BACKEND"
AUTO_BACKENDS = ("bpf", "netlink", "procfs")
# Named in FASTTCPSTAT_BACKEND; "auto" puts it first only where _sizing
# says it costs less (one namespace) or for counts_all_netns().
OPT_IN_BACKENDS = ("walk",)
CLOSED = "I/O operation on a closed Counter"

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


def _env_order() -> Tuple[List[str], Set[str]]:
    """FASTTCPSTAT_BACKEND read: the backends listed to use, in order, and
    those listed to leave out (one of the two is empty)."""
    value = os.environ.get(ENV_BACKEND, "").strip()
    chosen: List[str] = []
    excluded: Set[str] = set()
    if not value:
        return chosen, excluded
    for item in (part.strip() for part in value.split(",")):
        name = item.lstrip("-!")
        if name not in AUTO_BACKENDS + OPT_IN_BACKENDS:
            raise ValueError(
                f"{ENV_BACKEND}={value!r}: unknown backend {name!r}; allowed: "
                f"{', '.join(AUTO_BACKENDS + OPT_IN_BACKENDS)}, each optionally "
                "prefixed with '-' to exclude it"
            )
        if item != name:
            excluded.add(name)
        else:
            chosen.append(name)
    if chosen and excluded:
        raise ValueError(f"{ENV_BACKEND}={value!r}: list backends to use or to exclude, not both")
    if not chosen and not set(AUTO_BACKENDS) - excluded:
        raise ValueError(f"{ENV_BACKEND}={value!r} excludes every backend")
    return chosen, excluded


def auto_order() -> List[str]:
    """The backends "auto" tries, in order.

    Default: bpf, netlink, procfs.  FASTTCPSTAT_BACKEND changes it for
    sites with a policy: a list of names ("netlink,procfs") is the order to
    try, so a single name ("netlink") forces that backend; names prefixed
    with "-" ("-bpf") are left out of the default order.
    """
    chosen, excluded = _env_order()
    return chosen or [name for name in AUTO_BACKENDS if name not in excluded]


def sized_order(netns: Optional[Netns], one_count: bool, breakdown: bool
                ) -> Tuple[List[str], List[str]]:
    """The order "auto" tries for a Counter (one_count: counts() and
    counts_by_port(); breakdown: the latter), first the cheapest here
    (_sizing), then the rest of auto_order(); and the backends a reused
    Counter may move between as its namespace grows or shrinks (empty:
    it stays where it is)."""
    chosen, excluded = _env_order()  # read once: a one-shot count pays for this
    order = chosen or [name for name in AUTO_BACKENDS if name not in excluded]
    if chosen or netns is not None:
        # A site's explicit order is kept as it is; another namespace's
        # sizes are not read from here.
        return order, []
    names: List[str] = [n for n in ("walk", "bpf", "netlink") if n in order or
                        (n == "walk" and n not in excluded)]
    if breakdown:
        first = "netlink"  # per-port breakdowns are netlink's anyway
    elif one_count:
        first = _sizing.one_count_backend(names)
    else:
        first = _sizing.choose(names, one_shot=False)
    switchable: List[str] = [] if one_count else names
    if first in ("", order[0]):
        return order, switchable
    return [first] + [n for n in order if n != first], switchable


def auto_walk() -> bool:
    """Whether "auto" of counts_all_netns() tries the walk first: unless
    FASTTCPSTAT_BACKEND leaves it out ("-walk") or lists backends without it."""
    chosen, excluded = _env_order()
    return "walk" in chosen if chosen else "walk" not in excluded


class Policy:
    """The backends of one Counter, and the fallback between them.

    opener(name) opens a backend by name.  candidates: the names to try in
    order (one name: no fallback).  reason: why earlier choices were
    dropped before any was tried, or None.  switchable: the candidates a
    long-lived "auto" Counter may move between when its namespace's size
    makes another cheaper (re-weighed at most every
    _sizing.RECHECK_SECONDS, from a thread in the namespace of inode
    `home`); empty: it stays on the backend it opened.
    """

    def __init__(self, opener: Callable[[str], Backend], candidates: List[str],
                 netns: Optional[Netns] = None, reason: Optional[str] = None,
                 switchable: Collection[str] = (), home: int = 0) -> None:
        self._opener = opener
        self._netns = netns
        self._lock = ForkSafeLock()
        self._order = list(candidates)
        self._candidates = list(candidates)
        self._refused: Set[str] = set()
        self._switchable = list(switchable)
        self._home = home
        self._recheck_at = time.monotonic() + _sizing.RECHECK_SECONDS
        self._by_port: Optional[Lease[Backend]] = None
        self._closed = False
        #: Why the backend in use is not the first choice, or None.
        self.fallback_reason = reason
        with self._lock():
            self._main: Lease[Backend] = Lease(self._open_first())

    @property
    def backend(self) -> Backend:
        """The backend in use (for its name and settings)."""
        return self._main.resource

    # --- counting -----------------------------------------------------

    def count(self, query: CountQuery) -> Tally:
        """Count with the backend that suits `query`; move on to the next
        candidate when the kernel refuses the one in use."""
        if self._switchable and time.monotonic() >= self._recheck_at:
            self._reweigh()
        while True:
            lease = self._take(query)
            try:
                return lease.resource.count(query)
            except OSError as exc:
                if not self._moved_on(lease, exc):
                    raise
            finally:
                with self._lock():
                    lease.give_back()

    def _reweigh(self) -> None:
        """Move to a switchable backend that _sizing estimates clearly
        cheaper here now (the table grew or shrank).  A refusal to open it
        is noted like any other and never fails the count."""
        with self._lock():
            now = time.monotonic()
            if self._closed or now < self._recheck_at:
                return  # another thread re-weighed meanwhile
            self._recheck_at = now + _sizing.RECHECK_SECONDS
            try:
                if _sizing.netns_inode() != self._home:
                    return  # counting from another namespace's thread
            except OSError:
                return
            current = self._main.resource.name
            name = _sizing.better_backend(
                current, [n for n in self._switchable if n not in self._refused])
            if name is None:
                return
            try:
                backend = self._opener(name)
            except (OSError, ImportError) as exc:
                if not self.refused(name, exc):
                    raise
                self._note(name, exc)
                return
            old = self._main
            self._main = Lease(backend)
            old.retire()  # closed by the last count that holds it
            # Falling back from here goes through the rest, in "auto"'s order.
            self._candidates = [n for n in self._order
                                if n != name and n not in self._refused]

    def _take(self, query: CountQuery) -> Lease[Backend]:
        with self._lock():
            if self._closed:
                raise ValueError(CLOSED)
            lease = self._main
            backend = lease.resource
            if (query.by_port and not backend.per_port) or \
                    (query.by_cgroup and not backend.per_cgroup):
                lease = self._by_port_lease(cgroups=bool(query.by_cgroup))
            elif (query.local is not None or query.remote is not None) \
                    and not backend.port_filters:
                raise ValueError(
                    f"port filters need backend 'bpf', 'netlink' or 'procfs'; "
                    f"the {backend.name} backend counts every socket")
            lease.take()
            return lease

    def _by_port_lease(self, cgroups: bool = False) -> Lease[Backend]:
        """netlink (else /proc, for ports only) for the breakdowns the
        backend in use cannot make; opened at the first one.  Call with the
        lock held."""
        if self._by_port is None:
            try:
                backend = self._opener("netlink")
            except (OSError, ImportError) as exc:
                if cgroups or not self.refused("netlink", exc):
                    raise
                backend = self._opener("procfs")
            self._by_port = Lease(backend)
        if cgroups and not self._by_port.resource.per_cgroup:
            raise ValueError(
                "a per-cgroup breakdown needs the netlink backend (socket owners "
                "come with INET_DIAG_CGROUP_ID), which was refused here")
        return self._by_port

    def _moved_on(self, lease: Lease[Backend], exc: OSError) -> bool:
        """After `exc` from `lease`'s backend: whether to count again with
        another one.  Set up fine but refused at a count (a dump refused by
        policy): "auto" moves on to the next candidate, once for all the
        threads that saw the refusal."""
        with self._lock():
            if self._closed:
                return False
            if lease is not self._main:
                # Replaced meanwhile by a thread that saw the same refusal.
                return lease.retired
            name = lease.resource.name
            if not self._candidates or not self.refused(name, exc):
                return False
            self._note(name, exc)
            self._main = Lease(self._open_first())
            lease.retire()  # closed by the last count that holds it
            return True

    # --- opening ------------------------------------------------------

    def _open_first(self) -> Backend:
        """Open the first of the remaining candidates that works.  Call
        with the lock held."""
        while True:
            name = self._candidates.pop(0)
            try:
                return self._opener(name)
            except (OSError, ImportError) as exc:
                if not self._candidates or not self.refused(name, exc):
                    raise
                self._note(name, exc)

    def refused(self, name: str, exc: BaseException) -> bool:
        """Whether "auto" may move on from `name` after `exc`."""
        if isinstance(exc, ImportError):
            return True  # no C extension: only procfs is left
        if not isinstance(exc, OSError):
            return False
        if name in ("bpf", "walk"):
            # The iterator (and the walk) is an optimisation: any kernel refusal (no BTF,
            # no iterator, no privilege, a verifier this program does not
            # suit) leaves netlink, which counts the same.
            return exc.errno != errno.EINTR
        if exc.errno not in _NETLINK_REFUSALS:
            return False
        # Another namespace by path (no pid) is out of reach of /proc
        # without switching either: nothing to fall back to.
        return not (self._netns is not None and self._netns.pid is None)

    def _note(self, name: str, exc: BaseException) -> None:
        self._refused.add(name)
        reason = f"{name}: {exc}"
        self.fallback_reason = f"{self.fallback_reason}; {reason}" if self.fallback_reason else reason

    # --- closing ------------------------------------------------------

    def close(self) -> None:
        """Close every backend (each once no count holds it).  Idempotent;
        counts raise ValueError afterwards."""
        with self._lock():
            self._closed = True
            self._candidates = []
            self._main.retire()
            if self._by_port is not None:
                self._by_port.retire()

    @property
    def closed(self) -> bool:
        return self._closed


def open_backend(name: str, netns: Optional[Netns], request: str,
                 path: Optional[str]) -> Backend:
    """Open the backend called `name` for a Counter's settings."""
    if name == "procfs":
        from ._procfs import ProcfsBackend

        if netns is not None:
            if netns.pid is None:
                netns.open()  # a path: read through a visiting thread
            else:
                netns.check_proc_net()
        return ProcfsBackend(netns=netns)
    if name == "pinned":
        from ._bpf import PinnedBackend

        assert path is not None
        return PinnedBackend(path, netns=netns)
    if name == "bpf":
        from ._bpf import BpfBackend

        return BpfBackend(netns=netns)
    if name == "walk":
        from ._walk import WalkBackend

        return WalkBackend(netns=netns)
    return _netlink.NetlinkBackend(request, netns=netns)

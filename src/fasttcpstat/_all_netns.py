"""Counting every network namespace: counts_all_netns() and AllNetnsCounter.

Two ways, chosen per call:

- The walk (backend "walk", and "auto" where it is accepted): one pass per
  distinct socket table, every namespace in it tallied at once (_walk.py).
  Namespaces share the host's established-socket table (ehash) unless
  created with net.ipv4.tcp_child_ehash_entries set (kernel >= 6.1); the
  listener table (lhash2) is the host's for every namespace, own ehash or
  not (inet_pernet_hashinfo_alloc() copies the host's hashinfo and
  replaces only ehash).  So a call walks the host's ehash once for every
  namespace sharing it, lhash2 once, and each own ehash once from
  inside its namespace: one thread enters them in turn, all passes in one
  C call, through namespace files held open from one call to the next
  (Held).  tcp_ehash_entries read inside each namespace (once per
  namespace: a table never changes) says which is which.
- Per namespace: the public Counter(netns=...), one per namespace, kept
  from one call to the next and closed when its namespace is gone.  A
  namespace is opened through a pid in it when it has one (so that,
  without CAP_SYS_ADMIN, "auto" falls back to reading /proc/PID/net, as
  cAdvisor does), else through its bind mount.  Unless the namespace has
  its own table, the kernel walks the host's whole table for each
  namespace: a call costs about namespaces x host sockets.
"""
from __future__ import annotations

import errno
import os
from typing import Dict, Iterable, List, Optional, Set, Tuple

from . import _policy
from ._counter import BACKENDS, Counter
from ._forklock import ForkSafeLock
from ._netns import GONE, Netns
from ._netns_list import (Found, NetnsInfo, describe, ehash_entries, host_inode, list_netns, own_inode,
                          scan)
from ._ports import PortSpec
from ._query import CountQuery, parse_counts
from ._states import shape_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._walk import Walk, WalkBackend

ALL_NETNS_BACKENDS = tuple(name for name in BACKENDS if name != "pinned")

StateCounts = Dict[str, int]

__all__ = ["AllNetnsCounter", "counts_all_netns", "list_netns"]


def _check_backend(backend: object) -> str:
    # "pinned" reads one pinned iterator file, of one namespace.
    if isinstance(backend, str) and backend in ALL_NETNS_BACKENDS:
        return backend
    allowed = ", ".join(map(repr, ALL_NETNS_BACKENDS))
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {allowed}, not {type(backend).__name__}")
    raise ValueError(f"backend must be one of {allowed}, not {backend!r}")


def _same_namespace(spec: str, inode: int) -> bool:
    """Whether `spec` still names the namespace `inode` (a pid can be reused)."""
    try:
        return os.stat(spec).st_ino == inode
    except OSError:
        return False


def open_checked(ns: Found) -> Optional[Netns]:
    """ns opened through its spec, or None if that no longer opens the
    namespace scanned (gone, or its pid reused by a process elsewhere: a
    walk of another table would count its sockets twice)."""
    target = Netns(ns.spec)
    try:
        if os.fstat(target.open()).st_ino == ns.inode:
            return target
    except OSError as exc:
        if exc.errno not in GONE:
            target.close()
            raise
    target.close()
    return None


class Held:
    """Namespace files kept open from one call to the next, for the passes
    made from inside them: opening and checking each one again at every
    call was a third of a pass over a small table.

    An open file holds its namespace, and its inode cannot name another
    namespace while held, so a namespace the next scan finds by the same
    inode is the one held; one the scan no longer finds is closed then (as
    an open per-namespace Counter is).  At most `limit` are held (each is a
    file descriptor); others are opened for one call.
    """

    def __init__(self, limit: Optional[int] = None) -> None:
        if limit is None:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            limit = 4096 if soft == resource.RLIM_INFINITY else max(0, soft // 4)
        self.limit = limit
        self._held: Dict[int, Netns] = {}
        self._once: List[Netns] = []

    def keep(self, live: Iterable[int]) -> None:
        """Close the held namespaces not in `live` (the last scan's)."""
        live = set(live)
        for inode in [i for i in self._held if i not in live]:
            self._held.pop(inode).close()

    def open(self, ns: Found) -> Optional[Netns]:
        """ns, open and checked (None: gone); until end_call() if not held."""
        target = self._held.get(ns.inode)
        if target is None:
            target = open_checked(ns)
            if target is not None:
                if len(self._held) < self.limit:
                    self._held[ns.inode] = target
                else:
                    self._once.append(target)
        return target

    def end_call(self) -> None:
        for target in self._once:
            target.close()
        self._once = []

    def held(self) -> Set[int]:
        return set(self._held)

    def close(self) -> None:
        self.keep(())
        self.end_call()


class Plan:
    """The passes that count every namespace of a scan once: `walks`, and
    for each the inodes it counts completely (`covers`, parallel to
    walks); `rest`: namespaces the walk cannot tell about (their table
    unknown), for the per-namespace path."""

    def __init__(self, opener: Optional[Held] = None) -> None:
        self.walks: List[Walk] = []
        self.covers: List[Set[int]] = []
        self.rest: Dict[int, Found] = {}
        # Without a caller's Held, the namespaces are opened for this plan.
        self._opener = Held(limit=0) if opener is None else opener

    def add(self, walk: Walk, covers: Set[int]) -> None:
        self.walks.append(walk)
        self.covers.append(covers)

    def inside(self, tables: int, ns: Found, **kw: object) -> Walk:
        """A pass from inside ns."""
        from ._walk import Walk

        target = self._opener.open(ns)
        return Walk(target, tables, gone=target is None, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        self._opener.end_call()


def plan_walks(namespaces: Dict[int, Found], tables: Dict[int, Optional[int]],
               mine: int, opener: Optional[Held] = None) -> Plan:
    """Which tables to walk, from where, for `namespaces` (each with its
    tcp_ehash_entries in `tables`: negative when it shares the host's
    ehash, else its own table's size, or the host's for init_net); the
    namespaces walked from inside are opened by `opener` (None: for this
    plan only).

    Each distinct ehash exactly once and lhash2 once: every socket is then
    tallied exactly once, whatever namespace it belongs to.
    """
    from ._walk import EHASH, LHASH2, Walk

    plan = Plan(opener)
    init = host_inode(namespaces)
    if init is not None and not (tables.get(init) or 0) > 0:
        init = None  # pid 1 moved to another namespace: no guess
    sharing = {i for i, n in tables.items() if n is not None and n < 0 and i in namespaces}
    host_users = sharing | ({init} if init is not None else set())
    own = {i for i, n in tables.items()
           if n is not None and n > 0 and i in namespaces and i != init}
    plan.rest = {i: ns for i, ns in namespaces.items() if tables.get(i) is None}
    # The host table's size: what sharing namespaces read, negated.
    host_size = tables[init] if init is not None else None
    for inode in sharing:
        host_size = -tables[inode]  # type: ignore[operator]
    if init is None and host_size is not None:
        # Positive with the host table's size: init_net, or an own table
        # of the same size; a guess could count its sockets twice.
        for inode in [i for i in own if tables[i] == host_size]:
            own.discard(inode)
            plan.rest[inode] = namespaces[inode]
    if mine in host_users:
        plan.add(Walk(None, EHASH | LHASH2), set(host_users))
    else:
        plan.add(Walk(None, LHASH2, where="listeners"), set())
        if host_users:
            # From inside one that uses it; init_net first, then by inode.
            source = init if init is not None else min(sharing)
            plan.add(plan.inside(EHASH, namespaces[source], where=f"host via {source}"),
                     set(host_users))
    for inode in sorted(own):
        where = f"own {inode}"
        plan.add(Walk(None, EHASH, only=inode, where=where) if inode == mine else
                 plan.inside(EHASH, namespaces[inode], only=inode, where=where), {inode})
    return plan


class AllNetnsCounter:
    """Counts of every network namespace, reusable for exporters.

    Each call of :meth:`counts` scans /proc and the bind-mount directories
    again, so namespaces created since the last call are counted and gone
    ones dropped; the walk program, or the per-namespace counters, are
    kept open in between.

    Calls from several threads are serialised.  After each call,
    :attr:`skipped` maps the inode of every namespace found
    but not counted to why (one line), :attr:`hidden` says which
    namespaces could not even be found without privileges (or None),
    :attr:`fallback_reason` why "auto" is not walking (or None), and
    :attr:`walk_passes` holds the statistics of each pass of the walk
    (empty when it did not walk).
    """

    def __init__(self, backend: str = "auto") -> None:
        self._backend = _check_backend(backend)
        self._counters: Dict[int, Tuple[str, Counter]] = {}
        self._identities: Dict[Tuple[int, Optional[int]], NetnsInfo] = {}
        # tcp_ehash_entries by (inode, spec): a table never changes.
        self._tables: Dict[Tuple[int, str], Optional[int]] = {}
        self._walker: Optional[WalkBackend] = None
        self._held = Held()
        self._walked: Set[int] = set()
        # "auto" tries the walk once, unless FASTTCPSTAT_BACKEND leaves it out.
        self._try_walk = backend == "walk" or (backend == "auto" and _policy.auto_walk())
        self.skipped: Dict[int, str] = {}
        self.hidden: Optional[str] = None
        self.fallback_reason: Optional[str] = None
        self.walk_passes: List[Dict[str, object]] = []
        self._lock = ForkSafeLock()

    def counts(
        self,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
        *,
        local_ports: PortSpec = None,
        remote_ports: PortSpec = None,
    ) -> Dict[int, StateCounts]:
        """``{inode: {state: count}}`` for every namespace found, by inode;
        the filters are those of :func:`fasttcpstat.counts`."""
        # Parsed once here, not once per namespace after the scan.
        return self._count(parse_counts(family, states, local_ports, remote_ports))

    def _count(self, query: CountQuery) -> Dict[int, StateCounts]:
        """counts() for an already parsed query."""
        with self._lock():
            found = scan()
            self.hidden = found.denied_reason
            self._forget(set(found.namespaces))
            self.skipped = {}
            self.walk_passes = []
            self._walked = set()
            result: Dict[int, StateCounts] = {}
            rest = found.namespaces
            walker = self._walk_backend()
            if walker is not None:
                try:
                    result, rest = self._count_walk(walker, found.namespaces, query)
                except OSError as exc:
                    if self._backend == "walk" or not self._refused(exc):
                        raise
                    self._stop_walking(exc)
                    result, rest = {}, found.namespaces
            for inode, ns in sorted(rest.items()):
                got = self._count_one(ns, query)
                if got is not None:
                    result[inode] = got
            return dict(sorted(result.items()))

    # --- the walk -----------------------------------------------------

    def _walk_backend(self) -> Optional[WalkBackend]:
        """The walk program (loaded and self-checked at the first call), or
        None when not walking."""
        if self._walker is None and self._try_walk:
            self._try_walk = False
            try:
                from ._walk import WalkBackend

                self._walker = WalkBackend(every_namespace=True)
            except (OSError, ImportError) as exc:
                if self._backend == "walk" or not self._refused(exc):
                    raise
                self._stop_walking(exc)
        return self._walker

    @staticmethod
    def _refused(exc: BaseException) -> bool:
        # As Counter's "auto": any refusal of the walk but an interruption.
        return not (isinstance(exc, OSError) and exc.errno == errno.EINTR)

    def _stop_walking(self, exc: BaseException) -> None:
        """"auto" after the walk was refused or met an anomaly: the
        per-namespace path from now on, saying why."""
        self.fallback_reason = f"walk: {exc}"
        self._held.close()
        if self._walker is not None:
            self._walker.close()
            self._walker = None

    def _table_sizes(self, namespaces: Dict[int, Found]) -> Dict[int, Optional[int]]:
        """tcp_ehash_entries of each namespace, read once per namespace.

        Kept by inode and the path that opens it: the kernel hands a freed
        inode number to the next namespace created, which may have another
        table, and a new namespace comes with new pids (or a new mount)."""
        mine = own_inode()
        keys = {(inode, ns.spec) for inode, ns in namespaces.items()}
        for key in [k for k in self._tables if k not in keys]:
            del self._tables[key]
        sizes: Dict[int, Optional[int]] = {}
        for inode, ns in namespaces.items():
            key = (inode, ns.spec)
            if key not in self._tables:
                self._tables[key] = ehash_entries(ns, mine)[0]
            sizes[inode] = self._tables[key]
        return sizes

    def _count_walk(self, walker: WalkBackend, namespaces: Dict[int, Found],
                    query: CountQuery) -> Tuple[Dict[int, StateCounts], Dict[int, Found]]:
        """The walk's counts, and the namespaces left to count one by one."""
        self._held.keep(namespaces)
        plan = plan_walks(namespaces, self._table_sizes(namespaces), own_inode(), self._held)
        try:
            tallies, passes = walker.count_tables(plan.walks, query)
        finally:
            plan.close()
        self.walk_passes = passes
        rest = dict(plan.rest)
        counted: Set[int] = set()
        for covers, stats in zip(plan.covers, passes):
            if stats.get("gone"):
                # The pass's namespace went away: those it would have
                # counted get counted one by one (or are gone too).
                rest.update((i, namespaces[i]) for i in covers if i not in counted)
            else:
                counted |= covers
        mine = own_inode()
        result: Dict[int, StateCounts] = {}
        for inode in sorted(counted):
            rest.pop(inode, None)
            # Gone since the scan: left out, as on the per-namespace path.
            if inode != mine and not _same_namespace(namespaces[inode].spec, inode):
                continue
            tally = tallies.get(inode)
            result[inode] = (dict.fromkeys(query.names, 0) if tally is None else
                             shape_result((tally.v4, tally.v6), query.families, query.names))
            self._drop(inode)
            self._walked.add(inode)
        return result, rest

    # --- one namespace at a time ------------------------------------------

    def _count_one(self, ns: Found, query: CountQuery) -> Optional[StateCounts]:
        try:
            counter = self._counter(ns)
            got = counter._count(query)
        except OSError as exc:
            self._drop(ns.inode)
            if exc.errno not in GONE:
                self.skipped[ns.inode] = f"{ns.spec}: {exc}"
            return None
        # A pid read through /proc/PID/net may have exited and been reused
        # by a process elsewhere during the count: then this is not ns.
        if not _same_namespace(self._counters[ns.inode][0], ns.inode):
            self._drop(ns.inode)
            return None
        return got

    def _counter(self, ns: Found) -> Counter:
        held = self._counters.get(ns.inode)
        if held is not None and _same_namespace(held[0], ns.inode):
            return held[1]
        self._drop(ns.inode)
        # Our own namespace needs no switch: without CAP_SYS_ADMIN netlink
        # still counts it (netns= would try to enter it and fall back).
        own = ns.inode == own_inode()
        counter = Counter(self._backend, netns=None if own else ns.spec)
        self._counters[ns.inode] = (ns.spec, counter)
        return counter

    def backends(self) -> Dict[int, str]:
        """The backend that counted each namespace, by inode (after a call)."""
        used = {inode: counter.backend for inode, (_, counter) in self._counters.items()}
        used.update(dict.fromkeys(self._walked, "walk"))
        return dict(sorted(used.items()))

    def namespaces(self) -> List[NetnsInfo]:
        """Identity of every namespace found now (see list_netns()); kept
        per namespace and pid, since none of it changes for a process."""
        found = scan()
        mine = own_inode()
        host = host_inode(found.namespaces)
        with self._lock():
            infos = []
            for inode, ns in sorted(found.namespaces.items()):
                key = (inode, ns.pids[0] if ns.pids else None)
                info = self._identities.get(key)
                if info is None:
                    info = describe(ns, mine, inode == host)
                    self._identities[key] = info
                infos.append(info)
            live = {(info.inode, info.pid) for info in infos}
            for key in [k for k in self._identities if k not in live]:
                del self._identities[key]
            return infos

    def _drop(self, inode: int) -> None:
        held = self._counters.pop(inode, None)
        if held is not None:
            held[1].close()

    def _forget(self, live: "set[int]") -> None:
        """Close the counters of namespaces that are gone: an open counter
        holds its namespace alive."""
        for inode in [i for i in self._counters if i not in live]:
            self._drop(inode)

    def close(self) -> None:
        """Close the walk program and every per-namespace counter.
        Idempotent."""
        with self._lock():
            self._forget(set())
            self._held.close()
            self._try_walk = False
            if self._walker is not None:
                self._walker.close()
                self._walker = None

    def __enter__(self) -> "AllNetnsCounter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        walking = self._walker is not None
        return (f"<fasttcpstat.AllNetnsCounter backend={self._backend!r} walk={walking} "
                f"open={len(self._counters)}>")


def counts_all_netns(
    *,
    family: Optional[str] = None,
    states: Optional[Iterable[str]] = None,
    local_ports: PortSpec = None,
    remote_ports: PortSpec = None,
    backend: str = "auto",
) -> Dict[int, StateCounts]:
    """Count the TCP sockets of every network namespace on the host.

    Returns ``{inode: {state: count}}`` keyed by the namespace's inode (the
    number in ``readlink /proc/PID/ns/net``), each value as
    :func:`fasttcpstat.counts` returns it for that namespace with the same
    filters.  Namespaces are found through /proc/*/ns/net and the `ip netns`
    bind mounts; one that disappears during the call is left out.  See
    :func:`list_netns` for who each one belongs to.

    Counting another namespace with bpf or netlink needs CAP_SYS_ADMIN;
    without it "auto" reads /proc/PID/net (any namespace with a process in
    it), and namespaces it cannot reach are listed in
    AllNetnsCounter.skipped and .hidden.
    """
    # Parsed before anything is scanned or loaded, so bad arguments cost
    # nothing.
    query = parse_counts(family, states, local_ports, remote_ports)
    with AllNetnsCounter(backend) as counter:
        return counter._count(query)

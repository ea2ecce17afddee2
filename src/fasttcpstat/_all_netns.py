"""Counting every network namespace: counts_all_netns() and AllNetnsCounter.

Built on the public Counter(netns=...): one counter per namespace, kept
from one call to the next and closed when its namespace is gone.  A
namespace is opened through a pid in it when it has one (so that, without
CAP_SYS_ADMIN, "auto" falls back to reading /proc/PID/net, as cAdvisor
does), else through its bind mount.

Unless the namespace has its own socket hash table (kernel >= 6.1,
net.ipv4.tcp_child_ehash_entries set when it was created), the kernel
walks the host's whole table for each namespace: a call costs about
namespaces x host sockets.  NetnsInfo.shares_host_table says which.
"""
from __future__ import annotations

import errno
import os
import threading
from typing import Dict, Iterable, List, Optional, Tuple

from ._counter import BACKENDS, Counter
from ._netns_list import Found, NetnsInfo, describe, list_netns, own_inode, scan
from ._ports import PortSpec, parse_ports
from ._states import parse_family, parse_states

ALL_NETNS_BACKENDS = tuple(name for name in BACKENDS if name != "pinned")

StateCounts = Dict[str, int]

# The namespace (or the process that named it) went away between the scan
# and the count.
_GONE = frozenset({errno.ENOENT, errno.ESRCH})

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


class AllNetnsCounter:
    """Counts of every network namespace, reusable for exporters.

    Each call of :meth:`counts` scans /proc and the bind-mount directories
    again, so namespaces created since the last call are counted and gone
    ones dropped; per-namespace counters are kept open in between.

    Calls from several threads are serialised.  After each call,
    :attr:`skipped` maps the inode of every namespace found
    but not counted to why (one line), and :attr:`hidden` says which
    namespaces could not even be found without privileges (or None).
    """

    def __init__(self, backend: str = "auto") -> None:
        self._backend = _check_backend(backend)
        self._counters: Dict[int, Tuple[str, Counter]] = {}
        self._identities: Dict[Tuple[int, Optional[int]], NetnsInfo] = {}
        self.skipped: Dict[int, str] = {}
        self.hidden: Optional[str] = None
        self._lock = threading.Lock()

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
        # Checked once here, not once per namespace after the scan.
        parse_family(family)
        parse_states(states)
        parse_ports(local_ports, "local_ports")
        parse_ports(remote_ports, "remote_ports")
        with self._lock:
            found = scan()
            self.hidden = found.denied_reason
            self._forget(set(found.namespaces))
            self.skipped = {}
            result: Dict[int, StateCounts] = {}
            for inode, ns in sorted(found.namespaces.items()):
                got = self._count_one(ns, family=family, states=states,
                                      local_ports=local_ports, remote_ports=remote_ports)
                if got is not None:
                    result[inode] = got
            return result

    def _count_one(self, ns: Found, **filters: object) -> Optional[StateCounts]:
        try:
            counter = self._counter(ns)
            got = counter.counts(**filters)  # type: ignore[arg-type]
        except OSError as exc:
            self._drop(ns.inode)
            if exc.errno not in _GONE:
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
        """The backend counting each namespace, by inode (after a call)."""
        return {inode: counter.backend for inode, (_, counter) in self._counters.items()}

    def namespaces(self) -> List[NetnsInfo]:
        """Identity of every namespace found now (see list_netns()); kept
        per namespace and pid, since none of it changes for a process."""
        found = scan()
        mine = own_inode()
        with self._lock:
            infos = []
            for inode, ns in sorted(found.namespaces.items()):
                key = (inode, ns.pids[0] if ns.pids else None)
                info = self._identities.get(key)
                if info is None:
                    info = describe(ns, mine)
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
        """Close every per-namespace counter.  Idempotent."""
        with self._lock:
            self._forget(set())

    def __enter__(self) -> "AllNetnsCounter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fasttcpstat.AllNetnsCounter backend={self._backend!r} open={len(self._counters)}>"


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
    with AllNetnsCounter(backend) as counter:
        return counter.counts(family=family, states=states,
                              local_ports=local_ports, remote_ports=remote_ports)

"""The interface every backend implements, and what a count returns.

A backend counts one :class:`~fasttcpstat._query.CountQuery` in its own
way (BPF iterator, netlink sock_diag, /proc text, a pinned iterator) and
returns a :class:`Tally`.  What it can do is declared on the class, so the
policy (_policy.py) routes a query by capability, never by a backend's name.

Also here: :class:`Lease`, the one way a shared, closeable resource (a
backend, a loaded BPF program) is lent to the counts using it, so that
replacing or evicting it never closes it under a running count.
"""
from __future__ import annotations

import abc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Generic, Optional, Protocol, Tuple, TypeVar

    from ._query import CountQuery

    Counts = Tuple[int, ...]  # indexed by kernel state number (16 slots)
    Pair = Tuple[Counts, Counts]  # (ipv4, ipv6)

    class Closeable(Protocol):
        def close(self) -> None: ...

    R = TypeVar("R", bound=Closeable)
else:
    class Generic:
        """typing.Generic for the type checker only: at run time Lease
        derives from object (annotations are strings, never evaluated)."""

        def __class_getitem__(cls, item: object) -> type:
            return object

    R = None


class Tally:
    """One count's result: per-state counts for IPv4 and IPv6 (indexed by
    kernel state number; states outside the query's mask are 0), and for a
    per-port query the same pair for each port, in the query's order.
    For a per-cgroup query, per_cgroup is ({cgroup id: pair}, unowned,
    overflow): timewait and request sockets have no owner; sockets of
    cgroups beyond the table's room are in overflow."""

    __slots__ = ("v4", "v6", "per_port", "per_cgroup")

    def __init__(self, v4: Counts, v6: Counts,
                 per_port: Tuple[Pair, ...] = (),
                 per_cgroup: Optional[Tuple[Dict[int, Pair], Pair, Pair]] = None) -> None:
        self.v4 = v4
        self.v6 = v6
        self.per_port = per_port
        self.per_cgroup = per_cgroup

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tally):
            return NotImplemented
        return ((self.v4, self.v6, self.per_port, self.per_cgroup)
                == (other.v4, other.v6, other.per_port, other.per_cgroup))

    def __repr__(self) -> str:
        return (f"Tally(v4={self.v4!r}, v6={self.v6!r}, per_port={self.per_port!r}, "
                f"per_cgroup={self.per_cgroup!r})")


class Backend(abc.ABC):
    """A way to count TCP sockets per state.

    Capabilities (class attributes):
    per_port: count() honours query.by_port (a per-port breakdown).
    port_filters: count() honours query.local / query.remote.
    per_cgroup: count() honours query.by_cgroup (a breakdown by the
        sockets' owner cgroup).
    """

    name: str = ""
    per_port: bool = True
    per_cgroup: bool = False
    port_filters: bool = True
    #: The netlink request form, for backends that have one.
    request: Optional[str] = None

    @abc.abstractmethod
    def count(self, query: CountQuery) -> Tally:
        """Count once; raise OSError (with errno) when the kernel refuses."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every descriptor.  Idempotent."""


class Lease(Generic[R]):
    """A closeable resource lent to the counts that use it.

    retire() closes it at once if no count holds it, else the last count
    to give it back closes it.  Not thread-safe by itself: the owner calls
    every method under its own lock.
    """

    __slots__ = ("resource", "users", "retired")

    def __init__(self, resource: R) -> None:
        self.resource = resource
        self.users = 0
        self.retired = False

    def take(self) -> R:
        self.users += 1
        return self.resource

    def give_back(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            self.resource.close()

    def retire(self) -> None:
        if not self.retired:
            self.retired = True
            if self.users == 0:
                self.resource.close()

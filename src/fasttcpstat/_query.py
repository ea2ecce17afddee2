"""A count request in its final form, parsed once from the public arguments.

Every public function and method turns its arguments into one
:class:`CountQuery` and passes that down: the policy and the backends never
see the caller's objects, so an iterator argument is read exactly once, and
a polling loop (``Query`` in _report.py) parses once for all its samples.
"""
from __future__ import annotations

from ._ports import parse_port_list, parse_ports
from ._states import FAMILY_BOTH, parse_family, parse_states, states_mask

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Optional, Tuple

    from ._ports import PortSpec, Range

SIDES = ("local", "remote")

#: The most ports one counts_by_port() call breaks down (one dump, tallied
#: in C; the kernel's filter program grows 20 bytes a port).
MAX_BY_PORT = 1024

#: The most cgroups one counts_by_cgroup() call tells apart (tallied in
#: C: csrc/diag_cgroup.h); sockets of further cgroups are reported
#: together under "overflow".
MAX_BY_CGROUP = 4096


def check_side(side: object) -> bool:
    """True for "remote"."""
    if not isinstance(side, str):
        raise TypeError(f"side must be 'local' or 'remote', not {type(side).__name__}")
    if side not in SIDES:
        raise ValueError(f"side must be 'local' or 'remote', not {side!r}")
    return side == "remote"


class CountQuery:
    """What one count asks the kernel for.

    families: FAMILY_* mask; names: the state names wanted, kernel order
    (empty: nothing to count); mask: their idiag_states bits; local, remote:
    merged inclusive port ranges, None for no filter; by_port: ports of a
    per-port breakdown (empty for none), keyed on the remote port if
    by_remote; by_cgroup: the most cgroups of a per-cgroup breakdown (0
    for none).
    """

    __slots__ = ("families", "names", "mask", "local", "remote", "by_port", "by_remote",
                 "by_cgroup")

    def __init__(self, families: int, names: "Tuple[str, ...]",
                 local: "Optional[Tuple[Range, ...]]" = None,
                 remote: "Optional[Tuple[Range, ...]]" = None,
                 by_port: "Tuple[int, ...]" = (), by_remote: bool = False,
                 by_cgroup: int = 0) -> None:
        self.families = families
        self.names = names
        self.mask = states_mask(names)
        self.local = local
        self.remote = remote
        self.by_port = by_port
        self.by_remote = by_remote
        self.by_cgroup = by_cgroup

    def with_families(self, families: int) -> "CountQuery":
        """The same query over other families."""
        return CountQuery(families, self.names, self.local, self.remote,
                          self.by_port, self.by_remote, self.by_cgroup)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"CountQuery({fields})"


def _ranges(spec: "PortSpec", name: str) -> "Optional[Tuple[Range, ...]]":
    ranges = parse_ports(spec, name)
    return None if ranges is None else tuple(ranges)


def parse_counts(family: "Optional[str]" = None,
                 states: "Optional[Iterable[str]]" = None,
                 local_ports: "PortSpec" = None,
                 remote_ports: "PortSpec" = None) -> CountQuery:
    """counts()'s arguments, each read once."""
    families = parse_family(family)
    names = parse_states(states)
    return CountQuery(families, names, _ranges(local_ports, "local_ports"),
                      _ranges(remote_ports, "remote_ports"))


def parse_by_cgroup(family: "Optional[str]" = None,
                    states: "Optional[Iterable[str]]" = None,
                    local_ports: "PortSpec" = None,
                    remote_ports: "PortSpec" = None) -> CountQuery:
    """counts_by_cgroup()'s arguments (those of counts()), each read once."""
    query = parse_counts(family, states, local_ports, remote_ports)
    query.by_cgroup = MAX_BY_CGROUP
    return query


def parse_by_family(states: "Optional[Iterable[str]]" = None,
                    local_ports: "PortSpec" = None,
                    remote_ports: "PortSpec" = None) -> CountQuery:
    """counts_by_family()'s arguments: both families, each read once."""
    names = parse_states(states)
    return CountQuery(FAMILY_BOTH, names, _ranges(local_ports, "local_ports"),
                      _ranges(remote_ports, "remote_ports"))


def parse_by_port(ports: object, side: object = "local",
                  family: "Optional[str]" = None,
                  states: "Optional[Iterable[str]]" = None,
                  name: str = "ports") -> CountQuery:
    """counts_by_port()'s arguments, each read once.

    The breakdown is also the filter: the kernel sees only sockets on the
    listed ports, on the chosen side.
    """
    port_list = parse_port_list(ports, name, MAX_BY_PORT)
    by_remote = check_side(side)
    families = parse_family(family)
    names = parse_states(states)
    ranges = _ranges(list(port_list), name)
    local, remote = (None, ranges) if by_remote else (ranges, None)
    return CountQuery(families, names, local, remote, port_list, by_remote)

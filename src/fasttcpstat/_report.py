"""One sample as the command line and the Prometheus collector report it.

A sample is a list of series: a tuple of labels (family, port, side, in
that order, each present only when asked for; or the namespace's labels
with --all-netns, the cgroup with --by-cgroup) and the {state: count} of
that series.  The JSON, table and Prometheus renderings are all views of
this one shape, so every option means the same thing in every format.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union

from ._all_netns import AllNetnsCounter
from ._counter import Counter, StateCounts, _OneBreakdown, _OneCount
from ._netns import NetnsSpec
from ._netns_list import NetnsInfo
from ._ports import PortSpec
from ._query import CountQuery, check_side, parse_by_cgroup, parse_by_port, parse_counts
from ._states import FAMILIES, FAMILY_BOTH, FAMILY_IPV4, FAMILY_IPV6, parse_family

Labels = Tuple[Tuple[str, str], ...]
Series = List[Tuple[Labels, StateCounts]]

Source = Union[Counter, AllNetnsCounter]

_FAMILY_MASK = {None: FAMILY_BOTH, "ipv4": FAMILY_IPV4, "ipv6": FAMILY_IPV6}

#: The labels of one namespace's series with all_netns, "" where unknown
#: (to Prometheus an empty label is an absent one).
NETNS_LABELS = ("netns", "netns_name", "container_id", "pod_uid")
#: What the table also shows of a namespace, but no exported format: a pid
#: or a command would start a new Prometheus series at every restart.
DETAIL_LABELS = ("pid", "command", "table")


class Query:
    """What to count and how to break it down.

    Every argument is checked here, once, so a bad one fails before any
    socket or server is opened and every later sample can reuse it.

    family, states, local_ports, remote_ports: as for counts().
    by_family: one series per family ("family" label) instead of the sum.
    by_port: one series per listed port ("port" and "side" labels), as
        counts_by_port(); `side` says which end's port.  It cannot be
        combined with local_ports/remote_ports.
    all_netns: one series per network namespace of the host (labels
        NETNS_LABELS, and DETAIL_LABELS for the table), as
        counts_all_netns(); take() then needs an AllNetnsCounter
        (open_source() gives the right one).
    by_cgroup: one series per owner cgroup ("cgroup" label), as
        counts_by_cgroup().  These two are breakdowns of their own: neither
        combines with another breakdown.
    """

    def __init__(
        self,
        *,
        family: Optional[str] = None,
        states: Optional[Iterable[str]] = None,
        local_ports: PortSpec = None,
        remote_ports: PortSpec = None,
        by_family: bool = False,
        by_port: Optional[Iterable[int]] = None,
        side: str = "local",
        all_netns: bool = False,
        by_cgroup: bool = False,
    ) -> None:
        states = _reusable(states)
        local_ports = _reusable(local_ports)
        remote_ports = _reusable(remote_ports)
        parse_family(family)
        self.family = family.lower() if family is not None else None
        self.by_family = bool(by_family)
        self.side = side
        self.by_port: Optional[Tuple[int, ...]] = None
        # The parsed forms every sample reuses: each argument is read once.
        self.query: CountQuery = parse_counts(family, states, local_ports, remote_ports)
        #: Canonical names in kernel order (all of them for None).
        self.states = self.query.names
        self.port_query: Optional[CountQuery] = None
        if by_port is not None:
            if local_ports is not None or remote_ports is not None:
                raise ValueError(
                    "by_port cannot be combined with local_ports or remote_ports: "
                    "the per-port breakdown is itself the port filter"
                )
            self.port_query = parse_by_port(by_port, side, family, self.states, name="by_port")
            self.by_port = self.port_query.by_port
        check_side(side)
        self.all_netns = bool(all_netns)
        self.by_cgroup = bool(by_cgroup)
        if self.all_netns or self.by_cgroup:
            _check_per_owner(self)
        self.cgroup_query: Optional[CountQuery] = None
        if self.by_cgroup:
            self.cgroup_query = parse_by_cgroup(family, states, local_ports, remote_ports)

    def label_names(self) -> Tuple[str, ...]:
        """The exported labels of every series take() returns, in order
        (DETAIL_LABELS, which only the table shows, left out)."""
        if self.all_netns:
            return NETNS_LABELS
        if self.by_cgroup:
            return ("cgroup",)
        names: Tuple[str, ...] = ("family",) if self.by_family else ()
        if self.by_port is not None:
            names += ("port", "side")
        return names

    def families(self) -> Tuple[Optional[str], ...]:
        """The family of each series group: (None,) when families are summed."""
        if self.by_family and self.family is None:
            return FAMILIES
        return (self.family,)


T = TypeVar("T")


def _reusable(arg: T) -> T:
    # A one-shot iterator would be empty the second time it is read.
    return list(arg) if isinstance(arg, Iterator) else arg  # type: ignore[return-value]


def _check_per_owner(query: Query) -> None:
    # One series per namespace or cgroup already; a second breakdown would
    # multiply the series by what exists.
    given = [name for name, on in (("all_netns", query.all_netns),
                                   ("by_cgroup", query.by_cgroup),
                                   ("by_family", query.by_family),
                                   ("by_port", query.by_port is not None)) if on]
    if len(given) > 1:
        raise ValueError(f"{given[0]} cannot be combined with {given[1]}: "
                         "choose one breakdown")


def open_source(query: Query, backend: str = "auto", netns: NetnsSpec = None,
                request: str = "auto", path: Optional[str] = None,
                one_count: bool = False) -> Source:
    """What take() counts with for `query`: one AllNetnsCounter for
    all_netns, else a Counter ("auto" weighs the set-up too for
    `one_count`, a single sample).  The caller closes it."""
    if query.all_netns:
        if netns is not None or path is not None or request != "auto":
            raise ValueError("all_netns counts every namespace; netns, path and "
                             "request do not apply")
        return AllNetnsCounter(backend)
    if one_count:
        breakdown = query.by_port is not None or query.by_cgroup
        kind = _OneBreakdown if breakdown else _OneCount
        return kind(backend, netns=netns, request=request, path=path)
    return Counter(backend, netns=netns, request=request, path=path)


def take(counter: Source, query: Query) -> Series:
    """Count once (one dump, or one per family with by_port and by_family;
    one per namespace with all_netns) and return the series the query
    asks for."""
    if isinstance(counter, AllNetnsCounter):
        return _take_all_netns(counter, query)
    if query.cgroup_query is not None:
        per_cgroup = counter._count_by_cgroup(query.cgroup_query)
        return [((("cgroup", path),), counts) for path, counts in per_cgroup.items()]
    if query.port_query is not None:
        return _take_by_port(counter, query, query.port_query)
    if query.by_family and query.family is None:
        per_family = counter._count_by_family(query.query)
        return [((("family", family),), counts) for family, counts in per_family.items()]
    counts = counter._count(query.query)
    labels: Labels = (("family", query.family),) if query.by_family and query.family else ()
    return [(labels, counts)]


def _take_by_port(counter: Counter, query: Query, port_query: CountQuery) -> Series:
    series: Series = []
    for family in query.families():
        # A per-port breakdown sums the families it is given, so a family
        # breakdown costs one dump per family.
        base: Labels = (("family", family),) if query.by_family and family else ()
        per_port = counter._count_by_port(port_query.with_families(_FAMILY_MASK[family]))
        for port, counts in per_port.items():
            series.append((base + (("port", str(port)), ("side", query.side)), counts))
    return series


def _netns_labels(inode: int, info: Optional[NetnsInfo]) -> Labels:
    if info is None:  # gone between the count and the identity scan
        return (("netns", str(inode)), *((name, "") for name in NETNS_LABELS[1:]),
                *((name, "") for name in DETAIL_LABELS))
    return (("netns", str(inode)), ("netns_name", ",".join(info.names)),
            ("container_id", info.container_id or ""), ("pod_uid", info.pod_uid or ""),
            ("pid", "" if info.pid is None else str(info.pid)),
            ("command", info.command or ""),
            ("table", info.table or ""))


def _take_all_netns(counter: AllNetnsCounter, query: Query) -> Series:
    per_netns = counter._count(query.query)
    infos = {info.inode: info for info in counter.namespaces()}
    return [(_netns_labels(inode, infos.get(inode)), counts)
            for inode, counts in per_netns.items()]

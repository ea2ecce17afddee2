"""One sample as the command line and the Prometheus collector report it.

A sample is a list of series: a tuple of labels (family, port, side, in
that order, each present only when asked for) and the {state: count} of
that series.  The JSON, table and Prometheus renderings are all views of
this one shape, so every option means the same thing in every format.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from ._counter import Counter, StateCounts
from ._ports import PortSpec
from ._query import CountQuery, check_side, parse_by_port, parse_counts
from ._states import FAMILIES, FAMILY_BOTH, FAMILY_IPV4, FAMILY_IPV6, parse_family

Labels = Tuple[Tuple[str, str], ...]
Series = List[Tuple[Labels, StateCounts]]

_FAMILY_MASK = {None: FAMILY_BOTH, "ipv4": FAMILY_IPV4, "ipv6": FAMILY_IPV6}


class Query:
    """What to count and how to break it down.

    Every argument is checked here, once, so a bad one fails before any
    socket or server is opened and every later sample can reuse it.

    family, states, local_ports, remote_ports: as for counts().
    by_family: one series per family ("family" label) instead of the sum.
    by_port: one series per listed port ("port" and "side" labels), as
        counts_by_port(); `side` says which end's port.  It cannot be
        combined with local_ports/remote_ports.
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
    ) -> None:
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

    def label_names(self) -> Tuple[str, ...]:
        """The labels of every series take() returns, in order."""
        names: Tuple[str, ...] = ("family",) if self.by_family else ()
        if self.by_port is not None:
            names += ("port", "side")
        return names

    def families(self) -> Tuple[Optional[str], ...]:
        """The family of each series group: (None,) when families are summed."""
        if self.by_family and self.family is None:
            return FAMILIES
        return (self.family,)


def take(counter: Counter, query: Query) -> Series:
    """Count once (one dump, or one per family with by_port and by_family)
    and return the series the query asks for."""
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

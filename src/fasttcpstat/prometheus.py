"""Prometheus integration through prometheus_client (the optional extra
``fasttcpstat[prometheus]``).

>>> from fasttcpstat.prometheus import register
>>> collector = register()                      # doctest: +SKIP
>>> register(by_family=True, by_port=[443, 8443])  # doctest: +SKIP

Every scrape counts afresh: :class:`FastTCPStatCollector` keeps one
:class:`fasttcpstat.Counter` (as root a BPF program, else one netlink
socket) and reports the gauge
``fasttcpstat_connections`` with a ``state`` label in node_exporter's
spellings, zeros included, plus ``family``, ``port`` and ``side`` labels
when a breakdown is asked for.  The metric is the same as the one
``fasttcpstat --format prometheus`` and ``--textfile`` print.

This is the only module of the package that imports prometheus_client;
``import fasttcpstat`` does not.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Tuple

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from ._formats import HELP, METRIC, TABLE_HELP, TABLE_METRIC, shares_host_table, state_label
from ._netns import NetnsSpec
from ._ports import PortSpec
from ._report import Query, open_source, take

__all__ = ["FastTCPStatCollector", "register"]


# Collector is an ABC in older prometheus_client releases and a Protocol in
# newer ones; subclassing it satisfies both.
class FastTCPStatCollector(Collector):
    """A prometheus_client collector of TCP state counts.

    family, states, local_ports, remote_ports: what to count, as for
        :func:`fasttcpstat.counts`.
    by_family: a ``family`` label ("ipv4", "ipv6") instead of the sum.
    by_port: ports to break the counts down by (``port`` label, at most
        MAX_BY_PORT): only a bounded list you choose, so the number of time
        series stays bounded; ``side`` ("local" or "remote", also a label)
        says whose port.
    backend, netns, request, path: as for :class:`fasttcpstat.Counter`.

    Arguments are checked and the counter is opened here, so a mistake
    fails at registration, not at the first scrape.  Scrapes from several
    threads are serialised by the counter.
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
        backend: str = "auto",
        netns: NetnsSpec = None,
        request: str = "auto",
        path: Optional[str] = None,
    ) -> None:
        self.query = Query(family=family, states=states, local_ports=local_ports,
                           remote_ports=remote_ports, by_family=by_family,
                           by_port=by_port, side=side, all_netns=all_netns,
                           by_cgroup=by_cgroup)
        self.counter = open_source(self.query, backend, netns=netns, request=request,
                                   path=path)

    def _gauges(self) -> Tuple[GaugeMetricFamily, Optional[GaugeMetricFamily]]:
        names = self.query.label_names()
        tables = GaugeMetricFamily(TABLE_METRIC, TABLE_HELP, labels=names) \
            if self.query.all_netns else None
        return GaugeMetricFamily(METRIC, HELP, labels=(*names, "state")), tables

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metrics without samples: the registry learns their names
        (and refuses a duplicate) without a count at registration."""
        for gauge in self._gauges():
            if gauge is not None:
                yield gauge

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Count now and yield the gauge (and, with all_netns, whether each
        namespace shares the host's socket table)."""
        gauge, tables = self._gauges()
        names = self.query.label_names()
        series = take(self.counter, self.query)
        for labels, counts in series:
            values = [value for name, value in labels if name in names]
            for state, n in counts.items():
                gauge.add_metric([*values, state_label(state)], n)
        yield gauge
        if tables is not None:
            for labels, shared in shares_host_table(series):
                tables.add_metric([value for _, value in labels], shared)
            yield tables

    def close(self) -> None:
        """Release the counter's socket or BPF objects.  Unregister the
        collector first."""
        self.counter.close()


def register(registry: CollectorRegistry = REGISTRY, **options: Any) -> FastTCPStatCollector:
    """Create a :class:`FastTCPStatCollector` with `options` (its keyword
    arguments) and register it in `registry` (prometheus_client's default
    one unless given).  Returns the collector, e.g. to unregister it."""
    collector = FastTCPStatCollector(**options)
    try:
        registry.register(collector)
    except BaseException:
        collector.close()
        raise
    return collector


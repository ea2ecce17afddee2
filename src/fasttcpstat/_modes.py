"""The command's run modes: one sample or one per interval on stdout,
a textfile rewritten every interval, the --watch view, the --serve
endpoint.  Each takes the parsed options and returns the exit status;
an expected failure is a CommandError.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Any, Dict, Optional, TextIO, Tuple

from ._counter import Counter
from ._formats import render_json, render_prometheus, render_table
from ._options import WATCH_INTERVAL, counter_options
from ._report import Query, Series, Source, take
from ._signals import StopSignals, ticks
from ._textfile import write_atomically
from ._watch import Frame, Screen, header


class CommandError(Exception):
    """An expected failure, reported as one line on stderr with status 1."""


def describe(exc: BaseException) -> str:
    """An exception as a phrase: OSError's strerror and file name rather
    than its '[Errno N]' form."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text += f": {exc.filename}"
        return text
    return str(exc)


def stdout() -> TextIO:
    """sys.stdout, which is None when the command runs with fd 1 closed."""
    if sys.stdout is None:
        raise CommandError("standard output is closed; give the command somewhere to "
                           "write (e.g. > FILE), or use --textfile or --serve")
    return sys.stdout


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _render(fmt: str, series: Series, when: Optional[datetime.datetime]) -> str:
    if fmt == "prometheus":
        return render_prometheus(series)
    if fmt == "table":
        return render_table(series, when)
    return render_json(series, when)


def print_samples(counter: Source, query: Query, args: argparse.Namespace) -> int:
    """One sample, or one per interval: written and flushed whole, so a
    reader of the pipe never gets half a line."""
    out = stdout()
    fmt = args.format or "json"
    if args.interval is None:
        out.write(_render(fmt, take(counter, query), None))
        return 0
    with StopSignals() as stop:
        for _ in ticks(args.interval, args.count, stop):
            when = _now()
            out.write(_render(fmt, take(counter, query), when))
            out.flush()
    return 0


def write_textfile(counter: Source, query: Query, args: argparse.Namespace) -> int:
    path: str = args.textfile

    def write_one() -> None:
        text = render_prometheus(take(counter, query))
        try:
            write_atomically(path, text)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {describe(exc)}; the directory must "
                               "exist and be writable") from exc

    if args.interval is None:
        write_one()
        return 0
    with StopSignals() as stop:
        for _ in ticks(args.interval, args.count, stop):
            write_one()
    return 0


def _netns_label(args: argparse.Namespace) -> str:
    if args.netns is not None:
        return str(args.netns)
    try:
        return os.readlink("/proc/thread-self/ns/net")  # e.g. net:[4026531840]
    except OSError:
        return "own"


def watch(counter: Source, query: Query, args: argparse.Namespace) -> int:
    if not isinstance(counter, Counter) or query.by_cgroup:
        return _watch_rows(counter, query, args)
    netns = _netns_label(args)
    previous = None
    with StopSignals() as stop, Screen(stdout()) as screen:
        for _ in ticks(args.interval or WATCH_INTERVAL, args.count, stop):
            when = _now()
            started = time.perf_counter()
            [(_, counts)] = take(counter, query)
            seconds = time.perf_counter() - started
            screen.draw(Frame(when=when, counts=counts, previous=previous, seconds=seconds,
                              backend=counter.backend, netns=netns))
            previous = counts
    return 0


def _watch_rows(counter: Source, query: Query, args: argparse.Namespace) -> int:
    """--watch with one row per namespace or cgroup: the table, redrawn."""
    netns = "all" if query.all_netns else _netns_label(args)
    with StopSignals() as stop, Screen(stdout()) as screen:
        for _ in ticks(args.interval or WATCH_INTERVAL, args.count, stop):
            when = _now()
            started = time.perf_counter()
            series = take(counter, query)
            seconds = time.perf_counter() - started
            total = sum(sum(counts.values()) for _, counts in series)
            screen.show([*header(backend=args.backend, netns=netns, total=total,
                                 seconds=seconds, when=when),
                         "", *render_table(series).splitlines()])
    return 0


def serve(args: argparse.Namespace, options: Dict[str, Any]) -> int:
    """/metrics over HTTP: prometheus_client's registry (our gauge and the
    process's own metrics), served by _http.MetricsServer."""
    address, port = args.serve
    try:
        from prometheus_client import REGISTRY, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        from ._http import MetricsServer
        from .prometheus import FastTCPStatCollector
    except ImportError as exc:
        if exc.name != "prometheus_client":
            raise
        raise CommandError("--serve needs prometheus_client: "
                           "pip install 'fasttcpstat[prometheus]'") from None

    def render() -> Tuple[bytes, str]:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

    # Handlers first: a SIGTERM right after the server starts must still
    # stop it cleanly.
    with StopSignals() as stop:
        collector = FastTCPStatCollector(**counter_options(args), **options)
        try:
            REGISTRY.register(collector)
            try:
                server = MetricsServer(address, port, render)
            except OSError as exc:
                raise CommandError(f"cannot listen on {address} port {port}: "
                                   f"{describe(exc)}; choose another [ADDR:]PORT") from exc
            try:
                host = f"[{address}]" if ":" in address else address
                if sys.stderr is not None:
                    sys.stderr.write(f"fasttcpstat: serving http://{host}:{server.port}"
                                     "/metrics\n")
                    sys.stderr.flush()
                server.serve(stop.fileno())
            finally:
                server.close()
        finally:
            collector.close()
    return 0

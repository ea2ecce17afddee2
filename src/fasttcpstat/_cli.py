"""The fasttcpstat command.

One run does one of:
- print one sample (default), as --format json|table|prometheus;
- --interval SECONDS [--count N]: print a sample every interval (JSON Lines);
- --textfile PATH.prom [--interval ...]: write the Prometheus exposition
  atomically for node_exporter's textfile collector;
- --watch: a live terminal view;
- --serve [ADDR:]PORT: an HTTP /metrics endpoint (needs prometheus_client);
and `fasttcpstat pin [PATH]` pins the BPF text iterator (see fasttcpstat.pin).

Exit status: 0 done (a stop by SIGINT or SIGTERM included), 2 the command
line is wrong (argparse), 1 a value was refused or the work failed; then
one line on stderr says what and what to do, without a traceback.
"""
from __future__ import annotations

import argparse
import datetime
import os
import select
import signal
import sys
import time
from types import FrameType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ._bpf import DEFAULT_PIN_PATH, pin
from ._counter import BACKENDS, MAX_BY_PORT, SIDES, Counter
from ._formats import render_json, render_prometheus, render_table
from ._netns import PROCFS_HINT
from ._ports import parse_port_list, parse_ports
from ._report import Query, Series, take
from ._states import FAMILIES
from ._textfile import write_atomically
from ._version import __version__
from ._watch import Frame, Screen

FORMATS = ("json", "table", "prometheus")
WATCH_INTERVAL = 1.0
# Not 0.0.0.0: the counts tell who talks to this host on which ports;
# publishing them on every interface should be a decision, not a default.
DEFAULT_SERVE_ADDRESS = "127.0.0.1"

PortItems = List[Union[int, Tuple[int, int]]]


class CommandError(Exception):
    """An expected failure, reported as one line on stderr with status 1."""


# ---- parsing -----------------------------------------------------------------

EPILOG = """\
ports: PORT, LOW-HIGH (inclusive) or a comma-separated list of those,
  e.g. 443  443,8443  9000-9099  443,9000-9099; --by-port takes single ports.

examples:
  fasttcpstat                                  one JSON object, state -> count
  fasttcpstat --format table --by-family
  fasttcpstat --interval 5                     JSON Lines, one per 5 s
  fasttcpstat --local-port 443 --state established
  fasttcpstat --textfile /var/lib/node_exporter/textfile/tcp.prom --interval 15
  fasttcpstat --serve 9977                     http://127.0.0.1:9977/metrics
  fasttcpstat --watch --netns /var/run/netns/blue

exit status: 0 ok, 1 error (one line on stderr), 2 usage error.
"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _listen_address(text: str) -> Tuple[str, int]:
    """'PORT', 'ADDR:PORT' or '[IPV6]:PORT' -> (address, port)."""
    address, colon, port_text = text.rpartition(":")
    if not colon:
        address = DEFAULT_SERVE_ADDRESS
    elif address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not address or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected PORT or ADDR:PORT (ADDR an IP address, [ADDR] for IPv6), not {text!r}")
    return address, int(port_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasttcpstat",
        description="Count TCP sockets per state (Linux netlink sock_diag, /proc fallback).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to count")
    what.add_argument("--family", choices=FAMILIES, help="one address family (default: both)")
    what.add_argument("--state", action="append", metavar="NAME",
                      help="only this state (repeatable or comma-separated; any case, - or _)")
    what.add_argument("--local-port", action="append", metavar="PORTS",
                      help="only sockets whose local port is one of PORTS (repeatable)")
    what.add_argument("--remote-port", action="append", metavar="PORTS",
                      help="only sockets whose remote port is one of PORTS (repeatable)")
    what.add_argument("--netns", metavar="PATH|PID",
                      help="count another network namespace: /var/run/netns/NAME, "
                           "/proc/PID/ns/net or a pid")
    what.add_argument("--backend", choices=BACKENDS, default="auto",
                      help="auto (default): bpf, else netlink, else /proc; or force one")
    what.add_argument("--pinned", metavar="PATH",
                      help="count through an iterator pinned by `fasttcpstat pin` "
                           "(any user, own namespace; implies --backend pinned)")
    split = parser.add_argument_group("breakdown")
    split.add_argument("--by-family", action="store_true",
                       help="ipv4 and ipv6 apart (a 'family' label)")
    split.add_argument("--by-port", action="append", metavar="PORTS",
                       help=f"each of these ports apart (a 'port' label; at most {MAX_BY_PORT})")
    split.add_argument("--side", choices=SIDES,
                       help="with --by-port: whose port, local (default) or remote")
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, help="json (default), table or prometheus")
    out.add_argument("--interval", type=_seconds, metavar="SECONDS",
                     help="sample every SECONDS until --count, Ctrl-C or SIGTERM")
    out.add_argument("--count", type=_positive_int, metavar="N",
                     help="stop after N samples")
    out.add_argument("--watch", action="store_true",
                     help=f"live terminal view (every {WATCH_INTERVAL:g} s unless --interval)")
    out.add_argument("--textfile", metavar="PATH.prom",
                     help="write the Prometheus format atomically to PATH.prom "
                          "(node_exporter textfile collector)")
    out.add_argument("--serve", type=_listen_address, metavar="[ADDR:]PORT",
                     help=f"serve /metrics over HTTP (default ADDR {DEFAULT_SERVE_ADDRESS}; "
                          "needs fasttcpstat[prometheus])")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot mean anything (status 2)."""
    modes = [name for name, given in (("--watch", args.watch),
                                      ("--textfile", args.textfile is not None),
                                      ("--serve", args.serve is not None)) if given]
    if len(modes) > 1:
        parser.error(f"{modes[0]} and {modes[1]} cannot be combined")
    if args.pinned is not None and args.backend not in ("auto", "pinned"):
        parser.error(f"--pinned reads a pinned iterator; --backend {args.backend} does not apply")
    if args.backend == "pinned" and args.pinned is None:
        parser.error("--backend pinned needs --pinned PATH")
    if args.count is not None and args.interval is None and not args.watch:
        parser.error("--count needs --interval (or --watch)")
    if args.side is not None and args.by_port is None:
        parser.error("--side applies to --by-port only")
    if args.by_port is not None and (args.local_port or args.remote_port):
        parser.error("--by-port cannot be combined with --local-port or --remote-port: "
                     "the breakdown is itself the port filter")
    if args.watch and args.format is not None:
        parser.error("--watch draws its own view; --format does not apply")
    if args.watch and (args.by_family or args.by_port is not None):
        parser.error("--watch shows totals; for a breakdown use --format table --interval SECONDS")
    if args.serve is not None and (args.interval is not None
                                   or args.format not in (None, "prometheus")):
        parser.error("--serve counts at every scrape; --interval and --format do not apply")
    if args.textfile is not None:
        if args.format not in (None, "prometheus"):
            parser.error(f"--textfile writes the Prometheus format; --format {args.format} "
                         "does not apply")
        if not args.textfile.endswith(".prom"):
            parser.error("--textfile: the name must end in .prom, the only files "
                         "node_exporter's textfile collector reads")
    if args.format == "prometheus" and args.interval is not None and args.textfile is None:
        parser.error("--format prometheus takes no --interval on stdout; use --textfile "
                     "PATH.prom (rewritten every interval) or --serve")


def _split(values: Optional[List[str]]) -> List[str]:
    # Repeated options and comma-separated lists mean the same.
    return [item.strip() for value in values or () for item in value.split(",")]


def _port_items(values: Optional[List[str]], option: str) -> Optional[PortItems]:
    """'443,9000-9099' (repeatable) -> [443, (9000, 9099)], checked by the
    API's own rules but named after the option."""
    if values is None:
        return None
    items: PortItems = []
    for item in _split(values):
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{option}: {item!r} is not a port or a LOW-HIGH range")
        items.append((int(low), int(high)) if dash else int(low))
    parse_ports(items, option)  # range and order checks, with the option's name
    return items


def _by_port_items(values: Optional[List[str]]) -> Optional[List[int]]:
    items = _port_items(values, "--by-port")
    if items is None:
        return None
    if any(isinstance(item, tuple) for item in items):
        raise ValueError("--by-port: single ports only, not LOW-HIGH ranges "
                         "(each listed port becomes one series)")
    ports = [item for item in items if isinstance(item, int)]
    parse_port_list(ports, "--by-port", MAX_BY_PORT)
    return ports


def _counter_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The keyword arguments of Counter (and of the Prometheus collector)."""
    pinned = args.pinned is not None
    return {"backend": "pinned" if pinned else args.backend, "netns": _netns(args.netns),
            "path": args.pinned}


def _netns(text: Optional[str]) -> Union[str, int, None]:
    # A bare number is a pid, as in the API; anything else a path.
    if text is not None and text.isdigit():
        return int(text)
    return text


def _query_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The keyword arguments of Query (and of the Prometheus collector)."""
    return {
        "family": args.family,
        "states": _split(args.state) if args.state is not None else None,
        "local_ports": _port_items(args.local_port, "--local-port"),
        "remote_ports": _port_items(args.remote_port, "--remote-port"),
        "by_family": args.by_family,
        "by_port": _by_port_items(args.by_port),
        "side": args.side or "local",
    }


# ---- errors ------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """An exception as a phrase: OSError's strerror and file name rather
    than its '[Errno N]' form."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text += f": {exc.filename}"
        return text
    return str(exc)


# Where the API's advice names its own arguments, the command names its options.
_CLI_PROCFS_HINT = ("--backend procfs --netns PID reads /proc/PID/net/tcp{,6}, "
                    "which needs no namespace switch")
_FALLS_BACK_TO = {"bpf": "netlink", "netlink": "/proc/net/tcp"}


def _hint(exc: BaseException, args: argparse.Namespace) -> str:
    """What to do about an expected failure, when the message itself does
    not say."""
    netns, backend = getattr(args, "netns", None), getattr(args, "backend", None)
    if isinstance(exc, FileNotFoundError) and netns is not None:
        return ("; --netns takes /var/run/netns/NAME, /proc/PID/ns/net or the pid "
                "of a running process")
    if isinstance(exc, OSError) and netns is None and backend in _FALLS_BACK_TO:
        return f"; --backend auto falls back to {_FALLS_BACK_TO[backend]} where {backend} is refused"
    return ""


def _explain(exc: BaseException, args: argparse.Namespace) -> str:
    """An expected failure of the API (a refused value, a namespace or
    backend out of reach) as one phrase naming what to do.  It may come
    from setting up the counter or from a count: some backends set up
    lazily."""
    return _describe(exc).replace(PROCFS_HINT, _CLI_PROCFS_HINT) + _hint(exc, args)


# ---- stopping on signals -----------------------------------------------------


class _StopSignals:
    """SIGINT and SIGTERM end a run cleanly instead of killing it mid-write.

    The handlers only note the request and write a byte to a pipe that
    wait() selects on, so a wait returns at once, and a count or a write in
    progress completes first.  (threading.Event is no good here: a handler
    calling set() while the main thread holds the event's lock deadlocks.)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._read_fd = self._write_fd = -1
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.requested = True
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: wait() returns anyway

    def wait(self, timeout: Optional[float]) -> bool:
        """Sleep up to `timeout` seconds (None: until a signal); True if
        a stop was requested."""
        if not self.requested:
            select.select([self._read_fd], [], [], timeout)
        return self.requested

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read_fd)
        os.close(self._write_fd)


def _ticks(interval: float, count: Optional[int], stop: _StopSignals) -> Iterator[int]:
    """Yield at a fixed rate from now on, until `count` ticks or a stop.

    The schedule does not drift with the time a sample takes; a sample
    that overruns its slot makes the next one skip to the following slot
    rather than fire twice in a row.
    """
    due = time.monotonic()
    n = 0
    while not stop.requested:
        yield n
        n += 1
        if count is not None and n >= count:
            return
        due += interval
        now = time.monotonic()
        if due < now:
            due += ((now - due) // interval + 1) * interval
        if stop.wait(due - now):
            return


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# ---- modes -------------------------------------------------------------------


def _render(fmt: str, series: Series, when: Optional[datetime.datetime]) -> str:
    if fmt == "prometheus":
        return render_prometheus(series)
    if fmt == "table":
        return render_table(series, when)
    return render_json(series, when)


def _print_samples(counter: Counter, query: Query, args: argparse.Namespace) -> int:
    """One sample, or one per interval: written and flushed whole, so a
    reader of the pipe never gets half a line."""
    fmt = args.format or "json"
    if args.interval is None:
        sys.stdout.write(_render(fmt, take(counter, query), None))
        return 0
    with _StopSignals() as stop:
        for _ in _ticks(args.interval, args.count, stop):
            when = _now()
            sys.stdout.write(_render(fmt, take(counter, query), when))
            sys.stdout.flush()
    return 0


def _write_textfile(counter: Counter, query: Query, args: argparse.Namespace) -> int:
    path: str = args.textfile

    def write_one() -> None:
        text = render_prometheus(take(counter, query))
        try:
            write_atomically(path, text)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {_describe(exc)}; the directory must "
                               "exist and be writable") from exc

    if args.interval is None:
        write_one()
        return 0
    with _StopSignals() as stop:
        for _ in _ticks(args.interval, args.count, stop):
            write_one()
    return 0


def _netns_label(args: argparse.Namespace) -> str:
    if args.netns is not None:
        return str(args.netns)
    try:
        return os.readlink("/proc/thread-self/ns/net")  # e.g. net:[4026531840]
    except OSError:
        return "own"


def _watch(counter: Counter, query: Query, args: argparse.Namespace) -> int:
    netns = _netns_label(args)
    previous = None
    with _StopSignals() as stop, Screen(sys.stdout) as screen:
        for _ in _ticks(args.interval or WATCH_INTERVAL, args.count, stop):
            when = _now()
            started = time.perf_counter()
            [(_, counts)] = take(counter, query)
            seconds = time.perf_counter() - started
            screen.draw(Frame(when=when, counts=counts, previous=previous, seconds=seconds,
                              backend=counter.backend, netns=netns))
            previous = counts
    return 0


def _serve(args: argparse.Namespace, options: Dict[str, Any]) -> int:
    address, port = args.serve
    try:
        from prometheus_client import REGISTRY, start_http_server

        from .prometheus import FastTCPStatCollector
    except ImportError as exc:
        if exc.name != "prometheus_client":
            raise
        raise CommandError("--serve needs prometheus_client: "
                           "pip install 'fasttcpstat[prometheus]'") from None
    # Handlers first: a SIGTERM right after the server starts must still
    # stop it cleanly.
    with _StopSignals() as stop:
        collector = FastTCPStatCollector(**_counter_options(args), **options)
        try:
            REGISTRY.register(collector)
            try:
                server, thread = start_http_server(port, addr=address, registry=REGISTRY)
            except OSError as exc:
                raise CommandError(f"cannot listen on {address} port {port}: "
                                   f"{_describe(exc)}; choose another [ADDR:]PORT") from exc
            host = f"[{address}]" if ":" in address else address
            sys.stderr.write(f"fasttcpstat: serving http://{host}:{server.server_port}/metrics\n")
            sys.stderr.flush()
            stop.wait(None)
            server.shutdown()
            server.server_close()
            thread.join()
        finally:
            collector.close()
    return 0


def _run(args: argparse.Namespace) -> int:
    options = _query_options(args)
    query = Query(**options)  # every value checked before anything opens
    if args.serve is not None:
        return _serve(args, options)
    options = _counter_options(args)
    with Counter(options.pop("backend"), **options) as counter:
        if args.watch:
            return _watch(counter, query, args)
        if args.textfile is not None:
            return _write_textfile(counter, query, args)
        return _print_samples(counter, query, args)


def build_pin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasttcpstat pin",
        description="Pin the BPF text iterator at PATH (as root, once): then any user "
                    "reads the counts of their own network namespace with `cat PATH` "
                    "or `fasttcpstat --pinned PATH`.",
    )
    parser.add_argument("path", nargs="?", default=DEFAULT_PIN_PATH,
                        help=f"a file in a BPF filesystem (default {DEFAULT_PIN_PATH})")
    return parser


def _run_pin(args: argparse.Namespace) -> int:
    sys.stdout.write(pin(args.path) + "\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command with `argv` (default: sys.argv[1:]); returns the
    exit status.  Usage errors exit with status 2 from argparse."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["pin"]:
        # A subcommand apart: the counting options mean nothing to it.
        args = build_pin_parser().parse_args(arguments[1:])
        run = _run_pin
    else:
        parser = build_parser()
        args = parser.parse_args(arguments)
        _check_usage(parser, args)
        run = _run
    try:
        return run(args)
    except KeyboardInterrupt:
        # Ctrl-C outside a loop (which stops cleanly by itself): aborted,
        # with the shell's usual status for it, and no traceback.
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`| head`): it has what it wanted.  Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except CommandError as exc:
        message = str(exc)
    except (OSError, ValueError, ImportError) as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise  # a broken installation, not an expected failure
        # ImportError: the C extension is missing and the backend needs it.
        message = _explain(exc, args)
    sys.stderr.write("fasttcpstat: error: " + " ".join(message.split()) + "\n")
    return 1

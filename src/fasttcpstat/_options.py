"""The command line's options: the parser, the rules between options, and
their translation into the API's arguments (Query, Counter).

Every message names the option the user typed, not the API argument
behind it.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from ._bpf import DEFAULT_PIN_PATH
from ._counter import BACKENDS, MAX_BY_PORT, SIDES
from ._ports import parse_port_list, parse_ports
from ._states import FAMILIES
from ._version import __version__

FORMATS = ("json", "table", "prometheus")
WATCH_INTERVAL = 1.0
# Not 0.0.0.0: the counts tell who talks to this host on which ports;
# publishing them on every interface should be a decision, not a default.
DEFAULT_SERVE_ADDRESS = "127.0.0.1"
# What one count can filter on, local and remote ranges together; None
# without the C extension: /proc, the only backend left then, has no limit.
MAX_PORT_RANGES: Optional[int]
try:
    from ._fasttcpstat import MAX_PORT_RANGES
except ImportError:
    MAX_PORT_RANGES = None

PortItems = List[Union[int, Tuple[int, int]]]

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
  fasttcpstat --all-netns --format table       one row per network namespace
  fasttcpstat --by-cgroup                      {cgroup path: {state: count}}
  fasttcpstat pin                              (root) then: fasttcpstat --pinned PATH

exit status: 0 ok, 1 error (one line on stderr), 2 usage error, 130 Ctrl-C.
"""


def is_number(text: str) -> bool:
    """Only ASCII digits: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not is_number(text.strip()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def listen_address(text: str) -> Tuple[str, int]:
    """'PORT', 'ADDR:PORT' or '[IPV6]:PORT' -> (address, port).  Like every
    type function here, it raises only ArgumentTypeError: argparse turns
    anything else into "invalid listen_address value"."""
    address, colon, port_text = text.rpartition(":")
    if not colon:
        address = DEFAULT_SERVE_ADDRESS
    elif address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not address or not is_number(port_text) or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected PORT or ADDR:PORT (ADDR an IP address, [ADDR] for IPv6, "
            f"PORT 0..65535), not {text!r}")
    return address, int(port_text)


def _add_counting_options(parser: argparse.ArgumentParser) -> None:
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
                      help="auto (default): the cheapest for the namespace's size (walk, "
                           "bpf, netlink), else the next; or force one")
    what.add_argument("--pinned", metavar="PATH",
                      help="count through an iterator pinned by `fasttcpstat pin` "
                           "(any user, own namespace; implies --backend pinned)")
    split = parser.add_argument_group("breakdown")
    split.add_argument("--by-family", action="store_true",
                       help="ipv4 and ipv6 apart (a 'family' label)")
    split.add_argument("--by-port", action="append", metavar="PORTS",
                       help=f"each of these ports apart (a 'port' label; at most {MAX_BY_PORT})")
    split.add_argument("--all-netns", action="store_true",
                       help="every network namespace of the host apart (a 'netns' label, "
                            "the inode, with name, container and pod where known)")
    split.add_argument("--by-cgroup", action="store_true",
                       help="per cgroup (v2) of each socket's owner, plus 'unowned' "
                            "(a 'cgroup' label; netlink, Linux >= 5.7)")
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
    out.add_argument("--serve", type=listen_address, metavar="[ADDR:]PORT",
                     help=f"serve /metrics over HTTP (default ADDR {DEFAULT_SERVE_ADDRESS}; "
                          "needs fasttcpstat[prometheus])")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasttcpstat",
        description="Count TCP sockets per state (Linux: a BPF iterator as root, "
                    "else netlink sock_diag, else /proc/net/tcp).",
        usage="%(prog)s [OPTIONS]\n       %(prog)s pin [PATH]",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_counting_options(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     title="commands (default: count)")
    pin = commands.add_parser(
        "pin", prog="fasttcpstat pin", help="pin the BPF text iterator (root, once) for unprivileged counting",
        description="Pin the BPF text iterator at PATH (as root, once): then any user "
                    "reads the counts of their own network namespace with `cat PATH` "
                    "or `fasttcpstat --pinned PATH`.")
    pin.add_argument("path", nargs="?", default=DEFAULT_PIN_PATH,
                     help=f"a new file in a BPF filesystem (default {DEFAULT_PIN_PATH})")
    return parser


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot mean anything (status 2)."""
    if args.command == "pin":
        given = [name for name, value in vars(args).items()
                 if name not in ("command", "path") and value != parser.get_default(name)]
        if given:
            parser.error(f"pin takes no counting options (--{given[0].replace('_', '-')})")
        return
    _check_per_owner(parser, args)
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
        parser.error("--watch shows totals (or one row per namespace or cgroup); for a "
                     "breakdown use --format table --interval SECONDS")
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


def _check_per_owner(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--all-netns and --by-cgroup are breakdowns of their own: one series
    per namespace or cgroup, which no other breakdown multiplies."""
    per_owner = [name for name, given in (("--all-netns", args.all_netns),
                                          ("--by-cgroup", args.by_cgroup)) if given]
    if not per_owner:
        return
    others = [name for name, given in (
        ("--by-cgroup", args.by_cgroup and args.all_netns),
        ("--by-family", args.by_family),
        ("--by-port", args.by_port is not None)) if given]
    if others:
        parser.error(f"{per_owner[0]} cannot be combined with {others[0]}: "
                     "choose one breakdown")
    if args.all_netns:
        for option, given in (("--netns", args.netns is not None),
                              ("--pinned", args.pinned is not None),
                              ("--backend pinned", args.backend == "pinned")):
            if given:
                parser.error(f"--all-netns cannot be combined with {option}: --all-netns "
                             "counts every namespace, each through its own counter")


# ---- options -> the API's arguments ---------------------------------------------


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
        if not is_number(low) or (dash and not is_number(high)):
            raise ValueError(f"{option}: {item!r} is not a port or a LOW-HIGH range")
        items.append((int(low), int(high)) if dash else int(low))
    return items


def _check_range_count(local: Optional[PortItems], remote: Optional[PortItems]) -> None:
    # Adjacent and overlapping ranges merge first, so only what is left counts.
    merged = [len(parse_ports(items, option) or ()) for items, option in
              ((local, "--local-port"), (remote, "--remote-port")) if items is not None]
    if MAX_PORT_RANGES is not None and sum(merged) > MAX_PORT_RANGES:
        raise ValueError(
            f"--local-port and --remote-port: {sum(merged)} port ranges given (after "
            f"merging adjacent ones); at most {MAX_PORT_RANGES} in all")


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


def query_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The keyword arguments of Query (and of the Prometheus collector)."""
    local = _port_items(args.local_port, "--local-port")
    remote = _port_items(args.remote_port, "--remote-port")
    _check_range_count(local, remote)
    return {
        "family": args.family,
        "states": _split(args.state) if args.state is not None else None,
        "local_ports": local,
        "remote_ports": remote,
        "by_family": args.by_family,
        "by_port": _by_port_items(args.by_port),
        "side": args.side or "local",
        "all_netns": args.all_netns,
        "by_cgroup": args.by_cgroup,
    }


def counter_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The keyword arguments of Counter (and of the Prometheus collector)."""
    pinned = args.pinned is not None
    return {"backend": "pinned" if pinned else args.backend, "netns": _netns(args.netns),
            "path": args.pinned}


def _netns(text: Optional[str]) -> Union[str, int, None]:
    """A number is a pid, as in the API; anything else a path.  The
    caller's own namespace, however named, needs no switch (and so no
    privilege): it is counted as if --netns were not given."""
    if text is None:
        return None
    spec: Union[str, int] = text
    if is_number(text[1:] if text[:1] in "+-" else text):
        spec = int(text)
        if spec < 1:
            raise ValueError(f"--netns: {text} is not a pid (a pid is at least 1); "
                             "--netns takes /var/run/netns/NAME, /proc/PID/ns/net or a pid")
    return None if _is_own_namespace(spec) else spec


def _is_own_namespace(spec: Union[str, int]) -> bool:
    path = f"/proc/{spec}/ns/net" if isinstance(spec, int) else spec
    try:
        theirs, ours = os.stat(path), os.stat("/proc/thread-self/ns/net")
    except (OSError, ValueError):
        return False  # the API reports what is wrong with it
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

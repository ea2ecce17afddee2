"""The fasttcpstat command.

One run does one of:
- print one sample (default), as --format json|table|prometheus;
- --interval SECONDS [--count N]: print a sample every interval (JSON Lines);
- --textfile PATH.prom [--interval ...]: write the Prometheus exposition
  atomically for node_exporter's textfile collector;
- --watch: a live terminal view;
- --serve [ADDR:]PORT: an HTTP /metrics endpoint (needs prometheus_client);
or the subcommand `fasttcpstat pin [PATH]`, which pins the BPF text
iterator (see fasttcpstat.pin).

_options holds the parser and the rules between options, _modes the run
modes, _signals the stop-on-signal plumbing they share.  This module
dispatches and turns failures into one line.

Exit status: 0 done (a stop by SIGINT or SIGTERM included), 2 the command
line is wrong (argparse), 1 a value was refused or the work failed; then
one line on stderr says what and what to do, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Optional, Sequence

from . import _modes
from ._bpf import pin
from ._all_netns import AllNetnsCounter
from ._modes import CommandError, describe
from ._netns import PROCFS_HINT
from ._options import build_parser, check_usage, counter_options, query_options
from ._report import Query, open_source

# Where the API's advice names its own arguments, the command names its options.
_CLI_PROCFS_HINT = ("--backend procfs --netns PID reads /proc/PID/net/tcp{,6}, "
                    "which needs no namespace switch")
_FALLS_BACK_TO = {"bpf": "netlink", "netlink": "/proc/net/tcp"}
_PIN_PRIVILEGE = "; pin needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"


def _hint(exc: BaseException, args: argparse.Namespace) -> str:
    """What to do about an expected failure, when the message itself does
    not say."""
    if args.command == "pin":
        return _PIN_PRIVILEGE if isinstance(exc, PermissionError) else ""
    if isinstance(exc, OSError) and args.netns is None and args.backend in _FALLS_BACK_TO:
        return (f"; --backend auto falls back to {_FALLS_BACK_TO[args.backend]} "
                f"where {args.backend} is refused")
    return ""


def _explain(exc: BaseException, args: argparse.Namespace) -> str:
    """An expected failure of the API (a refused value, a namespace or
    backend out of reach) as one phrase naming what to do.  It may come
    from setting up the counter or from a count: some backends set up
    lazily."""
    text = describe(exc).replace(PROCFS_HINT, _CLI_PROCFS_HINT)
    if text.startswith("netns: "):
        text = "--" + text  # the API's argument is the command's option
    return text + _hint(exc, args)


def _count(args: argparse.Namespace) -> int:
    options = query_options(args)
    query = Query(**options)  # every value checked before anything opens
    if args.serve is not None:
        return _modes.serve(args, options)
    # A single sample pays the backend's set-up once: "auto" weighs it.
    single = not args.watch and args.interval is None
    with open_source(query, one_count=single, **counter_options(args)) as counter:
        if args.watch:
            status = _modes.watch(counter, query, args)
        elif args.textfile is not None:
            status = _modes.write_textfile(counter, query, args)
        else:
            status = _modes.print_samples(counter, query, args)
        if isinstance(counter, AllNetnsCounter):
            _note_unreached(counter)
        return status


def _note_unreached(counter: AllNetnsCounter) -> None:
    """Without privileges some namespaces cannot be counted: say so, and
    why, in one line (the counts of the others are printed)."""
    parts = [counter.hidden] if counter.hidden else []
    if counter.skipped:
        first = next(iter(counter.skipped.values()))
        parts.append(f"{len(counter.skipped)} namespace(s) found but not counted "
                     f"(e.g. {first})")
    if parts and sys.stderr is not None:
        sys.stderr.write("fasttcpstat: note: " + "; ".join(parts) + "\n")


def _pin(args: argparse.Namespace) -> int:
    path: str = args.path
    if path.endswith("/") or os.path.isdir(path):
        # Else pin() would take the directory for the file and blame its parent.
        raise CommandError(f"pin: {path} is a directory; give the name of a new file "
                           "in it, e.g. /sys/fs/bpf/fasttcpstat")
    out = _modes.stdout()
    out.write(pin(path) + "\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command with `argv` (default: sys.argv[1:]); returns the
    exit status.  Usage errors exit with status 2 from argparse."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_usage(parser, args)
    try:
        return _pin(args) if args.command == "pin" else _count(args)
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
    if sys.stderr is not None:
        sys.stderr.write("fasttcpstat: error: " + " ".join(message.split()) + "\n")
    return 1

"""fasttcpstat: count TCP sockets per state on Linux, as fast as the kernel allows.

>>> import fasttcpstat
>>> fasttcpstat.counts()                                    # doctest: +SKIP
{'ESTABLISHED': 100, 'SYN_SENT': 0, ..., 'LISTEN': 4, 'CLOSING': 0}

The counting is done by a C extension, with memory that does not grow with
the number of sockets: as root, a BPF iterator program counts inside the
kernel; otherwise one netlink sock_diag dump (what ``ss`` uses) is tallied;
where both are refused, /proc/net/tcp{,6} is read instead.
"""
try:
    from . import _netlink
    from ._bpf import pin
    from ._counter import (
        BACKENDS,
        MAX_BY_PORT,
        Counter,
        auto_order,
        counts,
        counts_by_cgroup,
        counts_by_port,
    )
    from ._states import FAMILIES, STATES
    from ._summary import summary
    from ._version import __version__
except (KeyboardInterrupt, RuntimeError) as error:
    # `python -m fasttcpstat` imports this package before its __main__ can
    # catch a Ctrl-C (runpy sets sys.argv[0] to "-m" until it has found
    # __main__): end as the command does, with status 130 and no
    # traceback.  Imported by a program, the interrupt is the program's.
    # (No `from __future__ import` above: it would load a module before
    # this try.)
    # (A RuntimeError only where Python < 3.12 stands it for the interrupt,
    # as _fasttcpstat_launch.interrupted says; that module is not imported
    # here: outside the package, mypy would not check it from a wheel.)
    import sys

    if (isinstance(error, KeyboardInterrupt) or isinstance(error.__cause__, KeyboardInterrupt)) \
            and getattr(sys, "argv", [])[:1] == ["-m"]:
        raise SystemExit(130) from None  # 128 + SIGINT, as _fasttcpstat_launch
    raise

__all__ = [
    "BACKENDS",
    "FAMILIES",
    "MAX_BY_PORT",
    "STATES",
    "AllNetnsCounter",
    "Counter",
    "auto_order",
    "counts",
    "counts_all_netns",
    "counts_by_cgroup",
    "counts_by_port",
    "list_netns",
    "pin",
    "summary",
    "__version__",
]

# The all-namespaces API pulls in dataclasses, typing and re (~10 ms):
# imported at its first use, so that `import fasttcpstat` stays cheap.
_LAZY = {"AllNetnsCounter", "counts_all_netns", "list_netns"}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

    from ._all_netns import AllNetnsCounter, counts_all_netns, list_netns


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from . import _all_netns

        value = getattr(_all_netns, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fasttcpstat' has no attribute {name!r}")


def __dir__() -> "List[str]":  # a string: Python 3.8 has no list[str]
    return sorted(set(globals()) | _LAZY)


if _netlink.IMPORT_ERROR is not None:
    import warnings

    from ._extension import missing_warning

    warnings.warn(missing_warning(_netlink.IMPORT_ERROR), RuntimeWarning, stacklevel=2)

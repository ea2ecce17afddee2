"""fasttcpstat: count TCP sockets per state on Linux, as fast as the kernel allows.

>>> import fasttcpstat
>>> fasttcpstat.counts()                                    # doctest: +SKIP
{'ESTABLISHED': 100, 'SYN_SENT': 0, ..., 'LISTEN': 4, 'CLOSING': 0}

The counting is done by a C extension, with memory that does not grow with
the number of sockets: as root, a BPF iterator program counts inside the
kernel; otherwise one netlink sock_diag dump (what ``ss`` uses) is tallied;
where both are refused, /proc/net/tcp{,6} is read instead.
"""
from __future__ import annotations

import warnings

from . import _netlink
from ._bpf import pin
from ._counter import BACKENDS, MAX_BY_PORT, Counter, auto_order, counts, counts_by_port
from ._extension import missing_warning
from ._states import FAMILIES, STATES
from ._summary import summary
from ._version import __version__

__all__ = [
    "BACKENDS",
    "FAMILIES",
    "MAX_BY_PORT",
    "STATES",
    "Counter",
    "auto_order",
    "counts",
    "counts_by_port",
    "pin",
    "summary",
    "__version__",
]

if _netlink.IMPORT_ERROR is not None:
    warnings.warn(missing_warning(_netlink.IMPORT_ERROR), RuntimeWarning, stacklevel=2)

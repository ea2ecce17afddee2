"""summary(): the kernel's own socket totals, as `ss -s` shows them.

These are counters the kernel keeps anyway (/proc/net/sockstat,
sockstat6, snmp), so reading them costs microseconds whatever the number
of sockets.  They are totals with the kernel's semantics, not per-state
counts: "inuse" counts sockets hashed in the kernel's tables (listening
and established-like, not TIME_WAIT), "orphan" sockets no process holds,
"tw" TIME_WAIT sockets of both families, "alloc" all TCP sockets allocated
(including closed ones not yet freed), "curr_estab" connections in
ESTABLISHED or CLOSE_WAIT (RFC 1213 tcpCurrEstab).
"""
from __future__ import annotations

import os

from ._netns import Netns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict

    from ._netns import NetnsSpec


def _read_pairs(path: str, prefix: str) -> Dict[str, int]:
    """Parse 'PREFIX: key value key value' lines into {key: value}."""
    result: Dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                head, _, rest = line.partition(":")
                if head == prefix:
                    words = rest.split()
                    for key, value in zip(words[::2], words[1::2]):
                        result[key] = int(value)
    except FileNotFoundError:
        if not path.endswith("6"):
            raise
    return result


def _read_snmp_tcp(path: str) -> Dict[str, int]:
    """/proc/net/snmp has a 'Tcp:' line of names followed by one of values."""
    with open(path) as f:
        rows = [line.split()[1:] for line in f if line.startswith("Tcp:")]
    if len(rows) < 2:
        return {}
    return {key: int(value) for key, value in zip(rows[0], rows[1])}


def summary(netns: NetnsSpec = None) -> Dict[str, int]:
    """Totals of TCP sockets from the kernel's counters, in microseconds.

    Keys: tcp_inuse, tcp_orphan, tcp_timewait, tcp_alloc, tcp_mem_pages
    (IPv4 and IPv4-side counters of /proc/net/sockstat), tcp6_inuse
    (/proc/net/sockstat6), tcp_curr_estab (Tcp CurrEstab of /proc/net/snmp,
    ESTABLISHED + CLOSE_WAIT), sockets_used (all sockets of all kinds).
    netns: a pid (or /proc/PID/ns/net) reads that process's namespace.
    """
    net_dir = "/proc/thread-self/net" if os.path.isdir("/proc/thread-self/net") else "/proc/self/net"
    if netns is not None:
        target = Netns(netns)
        pid_dir = target.proc_net_dir()
        if pid_dir is None:
            raise ValueError(
                "summary(netns=...) needs a pid or /proc/PID/ns/net: the "
                "kernel's counters are read from /proc/PID/net"
            )
        target.check_proc_net()
        net_dir = pid_dir
    sockets = _read_pairs(os.path.join(net_dir, "sockstat"), "sockets")
    tcp = _read_pairs(os.path.join(net_dir, "sockstat"), "TCP")
    tcp6 = _read_pairs(os.path.join(net_dir, "sockstat6"), "TCP6")
    snmp = _read_snmp_tcp(os.path.join(net_dir, "snmp"))
    return {
        "tcp_inuse": tcp.get("inuse", 0),
        "tcp_orphan": tcp.get("orphan", 0),
        "tcp_timewait": tcp.get("tw", 0),
        "tcp_alloc": tcp.get("alloc", 0),
        "tcp_mem_pages": tcp.get("mem", 0),
        "tcp6_inuse": tcp6.get("inuse", 0),
        "tcp_curr_estab": snmp.get("CurrEstab", 0),
        "sockets_used": sockets.get("used", 0),
    }

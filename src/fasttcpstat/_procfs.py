"""The /proc fallback: count TCP states from /proc/net/tcp and tcp6.

It reads only the `st` column.  A regular expression picks the state's
second hex digit (the first is always 0 for TCP states 1..11), and a
one-byte bytes object is one of CPython's cached singletons, so no object
is built per line; memory stays bounded by one read chunk whatever the
number of sockets.

Semantics match netlink's: the kernel prints request sockets as SYN_RECV
(03) and timewait sockets by their sub-state; v4-mapped sockets appear in
tcp6 only; bound-but-inactive sockets are not listed.
"""
from __future__ import annotations

import os

from ._backend import Backend, Tally
from ._ports import matches
from ._states import FAMILY_IPV4, FAMILY_IPV6, masked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterator, List, Optional, Pattern, Tuple

    from ._netns import Netns
    from ._query import CountQuery

_CHUNK = 1 << 16
# Hex digit -> kernel state number, for the digits the kernel can print.
_DIGIT_STATE = {bytes([c]): int(chr(c), 16) for c in b"0123456789ABCDEF"}

# Compiled at the first /proc count: `re` costs milliseconds at import.
_patterns: Dict[str, Pattern[bytes]] = {}


def _pattern(name: str) -> Pattern[bytes]:
    """"states": the state's second hex digit (the first is always 0 for
    TCP states 1..11) of each line of /proc/net/tcp{,6}; "ports": the local
    and remote ports (hex) too.

    "  12: 0100007F:1F90 00000000:0000 0A ..." (tcp6: 32 hex digits per
    address).  ": " occurs once per line, after the slot number: anchoring
    on it rather than on the line start (^ *\\d+) makes the scan ~4x faster.
    """
    pattern = _patterns.get(name)
    if pattern is None:
        import re

        pattern = _patterns.setdefault(name, re.compile({
            "states": rb": [0-9A-F]+:[0-9A-F]{4} [0-9A-F]+:[0-9A-F]{4} 0([0-9A-F]) ",
            "ports": rb": [0-9A-F]+:([0-9A-F]{4}) [0-9A-F]+:([0-9A-F]{4}) 0([0-9A-F]) ",
        }[name]))
    return pattern


def proc_net_dir() -> str:
    """The calling thread's /proc net directory.

    /proc/net follows the thread group leader's network namespace; the
    thread-self view follows the calling thread's, as a netlink socket does.
    """
    if os.path.isdir("/proc/thread-self/net"):
        return "/proc/thread-self/net"
    return "/proc/self/net"


def _add(tally: List[int], digits: List[bytes]) -> None:
    # list.count() runs in C; a Python loop per line would cost more than
    # the regular expression.
    for digit in set(digits):
        tally[_DIGIT_STATE[digit]] += digits.count(digit)


def _chunks(fd: int) -> Iterator[bytes]:
    """Whole lines from an open /proc/net file, in read-sized chunks.  A
    line longer than a chunk (never in a real file) is gathered in a list,
    so its cost stays linear in its length."""
    pending: List[bytes] = []
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        end = chunk.rfind(b"\n") + 1
        if not end:
            pending.append(chunk)
            continue
        head = chunk[:end] if end < len(chunk) else chunk
        yield b"".join(pending) + head if pending else head
        pending = [chunk[end:]] if end < len(chunk) else []
    if pending:
        yield b"".join(pending)


def _count_states(fd: int, tally: List[int]) -> None:
    findall = _pattern("states").findall
    for data in _chunks(fd):
        _add(tally, findall(data))


def open_net_files(net_dir: str, names: List[str]) -> List[Optional[int]]:
    """Open each of `names` in `net_dir`; a missing tcp6 (IPv6 disabled)
    is None, any other missing file an error.  All or nothing."""
    fds: List[Optional[int]] = []
    try:
        for name in names:
            try:
                fds.append(os.open(os.path.join(net_dir, name), os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                if name != "tcp6":
                    raise
                fds.append(None)
    except BaseException:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        raise
    return fds


class _PortQuery:
    """Filters and per-port keys for the slow path that reads ports.

    Memory is bounded by one read chunk: each chunk's lines are folded
    into the tallies before the next is read.
    """

    def __init__(self, query: CountQuery) -> None:
        self.local = query.local
        self.remote = query.remote
        self.slot = {port: i for i, port in enumerate(query.by_port)}
        self.by_remote = query.by_remote

    def count(self, fd: int, tally: List[int], per_port: List[List[int]]) -> None:
        findall = _pattern("ports").findall
        for data in _chunks(fd):
            for lport_hex, rport_hex, digit in findall(data):
                lport, rport = int(lport_hex, 16), int(rport_hex, 16)
                if not (matches(lport, self.local) and matches(rport, self.remote)):
                    continue
                state = _DIGIT_STATE[digit]
                tally[state] += 1
                slot = self.slot.get(rport if self.by_remote else lport)
                if slot is not None:
                    per_port[slot][state] += 1


class ProcfsBackend(Backend):
    """Counts from /proc/net/tcp{,6} text; needs no privilege.

    With a pid-named namespace it reads /proc/PID/net, which shows that
    process's namespace without switching.
    """

    name = "procfs"

    def __init__(self, net_dir: Optional[str] = None, netns: Optional[Netns] = None) -> None:
        self._net_dir = net_dir
        self._netns = netns

    def _open(self, names: List[str]) -> List[Optional[int]]:
        if self._netns is not None and self._netns.proc_net_dir() is None:
            # /proc/net files bind to the namespace of whoever opens them.
            return self._netns.run_inside(
                lambda: open_net_files("/proc/thread-self/net", names))
        net_dir = self._net_dir or (
            self._netns.proc_net_dir() if self._netns is not None else None
        ) or proc_net_dir()
        return open_net_files(net_dir, names)

    def count(self, query: CountQuery) -> Tally:
        names = [name for bit, name in ((FAMILY_IPV4, "tcp"), (FAMILY_IPV6, "tcp6"))
                 if query.families & bit]
        fds = self._open(names)
        tallies = {"tcp": [0] * 16, "tcp6": [0] * 16}
        per_port = {name: [[0] * 16 for _ in query.by_port] for name in tallies}
        ports = None
        if query.local is not None or query.remote is not None or query.by_port:
            ports = _PortQuery(query)
        try:
            for name, fd in zip(names, fds):
                if fd is None:
                    continue
                if ports is None:
                    _count_states(fd, tallies[name])
                else:
                    ports.count(fd, tallies[name], per_port[name])
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
        mask = query.mask
        return Tally(masked(tallies["tcp"], mask), masked(tallies["tcp6"], mask), tuple(
            (masked(v4, mask), masked(v6, mask))
            for v4, v6 in zip(per_port["tcp"], per_port["tcp6"])
        ))

    def close(self) -> None:
        pass

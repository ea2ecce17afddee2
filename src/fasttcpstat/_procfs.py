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
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple

from ._ports import Range, matches
from ._states import FAMILY_IPV4, FAMILY_IPV6

if TYPE_CHECKING:
    from ._netns import Netns

# "  12: 0100007F:1F90 00000000:0000 0A ..." (tcp6: 32 hex digits per address).
# ": " occurs once per line, after the slot number.  Anchoring on it rather
# than on the line start (^ *\d+) makes the scan about 4x faster.
_STATE_DIGIT = re.compile(
    rb": [0-9A-F]+:[0-9A-F]{4} [0-9A-F]+:[0-9A-F]{4} 0([0-9A-F]) "
)
_CHUNK = 1 << 16
# Hex digit -> kernel state number, for the digits the kernel can print.
_DIGIT_STATE = {bytes([c]): int(chr(c), 16) for c in b"0123456789ABCDEF"}


def proc_net_dir() -> str:
    """The calling thread's /proc net directory.

    /proc/net follows the thread group leader's network namespace; the
    thread-self view follows the calling thread's, as a netlink socket does.
    """
    if os.path.isdir("/proc/thread-self/net"):
        return "/proc/thread-self/net"
    return "/proc/self/net"


# The same, keeping both ports (hex) for filtered or per-port counts.
_PORTS_AND_STATE = re.compile(
    rb": [0-9A-F]+:([0-9A-F]{4}) [0-9A-F]+:([0-9A-F]{4}) 0([0-9A-F]) "
)


def _add(tally: List[int], digits: List[bytes]) -> None:
    # collections.Counter tallies a list in C; a Python loop per line would
    # cost more than the regular expression.
    for digit, n in Counter(digits).items():
        tally[_DIGIT_STATE[digit]] += n


def _chunks(fd: int) -> Iterator[bytes]:
    """Whole lines from an open /proc/net file, in read-sized chunks."""
    pending = b""
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        data = pending + chunk if pending else chunk
        end = data.rfind(b"\n") + 1
        pending = data[end:]
        if end:
            yield data[:end] if pending else data
    if pending:
        yield pending


def _count_states(fd: int, tally: List[int]) -> None:
    for data in _chunks(fd):
        _add(tally, _STATE_DIGIT.findall(data))


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
    """Filters and per-port keys for the slow path that reads ports."""

    def __init__(self, local: Optional[List[Range]], remote: Optional[List[Range]],
                 by_port: Sequence[int], by_remote: bool) -> None:
        self.local = local
        self.remote = remote
        self.slot = {port: i for i, port in enumerate(by_port)}
        self.by_remote = by_remote

    def count(self, fd: int, tally: List[int], per_port: List[List[int]]) -> None:
        keys: "Counter[Tuple[bytes, bytes, bytes]]" = Counter()
        for data in _chunks(fd):
            keys.update(_PORTS_AND_STATE.findall(data))
        for (lport_hex, rport_hex, digit), n in keys.items():
            lport, rport = int(lport_hex, 16), int(rport_hex, 16)
            if not (matches(lport, self.local) and matches(rport, self.remote)):
                continue
            state = _DIGIT_STATE[digit]
            tally[state] += n
            slot = self.slot.get(rport if self.by_remote else lport)
            if slot is not None:
                per_port[slot][state] += n


def _masked(tally: List[int], states_mask: int) -> Tuple[int, ...]:
    # The kernel filters states for netlink; do the same here so every
    # backend returns the same tallies.
    return tuple(n if states_mask & (1 << i) else 0 for i, n in enumerate(tally))


class ProcfsBackend:
    """Counts from /proc/net/tcp{,6} text; needs no privilege.

    With a pid-named namespace it reads /proc/PID/net, which shows that
    process's namespace without switching.
    """

    name = "procfs"

    def __init__(self, net_dir: Optional[str] = None, netns: "Optional[Netns]" = None) -> None:
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

    def count(self, families: int, states_mask: int,
              local: Optional[List[Range]] = None, remote: Optional[List[Range]] = None,
              by_port: Sequence[int] = (), by_remote: bool = False) -> Any:
        names = [name for bit, name in ((FAMILY_IPV4, "tcp"), (FAMILY_IPV6, "tcp6"))
                 if families & bit]
        fds = self._open(names)
        tallies = {"tcp": [0] * 16, "tcp6": [0] * 16}
        per_port = {name: [[0] * 16 for _ in by_port] for name in tallies}
        query = None
        if local is not None or remote is not None or by_port:
            query = _PortQuery(local, remote, by_port, by_remote)
        try:
            for name, fd in zip(names, fds):
                if fd is None:
                    continue
                if query is None:
                    _count_states(fd, tallies[name])
                else:
                    query.count(fd, tallies[name], per_port[name])
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
        totals = (_masked(tallies["tcp"], states_mask), _masked(tallies["tcp6"], states_mask))
        if not by_port:
            return totals
        return totals, tuple(
            (_masked(v4, states_mask), _masked(v6, states_mask))
            for v4, v6 in zip(per_port["tcp"], per_port["tcp6"])
        )

    def close(self) -> None:
        pass

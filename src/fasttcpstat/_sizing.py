"""Which of bpf and netlink costs less, from the namespace's size.

Measured with bench/crossover.py (bench/results/crossover.md), CPU per
count on this kernel (6.18):

- Both walk every bucket of the established hash.  An empty bucket costs
  the BPF iterator ~2.5-3.2 ns and netlink's single walk ~4.3-4.9 ns; a
  socket costs bpf ~90-400 ns and netlink ~150-700 ns.  So a reused bpf
  counter costs less than netlink at every size, empty or full, small
  table or large; on a 1,024-bucket table holding nothing the two are
  within 5%.  A long-lived Counter("auto") therefore takes bpf.
- Setting bpf up costs ~200 µs more than netlink (a program load per
  Counter).  A one-shot count (fasttcpstat.counts(), counts_by_port())
  pays it every time, so it takes netlink unless the table is big or
  full enough for bpf's walk to save that much.

The inputs cost microseconds: the table size (net.ipv4.tcp_ehash_entries,
negative when the namespace shares the host's table; fixed for the
namespace's life, so read once per namespace) and the kernel's socket
totals (/proc/net/sockstat: "sockets: used", an over-estimate of TCP
sockets that favours bpf, plus TIME_WAIT).
"""
from __future__ import annotations

import _thread
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

# Nanoseconds of CPU a bpf count saves over netlink, per bucket and per
# socket (lower ends of the measured ranges), and what a one-shot bpf
# count costs more to set up.
SAVED_NS_PER_BUCKET = 1.5
SAVED_NS_PER_SOCKET = 60.0
EXTRA_SETUP_NS = 200_000.0

# A verdict holds this long, so that a loop of one-shot counts does not
# re-read the sizes every time.
VERDICT_SECONDS = 1.0

_lock = _thread.allocate_lock()
_tables: Dict[int, Optional[int]] = {}   # netns inode -> buckets
_verdicts: Dict[Tuple[int, int], Tuple[float, bool]] = {}  # (pid, thread) -> (until, bpf?)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def table_size() -> Optional[int]:
    """Buckets of the established hash the calling thread's namespace
    walks (its own or the host's), or None before Linux 6.1."""
    try:
        return abs(int(_read("/proc/sys/net/ipv4/tcp_ehash_entries")))
    except (OSError, ValueError):
        return None


def socket_bound() -> int:
    """At least the TCP sockets of the calling thread's namespace's hash:
    every socket in use (any kind) plus TIME_WAIT."""
    used = tw = 0
    for line in _read("/proc/thread-self/net/sockstat").splitlines():
        words = line.split()
        if words[:2] == [b"sockets:", b"used"] and len(words) > 2:
            used = int(words[2])
        elif words[:1] == [b"TCP:"] and b"tw" in words[1:-1]:
            tw = int(words[words.index(b"tw") + 1])
    return used + tw


def one_count_prefers_bpf(buckets: Optional[int], sockets: int) -> bool:
    """Whether a single bpf count, setup included, costs less than netlink's."""
    if buckets is None:
        return True  # no size to go by: the default order
    saved = SAVED_NS_PER_BUCKET * buckets + SAVED_NS_PER_SOCKET * sockets
    return saved > EXTRA_SETUP_NS


def one_count_backend() -> str:
    """"bpf" or "netlink": the cheaper for one count in the calling
    thread's namespace."""
    # The verdict is kept per thread (a thread rarely changes namespace
    # within a second, and a wrong guess costs time, never a count);
    # the table size per namespace, which fixes it for its life.
    thread = (os.getpid(), _thread.get_ident())
    now = time.monotonic()
    with _lock:
        verdict = _verdicts.get(thread)
    if verdict is not None and verdict[0] > now:
        return "bpf" if verdict[1] else "netlink"
    try:
        ns = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return "bpf"
    with _lock:
        if ns not in _tables:
            _tables[ns] = table_size()
        buckets = _tables[ns]
    if buckets is not None and SAVED_NS_PER_BUCKET * buckets > EXTRA_SETUP_NS:
        bpf = True  # a big table: no need to count sockets
    else:
        try:
            bpf = one_count_prefers_bpf(buckets, socket_bound())
        except (OSError, ValueError):
            bpf = True
    with _lock:
        if len(_verdicts) > 64 or len(_tables) > 64:
            # Threads and namespaces come and go (and inodes are reused).
            _verdicts.clear()
            _tables.clear()
        _verdicts[thread] = (now + VERDICT_SECONDS, bpf)
    return "bpf" if bpf else "netlink"

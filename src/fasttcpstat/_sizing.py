"""Which of walk, bpf and netlink costs least, from the namespace's size.

The one place "auto" weighs the backends for one namespace.  A count's CPU
is modelled as

    fixed + per_bucket * buckets + per_own * own + per_foreign * foreign

(+ the set-up, for a one-shot count), where buckets is the size of the
established hash the namespace walks (its own, or the host's), own the
sockets of the counted namespace and foreign those of other namespaces
in the same table: every method walks every bucket and every socket of
the table, and pays more for a socket it counts than for one it skips.

Measured with bench/crossover.py (bench/results/crossover.md: bpf against
netlink; bench/results/crossover-walk.md: the walk against both), CPU per
count on this kernel (6.18); the constants (COSTS, SETUP_NS) are
conservative values from the measured ranges (the walk is taken only
where it clearly saves):

- bpf against netlink: an empty bucket costs the BPF iterator ~2.5-3.2 ns
  and netlink's single walk ~4.3-4.9 ns; a socket costs bpf ~90-400 ns
  and netlink ~150-700 ns.  A reused bpf counter costs less than netlink
  at every size.  Setting bpf up costs ~200 µs more than netlink (a
  program load per Counter), so a one-shot count (counts(),
  counts_by_port()) takes netlink unless the table is big or full enough.
- the walk (crossover-walk.md, own tables of about one bucket per
  socket): ~30-110 ns per socket of its own against the iterator's
  ~90-350 ns (no lock, reference or program call per socket), but
  ~3.6 ns per empty bucket (bpf ~2.3) and a fixed ~80 µs per count (its
  runs and the host's listener table).  Reused: 1.7x bpf on an empty
  1,024-bucket table, 0.86x at 1k sockets, 0.26x at 10k, 0.32x at 100k,
  0.33x at 1M; 1.4-1.6x on big empty tables.  In a table shared with a
  busy host it pays ~135 ns per socket of other namespaces against bpf's
  ~85 (a small namespace next to 2M sockets: walk 289 ms, bpf 176 ms).
- the walk's set-up: BTF and the self-check (~6.5 ms CPU) once per
  process (cached in _walk.py), then a program load (~1.7 ms) per Counter.
  A one-shot count pays the load every time, and the first one of a
  process the rest too: counts() walks from ~20k sockets once the walk
  is set up in the process, from ~110k in a fresh one.

A long-lived Counter("auto") (an exporter) re-weighs at most every
RECHECK_SECONDS from the counts it makes (Policy.count), and moves to the
other backend only when that one is estimated at most SWITCH_RATIO of the
one in use, so a table near the crossover does not make it flap.

The inputs cost microseconds: the table size (net.ipv4.tcp_ehash_entries,
negative when the namespace shares the host's table; fixed for the
namespace's life, so read once per namespace) and the kernel's socket
totals (/proc/net/sockstat: TCP in use and TIME_WAIT for the namespace;
"alloc", every TCP socket of the host, bounds those of a shared table).
"""
from __future__ import annotations

import _thread
import os
import sys
import time

from ._forklock import ForkSafeLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, Optional, Tuple

# CPU nanoseconds per count: (fixed, per bucket, per own socket, per
# foreign socket), and a set-up paid by each one-shot count.
COSTS = {
    "walk": (78_000.0, 3.6, 35.0, 135.0),
    "bpf": (45_000.0, 2.3, 110.0, 85.0),
    "netlink": (45_000.0, 4.3, 170.0, 88.0),
}
SETUP_NS = {"walk": 1_650_000.0, "bpf": 185_000.0, "netlink": 9_000.0}
# The walk's first set-up in a process: BTF and the self-check.
WALK_FIRST_SETUP_NS = 6_500_000.0

# A verdict holds this long, so that a loop of one-shot counts does not
# re-read the sizes every time.
VERDICT_SECONDS = 1.0
# A long-lived Counter re-weighs its backend at most this often, and
# moves only to one estimated at most SWITCH_RATIO of the one in use.
RECHECK_SECONDS = 10.0
SWITCH_RATIO = 0.7

_lock = ForkSafeLock()
_tables: Dict[int, Optional[int]] = {}   # netns inode -> buckets (negative: shared)
_verdicts: Dict[Tuple[int, int], Tuple[float, str]] = {}  # (pid, thread) -> (until, name)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _signed_table_size() -> Optional[int]:
    try:
        return int(_read("/proc/sys/net/ipv4/tcp_ehash_entries"))
    except (OSError, ValueError):
        return None


def table_size() -> Optional[int]:
    """Buckets of the established hash the calling thread's namespace
    walks (its own or the host's), or None before Linux 6.1."""
    size = _signed_table_size()
    return None if size is None else abs(size)


def sockstat() -> Dict[str, int]:
    """The calling thread's namespace's socket totals: "used" (sockets of
    any kind), TCP "inuse", "tw" (TIME_WAIT) and the host's TCP "alloc"."""
    found = {"used": 0, "inuse": 0, "tw": 0, "alloc": 0}
    for line in _read("/proc/thread-self/net/sockstat").splitlines():
        words = line.split()
        if words[:2] == [b"sockets:", b"used"] and len(words) > 2:
            found["used"] = int(words[2])
        elif words[:1] == [b"TCP:"]:
            for key in ("inuse", "tw", "alloc"):
                name = key.encode()
                if name in words[1:-1]:
                    found[key] = int(words[words.index(name) + 1])
    return found


def estimate_ns(name: str, buckets: int, own: int, foreign: int = 0,
                one_shot: bool = False, walk_ready: bool = True) -> float:
    """The modelled CPU of one count with backend `name` (a key of COSTS)."""
    fixed, per_bucket, per_own, per_foreign = COSTS[name]
    cost = fixed + per_bucket * buckets + per_own * own + per_foreign * foreign
    if one_shot:
        cost += SETUP_NS[name]
        if name == "walk" and not walk_ready:
            cost += WALK_FIRST_SETUP_NS
    return cost


def cheapest(names: Iterable[str], buckets: Optional[int], own: int, foreign: int = 0,
             one_shot: bool = False, walk_ready: bool = True) -> str:
    """The cheapest of `names` (keys of COSTS, in preference order: the
    first wins a tie) for one count."""
    names = list(names)
    if buckets is None:
        # Before Linux 6.1 (no size to go by, and no walk): the default order.
        return next(n for n in names if n != "walk")
    return min(names, key=lambda n: estimate_ns(n, buckets, own, foreign,
                                                 one_shot, walk_ready))


def one_count_prefers_bpf(buckets: Optional[int], sockets: int) -> bool:
    """Whether a single bpf count, setup included, costs less than netlink's."""
    return cheapest(("bpf", "netlink"), buckets, sockets, one_shot=True) == "bpf"


def netns_inode() -> int:
    """The calling thread's network namespace's inode."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _sizes() -> Tuple[Optional[int], int, int]:
    """(buckets, own sockets, foreign sockets) of the calling thread's
    namespace's table; buckets None when unknown."""
    ns = netns_inode()
    with _lock():
        if ns not in _tables:
            if len(_tables) > 64:
                _tables.clear()  # namespaces come and go (and inodes are reused)
            _tables[ns] = _signed_table_size()
        signed = _tables[ns]
    found = sockstat()
    own = found["inuse"] + found["tw"]
    # A shared table (negative size; the initial namespace's is positive
    # but shared too) holds the host's sockets: "alloc" counts every full
    # TCP socket, own tables' included, so it over-estimates them.
    foreign = max(0, found["alloc"] - found["inuse"]) if signed is None or signed < 0 \
        or ns == _init_netns_inode() else 0
    return (None if signed is None else abs(signed)), own, foreign


def _init_netns_inode() -> int:
    # PID 1's: the host's initial namespace, or in a container the
    # container's (then taken as shared: an over-estimate that favours bpf).
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return 0


def walk_ready() -> bool:
    """Whether this process has already paid the walk's BTF reading and
    self-check (and passed)."""
    walk = sys.modules.get(f"{__package__}._walk")
    return walk is not None and None in walk._checked.values()


def walk_possible() -> bool:
    """False where the walk is refused anyway (Linux < 6.2)."""
    from . import _walk

    return _walk._kernel_release() >= _walk.MIN_KERNEL


def choose(names: Iterable[str], one_shot: bool) -> str:
    """The cheapest of `names` for a count in the calling thread's
    namespace (a one-shot count, or one of many by a reused Counter)."""
    names = [n for n in names if n in COSTS]
    if "walk" in names and not walk_possible():
        names.remove("walk")
    if len(names) < 2:
        return names[0] if names else ""
    try:
        buckets, own, foreign = _sizes()
    except (OSError, ValueError):
        return names[0]
    return cheapest(names, buckets, own, foreign, one_shot, walk_ready())


def one_count_backend(names: Iterable[str] = ("bpf", "netlink")) -> str:
    """The cheapest of `names` for one count in the calling thread's
    namespace; the verdict is kept per thread for VERDICT_SECONDS."""
    # A thread rarely changes namespace within a second, and a wrong guess
    # costs time, never a count.
    names = tuple(names)
    thread = (os.getpid(), _thread.get_ident())
    now = time.monotonic()
    with _lock():
        verdict = _verdicts.get(thread)
    if verdict is not None and verdict[0] > now and verdict[1] in names:
        return verdict[1]
    name = choose(names, one_shot=True)
    with _lock():
        if len(_verdicts) > 64:
            _verdicts.clear()  # threads come and go
        _verdicts[thread] = (now + VERDICT_SECONDS, name)
    return name


def better_backend(current: str, names: Iterable[str]) -> Optional[str]:
    """For a reused Counter on `current`: another of `names` estimated at
    most SWITCH_RATIO of `current`'s cost per count in the calling
    thread's namespace, or None to stay."""
    names = [n for n in names if n in COSTS and n != current]
    if current not in COSTS or not names:
        return None
    if "walk" in names and not walk_possible():
        names.remove("walk")
    try:
        buckets, own, foreign = _sizes()
    except (OSError, ValueError):
        return None
    if buckets is None or not names:
        return None
    best = min(names, key=lambda n: estimate_ns(n, buckets, own, foreign))
    if estimate_ns(best, buckets, own, foreign) <= \
            SWITCH_RATIO * estimate_ns(current, buckets, own, foreign):
        return best
    return None

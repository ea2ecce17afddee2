"""The BPF iterator backend: counting inside the kernel.

A BPF program over the kernel's `tcp` iterator adds each socket to a
counter array (and, for counts_by_cgroup(), to its owner cgroup's row in
a bounded hash map); only the counters reach user space.  The program is built
by the C extension for the running kernel's layout, read from its BTF once
per process, and loaded with bpf(2): no libbpf, no compiler, no kernel
module.  Needs Linux >= 5.9 with BTF, and CAP_BPF + CAP_PERFMON (or
CAP_SYS_ADMIN).

Also here: pinning a text iterator that any user can read, and reading it
back (backend="pinned").
"""
from __future__ import annotations

import errno
import os
import stat

from . import _netlink
from ._backend import Backend, Lease, Tally
from ._forklock import ForkSafeLock
from ._states import ALL_STATES_MASK, FAMILY_IPV4, FAMILY_IPV6, STATES, masked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple, Union

    from ._backend import Pair
    from ._fasttcpstat import BpfCounter
    from ._netns import Netns
    from ._ports import Range
    from ._query import CountQuery

    # (local ranges, remote ranges, cgroups told apart or 0)
    ProgramKey = Tuple[Tuple[Range, ...], Tuple[Range, ...], int]
    PerCgroup = Tuple[Dict[int, Pair], Pair, Pair]

try:
    from . import _fasttcpstat
except ImportError:  # no C extension: _netlink.IMPORT_ERROR says why
    _fasttcpstat = None  # type: ignore[assignment]

# Programs with port filters, kept per counter (a load is ~0.3 ms).
MAX_PROGRAMS = 8
_UNFILTERED: ProgramKey = ((), (), 0)

_layout_lock = ForkSafeLock()
_layout: Optional[Tuple[int, ...]] = None
# The socket -> owner cgroup id offsets, or why the kernel has none.
_cgroup_layout: Optional[Union[Tuple[int, ...], OSError]] = None


def layout() -> Tuple[int, ...]:
    """The kernel's BTF layout for the iterator program, read once."""
    global _layout
    with _layout_lock():
        if _layout is None:
            if _fasttcpstat is None:
                raise ImportError(
                    "the bpf backend needs fasttcpstat's C extension, which is not "
                    f"built here ({_netlink.IMPORT_ERROR})"
                )
            _layout = _fasttcpstat.btf_layout()
        return _layout


def cgroup_layout() -> Tuple[int, ...]:
    """The BTF offsets from a socket to its owner cgroup's id, read once;
    OSError (ENOENT) on a kernel without cgroup socket data."""
    global _cgroup_layout
    with _layout_lock():
        if _cgroup_layout is None:
            try:
                _cgroup_layout = _fasttcpstat.btf_cgroup_layout()
            except OSError as exc:
                _cgroup_layout = exc
        if isinstance(_cgroup_layout, OSError):
            raise _cgroup_layout
        return _cgroup_layout


def _mask_pair(pair: Pair, mask: int) -> Pair:
    return masked(pair[0], mask), masked(pair[1], mask)


def _mask_cgroups(per_cgroup: PerCgroup, mask: int) -> PerCgroup:
    """The breakdown as netlink's state filter leaves it: states outside
    `mask` zeroed, and cgroups left with no socket dropped."""
    by_id, unowned, overflow = per_cgroup
    kept = {}
    for cgroup_id, pair in by_id.items():
        pair = _mask_pair(pair, mask)
        if any(pair[0]) or any(pair[1]):
            kept[cgroup_id] = pair
    return kept, _mask_pair(unowned, mask), _mask_pair(overflow, mask)


class BpfBackend(Backend):
    """Counts with BPF iterator programs; one per port filter (and per
    cgroup breakdown), cached.

    The iterator programs count totals, or totals by owner cgroup (where
    the kernel's BTF shows the socket's cgroup: per_cgroup is then True);
    per-port breakdowns go elsewhere (the policy sends them to netlink).
    """

    name = "bpf"
    per_port = False

    @property
    def per_cgroup(self) -> bool:  # type: ignore[override]
        """Whether the kernel's BTF shows a socket's cgroup; read at the
        first breakdown by cgroup (once per process), not at creation,
        which it would slow down by the time of a second BTF parse."""
        try:
            cgroup_layout()
        except OSError:
            # The policy then sends breakdowns by cgroup to netlink, which
            # says why it cannot make them either.
            return False
        return True

    def __init__(self, netns: Optional[Netns] = None,
                 emit_shift: Optional[int] = None) -> None:
        self._layout = layout()
        _netlink.import_threading()
        self._netns = netns
        self._emit_shift = emit_shift or _fasttcpstat.BPF_EMIT_SHIFT
        self._lock = ForkSafeLock()
        # Least recently used first; a program is closed only when no
        # count holds it (Lease), whichever thread evicts it.
        self._programs: Dict[ProgramKey, Lease[BpfCounter]] = {}
        self._closed = False
        with self._lock():
            self._take(_UNFILTERED).give_back()  # load now: refusals show at creation

    def _take(self, key: ProgramKey) -> Lease[BpfCounter]:
        """The program for `key`, taken; call with self._lock held."""
        lease = self._programs.pop(key, None)
        if lease is None:
            lease = Lease(_fasttcpstat.BpfCounter(
                self._layout, local=key[0], remote=key[1], emit_shift=self._emit_shift,
                by_cgroup=key[2], cgroup_layout=cgroup_layout() if key[2] else None))
        self._programs[key] = lease  # now the most recently used
        lease.take()
        if len(self._programs) > MAX_PROGRAMS:
            # Evict the least recently used, but never the unfiltered
            # program, which every unfiltered count uses.
            oldest = next(k for k in self._programs if k != _UNFILTERED)
            self._programs.pop(oldest).retire()
        return lease

    def run(self, query: CountQuery) -> Tuple[Any, int]:
        """Raw ((ipv4, ipv6), bytes the program wrote); with
        query.by_cgroup, (((ipv4, ipv6), per_cgroup), bytes)."""
        if query.by_cgroup and not self.per_cgroup:
            raise ValueError("this kernel's BTF shows no socket cgroup: "
                             "count by cgroup with netlink")
        key = (query.local or (), query.remote or (), query.by_cgroup)
        with self._lock():
            if self._closed:
                raise ValueError("I/O operation on a closed BpfBackend")
            lease = self._take(key)
        try:
            program = lease.resource
            # The iterator walks the namespace of the thread that creates it.
            if self._netns is not None:
                fd = self._netns.run_inside(program.create_iter)
            else:
                fd = program.create_iter()
            return program.run(fd, query.families)
        finally:
            with self._lock():
                lease.give_back()

    def count(self, query: CountQuery) -> Tally:
        result, _ = self.run(query)
        if query.by_cgroup:
            (v4, v6), per_cgroup = result
            return Tally(masked(v4, query.mask), masked(v6, query.mask),
                         per_cgroup=_mask_cgroups(per_cgroup, query.mask))
        v4, v6 = result
        if query.mask == ALL_STATES_MASK:
            # Nothing to zero among the states a result reads (1..11), and
            # ~3 µs saved on a count that may cost 40.
            return Tally(v4, v6)
        return Tally(masked(v4, query.mask), masked(v6, query.mask))

    def close(self) -> None:
        with self._lock():
            self._closed = True
            for lease in self._programs.values():
                lease.retire()
            self._programs.clear()


# --- pinned text iterator -------------------------------------------------

DEFAULT_PIN_PATH = "/sys/fs/bpf/fasttcpstat"


def _is_bpffs(directory: str) -> bool:
    """Whether `directory` is on a BPF filesystem.

    Read from /proc/self/mountinfo (the innermost mount holding it) rather
    than statfs(2): that would need ctypes, which costs milliseconds, and
    a process that imported us as root and then dropped privileges (the
    pinned file's very use) may no longer be able to import it.
    """
    if not os.path.isdir(directory):
        return False
    path = os.path.realpath(directory)
    fstype = ""
    longest = -1
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            # "36 35 0:30 / /sys/fs/bpf rw,relatime shared:10 - bpf bpf rw"
            fields, _, tail = line.partition(b" - ")
            words = fields.split()
            if len(words) < 5 or not tail:
                continue
            mount = os.fsdecode(words[4]).replace("\\040", " ")
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            # A later mount on the same point hides the earlier one.
            if inside and len(mount) >= longest:
                longest = len(mount)
                fstype = os.fsdecode(tail.split()[0])
    return fstype == "bpf"


def _mount_bpffs(directory: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", os.fsencode(directory), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting a BPF filesystem on {directory}: {os.strerror(err)}")


def pin(path: str = DEFAULT_PIN_PATH, *, mode: int = 0o444) -> str:
    """Pin a text iterator at `path` so that any user can read counts.

    Run once as root (e.g. at boot).  Reading the file (``cat PATH``)
    walks the reader's own network namespace and prints one line per
    state: ``NAME IPV4 IPV6``, after a header line and, on big hosts,
    ``# visited N`` progress comments.  Concurrent readers do not
    interfere: each read session has its own counters.  /sys/fs/bpf is
    mounted if it is not yet a BPF filesystem.  `mode` is the file's
    permission (0o444: everyone may read).
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if not _is_bpffs(directory):
        if directory == "/sys/fs/bpf":
            _mount_bpffs(directory)
        else:
            raise ValueError(
                f"pin: {directory} is not a BPF filesystem; use a path under "
                "/sys/fs/bpf or mount one (mount -t bpf bpf DIR)"
            )
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "pin: already exists; remove it first", path)
    pin_layout = layout()  # first: it says so when the C extension is missing
    _fasttcpstat.bpf_pin(pin_layout, path)
    os.chmod(path, mode)
    return path


def parse_pinned(text: str, path: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Tallies (indexed by state number) from a pinned iterator's text."""
    v4 = [0] * 16
    v6 = [0] * 16
    seen = set()
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("state "):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] not in STATES:
            raise ValueError(f"{path}: not a fasttcpstat pinned iterator (line {line!r})")
        number = STATES.index(fields[0]) + 1
        v4[number], v6[number] = int(fields[1]), int(fields[2])
        seen.add(fields[0])
    if len(seen) != len(STATES):
        raise ValueError(f"{path}: incomplete output from the pinned iterator")
    return tuple(v4), tuple(v6)


class PinnedBackend(Backend):
    """Reads a pinned text iterator: unprivileged in-kernel counting.

    The pinned program counts every socket: no port filter, no breakdown.
    """

    name = "pinned"
    per_port = False
    port_filters = False

    def __init__(self, path: str, netns: Optional[Netns] = None) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be the pinned file's path, not {type(path).__name__}")
        self.path = os.fspath(path)
        self._netns = netns
        st = os.stat(self.path)  # FileNotFoundError names the path
        if not stat.S_ISREG(st.st_mode) or not _is_bpffs(os.path.dirname(os.path.abspath(self.path))):
            raise ValueError(f"path: {self.path} is not a pinned BPF iterator")

    def _open(self) -> int:
        # The iterator walks the namespace of whoever opens the file.
        if self._netns is not None:
            return self._netns.run_inside(lambda: os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def count(self, query: CountQuery) -> Tally:
        fd = self._open()
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        v4, v6 = parse_pinned(b"".join(chunks).decode("ascii", "replace"), self.path)
        none = (0,) * 16
        return Tally(masked(v4, query.mask) if query.families & FAMILY_IPV4 else none,
                     masked(v6, query.mask) if query.families & FAMILY_IPV6 else none)

    def close(self) -> None:
        pass

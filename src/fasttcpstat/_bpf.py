"""The BPF iterator backend: counting inside the kernel.

A BPF program over the kernel's `tcp` iterator adds each socket to a
counter array; only the counters reach user space.  The program is built
by the C extension for the running kernel's layout, read from its BTF once
per process, and loaded with bpf(2): no libbpf, no compiler, no kernel
module.  Needs Linux >= 5.9 with BTF, and CAP_BPF + CAP_PERFMON (or
CAP_SYS_ADMIN).

Also here: pinning a text iterator that any user can read, and reading it
back (backend="pinned").
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from . import _netlink
from ._ports import Range
from ._states import FAMILY_IPV4, FAMILY_IPV6, STATES

if TYPE_CHECKING:
    from ._netns import Netns

try:
    from . import _fasttcpstat
except ImportError:  # no C extension: _netlink.IMPORT_ERROR says why
    _fasttcpstat = None  # type: ignore[assignment]

# Programs with port filters, kept per counter (a load is ~0.3 ms).
_MAX_PROGRAMS = 8

_layout_lock = threading.Lock()
_layout: Optional[Tuple[int, ...]] = None


def layout() -> Tuple[int, ...]:
    """The kernel's BTF layout for the iterator program, read once."""
    global _layout
    with _layout_lock:
        if _layout is None:
            if _fasttcpstat is None:
                raise ImportError(
                    "the bpf backend needs fasttcpstat's C extension, which is not "
                    f"built here ({_netlink.IMPORT_ERROR})"
                )
            _layout = _fasttcpstat.btf_layout()
        return _layout


def _masked(tally: Sequence[int], states_mask: int) -> Tuple[int, ...]:
    return tuple(n if states_mask & (1 << i) else 0 for i, n in enumerate(tally))


class BpfBackend:
    """Counts with BPF iterator programs; one per port filter, cached."""

    name = "bpf"

    def __init__(self, netns: "Optional[Netns]" = None,
                 emit_shift: Optional[int] = None) -> None:
        self._layout = layout()
        self._netns = netns
        self._emit_shift = emit_shift or _fasttcpstat.BPF_EMIT_SHIFT
        self._lock = threading.Lock()
        self._programs: "OrderedDict[Any, Any]" = OrderedDict()
        self._program(None, None)  # load now: refusals show at creation

    def _program(self, local: Optional[List[Range]], remote: Optional[List[Range]]) -> Any:
        key = (tuple(local or ()), tuple(remote or ()))
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                return program
            program = _fasttcpstat.BpfCounter(
                self._layout, local=key[0], remote=key[1], emit_shift=self._emit_shift
            )
            self._programs[key] = program
            if len(self._programs) > _MAX_PROGRAMS:
                # Never evict the unfiltered program, loaded first.
                for old_key in list(self._programs)[1:]:
                    if old_key != ((), ()):
                        self._programs.pop(old_key).close()
                        break
            return program

    def run(self, families: int, local: Optional[List[Range]] = None,
            remote: Optional[List[Range]] = None) -> Tuple[Tuple[Tuple[int, ...], Tuple[int, ...]], int]:
        """Raw ((ipv4, ipv6), bytes the program wrote)."""
        program = self._program(local, remote)
        # The iterator walks the namespace of the thread that creates it.
        if self._netns is not None:
            fd = self._netns.run_inside(program.create_iter)
        else:
            fd = program.create_iter()
        return program.run(fd, families)  # type: ignore[no-any-return]

    def count(self, families: int, states_mask: int,
              local: Optional[List[Range]] = None, remote: Optional[List[Range]] = None,
              by_port: Sequence[int] = (), by_remote: bool = False) -> Any:
        if by_port:
            raise NotImplementedError("per-port breakdowns use netlink")
        (v4, v6), _ = self.run(families, local, remote)
        return _masked(v4, states_mask), _masked(v6, states_mask)

    def close(self) -> None:
        with self._lock:
            for program in self._programs.values():
                program.close()
            self._programs.clear()


# --- pinned text iterator -------------------------------------------------

BPFFS_MAGIC = 0xCAFE4A11
DEFAULT_PIN_PATH = "/sys/fs/bpf/fasttcpstat"


def _is_bpffs(directory: str) -> bool:
    class StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    buf = StatFs()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(directory), ctypes.byref(buf)) != 0:
        return False
    return bool(buf.f_type & 0xFFFFFFFF == BPFFS_MAGIC)


def _mount_bpffs(directory: str) -> None:
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


class PinnedBackend:
    """Reads a pinned text iterator: unprivileged in-kernel counting."""

    name = "pinned"

    def __init__(self, path: str, netns: "Optional[Netns]" = None) -> None:
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

    def count(self, families: int, states_mask: int,
              local: Optional[List[Range]] = None, remote: Optional[List[Range]] = None,
              by_port: Sequence[int] = (), by_remote: bool = False) -> Any:
        if local is not None or remote is not None or by_port:
            raise ValueError("port filters need backend 'bpf', 'netlink' or 'procfs'; "
                             "the pinned iterator counts every socket")
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
        return (_masked(v4, states_mask) if families & FAMILY_IPV4 else (0,) * 16,
                _masked(v6, states_mask) if families & FAMILY_IPV6 else (0,) * 16)

    def close(self) -> None:
        pass

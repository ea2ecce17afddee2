"""The `netns=` argument: which network namespace to count.

A namespace is named by a path (/var/run/netns/NAME, /proc/PID/ns/net) or
by the pid of a process inside it.  The netlink backend's socket is
opened in the namespace by a short-lived Python thread that enters it
with setns() (Netns.run_inside), so the caller's thread never switches;
the /proc backend reads /proc/PID/net/tcp{,6}, which shows the namespace of
PID without switching and so needs no privilege.
"""
from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, TypeVar, Union

    T = TypeVar("T")
    NetnsSpec = Union[str, "os.PathLike[str]", int, None]
else:
    NetnsSpec = object  # importable name for annotations elsewhere

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)


def _proc_pid_ns(path: str) -> Optional[int]:
    """The pid of a /proc/PID/ns/net path, else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[:2] == ["", "proc"] and parts[3:] == ["ns", "net"]:
        pid = parts[2]
        if pid.isdigit() and pid.isascii():
            return int(pid)
    return None

#: Errors that mean the namespace (or the process naming it) went away.
GONE = frozenset({errno.ENOENT, errno.ESRCH})

EXPECTED = "expected /var/run/netns/NAME, /proc/PID/ns/net or the pid of a process"

PROCFS_HINT = (
    "backend='procfs' with netns=PID reads /proc/PID/net/tcp{,6}, which needs "
    "no namespace switch"
)


class Netns:
    """A resolved netns argument: an open nsfs fd, and a pid if known."""

    def __init__(self, spec: NetnsSpec) -> None:
        self.spec = spec
        self.pid: Optional[int] = None
        if isinstance(spec, bool):
            raise TypeError("netns must be a path or a pid (int), not bool")
        if isinstance(spec, int):
            if spec <= 0:
                raise ValueError(f"netns: pid must be positive, not {spec}")
            self.pid = spec
            self.path = f"/proc/{spec}/ns/net"
        elif isinstance(spec, (str, os.PathLike)):
            self.path = os.fspath(spec)
            self.pid = _proc_pid_ns(self.path)
        else:
            raise TypeError(
                f"netns must be a path or a pid (int), not {type(spec).__name__}"
            )
        self.fd = -1
        self.closed = False

    def _missing(self) -> FileNotFoundError:
        what = f"no process with pid {self.pid}" if isinstance(self.spec, int) else "no such file"
        return FileNotFoundError(errno.ENOENT, f"netns: {what} ({EXPECTED})", self.path)

    def check_proc_net(self) -> None:
        """For the /proc backend with a pid: the process must exist."""
        net_dir = self.proc_net_dir()
        if net_dir is not None and not os.path.isdir(net_dir):
            raise self._missing()

    def open(self) -> int:
        """Open (once) and check the namespace file; returns its fd."""
        if self.closed:
            # A closed Counter never reopens anything.
            raise ValueError("I/O operation on a closed Counter")
        if self.fd < 0:
            self.fd = self._open()
        return self.fd

    def _open(self) -> int:
        # stat() first: open() of a FIFO would block forever, and opening a
        # device can have side effects.  Namespace files are regular files
        # (of the nsfs filesystem); O_NONBLOCK covers a swap in between.
        try:
            info = os.stat(self.path)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"netns: {self.path} is not a namespace file ({EXPECTED})")
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing() from None
        except PermissionError as exc:
            raise PermissionError(
                exc.errno,
                f"netns: cannot open {self.path} ({exc.strerror}): opening another "
                f"process's namespace needs ptrace access to it; {PROCFS_HINT}",
            ) from None
        except ValueError as exc:
            if str(exc).startswith("netns:"):
                raise
            # e.g. an embedded NUL byte
            raise ValueError(f"netns: {self.path!r} is not a usable path ({exc}); "
                             f"{EXPECTED}") from None
        except OSError as exc:
            raise OSError(exc.errno, f"netns: cannot open {self.path} ({exc.strerror}); "
                                     f"{EXPECTED}") from None
        import fcntl

        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOTTY, errno.EINVAL):
                raise ValueError(
                    f"netns: {self.path} is not a namespace file ({EXPECTED})"
                ) from None
            raise
        if nstype != CLONE_NEWNET:
            os.close(fd)
            raise ValueError(f"netns: {self.path} is a namespace, but not a network namespace")
        return fd

    def close(self) -> None:
        self.closed = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def proc_net_dir(self) -> Optional[str]:
        """/proc/PID/net for a pid-named namespace, else None."""
        return f"/proc/{self.pid}/net" if self.pid is not None else None

    def run_inside(self, func: Callable[[], T]) -> T:
        """Call func() in a short-lived thread that entered the namespace.

        Sockets and /proc/net files stay bound to the namespace they were
        opened in, so what func() opens counts the target namespace; the
        thread then exits, and the caller's thread never switched, whatever
        failed.
        """
        if _is_current(self.open()):
            # Our own namespace: no switch, so no CAP_SYS_ADMIN needed.
            return func()
        return in_thread(func, self.enter_here, name="fasttcpstat-netns")

    def enter_here(self) -> None:
        """Move the calling thread into the namespace (setns()), unless it is
        there already.  Only for a thread that ends afterwards (in_thread()):
        the caller's thread never switches."""
        fd = self.open()
        if _is_current(fd):
            return
        try:
            _setns(fd)
        except PermissionError as exc:
            raise PermissionError(exc.errno, permission_message(self, exc)) from None


def in_thread(func: Callable[[], T], enter: Optional[Callable[[], None]] = None,
              name: str = "fasttcpstat") -> T:
    """func() in a short-lived thread, after enter() there (if given), so
    that whatever namespace the thread enters or leaves behind dies with it;
    what either raises is raised here.

    Joined, not just waited for: a thread still tearing down (freeing its
    frames) when the process forks can leave an allocator lock held in the
    child, which AddressSanitizer's allocator does not guard against.
    """
    import threading  # not at import: a Counter without netns never needs it

    result: List[T] = []
    failure: List[BaseException] = []

    def run() -> None:
        try:
            if enter is not None:
                enter()
            result.append(func())
        except BaseException as exc:  # noqa: B902 - re-raised in the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _is_current(fd: int) -> bool:
    """Whether the namespace file open as `fd` is the calling thread's."""
    try:
        here = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


_libc_setns: Optional[Callable[[int, int], int]] = None


def _setns(fd: int) -> None:
    global _libc_setns
    import ctypes  # not at import: only a Counter with netns= needs it

    if _libc_setns is None:
        # Once: each CDLL() builds classes, garbage for the collector.
        _libc_setns = ctypes.CDLL(None, use_errno=True).setns
    if _libc_setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns() into the network namespace: {os.strerror(err)}")


def permission_message(target: Netns, exc: OSError) -> str:
    return (
        f"netns: entering the network namespace {target.path} needs CAP_SYS_ADMIN "
        f"({exc.strerror or exc}); {PROCFS_HINT}"
    )

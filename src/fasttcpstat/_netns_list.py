"""Every network namespace of the host, and who is in it.

Namespaces are found where the kernel shows them: /proc/PID/ns/net of every
process (deduplicated by the namespace's inode) and the bind mounts `ip
netns add` makes under /run/netns and /var/run/netns, so a namespace that
no process holds is listed too.  A namespace is named by its inode, the
number in ``readlink /proc/PID/ns/net`` (``net:[4026531840]``).

Without privileges only part of this is visible: /proc/PID/ns/net of
another user's process needs ptrace read access to it (same user and no
more capabilities than we have, or CAP_SYS_PTRACE), and reading a sysctl
inside a namespace needs CAP_SYS_ADMIN to enter it.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ._cgroup import Identity, read_identity
from ._netns import Netns

BIND_MOUNT_DIRS = ("/run/netns", "/var/run/netns")

# Processes whose cgroups are read to find a namespace's container: the
# first ones hold it (a pod's pause container, a container's init).
_IDENTITY_PIDS = 8

EHASH_SYSCTL = "/proc/sys/net/ipv4/tcp_ehash_entries"

DENIED_REASON = (
    "reading /proc/PID/ns/net needs ptrace read access to the process (the same "
    "user and no more capabilities than ours, or CAP_SYS_PTRACE)"
)


@dataclass
class Found:
    """A namespace as one scan saw it."""

    inode: int
    pids: List[int] = field(default_factory=list)
    mounts: List[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        """A path that opens it: a bind mount outlives any one process, and a
        pid's path lets the /proc backend read /proc/PID/net without
        switching, so the pid comes first."""
        if self.pids:
            return f"/proc/{self.pids[0]}/ns/net"
        return self.mounts[0]


@dataclass
class Scan:
    """Every namespace found, and the processes whose one was hidden."""

    namespaces: Dict[int, Found]
    denied_pids: List[int]

    @property
    def denied_reason(self) -> Optional[str]:
        """One line saying what could not be seen and why, or None."""
        if not self.denied_pids:
            return None
        return (f"the network namespaces of {len(self.denied_pids)} process(es) are not "
                f"listed: {DENIED_REASON}")


def _nsfs_device() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def _pids() -> List[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def scan() -> Scan:
    """Find every network namespace visible from here."""
    nsfs = _nsfs_device()
    found: Dict[int, Found] = {}
    denied: List[int] = []
    for pid in _pids():
        try:
            info = os.stat(f"/proc/{pid}/ns/net")
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except PermissionError:
            denied.append(pid)
            continue
        except OSError as exc:
            # A kernel thread being reaped, a zombie: no namespace to count.
            if exc.errno in (errno.ENOENT, errno.ESRCH, errno.EINVAL):
                continue
            raise
        found.setdefault(info.st_ino, Found(info.st_ino)).pids.append(pid)
    for path in _bind_mounts():
        try:
            info = os.stat(path)
        except OSError:
            continue  # deleted meanwhile, or a name we may not look at
        # A file left by `ip netns add` whose mount is gone is a plain
        # empty file: only an nsfs file is a namespace.
        if info.st_dev == nsfs:
            found.setdefault(info.st_ino, Found(info.st_ino)).mounts.append(path)
    return Scan(found, denied)


def _bind_mounts() -> List[str]:
    """Files under the bind-mount directories, each directory once (on most
    systems /var/run is a symlink to /run)."""
    paths: List[str] = []
    seen = set()
    for directory in BIND_MOUNT_DIRS:
        real = os.path.realpath(directory)
        if real in seen:
            continue
        seen.add(real)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        paths.extend(os.path.join(directory, name) for name in names)
    return paths


@dataclass
class NetnsInfo:
    """Who a network namespace belongs to."""

    inode: int
    #: `ip netns` names (bind mounts under /run/netns, /var/run/netns).
    names: Tuple[str, ...]
    #: The lowest pid in it, and that process's command (comm); None for a
    #: namespace held only by a bind mount.
    pid: Optional[int]
    command: Optional[str]
    #: From its processes' cgroup paths, where a runtime wrote them.
    container_id: Optional[str]
    pod_uid: Optional[str]
    cgroup: Optional[str]
    #: net.ipv4.tcp_ehash_entries inside it (kernel >= 6.1): negative when
    #: it shares the host's established-socket hash table, the size of its
    #: own table otherwise (the host's own namespace: the host table).
    ehash_entries: Optional[int]
    #: Why some of the above is unknown, or None.
    note: Optional[str] = None
    #: The host's initial namespace (init_net), where that can be told.
    host: bool = False

    @property
    def shares_host_table(self) -> Optional[bool]:
        """Whether it shares the host's socket table (counting it walks every
        socket of the host); False for the host's namespace, whose table it is."""
        if self.host:
            return False
        return None if self.ehash_entries is None else self.ehash_entries < 0

    @property
    def table(self) -> Optional[str]:
        """"host", "shared" (the host's table), "own", or None if unknown."""
        if self.host:
            return "host"
        shared = self.shares_host_table
        return None if shared is None else "shared" if shared else "own"


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _read_ehash() -> int:
    with open(EHASH_SYSCTL) as f:
        return int(f.read())


def ehash_entries(found: Found, own_inode: int) -> Tuple[Optional[int], Optional[str]]:
    """tcp_ehash_entries read inside the namespace, or None and why.

    A sysctl under /proc/sys/net shows the namespace of the thread that
    opens it, so another namespace's is read by a short-lived thread that
    entered it.
    """
    try:
        if found.inode == own_inode:
            return _read_ehash(), None
        target = Netns(found.spec)
        try:
            return target.run_inside(_read_ehash), None
        finally:
            target.close()
    except FileNotFoundError as exc:
        if exc.filename == EHASH_SYSCTL or not os.path.exists(EHASH_SYSCTL):
            return None, "tcp_ehash_entries needs Linux >= 6.1"
        return None, "the namespace went away"
    except PermissionError:
        return None, "tcp_ehash_entries: entering the namespace needs CAP_SYS_ADMIN"


# init_net's inode: fixed on recent kernels (6.18 here), allocated like
# any other before; and the initial pid namespace's, fixed since 3.8.
PROC_NET_INIT_INO = 0xEFFFFFF9
PROC_PID_INIT_INO = 0xEFFFFFFC


def host_inode(namespaces: Dict[int, Found]) -> Optional[int]:
    """The host's initial namespace among those found, if it can be told:
    by its fixed inode, else as pid 1's when we see the initial pid
    namespace (a container without the host's pids does not)."""
    if PROC_NET_INIT_INO in namespaces:
        return PROC_NET_INIT_INO
    try:
        if os.stat("/proc/self/ns/pid").st_ino != PROC_PID_INIT_INO:
            return None
    except OSError:
        return None
    for inode, ns in namespaces.items():
        if ns.pids and ns.pids[0] == 1:
            return inode
    return None


def describe(found: Found, own_inode: int, host: bool = False) -> NetnsInfo:
    """The identity of one namespace of a scan."""
    notes = []
    pid = found.pids[0] if found.pids else None
    command = _read_text(f"/proc/{pid}/comm") if pid is not None else None
    ident = Identity(None, None, None)
    for candidate in found.pids[:_IDENTITY_PIDS]:
        seen = read_identity(candidate)
        if seen is None:
            continue
        if ident.cgroup is None:
            ident = seen
        if seen.container_id or seen.pod_uid:
            ident = Identity(ident.cgroup, seen.container_id, seen.pod_uid)
            break
    entries, why = ehash_entries(found, own_inode)
    if why:
        notes.append(why)
    return NetnsInfo(
        inode=found.inode,
        names=tuple(sorted({os.path.basename(m) for m in found.mounts})),
        pid=pid,
        command=command,
        container_id=ident.container_id,
        pod_uid=ident.pod_uid,
        cgroup=ident.cgroup,
        ehash_entries=entries,
        note="; ".join(notes) or None,
        host=host,
    )


def own_inode() -> int:
    """The inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def list_netns() -> List[NetnsInfo]:
    """Every network namespace visible from here, by inode, with its
    `ip netns` names, a pid and command in it, its container id and pod uid
    where the cgroup paths show them, and whether it shares the host's
    socket table.  Namespaces that vanish meanwhile are left out."""
    found = scan()
    mine = own_inode()
    host = host_inode(found.namespaces)
    return [describe(ns, mine, inode == host) for inode, ns in sorted(found.namespaces.items())]

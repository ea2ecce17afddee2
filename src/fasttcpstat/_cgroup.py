"""cgroups: the cgroup2 mount, cgroup ids, and container and pod ids.

A socket's owner cgroup reaches user space as a number (netlink's
INET_DIAG_CGROUP_ID, a BPF program's cgroup id): the inode number of the
cgroup's directory under the cgroup2 mount.  This module turns it into a
path relative to the cgroup2 root (``/system.slice/nginx.service``), and a
cgroup path (from /proc/PID/cgroup) into the container id and Kubernetes
pod uid that container runtimes encode in it.

The path shapes, as the runtimes and the kubelet write them:

- systemd driver (cgroup v2, and v1's name=systemd and controller lines):
  ``/system.slice/docker-<64 hex>.scope``, ``.../cri-containerd-<id>.scope``,
  ``.../crio-<id>.scope``, ``/machine.slice/libpod-<id>.scope[/container]``;
  pods: ``/kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod<uid with "_" for "-">.slice/...``
- cgroupfs driver: ``/docker/<id>``, ``/kubepods/besteffort/pod<uid>/<id>``,
  ``/libpod_parent/libpod-<id>``; a podman pod's containers
  ``/libpod_parent/<pod id>/libpod-<id>``, beside the pod's conmons in
  ``/libpod_parent/<pod id>/conmon`` (seen with podman 4.3 and runc on a
  hybrid host; tests/test_container_runtime.py).
"""
from __future__ import annotations

import os
import re
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

# The hybrid layout (cgroup v1 controllers, cgroup2 beside them) mounts
# cgroup2 at /sys/fs/cgroup/unified; the unified layout at /sys/fs/cgroup.
PREFERRED_MOUNTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")

# A container id is 64 hex digits, alone as a path component (cgroupfs
# driver) or wrapped in a runtime's prefix and a systemd ".scope".
# "crio-conmon-<id>.scope" is CRI-O's monitor process, not the container:
# the "-" after "crio" must be followed by the id itself.  A bare id right
# under "libpod_parent" is a podman pod's cgroup, whose ids are 64 hex
# digits too: the pod's conmon processes sit in it, and are no container.
_CONTAINER = re.compile(
    r"(?:^|/)(?:(?:docker|cri-containerd|crio|libpod)-|(?<!libpod_parent/))"
    r"([0-9a-f]{64})(?:\.scope)?(?=/|$)"
)
# A pod uid after "pod", inside a kubepods hierarchy: a UUID (the systemd
# driver writes it with "_" for "-") or a static pod's 32-hex hash.
_POD = re.compile(
    r"(?:^|[/-])pod([0-9a-f]{8}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}"
    r"[-_]?[0-9a-f]{12})(?:\.slice)?(?=/|$)"
)


class CgroupLine(NamedTuple):
    """One line of /proc/PID/cgroup."""

    hierarchy: int      # 0 for cgroup v2
    controllers: str    # "" for cgroup v2, "memory", "name=systemd", ...
    path: str


class Identity(NamedTuple):
    """What a process's cgroups say about it."""

    cgroup: Optional[str]        # its cgroup v2 path, if it has one
    container_id: Optional[str]
    pod_uid: Optional[str]


def parse_proc_cgroup(text: str) -> List[CgroupLine]:
    """The lines of a /proc/PID/cgroup file; malformed lines are ignored."""
    lines = []
    for raw in text.splitlines():
        parts = raw.split(":", 2)
        if len(parts) == 3 and parts[0].isdigit():
            lines.append(CgroupLine(int(parts[0]), parts[1], parts[2]))
    return lines


def container_id(path: str) -> Optional[str]:
    """The container id a cgroup path holds, or None.

    The innermost one wins: a container started by a runtime that itself
    runs in a container (kind, docker-in-docker) sits below its host's.
    """
    found = _CONTAINER.findall(path)
    return found[-1] if found else None


def pod_uid(path: str) -> Optional[str]:
    """The Kubernetes pod uid in a kubepods cgroup path, or None."""
    if "kubepods" not in path:
        return None
    found = _POD.findall(path)
    return found[-1].replace("_", "-") if found else None


def identity(lines: Iterable[CgroupLine]) -> Identity:
    """Container id and pod uid from a process's cgroup lines.

    The cgroup v2 line is read first; on v1 and hybrid hosts the runtime
    writes the same path into every hierarchy, so the first v1 line with
    an id is as good.
    """
    ordered = sorted(lines, key=lambda line: line.hierarchy != 0)
    v2 = next((line.path for line in ordered if line.hierarchy == 0), None)
    cid = next((c for c in (container_id(line.path) for line in ordered) if c), None)
    uid = next((u for u in (pod_uid(line.path) for line in ordered) if u), None)
    return Identity(v2, cid, uid)


def read_identity(pid: int) -> Optional[Identity]:
    """identity() of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return identity(parse_proc_cgroup(f.read()))
    except (FileNotFoundError, ProcessLookupError):
        return None


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup2_mounts(mountinfo: str) -> List[Tuple[str, str]]:
    """(mount point, root inside the hierarchy) of each cgroup2 mount in
    the text of a /proc/PID/mountinfo file."""
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep or right.split(" ", 1)[0] != "cgroup2":
            continue
        fields = left.split(" ")
        if len(fields) >= 5:
            found.append((_unescape(fields[4]), _unescape(fields[3])))
    return found


class Cgroup2Mount(NamedTuple):
    path: str   # where it is mounted: /sys/fs/cgroup or /sys/fs/cgroup/unified
    root: str   # the hierarchy's directory mounted there ("/" on a host)


def find_cgroup2() -> Optional[Cgroup2Mount]:
    """This process's cgroup2 mount (unified or hybrid layout), or None."""
    with open("/proc/self/mountinfo") as f:
        mounts = cgroup2_mounts(f.read())
    if not mounts:
        return None
    for preferred in PREFERRED_MOUNTS:
        for path, root in mounts:
            if path == preferred:
                return Cgroup2Mount(path, root)
    return Cgroup2Mount(*mounts[0])


def cgroup_paths(mount: Cgroup2Mount) -> Dict[int, str]:
    """{cgroup id: path relative to the cgroup2 root} of every cgroup.

    A cgroup's id is its directory's inode number (kernfs gives each node
    a 64-bit id and uses it as the inode number).  A cgroup removed during
    the walk is left out.
    """
    def relative(directory: str) -> str:
        inside = directory[len(mount.path):] or "/"
        if mount.root == "/":
            return inside
        return mount.root if inside == "/" else mount.root + inside

    paths = {os.stat(mount.path).st_ino: relative(mount.path)}
    pending = [mount.path]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                paths[entry.inode()] = relative(entry.path)
                pending.append(entry.path)
    return paths


class CgroupNames:
    """Cgroup ids to paths, the tree walked again when an id is unknown
    (a cgroup created since the last walk).  A removed cgroup keeps its
    last known path until then: sockets can outlive their cgroup, and
    ids are never reused."""

    def __init__(self, mount: Optional[Cgroup2Mount] = None) -> None:
        found = mount or find_cgroup2()
        if found is None:
            raise FileNotFoundError("no cgroup2 filesystem is mounted here "
                                    "(see /proc/self/mountinfo)")
        self.mount = found
        self._paths: Dict[int, str] = {}

    def paths(self, ids: Iterable[int]) -> Dict[int, Optional[str]]:
        """{id: path, or None for an id no walk has seen}."""
        wanted = list(ids)
        if any(i not in self._paths for i in wanted):
            self._paths = cgroup_paths(self.mount)
        return {i: self._paths.get(i) for i in wanted}

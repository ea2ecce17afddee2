"""cgroup helpers: container and pod ids from real-shaped cgroup paths, the
cgroup2 mount, cgroup ids to paths, and identities of real namespaces put
into real cgroups shaped like a runtime's."""
from __future__ import annotations

import errno
import os
import time

import pytest

import fasttcpstat
from fasttcpstat import _cgroup
from fasttcpstat._cgroup import CgroupLine, container_id, identity, parse_proc_cgroup, pod_uid

from .test_all_netns import inode_of, start_lone_netns, stop

CID = "4f1c2e3d5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"
CID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
UID = "8dc9a3b2-4e5f-4a6b-9c7d-0e1f2a3b4c5d"
UID_ = UID.replace("-", "_")
STATIC_UID = "e3b0c44298fc1c149afbf4c8996fb924"

# (cgroup path, container id, pod uid), as runtimes and the kubelet write them.
PATHS = [
    # Docker, systemd driver (cgroup v2, or v1's lines) and cgroupfs driver.
    (f"/system.slice/docker-{CID}.scope", CID, None),
    (f"/docker/{CID}", CID, None),
    # containerd under the kubelet, systemd driver: pod uid with "_".
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope", CID, UID),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope", CID, UID),
    # Guaranteed QoS: no class slice.
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", CID, UID),
    # cgroupfs driver: the uid with "-", the container id a bare component.
    (f"/kubepods/burstable/pod{UID}/{CID}", CID, UID),
    (f"/kubepods/pod{UID}/{CID}", CID, UID),
    # The pod's own cgroup (no container): the uid only.
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", None, UID),
    (f"/kubepods/besteffort/pod{UID}", None, UID),
    # A static pod: its uid is a 32-hex hash.
    (f"/kubepods/burstable/pod{STATIC_UID}/{CID}", CID, STATIC_UID),
    # CRI-O, and its monitor (conmon), which is not the container.
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-{CID}.scope", CID, UID),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-conmon-{CID}.scope", None, UID),
    # Podman: systemd driver (rootful and rootless), cgroupfs driver (v1).
    (f"/machine.slice/libpod-{CID}.scope/container", CID, None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope", CID, None),
    (f"/libpod_parent/libpod-{CID}", CID, None),
    # A podman pod, cgroupfs driver: the pod's cgroup is named by its own
    # 64-hex id, which is no container's; its conmons sit in it.
    (f"/libpod_parent/{CID2}/libpod-{CID}", CID, None),
    (f"/libpod_parent/{CID2}/conmon", None, None),
    (f"/libpod_parent/{CID2}", None, None),
    # Nested runtimes (kind: containerd inside a docker container): innermost.
    (f"/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/"
     f"kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", CID, UID),
    # Not containers.
    ("/system.slice/nginx.service", None, None),
    ("/user.slice/user-1000.slice/session-3.scope", None, None),
    ("/", None, None),
    # Not a container id: 63 and 65 hex digits; "pod" outside kubepods.
    (f"/docker/{CID[:-1]}", None, None),
    (f"/docker/{CID}0", None, None),
    (f"/system.slice/pod{UID}.slice", None, None),
]


@pytest.mark.parametrize("path, cid, uid", PATHS)
def test_ids_from_cgroup_paths(path, cid, uid):
    assert container_id(path) == cid
    assert pod_uid(path) == uid


HYBRID_V1_DOCKER = f"""12:pids:/docker/{CID}
11:memory:/docker/{CID}
5:cpu,cpuacct:/docker/{CID}
1:name=systemd:/docker/{CID}
0::/
"""

V2_KUBEPODS = (f"0::/kubepods.slice/kubepods-burstable.slice/"
               f"kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n")


def test_identity_of_proc_cgroup_files():
    ident = identity(parse_proc_cgroup(HYBRID_V1_DOCKER))
    assert ident == ("/", CID, None)
    ident = identity(parse_proc_cgroup(V2_KUBEPODS))
    assert ident.container_id == CID and ident.pod_uid == UID
    assert ident.cgroup.endswith(f"cri-containerd-{CID}.scope")
    # A v1-only host: no cgroup v2 line.
    ident = identity(parse_proc_cgroup(f"3:memory:/kubepods/pod{UID}/{CID}\n"))
    assert ident == (None, CID, UID)
    assert parse_proc_cgroup("garbage\n\n0::/a:b\n") == [CgroupLine(0, "", "/a:b")]


MOUNTINFO_HYBRID = """\
25 1 0:23 / / rw,relatime - overlay overlay rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,name=systemd
"""
MOUNTINFO_UNIFIED = """\
25 1 0:23 / / rw,relatime - ext4 /dev/sda1 rw
35 25 0:30 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
MOUNTINFO_CONTAINER = """\
600 590 0:30 /kubepods.slice/x.scope /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
601 590 0:31 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
"""


def test_cgroup2_mounts_from_mountinfo():
    assert _cgroup.cgroup2_mounts(MOUNTINFO_HYBRID) == [("/sys/fs/cgroup/unified", "/")]
    assert _cgroup.cgroup2_mounts(MOUNTINFO_UNIFIED) == [("/sys/fs/cgroup", "/")]
    assert _cgroup.cgroup2_mounts(MOUNTINFO_CONTAINER) == [
        ("/sys/fs/cgroup", "/kubepods.slice/x.scope"), ("/mnt/with space", "/")]


@pytest.fixture
def cgroup2():
    mount = _cgroup.find_cgroup2()
    if mount is None:
        pytest.fail("no cgroup2 mount on this machine (see /proc/self/mountinfo)")
    return mount


class CgroupTree:
    """Cgroups made for a test under a unique top directory, removed after
    (their processes killed first)."""

    def __init__(self, mount: str, top: str) -> None:
        self.mount = mount
        self.top = os.path.join(mount, top)
        os.mkdir(self.top)

    def make(self, relative: str) -> str:
        path = os.path.join(self.top, relative)
        os.makedirs(path)
        return path

    def remove(self) -> None:
        for directory, _, _ in sorted(os.walk(self.top), key=lambda w: -len(w[0])):
            # A killed process leaves its cgroup only once it has exited:
            # until then rmdir says EBUSY.
            deadline = time.monotonic() + 10
            while True:
                try:
                    os.rmdir(directory)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


@pytest.fixture
def tree(cgroup2):
    made = CgroupTree(cgroup2.path, f"issue12-{os.getpid()}-kubepods.slice")
    yield made
    made.remove()


def test_find_cgroup2_here(cgroup2):
    with open("/proc/self/mountinfo") as f:
        lines = [line for line in f if " - cgroup2 " in line]
    assert any(f" {cgroup2.path} " in line for line in lines)
    assert cgroup2.path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def test_cgroup_ids_to_paths(tree, cgroup2):
    """A cgroup's id is its directory's inode; new cgroups are found by a
    second walk."""
    names = _cgroup.CgroupNames(cgroup2)
    first = tree.make("a.slice/b.service")
    rel = first[len(cgroup2.path):]
    assert names.paths([os.stat(first).st_ino]) == {os.stat(first).st_ino: rel}
    second = tree.make("a.slice/c.service")
    got = names.paths([os.stat(second).st_ino, os.stat(cgroup2.path).st_ino])
    assert got == {os.stat(second).st_ino: second[len(cgroup2.path):],
                   os.stat(cgroup2.path).st_ino: "/"}
    gone = os.stat(second).st_ino
    os.rmdir(second)
    # Ids are never reused: the last known path stays right for sockets a
    # removed cgroup still owns, until a walk for an unknown id drops it.
    assert names.paths([gone]) == {gone: second[len(cgroup2.path):]}
    third = os.stat(tree.make("d.slice")).st_ino
    assert names.paths([gone, third])[gone] is None


def _move(pid: int, cgroup_dir: str) -> None:
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def test_namespace_identity_from_real_cgroups(require_netns, tree, cgroup2):
    """Processes alone in new namespaces, moved into cgroups shaped as a
    kubelet + containerd (cgroup v2) would make them."""
    pod_slice = f"kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
    scope = tree.make(f"{pod_slice}/cri-containerd-{CID}.scope")
    plain = tree.make("system.slice/nginx.service")
    in_pod, in_plain = start_lone_netns(), start_lone_netns()
    try:
        _move(in_pod.pid, scope)
        _move(in_plain.pid, plain)
        infos = {info.inode: info for info in fasttcpstat.list_netns()}
        pod = infos[inode_of(f"/proc/{in_pod.pid}/ns/net")]
        assert (pod.container_id, pod.pod_uid) == (CID, UID)
        assert pod.cgroup == scope[len(cgroup2.path):]
        assert pod.pid == in_pod.pid and pod.command == "sleep"
        other = infos[inode_of(f"/proc/{in_plain.pid}/ns/net")]
        assert (other.container_id, other.pod_uid) == (None, None)
        assert other.cgroup == plain[len(cgroup2.path):]
    finally:
        stop(in_pod)
        stop(in_plain)


def _v1_hierarchy() -> "str | None":
    """A cgroup v1 hierarchy to make cgroups in (hybrid hosts), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup ") and "name=systemd" in right:
                return left.split(" ")[4]
    return None


def test_namespace_identity_from_cgroup_v1(require_netns):
    """A hybrid host: the docker (cgroupfs driver) path only in a v1
    hierarchy, the v2 line at the root."""
    hierarchy = _v1_hierarchy()
    if hierarchy is None:
        pytest.skip("no cgroup v1 name=systemd hierarchy (a unified-only host)")
    top = os.path.join(hierarchy, f"issue12-{os.getpid()}-docker")
    container = os.path.join(top, CID2)
    os.makedirs(container)
    proc = start_lone_netns()
    try:
        _move(proc.pid, container)
        info = next(i for i in fasttcpstat.list_netns()
                    if i.inode == inode_of(f"/proc/{proc.pid}/ns/net"))
        assert info.container_id == CID2 and info.pod_uid is None
    finally:
        stop(proc)
        os.rmdir(container)
        os.rmdir(top)


def test_proc_cgroup_of_this_process():
    """The parser reads this host's real file: every line is taken."""
    with open("/proc/self/cgroup") as f:
        text = f.read()
    lines = parse_proc_cgroup(text)
    assert len(lines) == len(text.splitlines())

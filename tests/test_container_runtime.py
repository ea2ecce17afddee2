"""Container labels on a real container runtime: podman (with runc).

A container is started from a root filesystem directory (--rootfs) that
uses the host's /usr read-only, so no image and no registry are needed.
Each container has a network namespace of its own with only a loopback
(--network none); a Python inside it opens known sockets there.  The
runtime's own ids (`podman run`, `podman inspect`) must come back as the
namespace's container_id from list_netns(), on `--all-netns`' Prometheus
series, and the counts must equal `ss -tan` inside.

What the runtime gives here, and why it is set up so:
- cgroup manager cgroupfs: the systemd one needs systemd as PID 1 (runc:
  "systemd not running on this host, cannot use systemd cgroups manager").
- runc: crun 1.8 refuses hybrid hosts whose cgroup2 has a controller
  ("cgroups in hybrid mode not supported, drop all controllers from
  cgroupv2"); runc puts the container in every v1 hierarchy and in the
  cgroup2 one at the same path, /libpod_parent/libpod-<id>.
- small rlimits: podman raises the container's nofile and nproc above
  what its monitor (conmon) has, which needs CAP_SYS_RESOURCE ("error
  setting rlimit type 7: operation not permitted" where root lacks it).
- its own storage and state directories, vfs: nothing of the host's
  /var/lib/containers is read or left behind.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Dict, List, NamedTuple

import pytest

import fasttcpstat
from fasttcpstat._cgroup import read_identity

from .cli_tools import cli, parse_exposition
from .conftest import require
from .population import STATES
from .test_all_netns import BACKENDS, _wait_for, inode_of, ss_in

# Runs inside the container: two listeners (IPv4, IPv6) and one connected
# pair through the first, held until the container is removed.
SOCKETS = """\
import socket, time
held = []
for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    server = socket.socket(family)
    server.bind((address, 0))
    server.listen()
    held.append(server)
held.append(socket.create_connection(held[0].getsockname()))
held.append(held[0].accept()[0])
print("ready", flush=True)
time.sleep(3600)
"""
EXPECTED = {**dict.fromkeys(STATES, 0), "LISTEN": 2, "ESTABLISHED": 2}

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
"""


class Container(NamedTuple):
    id: str
    pid: int         # its first process, as the runtime reports it
    conmon_pid: int  # its monitor, outside the container

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"


class Podman:
    """podman with its own state under a new directory in /tmp, removed
    (with every container and pod in it) by close()."""

    def __init__(self) -> None:
        self.top = tempfile.mkdtemp(prefix="issue12e-podman-")
        conf = os.path.join(self.top, "containers.conf")
        with open(conf, "w") as f:
            f.write(CONTAINERS_CONF)
        # The infra container of a pod takes its rlimits from here only.
        self.env = {**os.environ, "CONTAINERS_CONF": conf}
        self.flags = [
            "--root", os.path.join(self.top, "root"),
            "--runroot", os.path.join(self.top, "run"),
            "--tmpdir", os.path.join(self.top, "tmp"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", "runc",
        ]
        self.rootfs, self.volumes = self._rootfs()

    def _rootfs(self) -> tuple:
        """An empty root filesystem with the host's /usr mounted read-only:
        /bin, /lib... are the host's symlinks into /usr where the host
        merged them, else mounted too."""
        rootfs = os.path.join(self.top, "rootfs")
        volumes = ["-v", "/usr:/usr:ro"]
        for name in ("usr", "etc", "proc", "sys", "dev", "tmp"):
            os.makedirs(os.path.join(rootfs, name))
        for name in ("bin", "sbin", "lib", "lib64"):
            host = os.path.join("/", name)
            if os.path.islink(host):
                os.symlink(os.readlink(host), os.path.join(rootfs, name))
            elif os.path.isdir(host):
                os.makedirs(os.path.join(rootfs, name))
                volumes += ["-v", f"{host}:{host}:ro"]
        return rootfs, volumes

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["podman", *self.flags, *args], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:2])} failed "
                                 f"({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def inspect(self, name: str, template: str, what: str = "container") -> str:
        return self(what, "inspect", "--format", template, name)

    def start(self, *options: str) -> Container:
        """A container running SOCKETS, once its sockets are open."""
        cid = self("run", "-d", "--log-driver", "k8s-file", *options, *self.volumes,
                   "--rootfs", self.rootfs, "/usr/bin/python3", "-c", SOCKETS)
        _wait_for(lambda: "ready" in self("logs", cid), f"container {cid}'s sockets", 60)
        return self.container(cid)

    def cgroups_path(self, name: str) -> str:
        """The cgroup podman told the OCI runtime to put the container in."""
        with open(self.inspect(name, "{{.OCIConfigPath}}")) as f:
            return json.load(f)["linux"]["cgroupsPath"]

    def container(self, name: str) -> Container:
        cid, pid, conmon = self.inspect(
            name, "{{.Id}} {{.State.Pid}} {{.State.ConmonPid}}").split()
        return Container(cid, int(pid), int(conmon))

    def _users(self) -> List[int]:
        """Processes working in our directories: conmons, and the `podman
        container cleanup` each one starts when its container exits."""
        found = []
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if self.top.encode() in f.read():
                        found.append(int(name))
            except OSError:
                continue  # exited meanwhile
        return found

    def close(self) -> None:
        try:
            self("pod", "rm", "--all", "--force", "--time", "0")
            self("rm", "--all", "--force", "--time", "0")
        finally:
            # A cleanup still running writes lock files as we delete.
            deadline = time.monotonic() + 60
            while self._users() and time.monotonic() < deadline:
                time.sleep(0.1)
            shutil.rmtree(self.top)


@pytest.fixture(scope="module")
def podman(require_netns):
    missing = [name for name in ("podman", "runc") if shutil.which(name) is None]
    require(not missing, "a container runtime",
            f"{' and '.join(missing)} not installed (Debian: apt-get install podman runc)")
    runtime = Podman()
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def container(podman) -> Container:
    return podman.start("--network", "none")


def _netns_info(inode: int) -> fasttcpstat.NetnsInfo:
    [info] = [info for info in fasttcpstat.list_netns() if info.inode == inode]
    return info


def _links(netns: str) -> List[str]:
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-o", "link"], check=True,
                         capture_output=True, text=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines()]


def test_container_has_its_own_loopback_only(container):
    assert inode_of(container.netns) != inode_of("/proc/self/ns/net")
    assert _links(container.netns) == ["lo"]
    assert ss_in(container.netns) == EXPECTED


def test_list_netns_names_the_container(podman, container):
    info = _netns_info(inode_of(container.netns))
    assert info.container_id == container.id
    assert (info.pid, info.command, info.pod_uid) == (container.pid, "python3", None)
    assert info.cgroup == podman.cgroups_path(container.id)
    assert info.cgroup == f"/libpod_parent/libpod-{container.id}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_all_netns_counts_the_container(container, backend):
    counts = fasttcpstat.counts_all_netns(backend=backend)
    assert counts[inode_of(container.netns)] == ss_in(container.netns) == EXPECTED


def test_prometheus_series_carry_the_container_id(container):
    code, out, err = cli("--all-netns", "--format", "prometheus")
    assert code == 0, err
    inode = str(inode_of(container.netns))
    series: Dict[tuple, dict] = {key: counts for key, counts in parse_exposition(out).items()
                                 if dict(key)["netns"] == inode}
    inside = ss_in(container.netns)
    assert series == {(("container_id", container.id), ("netns", inode)): inside}
    assert inside == EXPECTED


def test_pod_namespace_is_its_infra_containers(podman):
    """A podman pod's containers share the namespace of its infra container
    (its lowest pid): the namespace carries the infra container's id, as a
    Kubernetes pod's carries its pause container's."""
    pod = podman("pod", "create", "--network", "none")
    app = podman.start("--pod", pod)
    infra = podman.container(podman.inspect(pod, "{{.InfraContainerID}}", "pod"))
    assert inode_of(app.netns) == inode_of(infra.netns)
    info = _netns_info(inode_of(infra.netns))
    assert (info.container_id, info.pid, info.pod_uid) == (infra.id, infra.pid, None)
    assert info.cgroup == podman.cgroups_path(infra.id)
    assert info.cgroup == f"/libpod_parent/{pod}/libpod-{infra.id}"
    assert fasttcpstat.counts_all_netns()[inode_of(app.netns)] == ss_in(app.netns) == EXPECTED
    # The pod's cgroup is named by the pod id, 64 hex digits as well: the
    # app's path holds both ids, and its conmon's (on the host) only the pod's.
    assert read_identity(app.pid).container_id == app.id
    assert read_identity(app.conmon_pid).container_id is None

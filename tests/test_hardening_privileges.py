"""Privileges: as nobody, netlink and /proc count; what needs more says so.

Two ways to be nobody:
- a child of the test process drops to nobody:nogroup with setgroups/
  setgid/setuid after its imports (every capability goes with uid 0);
- setpriv runs a fresh interpreter as nobody with no capability at all
  (inheritable, ambient and bounding sets cleared), importing a copy of
  the installed package from a directory nobody can read (the system's
  /usr/bin/python3 runs it: the test venv's interpreter may live where
  nobody cannot read, e.g. under /root).
Both run inside a population's namespace, whose holder is root's: its
/proc/PID/ns/net is out of nobody's reach (ptrace access), while
/proc/PID/net/tcp is readable, which is what backend='procfs' uses.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

import fasttcpstat

from .hardening import IN_CI, cap_eff, drop_to_nobody, total_expected
from .population import SMALL_SPEC, Population

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def population(require_netns):
    with Population(SMALL_SPEC) as pop:
        yield pop


def _as_nobody(holder_pid: int) -> dict:
    """Runs in the namespace: drop privileges, then try everything."""
    own_ns = os.open("/proc/self/ns/net", os.O_RDONLY)  # opened while root
    drop_to_nobody()
    out = {"uid": os.getuid(), "cap_eff": cap_eff()}
    out["netlink"] = fasttcpstat.counts(backend="netlink")
    out["procfs"] = fasttcpstat.counts(backend="procfs")
    out["auto_backend"] = fasttcpstat.Counter().backend
    out["by_port_netlink"] = fasttcpstat.counts_by_port(range(10000, 10030), backend="netlink")
    out["by_port_procfs"] = fasttcpstat.counts_by_port(range(10000, 10030), backend="procfs")
    out["filtered"] = [fasttcpstat.counts(local_ports=(10000, 20000), backend=b)
                       for b in ("netlink", "procfs")]
    out["summary"] = fasttcpstat.summary()
    out["procfs_by_pid"] = fasttcpstat.counts(netns=holder_pid, backend="procfs")
    with fasttcpstat.Counter(netns=holder_pid) as counter:  # auto: falls back
        out["auto_by_pid"] = (counter.backend, counter.fallback_reason, counter.counts())
    try:
        fasttcpstat.counts(netns=holder_pid, backend="netlink")
        out["netlink_by_pid"] = "no error"
    except PermissionError as exc:
        out["netlink_by_pid"] = f"PermissionError: {exc}"
    # Its own namespace, named by a file: nothing to enter, so no privilege.
    out["own_ns"] = {backend: fasttcpstat.counts(netns=f"/proc/self/fd/{own_ns}", backend=backend)
                     for backend in ("auto", "netlink", "procfs")}
    return out


def test_nobody_counts_with_netlink_and_procfs(population):
    out = population.run(_as_nobody, population.holder_pid)
    expected = total_expected(population.expected)
    assert out["uid"] == 65534 and out["cap_eff"] == 0
    assert out["netlink"] == expected
    assert out["procfs"] == expected
    assert out["auto_backend"] == "netlink"  # no fallback needed
    assert out["by_port_netlink"] == out["by_port_procfs"]
    assert sum(sum(v.values()) for v in out["by_port_netlink"].values()) > 0
    assert out["filtered"][0] == out["filtered"][1]
    assert out["summary"]["tcp_inuse"] > 0
    # Another (root's) process's namespace: /proc/PID/net needs nothing...
    assert out["procfs_by_pid"] == expected
    backend, reason, counts = out["auto_by_pid"]
    assert backend == "procfs" and counts == expected
    assert "CAP_SYS_ADMIN" in reason
    # ... entering it does, and the errors say which.
    assert "ptrace access" in out["netlink_by_pid"]
    assert "backend='procfs'" in out["netlink_by_pid"]
    assert out["own_ns"] == {"auto": expected, "netlink": expected, "procfs": expected}


SETPRIV_SCRIPT = r"""
import json, os, sys
import fasttcpstat
out = {"uid": os.getuid(), "file": fasttcpstat.__file__,
       "netlink": fasttcpstat.counts(backend="netlink"),
       "procfs": fasttcpstat.counts(backend="procfs")}
try:
    fasttcpstat.counts(netns="/proc/1/ns/net", backend="netlink")
    out["netns"] = "no error"
except PermissionError as exc:
    out["netns"] = str(exc)
with open("/proc/self/status") as f:
    out["caps"] = {l.split(":")[0]: l.split()[1] for l in f if l.startswith("Cap")}
print(json.dumps(out))
"""


def _setpriv(python: str, pkg_parent: str) -> subprocess.CompletedProcess:
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
           "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
           python, "-I", "-c", f"import sys; sys.path.insert(0, {pkg_parent!r})\n"
           + SETPRIV_SCRIPT]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")


def test_setpriv_nobody_without_capabilities(population):
    if shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        reason = "needs setpriv (util-linux) and /usr/bin/python3"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    # A copy of the installed package (extension included) that nobody can read.
    source = os.path.dirname(fasttcpstat.__file__)
    parent = tempfile.mkdtemp(prefix="fasttcpstat-nobody-")
    try:
        shutil.copytree(source, os.path.join(parent, "fasttcpstat"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(parent):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        result = population.run(_setpriv, SYSTEM_PYTHON, parent)
    finally:
        shutil.rmtree(parent)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expected = total_expected(population.expected)
    assert out["uid"] == 65534
    assert out["file"].startswith(parent)          # the copy, not the venv's
    assert all(int(v, 16) == 0 for v in out["caps"].values()), out["caps"]
    assert out["netlink"] == expected
    assert out["procfs"] == expected
    assert "ptrace access" in out["netns"] or "CAP_SYS_ADMIN" in out["netns"]


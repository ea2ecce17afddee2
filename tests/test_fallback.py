"""The kernel really refuses netlink (a seccomp filter in a child process),
and "auto" falls back to /proc with a reason; "netlink" raises."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import seccomp

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    not seccomp.supported(), reason="seccomp filter written for x86_64/aarch64 only"
)

_CHILD = r"""
import errno, json, socket, sys
sys.path.insert(0, {tests!r})
import seccomp
{deny}
import fasttcpstat
out = {{}}
with fasttcpstat.Counter() as c:
    out["auto_backend"] = c.backend
    out["auto_reason"] = c.fallback_reason
    out["auto_counts"] = c.counts()
    out["auto_backend_after"] = c.backend
    out["auto_reason_after"] = c.fallback_reason
out["procfs_counts"] = fasttcpstat.counts(backend="procfs")
out["module_counts"] = fasttcpstat.counts()
try:
    fasttcpstat.counts(backend="netlink")
except OSError as exc:
    out["netlink_error"] = [type(exc).__name__, exc.errno, str(exc)]
print(json.dumps(out))
"""


def _run_child(deny: str) -> dict:
    code = _CHILD.format(tests=str(HERE), deny=deny)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# bpf(2) is refused too, so "auto" goes down its whole list.
DENY_BPF = "seccomp.deny('bpf', errno.EPERM)\n"


def test_socket_refused_falls_back_at_open():
    out = _run_child(DENY_BPF + "seccomp.deny('socket', errno.EPERM, arg0=socket.AF_NETLINK)")
    assert out["auto_backend"] == "procfs"
    bpf_reason, netlink_reason = out["auto_reason"].split("; ")
    assert bpf_reason.startswith("bpf: ") and "Operation not permitted" in bpf_reason
    assert netlink_reason.startswith("netlink: ")
    assert "socket(AF_NETLINK" in netlink_reason
    assert "Operation not permitted" in netlink_reason
    assert out["auto_counts"] == out["procfs_counts"]
    assert out["module_counts"] == out["procfs_counts"]
    name, err, message = out["netlink_error"]
    assert (name, err) == ("PermissionError", 1)
    assert "cannot open the netlink socket" in message


def test_dump_refused_falls_back_at_first_count():
    # socket() works, but the request cannot be sent: refused mid-way.
    out = _run_child(DENY_BPF + "seccomp.deny('sendmsg', errno.EACCES)")
    assert out["auto_backend"] == "netlink"
    assert out["auto_reason"].startswith("bpf: ")
    assert out["auto_backend_after"] == "procfs"
    assert out["auto_reason_after"].startswith(out["auto_reason"] + "; netlink: ")
    assert "sendmsg()" in out["auto_reason_after"]
    assert out["auto_counts"] == out["procfs_counts"]
    name, err, message = out["netlink_error"]
    assert (name, err) == ("PermissionError", 13)
    assert "inet_diag" in message


def test_missing_extension_falls_back_with_warning(tmp_path):
    """A source install without a compiler: import works through procfs."""
    pkg = Path(__import__("fasttcpstat").__file__).parent
    shadow = tmp_path / "fasttcpstat"
    shadow.mkdir()
    for src in pkg.glob("*.py"):
        (shadow / src.name).write_text(src.read_text())
    code = (
        "import warnings, json\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fasttcpstat\n"
        "c = fasttcpstat.Counter()\n"
        "print(json.dumps([c.backend, c.fallback_reason, [str(x.message) for x in w],\n"
        "                  c.counts() == fasttcpstat.counts(backend='procfs')]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    backend, reason, warns, same = json.loads(result.stdout)
    assert backend == "procfs"
    assert "C extension is not available" in reason
    assert any("C extension is not available" in w for w in warns)
    assert same is True


_RACE = r"""
import errno, json, os, sys, threading
sys.path.insert(0, {tests!r})
import seccomp
seccomp.deny('bpf', errno.EPERM)
seccomp.deny('sendmsg', errno.EACCES)
import fasttcpstat
want = fasttcpstat.counts(backend="procfs")
fds = sorted(os.listdir("/proc/self/fd"))
sys.setswitchinterval(1e-6)
errors, wrong, reasons = [], [], []
for _ in range(30):
    counter = fasttcpstat.Counter()
    barrier = threading.Barrier(8)
    def work():
        barrier.wait()
        try:
            got = counter.counts()
        except Exception as exc:
            errors.append(repr(exc))
            return
        if got != want:
            wrong.append(got)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reasons.append([counter.backend, counter.fallback_reason])
    counter.close()
print(json.dumps([errors, wrong, reasons, fds == sorted(os.listdir("/proc/self/fd"))]))
"""


def _race_child() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RACE.format(tests=str(HERE))],
                          capture_output=True, text=True, timeout=300)


def test_threads_refused_at_once_fall_back_once(require_netns):
    """8 threads see the same refusal at their first count: the policy
    moves on once, under its lock; no thread pops an empty candidate list
    or counts on a backend another thread closed.  In a namespace whose
    sockets do not change, so that every count can be compared."""
    from .hardening import STABLE_SPEC
    from .population import Population

    with Population(STABLE_SPEC) as pop:
        result = pop.run(_race_child)
    assert result.returncode == 0, result.stderr
    errors, wrong, reasons, no_leak = json.loads(result.stdout)
    assert errors == []
    assert wrong == []
    for backend, reason in reasons:
        assert backend == "procfs"
        assert reason.count("netlink: ") == 1, reason
    assert no_leak

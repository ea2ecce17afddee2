"""Helpers shared by the hardening tests (tests/test_hardening_*.py).

Stress sizes.  The default suite runs every hardening test at a size that
keeps it under two minutes; ``FASTTCPSTAT_STRESS=1`` runs the tests marked
``stress`` at the sizes issue 7 asks for (10,000 counts per path, 16
threads for 10 s, 1,000 counts under valgrind, ...).  CI runs both:
``.ci/run`` adds ``FASTTCPSTAT_STRESS=1 pytest -m stress`` after the
README's command.

``FASTTCPSTAT_SANITIZERS=1`` is set by ``.ci/sanitize`` (the extension built
with ASan + UBSan): ASan's quarantine holds freed memory back on purpose, so
RSS bounds are not checked there, and valgrind cannot run on top of it.
"""
from __future__ import annotations

import ctypes
import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .population import Spec

ROOT = Path(__file__).resolve().parent.parent
STRESS = os.environ.get("FASTTCPSTAT_STRESS") == "1"
SANITIZERS = os.environ.get("FASTTCPSTAT_SANITIZERS") == "1"
IN_CI = os.environ.get("CI") == "true"

NOBODY_UID = 65534
NOBODY_GID = 65534


def scale(full: "int | float", quick: "int | float") -> "int | float":
    """`full` under FASTTCPSTAT_STRESS=1, else `quick`."""
    return full if STRESS else quick


# A population that does not change for minutes: no TIME_WAIT and no
# orphaned FIN_WAIT2 (those expire 60 s after the build).  SYN_SENT lives
# ~255 s and SYN_RECV ~600 s (see tests/population.py); everything else
# holds as long as its fds.
STABLE_SPEC = Spec(
    listen4=4, listen6=3, listen_dual=2,
    estab4=300, estab6=150, estab_mapped=40,
    close_wait4=30, close_wait6=20,
    fin_wait1_4=5, last_ack4=5, closing4=5,
    syn_sent4=12, syn_recv4=10, syn_recv6=6,
)


def walk_as_auto(request) -> str:
    """What Counter("auto") takes as root in a namespace whose table holds
    enough sockets of its own for _sizing to prefer the walk: the walk
    from Linux 6.2 (required then: a refusal fails in CI), else bpf."""
    from fasttcpstat import _walk

    if _walk._kernel_release() < _walk.MIN_KERNEL:
        request.getfixturevalue("require_bpf")
        return "bpf"
    request.getfixturevalue("require_walk")
    return "walk"


def total_expected(expected: dict) -> dict:
    return {state: expected["ipv4"][state] + expected["ipv6"][state]
            for state in expected["ipv4"]}


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def open_fds() -> dict:
    """fd -> what it points to, for a readable failure message."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def rss_kib() -> int:
    """Resident set size after a full garbage collection."""
    gc.collect()
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def heap_in_use() -> int:
    """Bytes malloc() has handed out and not got back (glibc's mallinfo2:
    main arena plus mmap()ed blocks), after a garbage collection.  Unlike
    RSS, memory freed earlier cannot hide a leak here.  -1 if unknown."""
    gc.collect()
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:  # not glibc >= 2.33
        return -1
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def python_blocks() -> int:
    """Memory blocks pymalloc has handed out (0 under PYTHONMALLOC=malloc)."""
    gc.collect()
    return sys.getallocatedblocks()


def cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise RuntimeError("no CapEff in /proc/self/status")


def drop_to_nobody() -> None:
    """Become nobody:nogroup with no capability left (irreversible: call it
    in a child process, after the imports the child needs)."""
    os.setgroups([])
    os.setgid(NOBODY_GID)
    os.setuid(NOBODY_UID)   # from root to non-root: every capability goes
    if cap_eff() != 0 or os.getuid() != NOBODY_UID:
        raise RuntimeError("privileges were not dropped")


def compile_c(source: Path, out: Path, *extra: str) -> Path:
    """Build a test helper program with the system compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the hardening tests build C helpers")
    cmd = [cc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2",
           *extra, str(source), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot build {source.name}:\n{result.stderr}")
    return out


def require_or_skip(ok: bool, reason: str) -> None:
    """Skip locally, fail in CI: a hardening check must not vanish silently."""
    if ok:
        return
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)

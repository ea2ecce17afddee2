"""What the running kernel can do, by version, and which tests face it.

The suite runs on the host's kernel and, through `bash .ci/kernels`, on
older LTS kernels under QEMU (docs/kernels.md).  A test of a feature that
needs a newer kernel asks `has()` and asserts the older kernel's documented
behaviour instead of skipping, so every kernel runs every kernel-facing test.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Tuple

# Feature -> first mainline version that has it (README, "Counting inside
# the kernel" and "What is counted").
FEATURES = {
    # inet_diag dumps bound-only sockets (TCP_BOUND_INACTIVE, state bit 13)
    # when asked: commit 91051f003948.  Older kernels accept the bit and
    # send none: those sockets are only in the bind hash, which they never walk.
    "bound_inactive_dump": (6, 8),
    # The BPF `tcp` iterator, with BTF: the bpf backend and pinning.
    "bpf_iter_tcp": (5, 9),
    # The walk engine's program (bpf_rcu_read_lock kfuncs, bpf_rdonly_cast):
    # older kernels refuse to load it.
    "walk": (6, 2),
}

# Test modules whose results depend on the kernel: real sockets in network
# namespaces, every backend, fallbacks, port filters, fork and threads.
# `pytest -m kernel` selects them (the marker is set in conftest.py);
# .ci/kernels runs them on each kernel it boots.
KERNEL_FACING = (
    "test_counts_netns.py",        # exact counts, every backend and request form, vs ss and /proc
    "test_bpf.py",                 # bpf, "auto" as root and as nobody, pinned, other namespaces
    "test_fallback.py",            # netlink refused: "auto" moves on
    "test_filters_netns.py",       # port filters in the kernel, netns, fork
    "test_population.py",          # the population itself, bound-only sockets per version
    "test_counts_by_cgroup.py",    # socket owners: netlink's cgroup id and the bpf program's
    # The walk engine against the kernel (not its C unit tests or fuzzer).
    "test_walk_engine.py::test_refused_below_6_2",
    "test_walk_engine.py::test_one_pass_counts_every_namespace",
    "test_walk_engine.py::test_state_filter",
    "test_walk_engine.py::test_port_filters_equal_ss",
    "test_walk_engine.py::test_own_table_walked_from_inside",
)
# Left out: test_cli_netns.py (the CLI's --netns is the library's netns=,
# tested above; a Python start per case under software emulation outlives
# the population's TIME_WAIT sockets) and test_hardening_threads.py (it
# asserts a number of counts per thread in a fixed time: speed, not the
# kernel; test_bpf.py and test_filters_netns.py count from threads).


def release() -> str:
    """The running kernel's release, e.g. "6.1.0-50-amd64"."""
    return platform.release()


def version(release_name: "str | None" = None) -> Tuple[int, int]:
    """(major, minor) of a kernel release string (default: the running one)."""
    numbers = re.findall(r"\d+", release_name if release_name is not None else release())
    if len(numbers) < 2:
        raise ValueError("kernel release %r has no major.minor version" % (release_name,))
    return int(numbers[0]), int(numbers[1])


def has(feature: str) -> bool:
    """True if the running kernel is new enough for `feature` (a FEATURES key).

    FASTTCPSTAT_TEST_KERNEL=MAJOR.MINOR pretends another version, to check
    that a version-aware test fails when its expectation is wrong.
    """
    if feature not in FEATURES:
        raise ValueError("feature must be one of %s, not %r" % (sorted(FEATURES), feature))
    pretend = os.environ.get("FASTTCPSTAT_TEST_KERNEL")
    return (version(pretend) if pretend else version()) >= FEATURES[feature]


def is_kernel_facing(nodeid: str) -> bool:
    """True if a test (a pytest node id) is in KERNEL_FACING, by file or by
    file::function (parameters left off)."""
    path, _, name = nodeid.partition("::")
    base = os.path.basename(path)
    return base in KERNEL_FACING or "%s::%s" % (base, name.split("[")[0]) in KERNEL_FACING

# Test modules that may skip on a kernel without the FEATURES entry named.
# Any other skip fails .ci/kernels: a skip would hide an untested kernel.
MAY_SKIP: dict = {
    # Where the kernel refuses the walk program (test_refused_below_6_2
    # asserts the refusal), the tests that use it skip.
    "test_walk_engine": "walk",
}

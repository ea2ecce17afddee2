#!/bin/bash
# Runs inside a kernel booted by .ci/kernels (virtme-ng): the host's root
# filesystem, read-only except OUT (shared back to the host) and vng's
# guest-only overlays (/tmp, /etc, /var, ...).
# Usage: guest.sh PYTHON OUT -- PYTEST-ARGS...
set -u
python=$1 out=$2
shift 3
# Seconds from power-on to here: the boot cost, reported by the host.
cut -d' ' -f1 /proc/uptime > "$out/boot-seconds"
uname -r > "$out/release"
# The 10,000-socket population needs more descriptors than the guest's
# default hard limit (4096); vng allows nr_open=1048576.
ulimit -n 1048576
# The bpf backend's pin tests need a BPF filesystem; vng mounts none.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
# The per-cgroup tests make cgroups under a cgroup2 mount.
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
cd "$(dirname "$0")/../.."
# CI=true: a missing privilege or kernel feature fails instead of skipping.
# The checkout is read-only here: no bytecode, no pytest cache.
CI=true PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -p no:cacheprovider \
    --junitxml="$out/junit.xml" "$@" > "$out/pytest.log" 2>&1
status=$?
cut -d' ' -f1 /proc/uptime > "$out/end-seconds"
exit "$status"

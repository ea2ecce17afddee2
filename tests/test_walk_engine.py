"""The walk engine (csrc/walk_*.c): one BPF pass over the kernel's TCP hash
tables counts every network namespace at once.

No Python binding yet: the C unit tests of the generator run under ASan and
UBSan, and the real-kernel tests drive tests/c/walk_count (the engine as a
command) from the host namespace over several private namespaces built by
tests/population.py, comparing every namespace's counts with the
population's expected counts and with `ss -tan` run inside it.

The kernel tests need root (CAP_BPF + CAP_PERFMON), Linux >= 6.2 and BTF;
in CI (CI=true) they fail rather than skip where that is missing.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from . import kernel
from .conftest import require
from .population import FAMILIES, SMALL_SPEC, STATES, Population, Spec, ss_counts
from .test_c_core import CFLAGS, SANITIZERS, _compiler, _sanitizers_available
from .test_filters_netns import _listen_ports, from_listing, ss_filtered, ss_listing

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ["walk_run.c", "walk_prog.c", "btf_walk.c", "btf.c"]

# Distinct counts per namespace, so that a mix-up between namespaces shows.
SPECS = [
    SMALL_SPEC,
    Spec(listen4=1, listen_dual=3, estab4=2, estab6=7, estab_mapped=5,
         time_wait4=3, time_wait6=6, orphan_fin_wait2_4=4, syn_recv4=1,
         syn_recv6=3, close_wait4=1, bound_inactive4=2),
    Spec(listen6=4, estab4=9, time_wait4=1, last_ack4=3, closing4=1,
         syn_sent4=2, fin_wait1_4=1),
]


def test_generator_unit_tests(tmp_path: Path) -> None:
    sanitize = _sanitizers_available(tmp_path)
    exe = tmp_path / "test_walk_prog"
    subprocess.run(
        [_compiler(), *CFLAGS, *(SANITIZERS if sanitize else []),
         f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests/c'}",
         str(ROOT / "tests/c/test_walk_prog.c"),
         *(str(ROOT / "csrc" / src) for src in ENGINE), "-o", str(exe)],
        check=True, capture_output=True, text=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failed"), result.stdout


@pytest.fixture(scope="module")
def walk_built(tmp_path_factory) -> "tuple[str, subprocess.CompletedProcess]":
    """tests/c/walk_count, built here, and one `--quiet` run of it."""
    exe = tmp_path_factory.mktemp("walk") / "walk_count"
    subprocess.run(
        [_compiler(), *CFLAGS, f"-I{ROOT / 'csrc'}", str(ROOT / "tests/c/walk_count.c"),
         *(str(ROOT / "csrc" / src) for src in ENGINE), "-o", str(exe)],
        check=True, capture_output=True, text=True)
    return str(exe), subprocess.run([str(exe), "--quiet"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def walk_count(walk_built) -> str:
    """tests/c/walk_count; the tests are skipped where the kernel is too old
    (test_refused_below_6_2 checks the refusal), else failed in CI where
    the kernel refuses the program."""
    exe, probe = walk_built
    if not kernel.has("walk"):
        pytest.skip("the walk program needs Linux >= 6.2, not %s" % kernel.release())
    require(probe.returncode == 0, "the walk program (root, Linux >= 6.2, BTF)",
            probe.stderr.strip()[:500])
    return exe


def test_refused_below_6_2(walk_built):
    """Older kernels refuse the program at load, and the engine says which
    step failed; from 6.2 it loads (as root, which .ci/kernels is)."""
    _, probe = walk_built
    if kernel.has("walk"):
        require(probe.returncode == 0, "the walk program (root, BTF)", probe.stderr[:500])
    else:
        assert probe.returncode != 0, kernel.release()
        assert probe.stderr.startswith("walk_count: "), probe.stderr


def run_walk(exe: str, *args: str) -> "tuple[dict, dict]":
    """One pass: (its stats line, {inum: {family: {state: n}}})."""
    out = subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert "load" in lines[0]
    return lines[1], {int(inum): by_family(v) for inum, v in lines[1].get("ns", {}).items()}


def tallied(stats: dict) -> int:
    """Every increment in the pass's tally slots."""
    return sum(sum(slot[f]) for slot in stats.get("ns", {}).values() for f in FAMILIES)


def by_family(slot: dict) -> dict:
    return {f: {s: slot[f][i + 1] for i, s in enumerate(STATES)} for f in FAMILIES}


def zero() -> dict:
    return {f: dict.fromkeys(STATES, 0) for f in FAMILIES}


def extra_states(slot: dict) -> list:
    """Counts outside STATES (index 0, 12-15): must all be zero."""
    return [slot[f][i] for f in FAMILIES for i in (0, 12, 13, 14, 15)]


def inum(pop: Population) -> int:
    return os.stat(pop.ns_path).st_ino


def fresh(pops) -> None:
    """The populations' TIME_WAIT and orphaned FIN_WAIT2 sockets expire
    after 60 s: a mismatch after that would be the clock's, not ours."""
    assert all(pop.is_fresh() for pop in pops), "too slow: TIME_WAIT may have expired"


def ss_both() -> dict:
    return {f: ss_counts(f, exclude_unconn=True) for f in FAMILIES}


class Fresh:
    """The SPECS populations, rebuilt when their TIME_WAIT and orphaned
    FIN_WAIT2 sockets (60 s) might expire before a test is done with them:
    on a slow machine a module-long population would not stay exact."""

    MARGIN = 25.0  # seconds a test may take after get()

    def __init__(self) -> None:
        self.pops: list = []

    def get(self) -> list:
        if not self.pops or any(p.fresh_until - time.monotonic() < self.MARGIN
                                for p in self.pops):
            self.close()
            for spec in SPECS:
                self.pops.append(Population(spec))
        return self.pops

    def close(self) -> None:
        for pop in self.pops:
            pop.close()
        self.pops = []


@pytest.fixture(scope="module")
def fresh_populations(require_netns, walk_count):
    holder = Fresh()
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def populations(fresh_populations):
    """The SPECS populations, exact for at least Fresh.MARGIN seconds."""
    return fresh_populations.get()


def test_one_pass_counts_every_namespace(walk_count, populations):
    stats, counts = run_walk(walk_count)
    ss = [pop.run(ss_both) for pop in populations]
    fresh(populations)
    assert stats["stats"]["anomalies"] == 0, stats
    for pop, ss_view in zip(populations, ss):
        got = counts[inum(pop)]
        assert got == pop.expected
        assert got == ss_view
    # Every kind of socket was there: v4-mapped (IPv6 ESTABLISHED), request
    # sockets, TIME_WAIT and FIN_WAIT2 timewait sockets.
    mixed = counts[inum(populations[1])]
    assert mixed["ipv6"]["ESTABLISHED"] >= 5 and mixed["ipv6"]["SYN_RECV"] == 3
    assert mixed["ipv4"]["FIN_WAIT2"] >= 4 and mixed["ipv6"]["TIME_WAIT"] == 6


def test_raw_slots_have_nothing_outside_the_states(walk_count, populations):
    out = subprocess.run([walk_count], check=True, capture_output=True, text=True).stdout
    pass_ = json.loads(out.splitlines()[1])
    for pop in populations:
        assert extra_states(pass_["ns"][str(inum(pop))]) == [0] * 10


def test_one_namespace_only(walk_count, populations):
    target = populations[1]
    _, counts = run_walk(walk_count, "--only", str(inum(target)))
    fresh(populations)
    assert list(counts) == [inum(target)]
    assert counts[inum(target)] == target.expected


def test_full_tally_table_is_reported(walk_count, populations):
    """More namespaces than slots: the sockets without a slot are counted
    as an anomaly, never dropped silently; those with one stay exact."""
    stats, counts = run_walk(walk_count, "--slots", "2")
    fresh(populations)
    assert len(counts) <= 2
    assert stats["stats"]["full"] > 0 and stats["stats"]["anomalies"] > 0
    for pop in populations:
        assert counts.get(inum(pop), pop.expected) == pop.expected


@pytest.mark.parametrize("mask_states", [["LISTEN"], ["TIME_WAIT", "FIN_WAIT2"],
                                         ["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"]])
def test_state_filter(walk_count, populations, mask_states):
    mask = sum(1 << (STATES.index(s) + 1) for s in mask_states)
    _, counts = run_walk(walk_count, "--states", str(mask))
    fresh(populations)
    for pop in populations:
        want = {f: {s: (n if s in mask_states else 0) for s, n in pop.expected[f].items()}
                for f in FAMILIES}
        assert counts.get(inum(pop), zero()) == want


def test_port_filters_equal_ss(walk_count, populations):
    pop = populations[0]
    ports, rows = pop.run(lambda: (_listen_ports(), ss_listing()))
    # Listening ports that have connections, so remote filters match too.
    a, b, c = sorted(p for p in ports if any(r[2] == p for r in rows))[:3]
    cases = [
        (["--local", str(a)], f"sport = :{a}", (a, None)),
        (["--local", f"{a}-{b}", "--local", str(c)],
         f"( ( sport >= :{a} and sport <= :{b} ) or sport = :{c} )", ([(a, b), c], None)),
        (["--remote", str(b)], f"dport = :{b}", (None, b)),
        (["--local", "32768-60999", "--remote", str(a)],
         f"( sport >= :32768 and sport <= :60999 ) and dport = :{a}", ((32768, 60999), a)),
        (["--local", "1"], "sport = :1", (1, None)),
    ]
    nonzero = 0
    for args, expr, (local, remote) in cases:
        _, counts = run_walk(walk_count, "--only", str(inum(pop)), *args)
        fresh([pop])
        got = counts.get(inum(pop), zero())
        total = {s: got["ipv4"][s] + got["ipv6"][s] for s in STATES}
        assert total == pop.run(ss_filtered, expr) == from_listing(rows, local, remote), expr
        nonzero += any(total.values())
    assert nonzero >= 4


@pytest.mark.parametrize("budget,slack", [(1, 1024), (37, 0), (200, 1), (1 << 20, 1024)])
def test_budget_and_resumption_keep_counts_exact(walk_count, populations, budget, slack):
    stats, counts = run_walk(walk_count, "--budget", str(budget), "--slack", str(slack))
    fresh(populations)
    assert stats["stats"]["anomalies"] == 0, stats
    # `counted` grows by a bucket's increments when it ends (or when a run
    # stops in it, before user space takes them back): never one twice.
    assert stats["stats"]["counted"] == tallied(stats), stats["stats"]
    for pop in populations:
        assert counts[inum(pop)] == pop.expected
    if budget == 1:
        # One bucket a run, or one step over empty ones (at most 1 + 8:
        # SCAN_EMPTY in csrc/walk_prog.c, raw reads only).
        assert stats["runs"] * 9 >= stats["stats"]["buckets"]
    # (Mid-bucket stops and their undoing: the long-chain test below.)


def _reuseport_listeners_then_walks(exe: str, n: int, runs: list) -> list:
    """In a fresh namespace: n SO_REUSEPORT listeners on one address and
    port (one lhash2 chain of n sockets), then a walk per item of `runs`."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 4242))
        s.listen(1)
        socks.append(s)
    me = os.stat("/proc/self/ns/net").st_ino
    results = []
    for args in runs:
        stats, counts = run_walk(exe, "--only", str(me), "--tables", "2", *args)
        results.append((stats["stats"], counts.get(me, zero())["ipv4"]["LISTEN"]))
    for s in socks:
        s.close()
    return results


def test_long_chain_resumed_or_given_up_never_silently_wrong(walk_count, require_netns):
    """A 40-socket chain takes 40 iterations.  With runs of 48..87
    iterations (no slack; 40 consecutive budgets, so every position of the
    chain in a run is met) some run reaches it with too few left: it stops
    mid-bucket, the bucket's increments are taken back and the next run,
    starting there, walks it whole.  (48, not 40: other namespaces'
    listeners may hash to the same listening bucket and lengthen the
    chain.)  With runs of at most 9 it cannot fit: it is given up, and
    that is reported as an anomaly."""
    with Population(Spec()) as pop:
        fits = pop.run(_reuseport_listeners_then_walks, walk_count, 40,
                       [["--budget", str(b), "--slack", "0"] for b in range(48, 88)])
        for stats, listen in fits:
            assert stats["anomalies"] == 0 and listen == 40, stats
            assert stats["counted"] == 40, stats  # the undone increments taken back
        assert sum(stats["undone"] for stats, _ in fits) > 0
        [(stats, listen)] = pop.run(_reuseport_listeners_then_walks, walk_count, 40,
                                    [["--budget", "1", "--slack", "8"]])
        assert stats["giveups"] >= 1 and stats["anomalies"] >= 1
        assert listen == 0 and stats["counted"] == 0  # the bucket's increments taken back


def _walk_here(exe: str, *args: str):
    return run_walk(exe, *args)


def test_own_table_walked_from_inside(walk_count, require_netns):
    """A namespace with its own ehash (tcp_child_ehash_entries): the host's
    pass sees only its listeners (lhash2 is shared); a pass of the ehash
    from inside it sees the rest, and nothing of the host's namespaces."""
    with Population(SPECS[1], ehash_entries=1024) as pop:
        me = inum(pop)
        _, host = run_walk(walk_count)
        _, inside = pop.run(_walk_here, walk_count, "--tables", "1")
        ss_view = pop.run(ss_both)
        listeners = {f: {s: (n if s == "LISTEN" else 0) for s, n in pop.expected[f].items()}
                     for f in FAMILIES}
        rest = {f: {s: (0 if s == "LISTEN" else n) for s, n in pop.expected[f].items()}
                for f in FAMILIES}
        assert host[me] == listeners
        assert list(inside) == [me]
        assert inside[me] == rest
        assert ss_view == pop.expected


def test_fuzz_harness_replays_random_and_real_inputs(tmp_path: Path) -> None:
    """fuzz/fuzz_walkprog.c without libFuzzer (tests/c/fuzz_replay.c):
    deterministic random inputs for both modes, a valid generator input
    and, where readable, the running kernel's BTF."""
    import random

    sanitize = _sanitizers_available(tmp_path)
    exe = tmp_path / "fuzz_walkprog"
    subprocess.run(
        [_compiler(), *CFLAGS, *(SANITIZERS if sanitize else []),
         f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests/c'}", str(ROOT / "fuzz/fuzz_walkprog.c"),
         str(ROOT / "tests/c/fuzz_replay.c"),
         *(str(ROOT / "csrc" / src) for src in ENGINE if src != "walk_run.c"),
         "-o", str(exe)],
        check=True, capture_output=True, text=True)
    rng = random.Random(13)
    inputs = []
    for i in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 9, 70, 90, 300])))
        inputs.append(data)
    # Mode 0, a layout of small values, 64 slots, room for the program
    # (324 instructions with two ranges), two ranges.
    inputs.append(bytes([0]) + bytes(range(1, 81)) + bytes([6]) + (330).to_bytes(2, "little")
                  + bytes([1, 1]) + (0x7FE).to_bytes(4, "little")
                  + bytes([0x10, 0x27, 0x20, 0x27, 0x50, 0x00, 0x50, 0x00]))
    btf = Path("/sys/kernel/btf/vmlinux")
    if btf.exists():
        inputs.append(b"\x01" + btf.read_bytes())
    paths = []
    for i, data in enumerate(inputs):
        p = tmp_path / f"in{i}"
        p.write_bytes(data)
        paths.append(str(p))
    result = subprocess.run([str(exe), *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{len(paths)} passed, 0 failed"


def test_many_namespaces_fit_the_table(walk_count, require_netns):
    """Inode numbers come in arithmetic runs: the slot hash must spread
    them.  (A middle-bits hash crowded 190 namespaces into 1024 slots'
    probe runs; this catches it where the machine has that many.)"""
    pops = []
    try:
        for _ in range(24):
            pops.append(Population(Spec(estab4=1)))
        stats, counts = run_walk(walk_count, "--slots", "1024")
        assert len(counts) >= 24
        assert len(counts) > 512 or stats["stats"]["full"] == 0, stats
        for pop in pops:
            assert counts[inum(pop)] == pop.expected
    finally:
        for pop in pops:
            pop.close()


def _walk_under_churn(walk: str, churn: str, stats_path: str, passes: int) -> list:
    """In the churning namespace: start tests/c/churn.c, walk (the table
    is the host's shared one), stop."""
    workers = 2
    with open(stats_path, "wb") as f:
        f.write(bytes(8 * (workers + 1)))
    proc = subprocess.Popen([churn, str(workers), "30", stats_path, "20000"])
    try:
        deadline = time.monotonic() + 10
        while int.from_bytes(open(stats_path, "rb").read(8), "little") != workers:
            assert time.monotonic() < deadline and proc.poll() is None, "churn did not start"
            time.sleep(0.01)
        out = subprocess.run([walk, "--passes", str(passes), "--budget", "256"], check=True,
                             capture_output=True, text=True).stdout
        done = sum(int.from_bytes(open(stats_path, "rb").read()[8 * (i + 1):8 * (i + 2)],
                                  "little") for i in range(workers))
    finally:
        proc.kill()
        proc.wait()
    return [json.loads(line) for line in out.splitlines()[1:]], done


def test_quiet_namespaces_exact_while_another_churns(walk_count, require_netns, tmp_path):
    """Connections opened and closed at full speed in another namespace move
    sockets through the chains the walk reads: every pass must still count
    the quiet namespace exactly, and report no anomaly."""
    churn = tmp_path / "churn"
    subprocess.run([_compiler(), "-O2", "-std=c11", "-D_GNU_SOURCE",
                    str(ROOT / "tests/c/churn.c"), "-o", str(churn)], check=True)
    with Population(SMALL_SPEC) as quiet, Population(Spec()) as noisy:
        quiet_inum = inum(quiet)
        passes, connections = noisy.run(_walk_under_churn, walk_count, str(churn),
                                         str(tmp_path / "stats"), 10)
        assert quiet.is_fresh(), "too slow: TIME_WAIT may have expired"
    assert connections > 0
    assert len(passes) == 10
    for p in passes:
        assert p["stats"]["anomalies"] == 0, p["stats"]
        assert by_family(p["ns"][str(quiet_inum)]) == quiet.expected
    print("churn: %d connections, %d rescans in %d passes"
          % (connections, sum(p["stats"]["rescans"] for p in passes), len(passes)))

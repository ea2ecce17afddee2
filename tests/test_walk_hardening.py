"""The walk backend under the hardening tests' conditions: Ctrl-C during a
big count, and connection churn in another namespace and in the counted
one.

- Ctrl-C.  A pass is a series of BPF_PROG_TEST_RUN runs, each at most
  budget + slack loop iterations under the RCU read lock; Python's signal
  handlers run between runs.  SIGINT sent a quarter into a count of 300k
  sockets (1M under FASTTCPSTAT_STRESS=1) must raise KeyboardInterrupt
  from inside the walk (the handler finds the counter still busy), not
  after it; a full pass's statistics show it was made of many runs of at
  most budget + slack iterations each.
- Churn elsewhere.  tests/c/churn.c opens and resets loopback connections
  as fast as it can in one namespace while a quiet one sharing the host's
  table is counted: every count of the quiet one, inside it and from the
  host's all-namespaces pass, is exact.
- Churn in the counted namespace: the bounds of test_hardening_churn.py
  (its generator, population and bound arithmetic, reused), for the walk.
These are marked `stress`: the default suite runs them at the quick sizes,
CI's stress step at the full ones (1M sockets, 15 s of churn).
- The self-check's namespace: its own 64-bucket table, and the four kinds
  of socket it proves.
"""
from __future__ import annotations

import errno
import os
import time

import pytest

import fasttcpstat
from fasttcpstat._netns import in_thread

from . import test_hardening_churn as churn
from .hardening import STABLE_SPEC, open_fds, scale, total_expected
from .population import Population, Spec
from .population_netns import _setns_net
from .test_hardening_churn import churn_binary  # noqa: F401 - a fixture
from .test_hardening_signals import (BPF_SIGINT_SPEC, BPF_SIGINT_WORKERS, LATENCY_LIMIT,
                                     handled_sigints)

WALK = pytest.mark.usefixtures("require_netns", "require_walk")

# csrc/walk_prog.h: FTS_WALK_SLACK, the iterations a run may take past its
# budget to reach a bucket boundary.
SLACK = 1024
BUDGET = 16384  # csrc/bind_walk.c's default, passed explicitly here
TRIALS = 10


# --- Ctrl-C -----------------------------------------------------------------

@pytest.fixture(scope="module")
def sigint_population(require_netns, require_walk):
    """300k TIME_WAIT sockets (1M established under stress) in a namespace
    with its own 1M-bucket table: a pass of ~1.3M loop iterations whatever
    other namespaces hold."""
    with Population(BPF_SIGINT_SPEC, workers=BPF_SIGINT_WORKERS, settle_timeout=300,
                    ehash_entries=1 << 20) as pop:
        yield pop


def _walk_sigint_trials(trials: int) -> dict:
    """Runs in the namespace, in the main thread of the run() child."""
    from fasttcpstat import _fasttcpstat, _walk

    fds_before = open_fds()
    counter = fasttcpstat.Counter("walk")
    assert counter.backend == "walk", counter.fallback_reason

    def busy() -> bool:
        # Mid-walk, the counter is busy in this thread: using it again
        # raises.  After the walk (the signal handled late) it counts.
        try:
            counter.counts()
        except RuntimeError:
            return True
        return False

    out = handled_sigints(counter.counts, trials, busy)
    after = sum(counter.counts().values())
    counter.close()
    # One full pass, its statistics: how many runs, of how many iterations.
    program = _fasttcpstat.WalkCounter(_walk.layout(), slots=1)
    try:
        inode = os.stat("/proc/thread-self/ns/net").st_ino
        tallies, stats = program.walk(only_inum=inode, budget=BUDGET)
    finally:
        program.close()
    return dict(out, after=after, stats=stats, walked=sum(map(sum, tallies[inode])),
                fds_before=fds_before, fds_after=open_fds())


@pytest.mark.stress  # 1M sockets under FASTTCPSTAT_STRESS=1
@WALK
def test_sigint_during_walk_count(sigint_population):
    out = sigint_population.run(_walk_sigint_trials, TRIALS)
    stats = out["stats"]
    ms = sorted((round(cpu * 1000, 1), round(wall * 1000, 1)) for cpu, wall in out["latencies"])
    print(f"\nwalk count of {out['total']} sockets: {out['dump_cpu'] * 1000:.0f} ms of CPU in "
          f"{stats['runs']} runs, longest RCU hold {stats['longest_held_ns'] / 1e6:.2f} ms; "
          f"KeyboardInterrupt (CPU ms, wall ms) {ms} after SIGINT")
    assert out["finished"] == 0, out  # every SIGINT raised, during a count
    # Handled between runs: the CPU the main thread spends from the signal
    # to the KeyboardInterrupt is one run at most, whatever the load.
    slow = [cpu for cpu, _ in out["latencies"] if cpu >= LATENCY_LIMIT]
    assert not slow, f"KeyboardInterrupt after {slow} s of CPU: {out}"
    # Sent a quarter into the count: handled during the walk, not after it.
    assert out["cut_short"] >= TRIALS * 0.9, out
    assert out["fds_after"] == out["fds_before"]
    assert out["total"] >= 200_000
    assert out["walked"] == out["after"] == out["total"]
    if sigint_population.is_fresh():
        assert out["total"] == sigint_population.total
    # Runs are bounded: no run took more than budget + slack iterations, so
    # a pass of this size is many runs, each a chance to take the signal.
    assert stats["anomalies"] == 0, stats
    assert stats["loops"] > 4 * (BUDGET + SLACK), stats
    assert stats["runs"] * (BUDGET + SLACK) >= stats["loops"], stats
    assert stats["runs"] >= 4, stats


# --- churn in another namespace ------------------------------------------

CHURN_SECONDS = scale(15.0, 4.0)


@pytest.fixture(scope="module")
def quiet_and_noisy(require_netns, require_walk):
    """Two namespaces sharing the host's table: a stable population and
    an empty one for the churn."""
    with Population(STABLE_SPEC) as quiet, Population(Spec(listen4=1)) as noisy:
        yield quiet, noisy


def _start_churn(binary, pop: Population, stats_path: str, seconds: float):
    """tests/c/churn.c inside `pop`'s namespace; (process, completed())."""
    ns = pop.ns_path
    return churn.start_churn(binary, stats_path, seconds, preexec_fn=lambda: _setns_net(ns))


def _counts_for(seconds: float) -> list:
    """Runs in the quiet namespace: walk counts back to back."""
    with fasttcpstat.Counter("walk") as counter:
        assert counter.backend == "walk", counter.fallback_reason
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end or len(out) < 10:
            out.append(counter.counts_by_family())
        return out


def _host_passes(quiet_inum: int, seconds: float) -> "tuple[list, list]":
    """From the host's namespace: all-namespace passes; the quiet
    namespace's tallies and each pass's statistics."""
    from fasttcpstat import _fasttcpstat, _walk

    program = _fasttcpstat.WalkCounter(_walk.layout())
    tallies, stats = [], []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end or len(tallies) < 10:
            found, st = program.walk()
            tallies.append(found.get(quiet_inum))
            stats.append(st)
    finally:
        program.close()
    return tallies, stats


def _named(pair) -> dict:
    """A slot's (ipv4, ipv6) tallies by family and state name; None if the
    pass did not see the namespace."""
    from fasttcpstat._states import _STATE_NUMBER

    if pair is None:
        return None
    return {family: {name: tally[number] for name, number in _STATE_NUMBER.items()}
            for family, tally in zip(("ipv4", "ipv6"), pair)}


@pytest.mark.stress  # as test_hardening_churn.py: CI's stress step runs it
@WALK
def test_churn_elsewhere_leaves_quiet_namespace_exact(quiet_and_noisy, churn_binary,  # noqa: F811
                                                      tmp_path):
    quiet, noisy = quiet_and_noisy
    # The generator's longest run (it is killed below): the counts take
    # as long as a loaded machine makes them.
    generator, completed = _start_churn(churn_binary, noisy, str(tmp_path / "stats"), 600)
    try:
        start, begun = completed(), time.monotonic()
        inside = quiet.run(_counts_for, CHURN_SECONDS)
        host_tallies, host_stats = _host_passes(os.stat(quiet.ns_path).st_ino, CHURN_SECONDS)
        assert generator.poll() is None, "the churn ended before the counts"
        rate = (completed() - start) / (time.monotonic() - begun)
    finally:
        generator.kill()
        generator.wait(timeout=60)
    assert rate >= churn.MIN_RATE, f"only {rate:.0f} connections/s"
    wrong = [c for c in inside if c != quiet.expected]
    assert not wrong, (len(wrong), len(inside), wrong[0], quiet.expected)
    wrong = [t for t in host_tallies if _named(t) != quiet.expected]
    assert not wrong, (len(wrong), len(host_tallies), _named(wrong[0]), quiet.expected)
    assert all(st["anomalies"] == 0 for st in host_stats), host_stats
    rescans = sum(st["rescans"] for st in host_stats)
    print(f"\n{len(inside)} counts inside and {len(host_tallies)} host passes under "
          f"{rate:.0f} connections/s next door: all exact; {rescans} buckets rescanned")


# --- churn in the counted namespace ---------------------------------------

def _walk_methods():
    walk = fasttcpstat.Counter("walk")
    assert walk.backend == "walk", walk.fallback_reason
    netlink = fasttcpstat.Counter("netlink")
    return {
        "walk": lambda: walk.counts(),
        "walk-one-shot": lambda: fasttcpstat.counts(backend="walk"),
        "walk-filtered": lambda: walk.counts(local_ports=churn.STABLE_PORTS),
        # The filtered count's stable value before the churn (and a
        # reference beside the walk's during it).
        "netlink-filtered": lambda: netlink.counts(local_ports=churn.STABLE_PORTS),
    }, (walk, netlink)


def _walk_count_under_churn(binary: str, stats_path: str, duration: float) -> dict:
    """Runs in the namespace (a forked child: the module's _methods is
    replaced there only)."""
    churn._methods = _walk_methods
    return churn._count_under_churn(binary, stats_path, duration)


@pytest.mark.stress
@WALK
def test_walk_counts_under_churn(churn_binary, tmp_path, require_netns):  # noqa: F811
    with Population(churn.SPEC) as population:
        out = population.run(_walk_count_under_churn, str(churn_binary),
                             str(tmp_path / "stats"), churn.DURATION)
        stable = total_expected(population.expected)
    assert out["generator_status"] == 0
    assert not out["errors"], out["errors"][:5]
    assert out["rate"] >= churn.MIN_RATE, f"only {out['rate']:.0f} connections/s"
    problems = []
    for name, c, result in out["records"]:
        # The filtered walk has the filtered netlink count's bounds.
        as_name = "netlink-filtered" if name.endswith("-filtered") else name
        problems += [f"[{name}] {p}" for p in churn._bounds_violations(
            as_name, c, result, stable, out["filtered_before"])]
    assert not problems, problems[:10]
    counted = {name for name, _, _ in out["records"]}
    assert counted == {"walk", "walk-one-shot", "walk-filtered", "netlink-filtered"}
    most = max(c for _, c, _ in out["records"])
    print(f"\n{len(out['records'])} counts under {out['rate']:.0f} connections/s; at most "
          f"{most} connections churned during one count")


# --- the self-check's own namespace ---------------------------------------

def _self_check_namespace() -> "tuple[int, int]":
    """In a thread: the self-check's namespace's table size (negative:
    shared with the host, net.ipv4.tcp_ehash_entries) and the host's."""
    from fasttcpstat import _walk

    def inside() -> int:
        _walk._private_namespace()
        with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
            return int(f.read())

    with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
        host = int(f.read())
    return in_thread(inside), host


@WALK
def test_self_check_counts_in_its_own_small_table():
    """The self-check's namespace owns a 64-bucket table: its walk and its
    sock_diag dump cost the same whatever the host's table holds."""
    own, host = _self_check_namespace()
    assert own == 64 and abs(host) > 64, (own, host)


def _proves_every_kind_of_socket() -> None:
    from fasttcpstat import _fasttcpstat, _walk
    from fasttcpstat._states import _STATE_NUMBER

    program = _fasttcpstat.WalkCounter(_walk.layout(), slots=1)
    try:
        expected, n4, n6, w4, w6 = in_thread(lambda: _walk._known_sockets(program))
    finally:
        program.close()
    for state in ("LISTEN", "ESTABLISHED", "SYN_RECV", "TIME_WAIT"):
        assert expected[_STATE_NUMBER[state]] >= 1, state
    assert tuple(w4) == tuple(n4) == expected
    assert not any(w6) and not any(n6)


@WALK
def test_self_check_proves_every_kind_of_socket():
    """Its sockets: a listener, full sockets, a request socket (SYN_RECV)
    and a timewait one, counted exactly by the walk and by sock_diag."""
    _proves_every_kind_of_socket()


@WALK
def test_self_check_where_proc_sys_is_read_only(monkeypatch):
    """A container's read-only /proc/sys: no table of its own, the host's
    shared one (slower), the same proof."""
    import builtins

    from fasttcpstat import _walk

    def refusing(path, *args, **kwargs):
        if "tcp_child_ehash_entries" in str(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(_walk, "open", refusing, raising=False)
    own, host = _self_check_namespace()
    assert own < 0 and own == -abs(host), (own, host)  # negative: shared
    _proves_every_kind_of_socket()

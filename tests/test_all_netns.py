"""counts_all_netns(), AllNetnsCounter and list_netns() on real namespaces.

The module builds its own namespaces: populations (exact mixes: every
state, 10,000 sockets, one with its own socket hash table), a namespace
that only an `ip netns` bind mount holds (no process in it), and
namespaces that go away during a call.  Every count is compared with
`ss -tan` run inside the namespace and with the population's spec.

Every backend counts them, "walk" (one pass per distinct socket table)
and "auto" (the walk where it is accepted: as root on Linux >= 6.2) included.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import fasttcpstat
from fasttcpstat import _all_netns
from fasttcpstat._netns import Netns

from .hardening import STABLE_SPEC, drop_to_nobody, total_expected
from .population import SMALL_SPEC, STATES, Population, Spec, ss_counts

PREFIX = f"issue12-{os.getpid()}"
BOUND_NAME = f"{PREFIX}-bound"
OWN_TABLE_BUCKETS = 1024
# No TIME_WAIT: exact for as long as it is held.
OWN_TABLE_SPEC = Spec(listen4=2, listen6=1, estab4=7, estab6=3, close_wait4=2)
# About 10,000 sockets in every state that lasts (long_lived: SYN_SENT and
# SYN_RECV for hours), so that it stays exact on a loaded machine.
STABLE_10K = Spec(
    listen4=5, listen6=3, listen_dual=2, estab4=2500, estab6=1000, estab_mapped=500,
    close_wait4=500, close_wait6=250, fin_wait1_4=50, last_ack4=50, closing4=50,
    syn_sent4=100, syn_recv4=100, syn_recv6=50,
)
BACKENDS = ["auto", "bpf", "netlink", "procfs", "walk"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend; "walk" where it is accepted (required in CI), and
    "auto", which walks where "walk" works, else counts one by one."""
    if request.param == "walk":
        request.getfixturevalue("require_walk")
    return request.param


def auto_walks() -> bool:
    """Whether "auto" of counts_all_netns() walks here (root, >= 6.2)."""
    from fasttcpstat import _walk

    if _walk._kernel_release() < _walk.MIN_KERNEL:
        return False
    with fasttcpstat.AllNetnsCounter() as counter:
        counter.counts(states=["LISTEN"])
        return counter.fallback_reason is None and bool(counter.walk_passes)


def ss_in(path: str) -> dict:
    """`ss -tan` inside the namespace at `path`, per state.  Bound-inactive
    sockets (UNCONN in a recent ss) are not counted by fasttcpstat."""
    return ss_counts(netns=path, exclude_unconn=True)


def inode_of(path: str) -> int:
    return os.stat(path).st_ino


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _loopback_sockets(listeners: int, pairs: int) -> list:
    """Runs in a thread inside the namespace: listeners on 127.0.0.1 and
    ::1, and connected pairs through the first of each."""
    held = []
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        first = None
        for _ in range(listeners):
            srv = socket.socket(family)
            srv.bind((addr, 0))
            srv.listen(16)
            held.append(srv)
            first = first or srv
        for _ in range(pairs):
            held.append(socket.create_connection(first.getsockname()[:2]))
            held.append(first.accept()[0])
    return held


class BoundNetns:
    """A namespace held only by a bind mount under /run/netns: its sockets
    are made from a thread that entered it and held by this process,
    which lives elsewhere, so no /proc/PID/ns/net points to it."""

    def __init__(self, name: str, listeners: int = 0, pairs: int = 0,
                 own_table: bool = False) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"
        self.sockets: list = []
        add = ["ip", "netns", "add", name]
        if own_table:
            # Made from a throwaway namespace whose tcp_child_ehash_entries
            # gives its children a table of their own.
            add = ["unshare", "--net", "sh", "-c",
                   f"echo {OWN_TABLE_BUCKETS} > /proc/sys/net/ipv4/tcp_child_ehash_entries"
                   f" && exec ip netns add {name}"]
        subprocess.run(add, check=True)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            target = Netns(self.path)
            try:
                self.sockets = target.run_inside(lambda: _loopback_sockets(listeners, pairs))
            finally:
                target.close()
            self.expected = dict.fromkeys(STATES, 0)
            self.expected.update(LISTEN=2 * listeners, ESTABLISHED=4 * pairs)
            _wait_for(lambda: ss_in(self.path) == self.expected, "the sockets")
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        subprocess.run(["ip", "netns", "delete", self.name], check=False,
                       stderr=subprocess.DEVNULL)


def start_lone_netns() -> subprocess.Popen:
    """A process alone in a new, empty network namespace."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    _wait_for(lambda: inode_of(f"/proc/{proc.pid}/ns/net") != inode_of("/proc/self/ns/net"),
              "unshare")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


# SMALL_SPEC's population is rebuilt unless it stays exact this long.
FRESH_MARGIN = 40.0


class World:
    """Our namespaces.  All hold still but SMALL_SPEC's (every state,
    TIME_WAIT and orphaned FIN_WAIT2 included, exact for a minute), which
    only tests that count once ask for: on a loaded host, a call can take
    tens of seconds."""

    def __init__(self) -> None:
        self.pops: dict = {}
        self.bound = None
        self.small = None

    def spaces(self, every_state: bool = False) -> dict:
        """{name: (path, expected counts)}; with every_state, SMALL_SPEC's
        population too, fresh."""
        spaces = {name: (pop.ns_path, total_expected(pop.expected))
                  for name, pop in self.pops.items()}
        spaces["bound"] = (self.bound.path, self.bound.expected)
        if every_state:
            if self.small is None or self.small.fresh_until - time.monotonic() < FRESH_MARGIN:
                if self.small is not None:
                    self.small.close()
                self.small = Population(SMALL_SPEC)
            spaces["small"] = (self.small.ns_path, total_expected(self.small.expected))
        return spaces

    def close(self) -> None:
        for pop in [*self.pops.values(), self.small]:
            if pop is not None:
                pop.close()
        if self.bound is not None:
            self.bound.delete()


@pytest.fixture(scope="module")
def world(require_netns):
    made = World()
    try:
        made.pops["large"] = Population(STABLE_10K, workers="auto", long_lived=True)
        made.pops["stable"] = Population(STABLE_SPEC, long_lived=True)
        made.pops["own_table"] = Population(OWN_TABLE_SPEC, ehash_entries=OWN_TABLE_BUCKETS)
        made.bound = BoundNetns(BOUND_NAME, listeners=2, pairs=3)
        yield made
    finally:
        made.close()


def _check_exact(got: dict, spaces: dict) -> None:
    """Every namespace of `spaces` (World.spaces() taken before the count)
    counted as built, and as ss sees it."""
    for name, (path, expected) in spaces.items():
        inode = inode_of(path)
        assert inode in got, f"{name} ({inode}) not counted"
        assert got[inode] == expected, name
        assert got[inode] == ss_in(path), name


def test_every_namespace_exact(world, backend):
    spaces = world.spaces(every_state=True)
    got = fasttcpstat.counts_all_netns(backend=backend)
    _check_exact(got, spaces)
    assert inode_of("/proc/self/ns/net") in got
    assert list(got) == sorted(got)


@pytest.mark.parametrize("filters", [
    dict(family="ipv6", states=["ESTABLISHED", "LISTEN"], local_ports=(10000, 32767)),
    dict(family="ipv4", remote_ports=[(1, 1023), (10000, 65535)]),
    dict(states=["LISTEN", "CLOSE_WAIT"]),
])
def test_filters_as_counts(world, backend, filters):
    """The filters are those of counts(), applied in every namespace (the
    states given as a one-shot iterator: read once)."""
    spaces = world.spaces()
    one_shot = dict(filters, states=iter(filters["states"])) if "states" in filters else filters
    got = fasttcpstat.counts_all_netns(backend=backend, **one_shot)
    for name, (path, _) in spaces.items():
        inode = inode_of(path)
        assert got[inode] == fasttcpstat.counts(netns=path, backend="netlink", **filters), name
    if "local_ports" not in filters:
        return
    large = world.pops["large"]
    assert got[inode_of(large.ns_path)]["LISTEN"] == large.expected["ipv6"]["LISTEN"] > 0


def test_reusable_counter(world, backend):
    """The exporter form: counters kept between calls, a namespace created
    in between counted, one gone dropped (and its counter closed)."""
    spaces = world.spaces()
    with fasttcpstat.AllNetnsCounter(backend) as counter:
        first = counter.counts()
        _check_exact(first, spaces)
        assert counter.skipped == {}
        used = counter.backends()
        expected_backend = {"auto": "walk" if auto_walks() else "bpf"}.get(backend, backend)
        assert {used[inode_of(p)] for p, _ in spaces.values()} == {expected_backend}
        lone = start_lone_netns()
        try:
            lone_inode = inode_of(f"/proc/{lone.pid}/ns/net")
            second = counter.counts()
            assert second[lone_inode] == dict.fromkeys(STATES, 0)
            _check_exact(second, spaces)
        finally:
            stop(lone)
        third = counter.counts()
        assert lone_inode not in third
        assert lone_inode not in counter.backends()
        _check_exact(third, spaces)


@pytest.mark.parametrize("held_by", ["process", "bind mount", "process, own table"])
def test_namespace_gone_during_call(world, monkeypatch, backend, held_by):
    """Fault injection: the namespace disappears after the scan found it and
    before it is counted (before the walk plans its passes, or before its
    counter opens).  It is left out; nothing else changes."""
    spaces = world.spaces()
    if held_by == "bind mount":
        doomed = BoundNetns(f"{PREFIX}-doomed")
        doomed_spec = doomed.path
        remove = doomed.delete
    elif held_by == "process":
        lone = start_lone_netns()
        doomed_spec = f"/proc/{lone.pid}/ns/net"

        def remove() -> None:
            stop(lone)
    else:  # walked from inside, by a pass of its own
        pop = Population(Spec(listen4=1, estab4=2), ehash_entries=OWN_TABLE_BUCKETS)
        doomed_spec = pop.ns_path
        remove = pop.close
    doomed_inode = inode_of(doomed_spec)
    removed = []

    def remove_once() -> None:
        if not removed:
            remove()
            removed.append(doomed_spec)

    real_counter = _all_netns.Counter
    real_plan = _all_netns.plan_walks

    def counter_after_removal(backend, *, netns=None, **kw):
        if netns == doomed_spec:
            remove_once()
        return real_counter(backend, netns=netns, **kw)

    def plan_after_removal(namespaces, tables, mine, opener=None):
        assert doomed_inode in namespaces
        remove_once()
        return real_plan(namespaces, tables, mine, opener)

    monkeypatch.setattr(_all_netns, "Counter", counter_after_removal)
    monkeypatch.setattr(_all_netns, "plan_walks", plan_after_removal)
    try:
        with fasttcpstat.AllNetnsCounter(backend) as counter:
            got = counter.counts()
            assert removed == [doomed_spec]
            assert doomed_inode not in got
            assert counter.skipped == {}
            _check_exact(got, spaces)
            if "walk" in counter.backends().values():
                assert counter.fallback_reason is None
    finally:
        remove()


def test_list_netns_identity(world):
    infos = {info.inode: info for info in fasttcpstat.list_netns()}
    bound = infos[inode_of(world.bound.path)]
    assert bound.names == (BOUND_NAME,)
    assert bound.pid is None and bound.command is None
    stable = world.pops["stable"]
    info = infos[inode_of(stable.ns_path)]
    assert info.pid == stable.holder_pid
    with open(f"/proc/{stable.holder_pid}/comm") as f:
        assert info.command == f.read().strip()
    assert info.names == ()
    assert info.container_id is None and info.pod_uid is None
    with open(f"/proc/{stable.holder_pid}/cgroup") as f:
        v2 = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")]
    assert info.cgroup == v2[0]
    own_table = infos[inode_of(world.pops["own_table"].ns_path)]
    assert own_table.ehash_entries == OWN_TABLE_BUCKETS
    assert own_table.shares_host_table is False
    assert own_table.table == "own" and not own_table.host
    host = infos[inode_of("/proc/self/ns/net")]  # the tests run in the host's
    with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
        assert host.ehash_entries == int(f.read())
    assert host.host and host.table == "host" and host.shares_host_table is False
    assert [i.inode for i in infos.values() if i.host] == [host.inode]
    # A namespace created with the host's tcp_child_ehash_entries at 0
    # shares the host table: the sysctl reads as minus its size.
    with open("/proc/sys/net/ipv4/tcp_child_ehash_entries") as f:
        if int(f.read()) == 0:
            assert info.ehash_entries == -host.ehash_entries
            assert info.shares_host_table is True
            assert bound.shares_host_table is True
            assert info.table == bound.table == "shared"


def _all_as_nobody() -> dict:
    drop_to_nobody()
    with fasttcpstat.AllNetnsCounter() as counter:
        got = counter.counts()
        return {"counts": got, "backends": counter.backends(),
                "skipped": counter.skipped, "hidden": counter.hidden,
                "own": inode_of("/proc/self/ns/net")}


def test_as_nobody(world):
    """As nobody: our own namespace through netlink; root's namespaces are
    hidden (their /proc/PID/ns/net needs ptrace access), and say so; one
    held by a bind mount is found (the mount is readable) but skipped."""
    spaces = world.spaces()
    stable = world.pops["stable"]
    out = stable.run(_all_as_nobody)
    assert out["own"] == inode_of(stable.ns_path)
    assert out["counts"][out["own"]] == spaces["stable"][1]
    assert out["backends"][out["own"]] == "netlink"
    assert inode_of(world.pops["large"].ns_path) not in out["counts"]
    assert "CAP_SYS_PTRACE" in out["hidden"]
    # A namespace with no process is out of reach without CAP_SYS_ADMIN.
    assert "CAP_SYS_ADMIN" in out["skipped"][inode_of(world.bound.path)]


PTRACE_ONLY = """
import json, fasttcpstat
with fasttcpstat.AllNetnsCounter() as c:
    got = c.counts()
    print(json.dumps({"counts": got, "backends": c.backends(), "skipped": c.skipped}))
"""


def test_with_cap_sys_ptrace_only(world):
    """Root with CAP_SYS_PTRACE and nothing else (the DaemonSet without
    CAP_SYS_ADMIN): every namespace with a process is counted through
    /proc/PID/net; one held only by a bind mount is skipped, saying why."""
    import json

    spaces = world.spaces()
    out = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all,+sys_ptrace", "--",
         sys.executable, "-c", PTRACE_ONLY],
        check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    result = json.loads(out)
    counts = {int(k): v for k, v in result["counts"].items()}
    backends = {int(k): v for k, v in result["backends"].items()}
    skipped = {int(k): v for k, v in result["skipped"].items()}
    for name, (path, expected) in spaces.items():
        inode = inode_of(path)
        if name == "bound":
            assert inode not in counts
            assert "CAP_SYS_ADMIN" in skipped[inode]
        else:
            assert counts[inode] == expected, name
            assert backends[inode] == "procfs", name


@pytest.mark.parametrize("kwargs, error, words", [
    ({"backend": "pinned"}, ValueError, "'auto', 'bpf', 'netlink', 'procfs'"),
    ({"backend": 1}, TypeError, "not int"),
    ({"family": "ipv5"}, ValueError, "family"),
    ({"states": ["ESTABLISHED", "NOPE"]}, ValueError, "NOPE"),
    ({"local_ports": 70000}, ValueError, "local_ports"),
    ({"remote_ports": "x"}, TypeError, "remote_ports"),
])
def test_bad_arguments_before_any_scan(monkeypatch, kwargs, error, words):
    """Bad input is refused by name, before /proc is scanned."""
    def no_scan():
        raise AssertionError("scanned")

    monkeypatch.setattr(_all_netns, "scan", no_scan)
    with pytest.raises(error, match=words):
        fasttcpstat.counts_all_netns(**kwargs)


def test_reusable_identities(world):
    """AllNetnsCounter.namespaces(): list_netns(), each identity read once
    per namespace and pid, and dropped with its namespace."""
    spaces = world.spaces()
    with fasttcpstat.AllNetnsCounter() as counter:
        lone = start_lone_netns()
        try:
            lone_inode = inode_of(f"/proc/{lone.pid}/ns/net")
            first = {info.inode: info for info in counter.namespaces()}
            again = {info.inode: info for info in counter.namespaces()}
            fresh = {info.inode: info for info in fasttcpstat.list_netns()}
            for path, _ in spaces.values():
                inode = inode_of(path)
                assert again[inode] is first[inode]
                assert first[inode] == fresh[inode]
            assert first[lone_inode].pid == lone.pid
        finally:
            stop(lone)
        assert lone_inode not in {info.inode for info in counter.namespaces()}
        assert all(key[0] != lone_inode for key in counter._identities)


def _ehash_size() -> int:
    with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
        return abs(int(f.read()))


def test_walk_one_pass_per_table(world, require_walk):
    """The walk's own statistics: the host's ehash walked once however many
    namespaces share it, lhash2 once, and one pass per namespace with its
    own table (from inside it, ehash only); more namespaces sharing the
    host table add no pass."""
    from fasttcpstat._walk import EHASH, LHASH2

    spaces = world.spaces()
    # Positive and not the host table's size: own tables (init_net reads
    # the host table's size).
    own = {info.inode: info.ehash_entries for info in fasttcpstat.list_netns()
           if info.shares_host_table is False and info.ehash_entries != _ehash_size()}
    assert inode_of(world.pops["own_table"].ns_path) in own
    with fasttcpstat.AllNetnsCounter("walk") as counter:
        before = counter.counts()
        first = list(counter.walk_passes)
        lone = [start_lone_netns() for _ in range(5)]
        try:
            after = counter.counts()
            second = list(counter.walk_passes)
            for proc in lone:
                assert after[inode_of(f"/proc/{proc.pid}/ns/net")] == dict.fromkeys(STATES, 0)
        finally:
            for proc in lone:
                stop(proc)
        _check_exact(before, spaces)
        _check_exact(after, spaces)
    for passes in (first, second):
        assert not any(p.get("gone") for p in passes)
        host = [p for p in passes if p["tables"] & EHASH and not p["where"].startswith("own ")]
        listeners = [p for p in passes if p["tables"] & LHASH2]
        owned = {int(p["where"].split()[1]): p for p in passes if p["where"].startswith("own ")}
        assert len(host) == 1 and len(listeners) == 1, passes
        assert len(passes) == 1 + len(owned) + (host[0] is not listeners[0])
        lhash2 = listeners[0]["buckets"] - (_ehash_size() if host[0] is listeners[0] else 0)
        assert host[0]["buckets"] - (lhash2 if host[0] is listeners[0] else 0) == _ehash_size()
        # Each own table walked once, ehash only: its size in buckets.
        assert set(owned) == set(own)
        for inode, p in owned.items():
            assert p["tables"] == EHASH and p["buckets"] == own[inode]
    assert len(second) == len(first)


def test_auto_walks_or_says_why(world, monkeypatch):
    """"auto" walks where the walk is accepted; FASTTCPSTAT_BACKEND=-walk,
    or a walk that fails its self-check, sends it one namespace at a time,
    with the reason; backend="walk" then raises instead."""
    from fasttcpstat import _walk

    spaces = world.spaces()
    walks = auto_walks()
    with fasttcpstat.AllNetnsCounter() as counter:
        _check_exact(counter.counts(), spaces)
        assert set(counter.backends().values()) == ({"walk"} if walks else {"bpf"})
        assert (counter.fallback_reason is None) == walks
    monkeypatch.setenv("FASTTCPSTAT_BACKEND", "-walk")
    with fasttcpstat.AllNetnsCounter() as counter:
        _check_exact(counter.counts(), spaces)
        assert set(counter.backends().values()) == {"bpf"}
        assert counter.walk_passes == [] and counter.fallback_reason is None
    monkeypatch.delenv("FASTTCPSTAT_BACKEND")
    if not walks:
        return
    # A wrong net.ns.inum offset (csrc/bind_walk.c's order): refused by the
    # self-check, which this layout has not passed in this process.
    monkeypatch.setitem(_walk._layout_override, 9, _walk.layout()[9] + 8)
    with fasttcpstat.AllNetnsCounter() as counter:
        _check_exact(counter.counts(), spaces)
        assert set(counter.backends().values()) == {"bpf"}
        assert counter.fallback_reason.startswith("walk: [Errno 5] walk self-check failed")
    with pytest.raises(OSError, match="self-check failed"):
        fasttcpstat.counts_all_netns(backend="walk")


def test_walk_anomaly_mid_call_falls_back(world, monkeypatch, require_walk):
    """A pass that reports an anomaly is never shown: "auto" counts that
    call (and the next) one namespace at a time and says why; "walk" raises."""
    from fasttcpstat import _walk

    spaces = world.spaces()
    real = _walk.WalkBackend.count_tables

    def full_table(self, walks, query):
        tallies, passes = real(self, walks, query)
        _walk._check_pass(dict(passes[0], full=1, anomalies=1))
        return tallies, passes

    monkeypatch.setattr(_walk.WalkBackend, "count_tables", full_table)
    with fasttcpstat.AllNetnsCounter() as counter:
        for _ in range(2):
            _check_exact(counter.counts(), spaces)
            assert set(counter.backends().values()) == {"bpf"}
            assert "walk: [Errno 5] walk: the pass met anomalies (full=1)" in counter.fallback_reason
    with pytest.raises(OSError, match=r"anomalies \(full=1\)"):
        fasttcpstat.counts_all_netns(backend="walk")


# --- the walk's plan, from given table sizes (no namespace needed) ----------

HOST = 262144


def _plan(tables: dict, mine: int, init=None, monkeypatch=None):
    from fasttcpstat._netns_list import Found

    monkeypatch.setattr(_all_netns, "host_inode", lambda namespaces: init)
    found = {inode: Found(inode, pids=[inode]) for inode in tables}
    plan = _all_netns.plan_walks(found, tables, mine)
    plan.close()
    # Here: not from inside another namespace (these are made up: gone).
    return ([(w.tables, w.only, w.netns is None and not w.gone) for w in plan.walks],
            plan.covers,
            sorted(plan.rest))


def test_plan_host_namespace(monkeypatch):
    """From the host's namespace: the host table and lhash2 in one pass here,
    each own table once from inside it, ehash only."""
    tables = {1: HOST, 2: -HOST, 3: -HOST, 4: 1024, 5: None}
    walks, covers, rest = _plan(tables, mine=1, init=1, monkeypatch=monkeypatch)
    assert walks == [(3, 0, True), (1, 4, False)]
    assert covers == [{1, 2, 3}, {4}]
    assert rest == [5]  # its table unknown: counted on its own


def test_plan_from_a_namespace_with_its_own_table(monkeypatch):
    """From a namespace with its own table (the benchmark's): lhash2 here,
    the host's ehash from inside a namespace that shares it, own tables
    (ours here) each once."""
    tables = {2: -HOST, 3: -HOST, 7: 1024, 8: 4096}
    walks, covers, rest = _plan(tables, mine=7, monkeypatch=monkeypatch)
    assert walks == [(2, 0, True), (1, 0, False), (1, 7, True), (1, 8, False)]
    assert covers == [set(), {2, 3}, {7}, {8}]
    assert rest == []


def test_plan_cannot_tell_the_host_namespace(monkeypatch):
    """init_net not identified: a positive size equal to the host table's
    may be init_net (whose table the host walk covers already), so it is
    counted on its own rather than walked twice."""
    tables = {1: HOST, 2: -HOST, 4: 1024}
    walks, covers, rest = _plan(tables, mine=2, monkeypatch=monkeypatch)
    assert walks == [(3, 0, True), (1, 4, False)]
    assert covers == [{2}, {4}]
    assert rest == [1]


def test_plan_no_namespace_shares(monkeypatch):
    tables = {4: 1024, 8: 4096}
    walks, covers, rest = _plan(tables, mine=4, monkeypatch=monkeypatch)
    assert walks == [(2, 0, True), (1, 4, True), (1, 8, False)]
    assert covers == [set(), {4}, {8}]


def test_walk_pass_from_a_namespace_since_replaced(monkeypatch):
    """A pass planned from inside namespace X whose path now opens another
    one (X's pid exited and was reused elsewhere) is not made: walking the
    other's table would count its sockets twice.  Its namespaces then go
    the per-namespace way (test_namespace_gone_during_call)."""
    from fasttcpstat._netns_list import Found

    replaced = Found(1, pids=[os.getpid()])  # our path: another inode than 1
    assert _all_netns.open_checked(replaced) is None
    monkeypatch.setattr(_all_netns, "host_inode", lambda namespaces: None)
    plan = _all_netns.plan_walks({1: replaced}, {1: OWN_TABLE_BUCKETS},
                                 inode_of("/proc/self/ns/net"))
    plan.close()
    assert [(w.where, w.gone, w.netns) for w in plan.walks] == [
        ("listeners", False, None), ("own 1", True, None)]


def _our_fds_on(inode: int) -> list:
    """Our file descriptors open on the namespace of `inode`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            # stat, not readlink: one opened through a bind mount reads
            # as the mount's path.
            if os.stat(f"/proc/self/fd/{fd}").st_ino == inode:
                found.append(int(fd))
        except OSError:
            pass  # the listing's own fd, closed since
    return found


@pytest.mark.parametrize("walker", ["walk", "auto"])
def test_held_namespace_replaced_then_deleted(world, walker, require_walk):
    """A namespace walked from inside is held open from one call to the
    next; replaced by a new one under the same path, the new one is
    counted (the old one dropped and closed), and once deleted it is
    neither counted nor held."""
    name = f"{PREFIX}-swap"
    made = BoundNetns(name, listeners=1, pairs=2, own_table=True)
    try:
        with fasttcpstat.AllNetnsCounter(walker) as counter:
            old = inode_of(made.path)
            spaces = world.spaces()
            got = counter.counts()
            _check_exact(got, spaces)
            assert got[old] == made.expected == ss_in(made.path)
            assert f"own {old}" in {p["where"] for p in counter.walk_passes}
            assert old in counter._held.held() and _our_fds_on(old)
            made.delete()
            made = BoundNetns(name, listeners=2, pairs=1, own_table=True)
            new = inode_of(made.path)
            assert new != old  # ours held the old inode: not reused
            got = counter.counts()
            _check_exact(got, spaces)
            assert old not in got and got[new] == made.expected == ss_in(made.path)
            assert new in counter._held.held() and old not in counter._held.held()
            assert not _our_fds_on(old)
            made.delete()
            got = counter.counts()
            _check_exact(got, spaces)
            assert new not in got and new not in counter._held.held()
            assert not _our_fds_on(new)
        assert counter._held.held() == set()
    finally:
        made.delete()


def test_walk_passes_error_mid_hop_returns_home(world, require_walk):
    """walk_passes() enters one namespace after another; a pass that
    cannot enter its namespace (not a network namespace file, not an open
    file) fails the call with errno, and the calling thread is back in its
    own namespace.  Made on this test's own thread on purpose: a thread
    left elsewhere would make every later test here count wrong."""
    import errno

    from fasttcpstat import _fasttcpstat, _walk
    from fasttcpstat._states import _STATE_NUMBER

    pop = world.pops["own_table"]
    home = inode_of("/proc/thread-self/ns/net")
    target = Netns(pop.ns_path)
    program = _fasttcpstat.WalkCounter(_walk.layout())
    uts = os.open("/proc/self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd, inode = target.open(), inode_of(pop.ns_path)
        for bad, code in ((uts, errno.EINVAL), (2 ** 20, errno.EBADF)):
            with pytest.raises(OSError) as raised:
                program.walk_passes([(fd, 1, inode), (bad, 1, 0), (fd, 1, inode)])
            assert raised.value.errno == code
            assert inode_of("/proc/thread-self/ns/net") == home
        with pytest.raises(ValueError, match=r"jobs\[1\]"):
            program.walk_passes([(fd, 1, inode), (fd, 4, inode)])
        # Tallying a namespace from inside another would say 0.
        with pytest.raises(OSError, match="from inside it") as raised:
            program.walk_passes([(fd, 1, home)])
        assert raised.value.errno == errno.EINVAL
        assert inode_of("/proc/thread-self/ns/net") == home
        # Its own ehash from inside it, then the listeners from here:
        # exactly its sockets, and back here.
        tallies, stats = program.walk_passes([(fd, 1, inode), (-1, 2, 0)])
        assert inode_of("/proc/thread-self/ns/net") == home
        assert [s["anomalies"] for s in stats] == [0, 0]
        assert stats[0]["buckets"] == OWN_TABLE_BUCKETS
        v4, v6 = tallies[inode]
        got = {state: v4[_STATE_NUMBER[state]] + v6[_STATE_NUMBER[state]] for state in STATES}
        assert got == total_expected(pop.expected) == ss_in(pop.ns_path)
    finally:
        os.close(uts)
        program.close()
        target.close()


def test_namespaces_over_the_held_limit_are_opened_per_call(world, require_walk):
    """Past Held's limit (a share of the file descriptors) a namespace
    walked from inside is opened for the call only: still exact."""
    own = inode_of(world.pops["own_table"].ns_path)
    with fasttcpstat.AllNetnsCounter("walk") as counter:
        counter._held.limit = 0
        for _ in range(2):
            spaces = world.spaces()
            _check_exact(counter.counts(), spaces)
            assert f"own {own}" in {p["where"] for p in counter.walk_passes}
            assert counter._held.held() == set() and counter._held._once == []

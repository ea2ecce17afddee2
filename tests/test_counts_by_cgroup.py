"""counts_by_cgroup() on real cgroups and a real network namespace.

Two cgroups under the cgroup2 mount (named issue12b-<pid>-...), in a new
network namespace: a server in one (listeners on 127.0.0.1 and ::1, and
the connections it accepted), a client in the other (its connected
sockets, and the TIME_WAIT sockets of the connections it closed first).
Accepted sockets belong to the listener's cgroup, as in the kernel;
TIME_WAIT sockets, and the FIN_WAIT2 timewait sockets of connections the
client closed while the server kept its end (CLOSE_WAIT), have no owner
and land in "unowned".  Every count is
exact, checked against `ss -tan` in the namespace and against counts().
"""
from __future__ import annotations

import errno
import os
import subprocess
import threading
import time

import pytest

import fasttcpstat
from fasttcpstat import _cgroup

from .hardening import drop_to_nobody
from .population import STATES
from .population_fork import run_in_netns
from .test_all_netns import BACKENDS, _wait_for, ss_in, start_lone_netns, stop
from .test_cgroup_diag import _start_in
from .test_cgroup import CgroupTree

KEPT4, KEPT6, CLOSED, HALF = 3, 2, 2, 2

SERVER = r"""
import socket, threading, time
def serve(srv):
    kept = []
    while True:
        conn, _ = srv.accept()
        if conn.recv(1):
            kept.append(conn)
        else:
            conn.close()    # the client closed first: it keeps the TIME_WAIT
ports = []
for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(family)
    srv.bind((addr, 0))
    srv.listen(16)
    ports.append(srv.getsockname()[1])
    threading.Thread(target=serve, args=(srv,), daemon=True).start()
print(*ports, flush=True)
time.sleep(600)
"""

CLIENT = r"""
import socket, sys, time
port4, port6 = map(int, sys.argv[1:3])
kept = []
for addr, port, n in (("127.0.0.1", port4, {kept4}), ("::1", port6, {kept6})):
    for _ in range(n):
        c = socket.create_connection((addr, port))
        c.sendall(b"k")
        kept.append(c)
for _ in range({closed}):
    socket.create_connection(("127.0.0.1", port4)).close()
for _ in range({half}):
    # Kept open by the server (CLOSE_WAIT, its cgroup's); ours becomes an
    # orphan's timewait socket in FIN_WAIT2, with no owner.
    c = socket.create_connection(("127.0.0.1", port4))
    c.sendall(b"h")
    c.close()
print("ok", flush=True)
time.sleep(600)
"""


def _nonzero(counts: dict) -> dict:
    return {state: n for state, n in counts.items() if n}


class World:
    built_count = 0

    def __init__(self) -> None:
        self.mount = _cgroup.find_cgroup2()
        assert self.mount is not None, "no cgroup2 mount"
        World.built_count += 1  # a name of its own: the last one may still be going
        self.tree = CgroupTree(self.mount.path,
                               f"issue12b-{os.getpid()}-{World.built_count}-cgroups")
        self.procs: list = []
        self.lone = start_lone_netns()
        self.ns_path = f"/proc/{self.lone.pid}/ns/net"
        try:
            self._populate()
        except BaseException:
            self.close()
            raise

    def _populate(self) -> None:
        subprocess.run(["nsenter", f"--net={self.ns_path}", "ip", "link", "set", "lo", "up"],
                       check=True)
        self.server_cg = self.tree.make("server.service")
        self.client_cg = self.tree.make("client.slice/client.service")
        server = _start_in(self.server_cg, self.ns_path, SERVER)
        self.procs.append(server)
        port4, port6 = server.stdout.readline().split()
        self.port4, self.port6 = int(port4), int(port6)
        client = _start_in(self.client_cg, self.ns_path,
                           CLIENT.format(kept4=KEPT4, kept6=KEPT6, closed=CLOSED, half=HALF),
                           port4, port6)
        self.procs.append(client)
        assert client.stdout.readline().strip() == "ok"
        self.expected = dict.fromkeys(STATES, 0)
        self.expected.update(LISTEN=2, ESTABLISHED=2 * (KEPT4 + KEPT6), TIME_WAIT=CLOSED,
                             CLOSE_WAIT=HALF, FIN_WAIT2=HALF)
        _wait_for(lambda: ss_in(self.ns_path) == self.expected, "the sockets to settle")
        self.built = time.monotonic()

    def rel(self, directory: str) -> str:
        inside = directory[len(self.mount.path):]
        return inside if self.mount.root == "/" else self.mount.root + inside

    def check_settled(self) -> None:
        # TIME_WAIT lasts 60 s: every count is checked against ss around it.
        assert ss_in(self.ns_path) == self.expected

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)
        stop(self.lone)
        self.tree.remove()


# The TIME_WAIT and FIN_WAIT2 sockets last 60 s: a world older than this
# (a loaded machine, an emulated kernel) is built afresh before a test.
FRESH_SECONDS = 30


@pytest.fixture(scope="module")
def _worlds(require_netns):
    held: list = []
    yield held
    for made in held:
        made.close()


@pytest.fixture
def world(_worlds):
    if _worlds and time.monotonic() - _worlds[-1].built > FRESH_SECONDS:
        _worlds.pop().close()
    if not _worlds:
        _worlds.append(World())
    return _worlds[-1]


def _sum(by_cgroup: dict) -> dict:
    total: dict = {}
    for counts in by_cgroup.values():
        for state, n in counts.items():
            total[state] = total.get(state, 0) + n
    return total


def test_every_socket_by_owner(world):
    got = fasttcpstat.counts_by_cgroup(netns=world.ns_path)
    world.check_settled()
    server, client = world.rel(world.server_cg), world.rel(world.client_cg)
    assert list(got) == sorted([server, client]) + ["unowned"]
    # Accepted sockets are the listener's.
    assert _nonzero(got[server]) == {"LISTEN": 2, "ESTABLISHED": KEPT4 + KEPT6,
                                     "CLOSE_WAIT": HALF}
    assert _nonzero(got[client]) == {"ESTABLISHED": KEPT4 + KEPT6}
    assert _nonzero(got["unowned"]) == {"TIME_WAIT": CLOSED, "FIN_WAIT2": HALF}
    assert all(list(counts) == list(STATES) for counts in got.values())
    assert _sum(got) == world.expected == fasttcpstat.counts(netns=world.ns_path)


@pytest.mark.parametrize("family, v4, v6", [("ipv4", 1, 0), ("ipv6", 0, 1)])
def test_family(world, family, v4, v6):
    got = fasttcpstat.counts_by_cgroup(family=family, netns=world.ns_path)
    world.check_settled()
    server, client = world.rel(world.server_cg), world.rel(world.client_cg)
    assert _nonzero(got[server]) == {"LISTEN": 1, "ESTABLISHED": v4 * KEPT4 + v6 * KEPT6,
                                     **({"CLOSE_WAIT": HALF} if v4 else {})}
    assert _nonzero(got[client]) == {"ESTABLISHED": v4 * KEPT4 + v6 * KEPT6}
    assert _nonzero(got["unowned"]) == ({"TIME_WAIT": CLOSED, "FIN_WAIT2": HALF} if v4 else {})
    assert _sum(got) == fasttcpstat.counts(family=family, netns=world.ns_path)


def test_filters(world):
    """States and ports filter as in counts(); cgroups without a counted
    socket are left out."""
    states = iter(["established", "TIME_WAIT"])  # any iterable, read once
    got = fasttcpstat.counts_by_cgroup(states=states, remote_ports=[world.port4],
                                       netns=world.ns_path)
    world.check_settled()
    client = world.rel(world.client_cg)
    assert got == {client: {"ESTABLISHED": KEPT4, "TIME_WAIT": 0},
                   "unowned": {"ESTABLISHED": 0, "TIME_WAIT": CLOSED}}
    got = fasttcpstat.counts_by_cgroup(local_ports=(world.port6, world.port6),
                                       netns=world.ns_path)
    assert list(got) == [world.rel(world.server_cg), "unowned"]
    assert _nonzero(got[world.rel(world.server_cg)]) == {"LISTEN": 1, "ESTABLISHED": KEPT6}
    assert fasttcpstat.counts_by_cgroup(states=[], netns=world.ns_path) == {"unowned": {}}


def _refused_here(request, backend: str, ns_path: str) -> bool:
    """True where the kernel refuses `backend` and that refusal was checked
    instead: "walk" below Linux 6.2 (.ci/kernels runs this file on 6.1).
    Elsewhere "walk" needs its fixture (required in CI)."""
    if backend != "walk":
        return False
    from fasttcpstat import _walk

    if _walk._kernel_release() >= _walk.MIN_KERNEL:
        request.getfixturevalue("require_walk")
        return False
    with pytest.raises(OSError) as refused:
        with fasttcpstat.Counter("walk", netns=ns_path) as counter:
            counter.counts_by_cgroup()
    assert refused.value.errno == errno.EOPNOTSUPP, refused.value
    assert "6.2" in str(refused.value), refused.value
    return True


@pytest.mark.parametrize("backend", BACKENDS)
def test_counter_on_every_backend(request, world, backend):
    """A backend without the per_cgroup capability hands the breakdown to
    netlink; the counter keeps its own backend for counts()."""
    if _refused_here(request, backend, world.ns_path):
        return
    with fasttcpstat.Counter(backend, netns=world.ns_path) as counter:
        first = counter.counts_by_cgroup()
        again = counter.counts_by_cgroup()
        plain = counter.counts()
        used = counter.backend
    world.check_settled()
    assert first == again
    assert _sum(first) == plain == world.expected
    assert _nonzero(first[world.rel(world.client_cg)]) == {"ESTABLISHED": KEPT4 + KEPT6}
    if backend != "auto":
        assert used == backend


def test_removed_cgroup_keeps_its_id(world):
    """A cgroup removed while its sockets live on is reported by id."""
    extra = world.tree.make("gone.service")
    cgroup_id = os.stat(extra).st_ino
    proc = _start_in(extra, world.ns_path,
                     "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\n"
                     "s.listen(1)\nprint('ok', flush=True)\ntime.sleep(600)")
    try:
        assert proc.stdout.readline().strip() == "ok"
        # The listener is passed to a process outside the cgroup, which
        # then can be removed: the socket keeps its owner's id.
        with open(os.path.join(world.server_cg, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        os.rmdir(extra)
        got = fasttcpstat.counts_by_cgroup(states=["LISTEN"], netns=world.ns_path)
        assert got[f"cgroup-id:{cgroup_id}"] == {"LISTEN": 1}
        assert got[world.rel(world.server_cg)] == {"LISTEN": 2}
    finally:
        stop(proc)


def _by_cgroup_as_nobody() -> tuple:
    drop_to_nobody()
    with fasttcpstat.Counter() as counter:
        got = counter.counts_by_cgroup(states=["LISTEN", "ESTABLISHED", "TIME_WAIT"])
        return got, counter.backend


def test_as_nobody(world):
    """Netlink needs no privilege in one's own namespace; nor does the
    cgroup walk (the directories are world-readable).  In a forked child
    that drops to nobody: no interpreter nobody may not be able to run."""
    got, backend = run_in_netns(world.ns_path, _by_cgroup_as_nobody)
    world.check_settled()
    assert backend == "netlink"
    assert got == {
        world.rel(world.client_cg): {"LISTEN": 0, "ESTABLISHED": KEPT4 + KEPT6, "TIME_WAIT": 0},
        world.rel(world.server_cg): {"LISTEN": 2, "ESTABLISHED": KEPT4 + KEPT6, "TIME_WAIT": 0},
        "unowned": {"LISTEN": 0, "ESTABLISHED": 0, "TIME_WAIT": CLOSED},
    }


@pytest.mark.parametrize("kwargs, error, words", [
    ({"family": "ipv5"}, ValueError, "family"),
    ({"family": 4}, TypeError, "family"),
    ({"states": ["LISTENING"]}, ValueError, "LISTENING"),
    ({"states": [1]}, TypeError, "states"),
    ({"states": 5}, TypeError, "states"),
    ({"local_ports": 70000}, ValueError, "local_ports"),
    ({"remote_ports": "80"}, TypeError, "remote_ports"),
    ({"netns": 3.5}, TypeError, "netns"),
])
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        fasttcpstat.counts_by_cgroup(**kwargs)


def test_positional_arguments_refused():
    with pytest.raises(TypeError):
        fasttcpstat.counts_by_cgroup("ipv4")  # type: ignore[misc]


def test_extension_arguments():
    """The extension's by_cgroup checks its bound and refuses by_port with it."""
    from fasttcpstat import _fasttcpstat as ext

    counter = ext.NetlinkCounter()
    try:
        with pytest.raises(ValueError, match="by_cgroup must be within 0..4096"):
            counter.count(ext.FAMILY_BOTH, ext.STATES_ALL, ext.FORM_V2,
                          by_cgroup=ext.MAX_BY_CGROUP + 1)
        with pytest.raises(ValueError, match="by_port and by_cgroup"):
            counter.count(ext.FAMILY_BOTH, ext.STATES_ALL, ext.FORM_V2, by_port=[80],
                          by_cgroup=8)
    finally:
        counter.close()


def _backend_count(name: str, ns_path: str, query):
    """One count with backend `name` itself, no policy in between."""
    from fasttcpstat._netns import Netns
    from fasttcpstat._policy import open_backend

    target = Netns(ns_path)
    backend = open_backend(name, target, "auto", None)
    try:
        return backend.count(query)
    finally:
        backend.close()
        target.close()


ESTABLISHED, TIME_WAIT, LISTEN, CLOSE_WAIT, FIN_WAIT2 = (
    STATES.index(s) + 1 for s in ("ESTABLISHED", "TIME_WAIT", "LISTEN", "CLOSE_WAIT", "FIN_WAIT2"))


def _pair(v4: dict, v6: dict) -> tuple:
    def row(counts: dict) -> tuple:
        return tuple(counts.get(state, 0) for state in range(16))
    return row(v4), row(v6)


def _expected_per_cgroup(world, family: str = None) -> tuple:
    """The population's breakdown, (by id, unowned, overflow), built from
    what the test started, not from any backend."""
    v4, v6 = family in (None, "ipv4"), family in (None, "ipv6")
    by_id = {
        os.stat(world.server_cg).st_ino: _pair(
            {LISTEN: 1, ESTABLISHED: KEPT4, CLOSE_WAIT: HALF} if v4 else {},
            {LISTEN: 1, ESTABLISHED: KEPT6} if v6 else {}),
        os.stat(world.client_cg).st_ino: _pair(
            {ESTABLISHED: KEPT4} if v4 else {}, {ESTABLISHED: KEPT6} if v6 else {}),
    }
    return by_id, _pair({TIME_WAIT: CLOSED, FIN_WAIT2: HALF} if v4 else {}, {}), _pair({}, {})


@pytest.mark.parametrize("family", [None, "ipv4", "ipv6"])
def test_bpf_equals_netlink(world, require_bpf, family):
    """The BPF program reads each socket's cgroup as netlink reports it:
    the same ids, the same unowned sockets, equal to the population."""
    from fasttcpstat._query import parse_by_cgroup

    query = parse_by_cgroup(family=family)
    bpf = _backend_count("bpf", world.ns_path, query)
    netlink = _backend_count("netlink", world.ns_path, query)
    world.check_settled()
    assert bpf.per_cgroup == netlink.per_cgroup == _expected_per_cgroup(world, family)
    assert (bpf.v4, bpf.v6) == (netlink.v4, netlink.v6)


def test_bpf_filters_equal_netlink(world, require_bpf):
    """States and ports: a cgroup with no socket left is dropped, as the
    kernel's filter leaves it out of netlink's dump."""
    from fasttcpstat._query import parse_by_cgroup

    for kwargs in ({"states": ["TIME_WAIT"]}, {"states": ["LISTEN"]},
                   {"remote_ports": [world.port4]}, {"local_ports": [world.port6]}):
        query = parse_by_cgroup(**kwargs)
        bpf = _backend_count("bpf", world.ns_path, query)
        netlink = _backend_count("netlink", world.ns_path, query)
        assert bpf.per_cgroup == netlink.per_cgroup, kwargs
    world.check_settled()
    only_tw = _backend_count("bpf", world.ns_path, parse_by_cgroup(states=["TIME_WAIT"]))
    assert only_tw.per_cgroup[0] == {}


def test_auto_counts_by_cgroup_with_bpf(world, require_bpf):
    """As root, "auto" is bpf, and bpf makes the breakdown itself: no
    netlink backend is opened beside it."""
    with fasttcpstat.Counter(netns=world.ns_path) as counter:
        got = counter.counts_by_cgroup()
        assert counter.backend == "bpf"
        assert counter._policy._by_port is None  # noqa: SLF001 - no netlink opened
    world.check_settled()
    assert _sum(got) == world.expected


def test_bpf_without_socket_cgroup_in_btf(world, require_bpf, monkeypatch):
    """A kernel whose BTF lacks the socket's cgroup (before 5.15, or no
    CONFIG_SOCK_CGROUP_DATA; injected here): the bpf counter keeps counting
    and hands the breakdown to netlink."""
    import errno

    from fasttcpstat import _bpf

    monkeypatch.setattr(_bpf, "_cgroup_layout", OSError(errno.ENOENT, "injected"))
    with fasttcpstat.Counter("bpf", netns=world.ns_path) as counter:
        got = counter.counts_by_cgroup()
        assert counter.backend == "bpf"
        assert counter._policy._by_port.resource.name == "netlink"  # noqa: SLF001
    world.check_settled()
    assert _sum(got) == world.expected


def _count_in_child(counter) -> dict:
    return counter.counts_by_cgroup()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fork_threads_closed(request, world, backend):
    """A counter used in a child of fork(), from threads at once, and after
    close(), on every backend."""
    if _refused_here(request, backend, world.ns_path):
        return
    with fasttcpstat.Counter(backend, netns=world.ns_path) as counter:
        first = counter.counts_by_cgroup()
        assert run_in_netns(world.ns_path, _count_in_child, counter) == first
        assert counter.counts_by_cgroup() == first  # the parent's program intact
        results: list = []

        def worker() -> None:
            for _ in range(3):
                results.append(counter.counts_by_cgroup())

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    world.check_settled()
    assert results == [first] * 12
    assert _sum(first) == world.expected
    with pytest.raises(ValueError, match="closed"):
        counter.counts_by_cgroup()


@pytest.mark.parametrize("backend", ["netlink", "bpf"])
def test_overflow_bucket(world, backend, request):
    """Sockets of cgroups beyond the table's room are summed, not lost."""
    from fasttcpstat._query import parse_by_cgroup

    if backend == "bpf":
        request.getfixturevalue("require_bpf")
    query = parse_by_cgroup(states=["LISTEN", "ESTABLISHED", "TIME_WAIT"])
    query.by_cgroup = 1
    by_id, unowned, overflow = _backend_count(backend, world.ns_path, query).per_cgroup
    world.check_settled()
    server, client = os.stat(world.server_cg).st_ino, os.stat(world.client_cg).st_ino
    assert len(by_id) == 1 and set(by_id) <= {server, client}
    kept = by_id.get(server) or by_id[client]
    lost = overflow
    total = [[kept[f][s] + lost[f][s] + unowned[f][s] for s in range(16)] for f in (0, 1)]
    assert sum(map(sum, lost)) == (KEPT4 + KEPT6 if server in by_id else 2 + KEPT4 + KEPT6)
    assert sum(map(sum, total)) == 2 + 2 * (KEPT4 + KEPT6) + CLOSED

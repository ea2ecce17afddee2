"""The BPF iterator backend on real populations: the same counts as
netlink, state by state, family by family, filter by filter; "auto"
choosing it as root and netlink as nobody; the progress output that keeps
long walks from failing with EAGAIN; threads; the pinned text iterator.

CI runs as root on a kernel with BTF and the tcp iterator; where that is
missing these tests fail in CI (CI=true) rather than skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

import fasttcpstat
from fasttcpstat import _bpf, _fasttcpstat

from .hardening import STABLE_SPEC
from .population import STATES, Population
from .test_filters_netns import _cases, _listen_ports, from_listing, ss_filtered, ss_listing


def _total(expected):
    return {s: expected["ipv4"][s] + expected["ipv6"][s] for s in STATES}


def _all_ways(backend):
    with fasttcpstat.Counter(backend) as counter:
        return {
            family: {
                "all": counter.counts(family=family),
                "each": {s: counter.counts(family=family, states=[s])[s] for s in STATES},
            }
            for family in (None, "ipv4", "ipv6")
        }


@pytest.mark.parametrize("population", ["small_population", "large_population"])
def test_equals_netlink_and_expected(require_netns, require_bpf, request, population):
    pop = request.getfixturevalue(population)
    bpf, netlink = pop.run(lambda: (_all_ways("bpf"), _all_ways("netlink")))
    assert bpf == netlink
    assert bpf[None]["all"] == _total(pop.expected)
    assert bpf["ipv4"]["all"] == pop.expected["ipv4"]
    assert bpf["ipv6"]["all"] == pop.expected["ipv6"]
    assert bpf[None]["each"] == _total(pop.expected)


def test_port_filters_equal_netlink_and_ss(require_netns, require_bpf, small_population):
    def check():
        rows = ss_listing()
        out = []
        with fasttcpstat.Counter("bpf") as bpf, fasttcpstat.Counter("netlink") as nl:
            for local, remote, expr in _cases(_listen_ports()):
                out.append((expr, bpf.counts(local_ports=local, remote_ports=remote),
                            nl.counts(local_ports=local, remote_ports=remote),
                            ss_filtered(expr), from_listing(rows, local, remote)))
        return out

    results = small_population.run(check)
    for expr, bpf, netlink, ss, listing in results:
        assert bpf == netlink == ss == listing, expr
    assert sum(1 for r in results if sum(r[1].values())) >= 7


def test_by_port_through_a_bpf_counter(require_netns, require_bpf, small_population):
    def check():
        ports = _listen_ports()
        with fasttcpstat.Counter("bpf") as counter:
            return counter.backend, counter.counts_by_port(ports), \
                fasttcpstat.counts_by_port(ports, backend="netlink")

    backend, by_port, netlink = small_population.run(check)
    assert backend == "bpf"
    assert by_port == netlink


def test_auto_picks_bpf_as_root(require_netns, require_bpf, small_population):
    def check():
        with fasttcpstat.Counter() as counter:
            return counter.backend, counter.fallback_reason, counter.counts()

    backend, reason, counts = small_population.run(check)
    assert (backend, reason) == ("bpf", None)
    assert counts == _total(small_population.expected)


_NOBODY = r"""
import json, os, sys
import fasttcpstat
from fasttcpstat import _bpf
_bpf.layout()  # BTF is world-readable; read before dropping, as a cache would
import threading  # the interpreter's files may be unreadable to nobody (/root/.pyenv)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
c = fasttcpstat.Counter()
out = {"backend": c.backend, "reason": c.fallback_reason, "counts": c.counts()}
try:
    fasttcpstat.Counter("bpf")
    out["bpf"] = None
except PermissionError as exc:
    out["bpf"] = str(exc)
print(json.dumps(out))
"""


def test_auto_picks_netlink_as_nobody(require_netns, require_bpf, small_population):
    def run():
        return subprocess.run([sys.executable, "-c", _NOBODY], capture_output=True,
                              text=True, timeout=60)

    result = small_population.run(run)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["backend"] == "netlink"
    assert out["reason"].startswith("bpf: ")
    assert "CAP_BPF" in out["reason"]
    assert out["counts"] == _total(small_population.expected)
    assert "CAP_BPF" in out["bpf"]


def test_environment_variable_forces_or_excludes(require_bpf, monkeypatch):
    monkeypatch.setenv("FASTTCPSTAT_BACKEND", "-bpf")
    assert fasttcpstat.auto_order() == ["netlink", "procfs"]
    with fasttcpstat.Counter() as counter:
        # Without the iterator "auto" weighs the walk against netlink by
        # the namespace's size (_sizing); "-walk" leaves that out too.
        assert counter.backend in ("walk", "netlink")
    monkeypatch.setenv("FASTTCPSTAT_BACKEND", "-bpf,-walk")
    with fasttcpstat.Counter() as counter:
        assert counter.backend == "netlink"
    monkeypatch.setenv("FASTTCPSTAT_BACKEND", "procfs")
    with fasttcpstat.Counter() as counter:
        assert counter.backend == "procfs"
    monkeypatch.setenv("FASTTCPSTAT_BACKEND", "bpf")
    with fasttcpstat.Counter() as counter:
        assert counter.backend == "bpf"
    for bad, words in [("ebpf", "unknown backend"), ("bpf,-netlink", "not both"),
                       ("-bpf,-netlink,-procfs", "every backend")]:
        monkeypatch.setenv("FASTTCPSTAT_BACKEND", bad)
        with pytest.raises(ValueError, match=words):
            fasttcpstat.Counter()
    # An explicit backend= is not overridden.
    monkeypatch.setenv("FASTTCPSTAT_BACKEND", "procfs")
    with fasttcpstat.Counter("netlink") as counter:
        assert counter.backend == "netlink"


def test_progress_output_keeps_long_walks_alive(require_netns, require_bpf, large_population):
    """The kernel fails a read() that visits a million sockets without
    output (EAGAIN); the program writes a byte every 2**shift sockets.
    Checked with a small interval instead of a million sockets."""
    layout = _bpf.layout()

    def check():
        results = {}
        for shift in (1, 4, 10):
            counter = _fasttcpstat.BpfCounter(layout, emit_shift=shift)
            try:
                (v4, v6), written = counter.run(counter.create_iter())
            finally:
                counter.close()
            results[shift] = (sum(v4) + sum(v6), written)
        return results

    total = sum(_total(large_population.expected).values())
    for shift, (counted, written) in large_population.run(check).items():
        assert counted == total
        # One call per socket (request and timewait ones included) plus the
        # final call with no socket.
        assert written == (total + 1) >> shift, shift


@pytest.fixture
def stable_population(require_netns):
    """Sockets that do not expire (no TIME_WAIT): the counts stay exact
    however long a loaded machine makes the test."""
    with Population(STABLE_SPEC) as pop:
        yield pop


def test_threads_counting_at_once(require_netns, require_bpf, stable_population):
    expected = _total(stable_population.expected)

    def hammer():
        shared = fasttcpstat.Counter("bpf")
        errors = []
        results = []

        def work(own):
            try:
                counter = fasttcpstat.Counter("bpf") if own else shared
                for _ in range(50):
                    results.append(counter.counts())
                if own:
                    counter.close()
            except BaseException as exc:  # noqa: B902 - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        shared.close()
        return errors, results

    errors, results = stable_population.run(hammer)
    assert errors == []
    assert len(results) == 400
    assert all(r == expected for r in results)


def _filters_beyond_the_cache(ports):
    """More distinct port filters than the program cache keeps (local,
    remote, both), each a different program."""
    filters = []
    for i in range(_bpf.MAX_PROGRAMS + 6):
        low = ports[i % len(ports)]
        if i % 3 == 0:
            filters.append({"local_ports": [(low, low + i)]})
        elif i % 3 == 1:
            filters.append({"remote_ports": [(low - i, low)]})
        else:
            filters.append({"local_ports": [(1, 65000 - i)], "remote_ports": [low]})
    return filters


def _cache_under_threads(nthreads, rounds):
    """Runs in the namespace: threads share one Counter("bpf") and cycle
    through more filters than it caches, switching every microsecond."""
    ports = _listen_ports()
    filters = _filters_beyond_the_cache(ports)
    with fasttcpstat.Counter("netlink") as nl:
        want = [nl.counts(**f) for f in filters]
    assert sum(1 for w in want if sum(w.values())) >= len(filters) // 2, want
    counter = fasttcpstat.Counter("bpf")
    errors, wrong = [], []
    barrier = threading.Barrier(nthreads)

    def work(index):
        barrier.wait()
        for r in range(rounds):
            i = (index * 5 + r) % len(filters)  # threads out of step: evictions
            try:
                got = counter.counts(**filters[i])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
                continue
            if got != want[i]:
                wrong.append((filters[i], got, want[i]))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    counter.close()
    return errors, wrong, nthreads * rounds


def test_program_cache_under_threads(require_netns, require_bpf, stable_population):
    """An evicted program is closed only once no thread counts with it,
    and eviction keeps the right programs: every count equals netlink's."""
    errors, wrong, total = stable_population.run(_cache_under_threads, 8, 60)
    assert errors == []
    assert wrong == []
    assert total == 480


def test_other_namespace(require_netns, require_bpf, small_population):
    before = os.readlink("/proc/thread-self/ns/net")
    with fasttcpstat.Counter("bpf", netns=small_population.ns_path) as counter:
        assert counter.counts() == _total(small_population.expected)
        assert counter.counts(local_ports=(10000, 32767)) == fasttcpstat.counts(
            backend="netlink", netns=small_population.holder_pid, local_ports=(10000, 32767))
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_verifier_log_in_the_error(require_bpf):
    layout = list(_bpf.layout())
    layout[7] = 4000  # skc_state far outside struct sock_common
    with pytest.raises(OSError) as info:
        _fasttcpstat.BpfCounter(tuple(layout))
    assert "verifier log" in str(info.value)
    with pytest.raises(TypeError, match="layout"):
        _fasttcpstat.BpfCounter((1, 2, 3))
    with pytest.raises(ValueError, match="emit_shift"):
        _fasttcpstat.BpfCounter(_bpf.layout(), emit_shift=40)


# --- the pinned text iterator ---------------------------------------------

@pytest.fixture
def pinned(require_bpf):
    path = f"/sys/fs/bpf/fasttcpstat-test-{os.getpid()}"
    if os.path.lexists(path):
        os.unlink(path)
    fasttcpstat.pin(path)
    yield path
    os.unlink(path)


_NOBODY_READS = r"""
import json, os, subprocess, sys
import fasttcpstat
os.setgroups([]); os.setgid(65534); os.setuid(65534)
text = subprocess.run(["cat", sys.argv[1]], check=True, capture_output=True, text=True).stdout
print(json.dumps([text, fasttcpstat.counts(backend="pinned", path=sys.argv[1]),
                  fasttcpstat.counts(backend="pinned", path=sys.argv[1], family="ipv6",
                                     states=["LISTEN"])]))
"""


def test_pinned_file_read_by_nobody(require_netns, small_population, pinned):
    assert oct(os.stat(pinned).st_mode & 0o777) == "0o444"

    def read():
        return subprocess.run([sys.executable, "-c", _NOBODY_READS, pinned],
                              capture_output=True, text=True, timeout=60)

    result = small_population.run(read)
    assert result.returncode == 0, result.stderr
    text, counts, v6_listen = json.loads(result.stdout)
    total = _total(small_population.expected)
    assert counts == total
    assert v6_listen == {"LISTEN": small_population.expected["ipv6"]["LISTEN"]}
    lines = text.splitlines()
    assert lines[0] == "state ipv4 ipv6"
    assert lines[1:] == [
        f"{s} {small_population.expected['ipv4'][s]} {small_population.expected['ipv6'][s]}"
        for s in STATES
    ]


def test_pinned_concurrent_readers(require_netns, stable_population, pinned):
    def hammer():
        results, errors = [], []

        def work():
            try:
                for _ in range(30):
                    results.append(fasttcpstat.counts(backend="pinned", path=pinned))
            except BaseException as exc:  # noqa: B902
                errors.append(repr(exc))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors, results

    errors, results = stable_population.run(hammer)
    assert errors == []
    assert len(results) == 240
    assert all(r == _total(stable_population.expected) for r in results)


def test_pinned_progress_lines(require_netns, large_population, tmp_path):
    path = f"/sys/fs/bpf/fasttcpstat-progress-{os.getpid()}"
    _fasttcpstat.bpf_pin(_bpf.layout(), path, emit_shift=10)
    try:
        def read():
            with open(path) as f:
                return f.read(), fasttcpstat.counts(backend="pinned", path=path)

        text, counts = large_population.run(read)
    finally:
        os.unlink(path)
    total = sum(_total(large_population.expected).values())
    progress = [line for line in text.splitlines() if line.startswith("# visited ")]
    assert len(progress) == total >> 10
    assert progress[0] == "# visited 1024"
    assert counts == _total(large_population.expected)


def test_pin_and_pinned_errors(require_bpf, tmp_path):
    with pytest.raises(ValueError, match="not a BPF filesystem"):
        fasttcpstat.pin(str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError):
        fasttcpstat.counts(backend="pinned", path="/sys/fs/bpf/does-not-exist")
    plain = tmp_path / "plain"
    plain.write_text("state ipv4 ipv6\n")
    with pytest.raises(ValueError, match="not a pinned BPF iterator"):
        fasttcpstat.counts(backend="pinned", path=str(plain))
    with pytest.raises(ValueError, match="path goes with backend='pinned'"):
        fasttcpstat.Counter("pinned")
    with pytest.raises(ValueError, match="path goes with backend='pinned'"):
        fasttcpstat.Counter("netlink", path="/sys/fs/bpf/x")


def test_pinned_rejects_port_filters(pinned):
    with pytest.raises(ValueError, match="the pinned backend counts every socket"):
        fasttcpstat.counts(backend="pinned", path=pinned, local_ports=80)
    with fasttcpstat.Counter("pinned", path=pinned) as counter:
        # per-port breakdowns go through netlink
        assert list(counter.counts_by_port([80])) == [80]


def test_parse_pinned_rejects_garbage():
    with pytest.raises(ValueError, match="not a fasttcpstat pinned iterator"):
        _bpf.parse_pinned("hello world\n", "x")
    with pytest.raises(ValueError, match="incomplete"):
        _bpf.parse_pinned("state ipv4 ipv6\nLISTEN 1 2\n", "x")

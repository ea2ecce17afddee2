"""Property tests (Hypothesis): the /proc reader and argument validation.

The /proc reader (fasttcpstat._procfs) is compared with a deliberately
simple reference that splits lines the obvious way, on files made of
kernel-format lines (both families, any slot width, any uid), garbage
lines, huge lines, and files cut at any byte, read in chunks of any size
(so that lines straddle chunk boundaries).  The argument parsers are
compared with reference models of what each argument may be; every
rejection must be a TypeError or ValueError naming the argument.
"""
from __future__ import annotations

import os
import string
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fasttcpstat
from fasttcpstat import _procfs
from fasttcpstat._counter import _check_backend, _check_side
from fasttcpstat._netlink import check_request
from fasttcpstat._netns import Netns
from fasttcpstat._ports import parse_port_list, parse_ports
from fasttcpstat._states import (ALL_STATES_MASK, FAMILY_BOTH, FAMILY_IPV4, FAMILY_IPV6,
                                 STATES, parse_family, parse_states)

from .hardening import scale
from .test_procfs_reader import proc_count

pytestmark = pytest.mark.stress

SETTINGS = settings(
    max_examples=scale(1000, 100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)

# Ports come mostly from a small pool, so that filters and per-port
# breakdowns (drawn from the same pool) do match some lines.
PORT_POOL = [0, 1, 22, 80, 443, 8443, 65534, 65535]
POOLED = st.sampled_from(PORT_POOL)
ADDRS4 = ["0100007F", "00000000", "FFFFFFFF", "0A0B0C0D"]
ADDRS6 = ["00000000000000000000000001000000", "0000000000000000FFFF00000100007F",
          "00000000000000000000000000000000", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"]
PORT = st.one_of(POOLED, POOLED, POOLED, st.integers(0, 65535))

# --------------------------------------------------------------------------
# /proc/net/tcp{,6}
# --------------------------------------------------------------------------


@st.composite
def socket_line(draw, v6: bool) -> bytes:
    """One line in the kernel's format (net/ipv4/tcp_ipv4.c get_tcp4_sock,
    net/ipv6/tcp_ipv6.c get_tcp6_sock)."""
    addr = st.sampled_from(ADDRS6 if v6 else ADDRS4)
    port = PORT
    slot = draw(st.integers(0, 10**7))
    state = draw(st.integers(0, 15))
    uid = draw(st.integers(0, 2**32 - 1))
    inode = draw(st.integers(0, 2**63))
    line = (f"{slot:4d}: {draw(addr)}:{draw(port):04X} {draw(addr)}:{draw(port):04X} "
            f"{state:02X} 00000000:00000000 00:00000000 00000000 {uid:5d}        0 "
            f"{inode} 1 0000000000000000 100 0 0 10 0")
    if not v6:
        line = line.ljust(149)  # tcp4 lines are padded to a fixed width
    return line.encode()


# Garbage without ':' (so it can never look like a socket line), any
# other byte allowed, sometimes longer than the reader's chunks.
short_garbage = st.binary(max_size=80).map(lambda b: b.replace(b":", b"").replace(b"\n", b""))
huge_garbage = st.tuples(st.sampled_from(b"x \t\r\x00\xff"), st.integers(0, 200_000)).map(
    lambda t: bytes([t[0]]) * t[1])
garbage_line = st.one_of(short_garbage, short_garbage, short_garbage, huge_garbage)


@st.composite
def proc_file(draw, v6: bool) -> bytes:
    header = (b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
              b"retrnsmt   uid  timeout inode")
    lines = draw(st.lists(st.one_of(socket_line(v6), socket_line(v6), socket_line(v6),
                                    garbage_line),
                          min_size=draw(st.sampled_from([0, 20])), max_size=80))
    data = b"\n".join([header] + lines)
    if draw(st.booleans()):
        data += b"\n"
    if draw(st.integers(0, 3)) == 0:       # cut anywhere (a partial read)
        data = data[:draw(st.integers(0, len(data)))]
    return data


def _is_hex(token: bytes) -> bool:
    return bool(token) and all(c in b"0123456789ABCDEF" for c in token)


def ref_line(line: bytes):
    """(local port, remote port, state) of a socket line, or None.

    The obvious reading: 'SLOT: LOCAL REMOTE ST ...' with LOCAL and
    REMOTE 'HEXADDR:PORT' (4 hex digits), ST two hex digits starting with 0
    (TCP states are 1..11), followed by more fields."""
    head, sep, rest = line.partition(b": ")
    if not sep or not head.strip().isdigit():
        return None
    fields = rest.split(b" ")
    if len(fields) < 4:
        return None
    ports = []
    for addr in fields[:2]:
        host, colon, port = addr.partition(b":")
        if not colon or not _is_hex(host) or len(port) != 4 or not _is_hex(port):
            return None
        ports.append(int(port, 16))
    st_field = fields[2]
    if len(st_field) != 2 or not _is_hex(st_field) or st_field[:1] != b"0":
        return None
    return ports[0], ports[1], int(st_field, 16)


def ref_count(data: bytes, mask: int, local, remote, by_port, by_remote):
    tally = [0] * 16
    per_port = [[0] * 16 for _ in by_port]
    for line in data.split(b"\n")[1:]:  # the first line is the header
        parsed = ref_line(line)
        if parsed is None:
            continue
        lport, rport, state = parsed
        if local is not None and not any(lo <= lport <= hi for lo, hi in local):
            continue
        if remote is not None and not any(lo <= rport <= hi for lo, hi in remote):
            continue
        tally[state] += 1
        key = rport if by_remote else lport
        if key in by_port:
            per_port[by_port.index(key)][state] += 1
    masked = lambda t: tuple(n if mask >> i & 1 else 0 for i, n in enumerate(t))  # noqa: E731
    return masked(tally), [masked(t) for t in per_port]


port_ranges = st.lists(st.one_of(st.tuples(POOLED, POOLED), st.tuples(POOLED, PORT)).map(
    lambda t: (min(t), max(t))), min_size=1, max_size=4)


@SETTINGS
@given(
    v4=proc_file(v6=False),
    v6=proc_file(v6=True),
    chunk=st.sampled_from([1, 2, 3, 7, 64, 1000, 65536]),
    mask=st.one_of(st.just(ALL_STATES_MASK), st.just(0xFFFF), st.integers(0, 0xFFFF)),
    families=st.sampled_from([FAMILY_IPV4, FAMILY_IPV6, FAMILY_BOTH]),
    local=st.one_of(st.none(), st.none(), port_ranges),
    remote=st.one_of(st.none(), st.none(), port_ranges),
    by_port=st.lists(POOLED, unique=True, min_size=1, max_size=4),
    by_remote=st.booleans(),
    plain=st.integers(0, 3).map(lambda n: n == 0),
)
def test_proc_reader_matches_reference(monkeypatch, v4, v6, chunk, mask, families, local,
                                       remote, by_port, by_remote, plain):
    if plain:  # the fast path: no port filter, no breakdown
        local = remote = None
        by_port = []
    # Tiny chunks on huge lines cost quadratic copying (a test-only case:
    # the reader uses 64 KiB, kernel lines are < 200 bytes): keep it short.
    assume(chunk >= 64 or len(v4) + len(v6) < 20_000)
    monkeypatch.setattr(_procfs, "_CHUNK", chunk)
    with tempfile.TemporaryDirectory() as net_dir:
        for name, data in (("tcp", v4), ("tcp6", v6)):
            with open(os.path.join(net_dir, name), "wb") as f:
                f.write(data)
        result = proc_count(net_dir, families, mask, local=local, remote=remote,
                            by_port=tuple(by_port), by_remote=by_remote)
    want4, ports4 = ref_count(v4, mask, local, remote, by_port, by_remote)
    want6, ports6 = ref_count(v6, mask, local, remote, by_port, by_remote)
    if not families & FAMILY_IPV4:
        want4, ports4 = (0,) * 16, [(0,) * 16 for _ in by_port]
    if not families & FAMILY_IPV6:
        want6, ports6 = (0,) * 16, [(0,) * 16 for _ in by_port]
    if by_port:
        totals, per_port = result
        assert [list(p) for p in per_port] == [[a, b] for a, b in zip(ports4, ports6)]
    else:
        totals = result
    assert totals == (want4, want6)


@SETTINGS
@given(data=st.binary(max_size=3000), chunk=st.sampled_from([1, 5, 64, 65536]),
       use_ports=st.booleans())
def test_proc_reader_survives_any_bytes(monkeypatch, data, chunk, use_ports):
    """Arbitrary bytes (colons, NULs, invalid UTF-8...): no exception, no
    negative count, and never more sockets than ': ' separators."""
    monkeypatch.setattr(_procfs, "_CHUNK", chunk)
    with tempfile.TemporaryDirectory() as net_dir:
        with open(os.path.join(net_dir, "tcp"), "wb") as f:
            f.write(data)
        options = {"local": [(0, 40000)], "by_port": (1, 2)} if use_ports else {}
        result = proc_count(net_dir, FAMILY_IPV4, ALL_STATES_MASK, **options)
    totals = result[0] if use_ports else result
    v4, v6 = totals
    assert all(n >= 0 for n in v4 + v6)
    assert sum(v4) <= data.count(b": ")
    assert sum(v6) == 0


def test_proc_reader_huge_line_is_bounded_work(tmp_path):
    """A 20 MB line without a newline is read (pending grows) and yields
    nothing; it must not crash or take long.  Long in CPU time: a loaded
    machine stretches the wall-clock time as much as it likes."""
    import time

    (tmp_path / "tcp").write_bytes(b"x" * 20_000_000)
    start = time.thread_time()
    v4, _ = proc_count(tmp_path, FAMILY_IPV4, ALL_STATES_MASK)
    assert sum(v4) == 0
    assert time.thread_time() - start < 30


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.binary(max_size=8), st.lists(st.integers(), max_size=3),
    st.tuples(st.integers(), st.integers()), st.dictionaries(st.text(max_size=3), st.integers(),
                                                             max_size=2),
)


def rejected(call, name: str):
    """Run call(); return its result, or None if it raised TypeError or
    ValueError naming `name` (anything else fails the test)."""
    try:
        return call()
    except (TypeError, ValueError) as exc:
        assert name in str(exc), f"{type(exc).__name__} does not name {name!r}: {exc}"
        return None


@SETTINGS
@given(family=st.one_of(anything, st.sampled_from(["ipv4", "IPv6", "IPV4", "ipv5", "inet6", ""])))
def test_family_property(family):
    got = rejected(lambda: parse_family(family), "family")
    if family is None:
        assert got == FAMILY_BOTH
    elif isinstance(family, str) and family.lower() in ("ipv4", "ipv6"):
        assert got == (FAMILY_IPV4 if family.lower() == "ipv4" else FAMILY_IPV6)
    else:
        assert got is None


state_name = st.one_of(
    st.sampled_from(STATES).flatmap(lambda s: st.sampled_from(
        [s, s.lower(), s.title(), s.replace("_", "-"), s.lower().replace("_", "-")])),
    st.text(string.ascii_letters + "_-", max_size=12),
)


@SETTINGS
@given(states=st.one_of(anything, state_name, st.lists(st.one_of(state_name, anything),
                                                        max_size=6)))
def test_states_property(states):
    got = rejected(lambda: parse_states(states), "states")
    if states is None:
        assert got == STATES
        return
    items = [states] if isinstance(states, str) else states
    try:
        items = list(items)
    except TypeError:
        assert got is None
        return
    names = []
    for item in items:
        if not isinstance(item, str) or item.upper().replace("-", "_") not in STATES:
            assert got is None
            return
        names.append(item.upper().replace("-", "_"))
    assert got == tuple(s for s in STATES if s in names)  # kernel order, no duplicates


port_item = st.one_of(
    st.integers(-5, 70000), st.booleans(), st.floats(0, 10), st.text(max_size=3),
    st.tuples(st.integers(-5, 70000), st.integers(-5, 70000)),
    st.tuples(st.integers(0, 65535)), st.tuples(st.integers(0, 9), st.integers(0, 9),
                                                st.integers(0, 9)),
    st.builds(range, st.integers(-5, 70000), st.integers(-5, 70000), st.sampled_from([1, 1, 2])),
)


def ref_port_set(spec):
    """The ports a filter argument lets through, as merged ranges, or an
    exception class; None = everything."""
    if spec is None:
        return None
    items = [spec] if isinstance(spec, (int, tuple, range)) and not isinstance(spec, bool) \
        else spec
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        return TypeError
    items = list(items)
    if not items:
        return ValueError
    spans = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                return ValueError
            if any(isinstance(v, bool) or not isinstance(v, int) for v in item):
                return TypeError
            if any(not 0 <= v <= 65535 for v in item):
                return ValueError
            if item[0] > item[1]:
                return ValueError
            spans.append(item)
        elif isinstance(item, range):
            if item.step != 1 or len(item) == 0:
                return ValueError
            if not (0 <= item.start <= 65535 and 0 <= item.stop - 1 <= 65535):
                return ValueError
            spans.append((item.start, item.stop - 1))
        elif isinstance(item, bool) or not isinstance(item, int):
            return TypeError
        elif not 0 <= item <= 65535:
            return ValueError
        else:
            spans.append((item, item))
    covered = set()
    for low, high in spans:
        covered.update(range(low, high + 1))
    return None if len(covered) == 65536 else covered


@SETTINGS
@given(spec=st.one_of(st.none(), port_item, st.lists(port_item, max_size=5), anything))
def test_ports_property(spec):
    want = ref_port_set(spec)
    try:
        got = parse_ports(spec, "local_ports")
    except (TypeError, ValueError) as exc:
        assert "local_ports" in str(exc)
        # The first bad item decides TypeError vs ValueError in both.
        assert isinstance(want, type) and isinstance(exc, want), (spec, want, exc)
        return
    assert not isinstance(want, type), (spec, want, got)
    if want is None:
        assert got is None
        return
    # Sorted, merged (neither overlapping nor adjacent), and the same ports.
    assert got == sorted(got)
    assert all(a[1] + 1 < b[0] for a, b in zip(got, got[1:]))
    assert all(0 <= low <= high <= 65535 for low, high in got)
    covered = set()
    for low, high in got:
        covered.update(range(low, high + 1))
    assert covered == want


@SETTINGS
@given(ports=st.one_of(anything, st.lists(st.one_of(st.integers(-3, 70000), anything),
                                          max_size=6)))
def test_port_list_property(ports):
    got = rejected(lambda: parse_port_list(ports, "ports", 4), "ports")
    if got is None:
        return
    items = [ports] if isinstance(ports, int) else list(ports)
    assert all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535
               for p in items)
    assert got == tuple(dict.fromkeys(items))  # order kept, duplicates dropped
    assert 1 <= len(got) <= 4


@SETTINGS
@given(value=st.one_of(anything, st.sampled_from(["auto", "netlink", "procfs", "local",
                                                  "remote", "v2", "legacy", "fast"])))
def test_enum_arguments_property(value):
    for check, name, allowed in ((_check_backend, "backend", ("auto", "netlink", "procfs")),
                                 (_check_side, "side", ("local", "remote")),
                                 (check_request, "request", ("auto", "v2", "legacy"))):
        try:
            check(value)
        except TypeError as exc:
            assert name in str(exc) and not isinstance(value, str)
        except ValueError as exc:
            assert name in str(exc) and isinstance(value, str) and value not in allowed
            assert all(repr(a) in str(exc) for a in allowed)
        else:
            assert isinstance(value, str) and value in allowed


netns_value = st.one_of(
    anything, st.integers(-3, 5), st.integers(4194305, 2**40),
    st.text(max_size=30).map(lambda t: "/" + t),
    st.sampled_from(["/proc/self/ns/net", "/proc/self/ns/uts", "/dev/null", "/", "/proc",
                     "/proc/1/ns/net", "/proc/self/ns/net/x", "/" + "a" * 5000]),
)


@SETTINGS
@given(netns=netns_value)
def test_netns_property(netns):
    """Any netns value either names a network namespace or is refused with
    an exception that names the argument; nothing stays open."""
    before = len(os.listdir("/proc/self/fd"))
    target = None
    try:
        target = Netns(netns)
        target.open()
    except (TypeError, ValueError, OSError) as exc:
        assert "netns" in str(exc), f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError):
            assert exc.errno is not None
    finally:
        if target is not None:
            target.close()
    assert len(os.listdir("/proc/self/fd")) == before


@settings(max_examples=scale(200, 40), deadline=None)
@given(kwargs=st.fixed_dictionaries({}, optional={
    "family": st.one_of(st.none(), st.sampled_from(["ipv4", "ipv6", "ipx"]), st.integers()),
    "states": st.one_of(st.none(), st.lists(state_name, max_size=3), st.integers()),
    "backend": st.sampled_from(["auto", "netlink", "procfs", "slow", 3]),
    "local_ports": st.one_of(st.none(), port_item),
    "remote_ports": st.one_of(st.none(), port_item),
}))
def test_counts_property(kwargs):
    """Through the public function: a result with the right keys, or a
    TypeError/ValueError that names one of the arguments given."""
    try:
        result = fasttcpstat.counts(**kwargs)
    except (TypeError, ValueError) as exc:
        assert any(name in str(exc) for name in kwargs), (kwargs, exc)
        return
    names = parse_states(kwargs.get("states"))
    assert tuple(result) == names
    assert all(isinstance(n, int) and n >= 0 for n in result.values())


def test_reference_reader_is_not_vacuous():
    assert ref_line(b"   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 x") == (0x1F90, 0, 10)
    assert ref_line(b"   1: 0100007F:1F90 00000000:0000 0A") is None  # cut before the next field
    assert ref_line(b"   1: 0100007F:1F90 00000000:0000 1A 0") is None  # not a TCP state
    assert ref_line(b"garbage") is None

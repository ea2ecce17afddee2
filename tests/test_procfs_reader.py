"""The /proc fallback's reader on hand-made /proc/net/tcp{,6} text.

The real kernel's output is covered by the namespace tests; these cover
shapes a test population will not produce on demand: wide slot numbers,
huge uids, a missing tcp6, partial reads.
"""
from __future__ import annotations

import pytest

from fasttcpstat._procfs import ProcfsBackend
from fasttcpstat._query import CountQuery
from fasttcpstat._states import ALL_STATES_MASK, FAMILY_BOTH, FAMILY_IPV4, FAMILY_IPV6


def proc_count(net_dir, families, mask, local=None, remote=None, by_port=(), by_remote=False):
    """The /proc backend's raw tallies for a hand-made net_dir: (v4, v6),
    or ((v4, v6), per_port) with by_port.  `mask` is taken as given (bits
    0 and 12..15 included: hand-made text can hold any hex digit)."""
    query = CountQuery(families, (), None if local is None else tuple(local),
                       None if remote is None else tuple(remote), tuple(by_port), by_remote)
    query.mask = mask
    tally = ProcfsBackend(str(net_dir)).count(query)
    if by_port:
        return (tally.v4, tally.v6), tally.per_port
    return tally.v4, tally.v6

HEADER4 = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
           "retrnsmt   uid  timeout inode").ljust(149) + "\n"
HEADER6 = ("  sl  local_address                         remote_address          "
           "              st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def line4(sl: int, state: int, uid: int = 0) -> str:
    # The kernel's format: "%4d: %08X:%04X %08X:%04X %02X %08X:%08X ..."
    text = (f"{sl:4d}: 0100007F:1F90 0200007F:{sl % 65536:04X} {state:02X} "
            f"00000000:00000000 00:00000000 00000000 {uid:5d}        0 {sl} 1 "
            "0000000000000000 100 0 0 10 0")
    return text.ljust(149) + "\n"


def line6(sl: int, state: int) -> str:
    addr = "0000000000000000FFFF00000100007F"
    return (f"{sl:4d}: {addr}:0050 {addr}:{sl % 65536:04X} {state:02X} "
            "00000000:00000000 00:00000000 00000000  1000        0 123 1 "
            "0000000000000000 100 0 0 10 0\n")


def tally(lines_and_states):
    result = [0] * 16
    for state in lines_and_states:
        result[state] += 1
    return tuple(result)


@pytest.fixture
def net_dir(tmp_path):
    return tmp_path


def test_counts_every_state_and_family(net_dir):
    states4 = [s for s in range(1, 12) for _ in range(s)]  # state n appears n times
    states6 = [1, 1, 10, 6, 3]
    (net_dir / "tcp").write_text(HEADER4 + "".join(line4(i, s) for i, s in enumerate(states4)))
    (net_dir / "tcp6").write_text(HEADER6 + "".join(line6(i, s) for i, s in enumerate(states6)))
    v4, v6 = proc_count(net_dir, FAMILY_BOTH, ALL_STATES_MASK)
    assert v4 == tally(states4)
    assert v6 == tally(states6)


def test_wide_slot_numbers_and_uids(net_dir):
    # Past 9999 sockets the slot column widens; big uids widen theirs.
    lines = [line4(sl, 1 + sl % 11, uid=4_000_000_000 if sl % 2 else 0)
             for sl in range(9990, 10010)] + [line4(123456, 6)]
    (net_dir / "tcp").write_text(HEADER4 + "".join(lines))
    v4, _ = proc_count(net_dir, FAMILY_IPV4, ALL_STATES_MASK)
    expected = [1 + sl % 11 for sl in range(9990, 10010)] + [6]
    assert v4 == tally(expected)


def test_many_lines_across_read_chunks(net_dir):
    # More than one 64 KiB read; the last line has no newline.
    states = [1 + i % 11 for i in range(5000)]
    text = HEADER4 + "".join(line4(i, s) for i, s in enumerate(states))
    (net_dir / "tcp").write_text(text.rstrip("\n"))
    v4, _ = proc_count(net_dir, FAMILY_IPV4, ALL_STATES_MASK)
    assert v4 == tally(states)


def test_missing_tcp6_means_no_ipv6_sockets(net_dir):
    (net_dir / "tcp").write_text(HEADER4 + line4(0, 10))
    v4, v6 = proc_count(net_dir, FAMILY_BOTH, ALL_STATES_MASK)
    assert v4[10] == 1
    assert sum(v6) == 0


def test_missing_tcp_is_an_error(net_dir):
    with pytest.raises(FileNotFoundError):
        proc_count(net_dir, FAMILY_IPV4, ALL_STATES_MASK)


def test_state_mask_and_family_selection(net_dir):
    (net_dir / "tcp").write_text(HEADER4 + line4(0, 10) + line4(1, 1))
    (net_dir / "tcp6").write_text(HEADER6 + line6(0, 10))
    v4, v6 = proc_count(net_dir, FAMILY_IPV6, 1 << 10)
    assert sum(v4) == 0
    assert v6[10] == 1 and sum(v6) == 1


def test_garbage_lines_are_not_counted(net_dir):
    junk = "this is not a socket line\n   7: nothex 0A\n\n"
    (net_dir / "tcp").write_text(HEADER4 + junk + line4(0, 1))
    v4, _ = proc_count(net_dir, FAMILY_IPV4, ALL_STATES_MASK)
    assert v4 == tally([1])

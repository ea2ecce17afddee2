"""Argument validation: clear TypeError/ValueError naming the argument.

The table of wrong values, one row per public parameter, is in
tests/test_hardening_bad_input.py; property tests of the parsers are in
tests/test_hardening_properties.py.  This file keeps the accepted forms
and the C extension's own checks."""
from __future__ import annotations

import errno

import pytest

import fasttcpstat
from fasttcpstat import _fasttcpstat


def test_positional_arguments_rejected():
    with pytest.raises(TypeError):
        fasttcpstat.counts("ipv4")  # type: ignore[misc]


def test_bad_request_form():
    with pytest.raises(ValueError, match="request"):
        fasttcpstat.Counter("netlink", request="v3")
    with pytest.raises(ValueError, match="netlink backend only"):
        fasttcpstat.Counter("procfs", request="v2")


def test_state_names_are_case_insensitive_and_accept_dashes():
    result = fasttcpstat.counts(states=["listen", "Time-Wait", "LISTEN"])
    assert list(result) == ["TIME_WAIT", "LISTEN"]


def test_single_state_string_is_one_name():
    assert list(fasttcpstat.counts(states="established")) == ["ESTABLISHED"]


def test_empty_states_gives_empty_dict():
    assert fasttcpstat.counts(states=[]) == {}


def test_result_shape():
    result = fasttcpstat.counts()
    assert tuple(result) == fasttcpstat.STATES
    assert all(isinstance(v, int) and v >= 0 for v in result.values())
    assert fasttcpstat.STATES == (
        "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
        "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
    )


class TestExtensionArguments:
    """The C type checks its own arguments too."""

    def test_families(self):
        counter = _fasttcpstat.NetlinkCounter()
        try:
            with pytest.raises(ValueError, match="families"):
                counter.count(0, _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2)
            with pytest.raises(ValueError, match="families"):
                counter.count(4, _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2)
            with pytest.raises(ValueError, match="states"):
                counter.count(3, 1 << 13, _fasttcpstat.FORM_V2)
            with pytest.raises(ValueError, match="form"):
                counter.count(3, _fasttcpstat.STATES_ALL, 7)
            with pytest.raises(TypeError):
                counter.count("3", 1, 0)
        finally:
            counter.close()

    def test_closed(self):
        counter = _fasttcpstat.NetlinkCounter()
        assert counter.closed is False
        counter.close()
        counter.close()
        assert counter.closed is True
        with pytest.raises(ValueError, match="closed"):
            counter.count(3, _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2)

    def test_constructor_arguments(self):
        with pytest.raises(TypeError):
            _fasttcpstat.NetlinkCounter(1)  # reopen is keyword-only
        with pytest.raises(TypeError):
            _fasttcpstat.NetlinkCounter(netns_fd=3)

    def test_no_reopen_outside_its_namespace(self):
        """A socket that may not be reopened here says so instead of
        silently counting the wrong namespace."""
        import os

        counter = _fasttcpstat.NetlinkCounter(reopen=False)
        assert counter.needs_reopen is False
        pid = os.fork()
        if pid == 0:  # the child: the inherited socket is the parent's
            ok = counter.needs_reopen is True
            try:
                counter.count(3, _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2)
                ok = False
            except OSError as exc:
                ok = ok and exc.errno == errno.ESTALE and "reopened" in str(exc)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0  # exited with 0 (not os.waitstatus_to_exitcode: 3.9+)
        counter.count(3, _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2)
        counter.close()
        assert counter.needs_reopen is False  # closed: nothing to reopen

    def test_filter_arguments(self):
        counter = _fasttcpstat.NetlinkCounter()
        all_states, v2 = _fasttcpstat.STATES_ALL, _fasttcpstat.FORM_V2
        try:
            with pytest.raises(ValueError, match="local ports"):
                counter.count(3, all_states, v2, local=[(5, 4)])
            with pytest.raises(ValueError, match="remote ports"):
                counter.count(3, all_states, v2, remote=[(0, 70000)])
            with pytest.raises(ValueError, match="at most"):
                counter.count(3, all_states, v2,
                              local=[(1, 1)] * (_fasttcpstat.MAX_PORT_RANGES + 1))
            with pytest.raises(TypeError):
                counter.count(3, all_states, v2, local=[5])
            with pytest.raises(ValueError, match="listed twice"):
                counter.count(3, all_states, v2, by_port=[80, 80])
            with pytest.raises(ValueError, match="by_port"):
                counter.count(3, all_states, v2, by_port=[65536])
            with pytest.raises(ValueError, match="at most"):
                counter.count(3, all_states, v2,
                              by_port=list(range(_fasttcpstat.MAX_BY_PORT + 1)))
        finally:
            counter.close()


def test_one_port_for_by_port_is_fine():
    assert list(fasttcpstat.counts_by_port(5)) == [5]


def test_port_filters_are_normalised():
    from fasttcpstat._ports import parse_ports

    assert parse_ports([443, (440, 442), 8443, range(444, 446)], "p") == [(440, 445), (8443, 8443)]
    assert parse_ports([(0, 100), (101, 65535)], "p") is None  # everything
    assert parse_ports(None, "p") is None

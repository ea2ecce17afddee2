"""Argument validation: clear TypeError/ValueError naming the argument."""
from __future__ import annotations

import pytest

import fasttcpstat
from fasttcpstat import _fasttcpstat


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"family": "ipv5"}, ValueError, ["family", "'ipv4'", "'ipv6'", "ipv5"]),
        ({"family": 4}, TypeError, ["family", "int"]),
        ({"states": ["LISTEN", "BOGUS"]}, ValueError, ["states", "BOGUS", "ESTABLISHED"]),
        ({"states": [1]}, TypeError, ["states", "int"]),
        ({"states": 5}, TypeError, ["states", "int"]),
        ({"backend": "fast"}, ValueError, ["backend", "'netlink'", "'procfs'", "fast"]),
        ({"backend": None}, TypeError, ["backend", "NoneType"]),
    ],
)
def test_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc) as info:
        fasttcpstat.counts(**kwargs)
    for word in words:
        assert word in str(info.value)


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

    def test_no_constructor_arguments(self):
        with pytest.raises(TypeError):
            _fasttcpstat.NetlinkCounter(1)

"""Reference counters the tests cross-check fasttcpstat against, simple on
purpose and independent of the package: `ss -tan`, a naive
/proc/net/tcp{,6} reader, and a minimal sock_diag netlink parser
(:func:`diag_counts`), plus :func:`diff_counts` to report a mismatch.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess

from .population_spec import FAMILIES, STATES


# ss -tan state names -> kernel names.
SS_STATE_NAMES = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
    "UNCONN": "CLOSE", "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}

def _family_name(family) -> "str | None":
    """Accept None, "ipv4"/"ipv6", 4/6 or socket.AF_INET/AF_INET6."""
    if family is None:
        return None
    aliases = {
        "ipv4": "ipv4", "ipv6": "ipv6", "4": "ipv4", "6": "ipv6",
        4: "ipv4", 6: "ipv6", socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6",
    }
    try:
        return aliases[family]
    except (KeyError, TypeError):
        raise ValueError("unknown family %r" % (family,)) from None

def parse_ss(out: str, *, exclude_unconn: bool = False) -> dict:
    """Count the lines of `ss -tan` output per state: all 11 STATES keys.
    An unknown state name is a bug: KeyError.  exclude_unconn: see
    ss_counts()."""
    counts = dict.fromkeys(STATES, 0)
    for line in out.splitlines()[1:]:           # skip the header line
        if line.strip():
            counts[SS_STATE_NAMES[line.split(None, 1)[0]]] += 1
    if exclude_unconn:
        counts["CLOSE"] = 0
    return counts


def ss_counts(family=None, *, exclude_unconn: bool = False, netns: "str | None" = None) -> dict:
    """Count `ss -tan` lines per state in the current network namespace, or
    in the one at path `netns` (through nsenter), or of pid `netns` if it
    is all digits.

    family: None (both), "ipv4" or "ipv6" (also 4/6, AF_INET/AF_INET6).
    Returns all 11 STATES keys.

    Caveat: a kernel >= 6.8 (commit 91051f003948, TCP_BOUND_INACTIVE) dumps
    bound-but-inactive sockets when asked for state bit 13, and an `ss` new
    enough to ask for it (iproute2 released after 2023-12) lists them as
    UNCONN, i.e. CLOSE here.  fasttcpstat deliberately does not count those
    (nor does /proc/net/tcp show them), so pass exclude_unconn=True to compare
    against it: CLOSE is then reported as 0.  Older `ss` builds (iproute2 6.1
    asks for 0xFFF) never show them, whatever the kernel.
    """
    fam = _family_name(family)
    cmd = ["ss", "-tan"] + ({"ipv4": ["-4"], "ipv6": ["-6"]}[fam] if fam else [])
    if netns is not None:
        enter = ["-t", netns, "-n"] if netns.isdigit() else [f"--net={netns}"]
        cmd = ["nsenter", *enter, "--", *cmd]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    return parse_ss(out, exclude_unconn=exclude_unconn)

def ss_shows_bound_inactive() -> bool:
    """True if the installed `ss` knows TCP_BOUND_INACTIVE (it then has a
    -B/--bound-inactive option and `-a` includes those sockets as UNCONN)."""
    out = subprocess.run(["ss", "-h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True).stdout
    return "bound-inactive" in out

def proc_counts(family=None) -> dict:
    """Count sockets per state from /proc/self/net/tcp{,6} (current namespace).

    An independent, deliberately naive reader: the 4th column (`st`) is the
    state number in hex.  Request sockets print 03 (SYN_RECV); timewait socks
    print their substate (TIME_WAIT or FIN_WAIT2).  tcp6 includes v4-mapped
    sockets.  Returns all 11 STATES keys.
    """
    fam = _family_name(family)
    files = {"ipv4": ("tcp",), "ipv6": ("tcp6",), None: ("tcp", "tcp6")}[fam]
    counts = dict.fromkeys(STATES, 0)
    for name in files:
        try:
            with open("/proc/self/net/" + name) as f:
                lines = f.readlines()[1:]       # skip the header line
        except FileNotFoundError:               # e.g. IPv6 disabled
            continue
        for line in lines:
            counts[STATES[int(line.split()[3], 16) - 1]] += 1
    return counts

# netlink / sock_diag constants (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
ALL_STATES_MASK = 0xFFE              # bits 1..11: what fasttcpstat asks for
BOUND_INACTIVE_MASK = 1 << 13        # TCP_BOUND_INACTIVE, kernels >= 6.8

def diag_counts(family, states: int = ALL_STATES_MASK) -> dict:
    """Count sockets per reported state with a plain inet_diag_req_v2 dump
    (current namespace).  A slow, obvious reference for tests, e.g. to see
    bound-inactive sockets (states=BOUND_INACTIVE_MASK; reported as CLOSE)
    independently of the installed `ss`.  Returns all 11 STATES keys."""
    fam = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}[_family_name(family)]
    req = struct.pack("=BBBxI48x", fam, socket.IPPROTO_TCP, 0, states)
    msg = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                      _NLM_F_REQUEST_DUMP, 1, 0) + req
    counts = dict.fromkeys(STATES, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(msg, (0, 0))
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return counts
                if kind == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, offset + 16)[0]
                    raise OSError(err, "inet_diag dump: " + os.strerror(err))
                counts[STATES[data[offset + 17] - 1]] += 1   # inet_diag_msg.idiag_state
                offset += (length + 3) & ~3

def _proc_counts_by_family() -> dict:
    return {family: proc_counts(family) for family in FAMILIES}

def diff_counts(expected: dict, actual: dict) -> dict:
    """{family: {state: (expected, actual)}} for every mismatch."""
    out = {}
    for family in FAMILIES:
        d = {s: (expected[family][s], actual[family][s])
             for s in STATES if expected[family][s] != actual[family][s]}
        if d:
            out[family] = d
    return out

TIME_WAIT_MASK = 1 << 6   # TCPF_TIME_WAIT: timewait socks whose substate is TIME_WAIT

def _time_wait_counts() -> "tuple[int, int]":
    return tuple(diag_counts(f, TIME_WAIT_MASK)["TIME_WAIT"] for f in FAMILIES)

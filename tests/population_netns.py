"""The private network namespace a Population lives in: unshare and setns
through libc (no os.unshare/os.setns before Python 3.12), lo brought up,
per-namespace sysctls, the fd limit, and an established-hash table of its
own.  Everything here runs in the holder process or a child, never in
the test process.
"""
from __future__ import annotations

import ctypes.util
import fcntl
import os
import resource
import socket
import struct

CLONE_NEWNET = 0x40000000
# Sysctls written inside the new namespace only (never in the host's).
NETNS_SYSCTLS = (
    # Without it, a stray RST on loopback "assassinates" TIME_WAIT sockets.
    ("net/ipv4/tcp_rfc1337", "1"),
    # Default loopback TIME_WAIT reuse (2) would let connect() recycle our
    # TIME_WAIT sockets once they are 1 s old.
    ("net/ipv4/tcp_tw_reuse", "0"),
    ("net/ipv4/tcp_max_tw_buckets", "4000000"),
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "1000000"),
    # A dropped SYN is retried at 1, 3, 7, ... 127 s: SYN_SENT lives ~255 s.
    ("net/ipv4/tcp_syn_retries", "7"),
    ("net/ipv4/tcp_fin_timeout", "60"),
    # Pinned so LISTEN_PORT_* is guaranteed to be outside of it.
    ("net/ipv4/ip_local_port_range", "32768 60999"),
)
# Written after NETNS_SYSCTLS with long_lived=True.  SYN retries back off to
# TCP_RTO_MAX (120 s), so 127 (MAX_TCP_SYNCNT) keeps SYN_SENT ~4 h.
LONG_LIVED_SYSCTLS = (
    ("net/ipv4/tcp_syn_retries", "127"),
)
# ioctls (linux/sockios.h)
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


_libc = None

def _libc_call(name: str, *args: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (name, os.strerror(err)))

def _unshare_net() -> None:
    _libc_call("unshare", CLONE_NEWNET)

def _setns_net(ns_path: str) -> None:
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc_call("setns", fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def _bring_lo_up() -> None:
    """ifconfig lo up, via SIOCSIFFLAGS (a new namespace starts with lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))

def _write_sysctls(long_lived: bool = False) -> None:
    # /proc/sys/net resolves to the writer's current namespace: these affect
    # only the freshly unshared one.
    for key, value in NETNS_SYSCTLS + (LONG_LIVED_SYSCTLS if long_lived else ()):
        with open("/proc/sys/" + key, "w") as f:
            f.write(value)

def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard

def _own_ehash(entries: int) -> None:
    """Go through an intermediate namespace whose tcp_child_ehash_entries
    gives the next one a private established-hash table of `entries`
    buckets (kernels >= 6.1).  Dumps and /proc/net/tcp then walk that small
    table instead of the host's global one (262144 buckets on a 24 GiB
    machine): ~20x faster counts, for tests that count thousands of times.
    On older kernels the global table is used, which is only slower."""
    _unshare_net()
    try:
        with open("/proc/sys/net/ipv4/tcp_child_ehash_entries", "w") as f:
            f.write(str(entries))
    except OSError:
        pass

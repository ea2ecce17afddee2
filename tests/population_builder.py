"""The sockets of each scenario, built inside the namespace by the holder
(or a worker): listeners, connected pairs, and the choreography that
leaves each pair in its state (TIME_WAIT, CLOSE_WAIT, FIN_WAIT1, LAST_ACK,
CLOSING, SYN_SENT, SYN_RECV, ...), then the wait until the kernel shows
exactly the expected counts.
"""
from __future__ import annotations

import errno
import fcntl
import socket
import struct
import subprocess
import time

from .population_netns import _raise_nofile
from .population_reference import _proc_counts_by_family, _time_wait_counts, diff_counts
from .population_spec import (
    BUILD_ORDER,
    LISTEN_PORT_FIRST,
    LISTEN_PORT_LAST,
    PopulationError,
    REFRESH_PORT_FIRST,
    Spec,
    _chunks,
)

# Small buffers make the "fill the peer's window" scenarios cheap: a few KiB
# per socket instead of megabytes.  The kernel doubles and clamps these.
SMALL_BUF = 4096
# Value for TCP_DEFER_ACCEPT: a bare ACK is dropped for this long, so the
# server side stays a request socket (SYN_RECV) while the client is ESTABLISHED.
DEFER_ACCEPT_SECONDS = 600
# With long_lived=True: ~4 h, about as long as SYN_SENT with tcp_syn_retries
# at its maximum (the kernel turns both into a retransmission count).
LONG_DEFER_ACCEPT_SECONDS = 4 * 3600
SIOCOUTQNSD = 0x894B  # bytes in the send queue not yet sent
# Socket options missing from older Python builds of the socket module.
TCP_DEFER_ACCEPT = getattr(socket, "TCP_DEFER_ACCEPT", 9)


V4 = (socket.AF_INET, "127.0.0.1")
V6 = (socket.AF_INET6, "::1")

class _Builder:
    """Creates the sockets of a spec and keeps them referenced (a socket
    object that is garbage-collected closes its fd)."""

    def __init__(self, timeout: float, ports: "tuple[int, int]" = (
                     LISTEN_PORT_FIRST, REFRESH_PORT_FIRST - 1),
                 defer_accept: int = DEFER_ACCEPT_SECONDS) -> None:
        self.keep: list = []
        self.timeout = timeout            # per blocking socket operation
        self.defer_accept = defer_accept
        self._next_port, self._last_port = ports
        self._first_port = self._next_port

    # ---- primitives -----------------------------------------------------

    def port(self) -> int:
        if self._next_port > self._last_port:
            raise PopulationError("out of listener ports (%d-%d)"
                                  % (self._first_port, self._last_port))
        self._next_port += 1
        return self._next_port - 1

    def listener(self, family: int, addr: str, backlog: int = 65535, *,
                 v6only: bool = True, rcvbuf: int = 0, defer_accept: int = 0) -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        if rcvbuf:
            # Set before listen(): accepted sockets inherit it, and the window
            # scale is chosen from it at SYN time.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if defer_accept:
            s.setsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, defer_accept)
        s.bind((addr, self.port()))
        s.listen(backlog)
        s.settimeout(self.timeout)
        return s

    def client(self, family: int, *, sndbuf: int = 0, rcvbuf: int = 0) -> socket.socket:
        c = socket.socket(family, socket.SOCK_STREAM)
        if sndbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.settimeout(self.timeout)
        return c

    def connections(self, n: int, family=V4, *, listen_family=None, v6only: bool = True,
                    client_sndbuf: int = 0, client_rcvbuf: int = 0, server_rcvbuf: int = 0):
        """Yield n (client, server) pairs, each connected then accepted (so
        the pair really is one connection).  One listener per PER_LISTENER
        pairs; it is closed after its batch: accepted sockets outlive it, and
        a closed helper listener does not disturb the expected LISTEN count."""
        cfam, caddr = family
        lfam, laddr = listen_family or family
        for size in _chunks(n):
            lst = self.listener(lfam, laddr, v6only=v6only, rcvbuf=server_rcvbuf)
            port = lst.getsockname()[1]
            try:
                for _ in range(size):
                    c = self.client(cfam, sndbuf=client_sndbuf, rcvbuf=client_rcvbuf)
                    c.connect((caddr, port))
                    s, _addr = lst.accept()
                    s.settimeout(self.timeout)
                    yield c, s
            finally:
                lst.close()

    # ---- scenarios: one method per Spec field ----------------------------

    def listen4(self, n: int) -> None:
        self.keep += [self.listener(*V4) for _ in range(n)]

    def listen6(self, n: int) -> None:
        self.keep += [self.listener(*V6) for _ in range(n)]

    def listen_dual(self, n: int) -> None:
        self.keep += [self.listener(socket.AF_INET6, "::", v6only=False) for _ in range(n)]

    def estab4(self, n: int) -> None:
        for pair in self.connections(n, V4):
            self.keep += pair

    def estab6(self, n: int) -> None:
        for pair in self.connections(n, V6):
            self.keep += pair

    def estab_mapped(self, n: int) -> None:
        # AF_INET client to a dual-stack AF_INET6 listener on "::".
        for pair in self.connections(n, V4, listen_family=(socket.AF_INET6, "::"),
                                     v6only=False):
            self.keep += pair

    def _time_wait(self, n: int, family) -> None:
        for c, s in self.connections(n, family):
            c.close()                       # active close: client FIN_WAIT1/2
            if s.recv(1) != b"":            # wait for the FIN (CLOSE_WAIT) ...
                raise PopulationError("TIME_WAIT: unexpected data")
            s.close()                       # ... then close: client TIME_WAIT

    def time_wait4(self, n: int) -> None:
        self._time_wait(n, V4)

    def time_wait6(self, n: int) -> None:
        self._time_wait(n, V6)

    def _close_wait(self, n: int, family) -> None:
        for c, s in self.connections(n, family):
            c.shutdown(socket.SHUT_WR)      # client FIN_WAIT2 (full socket), server CLOSE_WAIT
            self.keep += (c, s)

    def close_wait4(self, n: int) -> None:
        self._close_wait(n, V4)

    def close_wait6(self, n: int) -> None:
        self._close_wait(n, V6)

    def orphan_fin_wait2_4(self, n: int) -> None:
        for c, s in self.connections(n, V4):
            # No fd left: once its FIN is acked the client becomes a timewait
            # sock with substate FIN_WAIT2 for tcp_fin_timeout (60 s).  The
            # server keeps its fd and never reads: CLOSE_WAIT.
            c.close()
            self.keep.append(s)

    def fin_wait1_4(self, n: int) -> None:
        for c, s in self.connections(n, V4, client_sndbuf=SMALL_BUF, server_rcvbuf=SMALL_BUF):
            _fill_until_stuck(c, self.timeout)   # server never reads
            c.shutdown(socket.SHUT_WR)           # FIN queued behind unsent data
            self.keep += (c, s)

    def last_ack4(self, n: int) -> None:
        for c, s in self.connections(n, V4, client_rcvbuf=SMALL_BUF):
            c.shutdown(socket.SHUT_WR)      # client FIN_WAIT2, server CLOSE_WAIT
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
            _wait_readable_eof(s)  # server has seen the FIN
            _fill_until_stuck(s, self.timeout)   # client never reads
            s.shutdown(socket.SHUT_WR)      # server LAST_ACK, its FIN stuck
            self.keep += (c, s)

    def closing4(self, n: int) -> None:
        for a, b in self.connections(n, V4, client_sndbuf=SMALL_BUF, server_rcvbuf=SMALL_BUF):
            _fill_until_stuck(a, self.timeout)   # b never reads
            a.shutdown(socket.SHUT_WR)           # a FIN_WAIT1 (FIN stuck)
            b.shutdown(socket.SHUT_WR)           # b's FIN reaches a: a CLOSING, b FIN_WAIT2
            self.keep += (a, b)

    def syn_sent4(self, n: int) -> None:
        for size in _chunks(n):
            # listen(0) admits exactly one connection to the accept queue;
            # with it never accepted, the queue stays full and every later
            # SYN is dropped (and retried, tcp_syn_retries=7): SYN_SENT.
            lst = self.listener(*V4, backlog=0)
            addr = lst.getsockname()
            filler = self.client(socket.AF_INET)
            filler.connect(addr)
            self.keep += (lst, filler)
            for _ in range(size):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                err = c.connect_ex(addr)
                if err != errno.EINPROGRESS:
                    raise PopulationError("SYN_SENT: connect_ex gave %s" % errno.errorcode.get(err, err))
                self.keep.append(c)

    def _syn_recv(self, n: int, family) -> None:
        for size in _chunks(n):
            # With TCP_DEFER_ACCEPT the bare ACK that completes the handshake
            # is dropped: the server end stays a request socket (SYN_RECV),
            # the client (which sends nothing) is ESTABLISHED.  The backlog
            # must exceed the batch, else SYN cookies replace request socks.
            lst = self.listener(*family, backlog=size + 64, defer_accept=self.defer_accept)
            addr = lst.getsockname()[:2]
            self.keep.append(lst)
            for _ in range(size):
                c = self.client(family[0])
                c.connect(addr)
                self.keep.append(c)

    def syn_recv4(self, n: int) -> None:
        self._syn_recv(n, V4)

    def syn_recv6(self, n: int) -> None:
        self._syn_recv(n, V6)

    def bound_inactive4(self, n: int) -> None:
        # bind() only.  A port below the ephemeral range so connect() never
        # has to skip it.
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", self.port()))
            self.keep.append(s)

def _wait_readable_eof(s: socket.socket) -> None:
    """Block (up to the socket's timeout) until the peer's FIN has arrived."""
    if s.recv(1, socket.MSG_PEEK) != b"":
        raise PopulationError("expected EOF, got data")

def _fill_until_stuck(s: socket.socket, timeout: float) -> None:
    """Write until the peer's receive window is closed and some of our data
    is still unsent, so a FIN queued next stays stuck behind it.

    EAGAIN alone is not enough: it only says our send buffer is full.  The
    FIN is stuck only if unsent bytes remain (SIOCOUTQNSD > 0) in front of it.
    """
    s.setblocking(False)
    chunk = b"x" * 65536
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                while True:
                    s.send(chunk)
            except BlockingIOError:
                pass
            if _unsent_bytes(s) > 0:
                return
            if time.monotonic() > deadline:
                raise PopulationError("could not get data stuck in the send queue")
            time.sleep(0.001)  # let the peer's window close, then top up
    finally:
        s.settimeout(timeout)

def _unsent_bytes(s: socket.socket) -> int:
    buf = fcntl.ioctl(s.fileno(), SIOCOUTQNSD, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]

def _build(spec: Spec, timeout: float, **builder_options) -> _Builder:
    builder = _Builder(timeout, **builder_options)
    for name in BUILD_ORDER:
        n = getattr(spec, name)
        if n:
            try:
                getattr(builder, name)(n)
            except PopulationError:
                raise
            except Exception as exc:
                raise PopulationError("building %s=%d failed: %r" % (name, n, exc)) from exc
    return builder

def _wait_converged(expected: dict, timeout: float) -> dict:
    """Poll /proc/net/tcp{,6} until the per-family counts equal `expected`.
    Returns the last diff ({} when converged)."""
    deadline = time.monotonic() + timeout
    while True:
        diff = diff_counts(expected, _proc_counts_by_family())
        if not diff or time.monotonic() >= deadline:
            return diff
        time.sleep(0.05)

def _refresh_time_wait(n4: int, n6: int, timeout: float = 10.0) -> None:
    """Body of refresh_time_wait(), in a run() child (in the namespace)."""
    subprocess.run(["ss", "-K", "-tan", "state", "time-wait"], check=True,
                   stdout=subprocess.DEVNULL)
    left = _time_wait_counts()
    if any(left):
        raise PopulationError("`ss -K state time-wait` left %r TIME_WAIT sockets: "
                              "SOCK_DESTROY unsupported by this kernel?" % (left,))
    _raise_nofile()
    # TIME_WAIT sockets hold no fd: they outlive this short-lived child.
    builder = _Builder(timeout, ports=(REFRESH_PORT_FIRST, LISTEN_PORT_LAST))
    builder.time_wait4(n4)
    builder.time_wait6(n6)
    deadline = time.monotonic() + timeout
    while _time_wait_counts() != (n4, n6):
        if time.monotonic() > deadline:
            raise PopulationError("refresh_time_wait: expected (%d, %d) TIME_WAIT "
                                  "sockets, have %r" % (n4, n6, _time_wait_counts()))
        time.sleep(0.01)

"""--serve: a small HTTP server for /metrics that idle connections cannot
exhaust.

prometheus_client's start_http_server runs one thread per connection with
no timeout: 1,000 idle connections held 1,002 threads and 50 MB until
closed.  Here one thread serves everything over non-blocking sockets; a
connection must deliver its request within READ_TIMEOUT, and at most
MAX_CONNECTIONS wait for theirs: a newcomer beyond that pushes out the
oldest one.  A scraper sends its request at once, so it gets through any
flood of silent connections.  Answers: /metrics, a small index page at /
(as node_exporter has), 404 elsewhere.
"""
from __future__ import annotations

import collections
import selectors
import socket
import time
from typing import Callable, Optional, Tuple

MAX_CONNECTIONS = 64
READ_TIMEOUT = 5.0       # seconds for a whole request head
WRITE_TIMEOUT = 10.0     # seconds for a whole response
MAX_REQUEST = 8192       # bytes of request head (a scrape sends ~200)
BACKLOG = 128

# (body, content type) of one scrape.
Render = Callable[[], Tuple[bytes, str]]

INDEX = (b"<html><head><title>fasttcpstat</title></head><body>"
         b"<h1>fasttcpstat</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n")


def _response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def _text(status: str, text: str, extra: str = "") -> bytes:
    return _response(status, text.encode(), "text/plain; charset=utf-8", extra)


class MetricsServer:
    """Listens on `address`:`port` (0: any free port, see `port`)."""

    def __init__(self, address: str, port: int, render: Render) -> None:
        self._render = render
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
        self._listener = socket.socket(family, kind, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(sockaddr)
            self._listener.listen(BACKLOG)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        # Waiting for their request, oldest first: connection -> (deadline, bytes so far).
        self._waiting: "collections.OrderedDict[socket.socket, Tuple[float, bytes]]" = (
            collections.OrderedDict())

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def serve(self, stop_fd: int) -> None:
        """Answer requests until `stop_fd` is readable."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(stop_fd, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select(self._next_timeout()):
                    if key.fd == stop_fd:
                        return
                    if key.fileobj is self._listener:
                        self._accept(selector)
                    else:
                        self._read(selector, key.fileobj)  # type: ignore[arg-type]
                self._expire(selector)

    def _next_timeout(self) -> Optional[float]:
        if not self._waiting:
            return None
        deadline, _ = next(iter(self._waiting.values()))
        return max(0.0, deadline - time.monotonic())

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE, ECONNABORTED: the next round tries again
            if len(self._waiting) >= MAX_CONNECTIONS:
                oldest, _ = self._waiting.popitem(last=False)
                self._drop(selector, oldest)
            conn.setblocking(False)
            self._waiting[conn] = (time.monotonic() + READ_TIMEOUT, b"")
            selector.register(conn, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        deadline, head = self._waiting[conn]
        try:
            chunk = conn.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            del self._waiting[conn]
            self._drop(selector, conn)
            return
        head += chunk
        if b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) < MAX_REQUEST:
                self._waiting[conn] = (deadline, head)
                return
            reply = _text("431 Request Header Fields Too Large", "request too large\n")
        else:
            reply = self._answer(head)
        del self._waiting[conn]
        selector.unregister(conn)
        self._send(conn, reply)

    def _answer(self, head: bytes) -> bytes:
        try:
            method, target, _ = head.split(b"\n", 1)[0].decode("ascii").split()
        except (UnicodeDecodeError, ValueError):
            return _text("400 Bad Request", "bad request\n")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _text("405 Method Not Allowed", "GET or HEAD only\n", "Allow: GET, HEAD\r\n")
        if path == "/":
            reply = _response("200 OK", INDEX, "text/html; charset=utf-8")
        elif path == "/metrics":
            try:
                body, content_type = self._render()
            except (OSError, ValueError) as exc:
                # Such as a namespace gone: the scraper sees the failure, and
                # later scrapes are tried afresh.
                return _text("500 Internal Server Error", f"counting failed: {exc}\n")
            reply = _response("200 OK", body, content_type)
        else:
            return _text("404 Not Found", "not found; the metrics are at /metrics\n")
        if method == "HEAD":
            reply = reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        return reply

    @staticmethod
    def _send(conn: socket.socket, reply: bytes) -> None:
        # A reply is a few KB: it fits the socket buffer, so this returns at
        # once unless the peer stops reading, and then within the timeout.
        try:
            conn.settimeout(WRITE_TIMEOUT)
            conn.sendall(reply)
        except OSError:
            pass  # the scraper went away: its loss
        finally:
            conn.close()

    @staticmethod
    def _drop(selector: selectors.BaseSelector, conn: socket.socket) -> None:
        selector.unregister(conn)
        conn.close()

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while self._waiting:
            conn, (deadline, _) = next(iter(self._waiting.items()))
            if deadline > now:
                return
            del self._waiting[conn]
            self._drop(selector, conn)

    def close(self) -> None:
        for conn in self._waiting:
            conn.close()
        self._waiting.clear()
        self._listener.close()

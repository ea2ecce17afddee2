"""Stopping on SIGINT/SIGTERM, and the fixed-rate schedule of the run modes."""
from __future__ import annotations

import os
import select
import signal
import time
from types import FrameType
from typing import Any, Dict, Iterator, Optional

# select() converts its timeout to a C timeval (or a timespec in ns) and
# raises OverflowError beyond it (~292 years in ns): an --interval of 1e10
# would fail after the first sample.  Longer waits are made of such slices.
LONGEST_WAIT = 86400.0


class StopSignals:
    """SIGINT and SIGTERM end a run cleanly instead of killing it mid-write.

    The handlers only note the request and write a byte to a pipe that
    wait() selects on (`fileno()` lets an event loop select on it too), so
    a wait returns at once, and a count or a write in progress completes
    first.  (threading.Event is no good here: a handler calling set() while
    the main thread holds the event's lock deadlocks.)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._read_fd = self._write_fd = -1
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.requested = True
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: wait() returns anyway

    def fileno(self) -> int:
        """Readable once a stop was requested."""
        return self._read_fd

    def wait(self, timeout: Optional[float]) -> bool:
        """Sleep up to `timeout` seconds (None: until a signal); True if
        a stop was requested."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            left = LONGEST_WAIT if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            select.select([self._read_fd], [], [], min(left, LONGEST_WAIT))
        return self.requested

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read_fd)
        os.close(self._write_fd)


def ticks(interval: float, count: Optional[int], stop: StopSignals) -> Iterator[int]:
    """Yield at a fixed rate from now on, until `count` ticks or a stop.

    The schedule does not drift with the time a sample takes; a sample
    that overruns its slot makes the next one skip to the following slot
    rather than fire twice in a row.
    """
    due = time.monotonic()
    n = 0
    while not stop.requested:
        yield n
        n += 1
        if count is not None and n >= count:
            return
        due += interval
        now = time.monotonic()
        if due < now:
            due += ((now - due) // interval + 1) * interval
        if stop.wait(due - now):
            return

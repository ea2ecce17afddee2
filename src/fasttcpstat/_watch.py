"""--watch: a live view of the counts, redrawn in place.

Plain ANSI escapes, no curses: the view is one screen of text rewritten
from the top-left corner, and curses would add a dependency on the
terminfo database and a C module that minimal Python builds lack.
"""
from __future__ import annotations

import datetime
import shutil
from typing import List, Optional, TextIO, Tuple

from ._counter import StateCounts
from ._formats import timestamp
from ._version import __version__

# The alternate screen keeps the user's scrollback intact, as top and less
# do; the cursor would otherwise blink at the end of the last line.
ENTER = "\x1b[?1049h\x1b[?25l"
LEAVE = "\x1b[?25h\x1b[?1049l"
HOME = "\x1b[H"
CLEAR_LINE_END = "\x1b[K"
CLEAR_BELOW = "\x1b[J"

PLAIN_WIDTH = 80


class Frame:
    """What one refresh shows."""

    def __init__(self, *, when: datetime.datetime, counts: StateCounts,
                 previous: Optional[StateCounts], seconds: float, backend: str,
                 netns: str) -> None:
        self.when = when
        self.counts = counts
        self.previous = previous
        self.seconds = seconds
        self.backend = backend
        self.netns = netns


def _bar(n: int, largest: int, width: int, block: str) -> str:
    if n <= 0 or largest <= 0 or width <= 0:
        return ""
    # At least one block, so a state that is not zero never looks like one.
    return block * max(1, n * width // largest)


def header(*, backend: str, netns: str, total: int, seconds: float,
           when: datetime.datetime) -> List[str]:
    """The two lines above every view."""
    return [f"fasttcpstat {__version__}  backend {backend}  netns {netns}",
            f"total {total}  count took {seconds * 1000:.2f} ms  {timestamp(when)}"]


def render(frame: Frame, width: int, block: str = "#") -> List[str]:
    """The lines of one frame; the bars fit in `width` columns."""
    counts = frame.counts
    total = sum(counts.values())
    top = header(backend=frame.backend, netns=frame.netns, total=total,
                 seconds=frame.seconds, when=frame.when)
    changes = {
        state: "" if frame.previous is None else f"{n - frame.previous.get(state, 0):+d}"
        for state, n in counts.items()
    }
    name_w = max([len("STATE"), *map(len, counts)])
    count_w = max([len("COUNT"), *(len(str(n)) for n in counts.values())])
    change_w = max([len("CHANGE"), *map(len, changes.values())])
    bar_w = width - (name_w + count_w + change_w + 6)
    largest = max(counts.values(), default=0)
    lines = [*top, "", f"{'STATE':<{name_w}}  {'COUNT':>{count_w}}  {'CHANGE':>{change_w}}"]
    for state, n in counts.items():
        lines.append(f"{state:<{name_w}}  {n:>{count_w}}  {changes[state]:>{change_w}}  "
                     f"{_bar(n, largest, bar_w, block)}".rstrip())
    return lines


class Screen:
    """Where frames go: redrawn in place on a terminal, appended as plain
    lines (a blank line between frames) anywhere else, such as a pipe or a
    log file, where escape sequences would only be noise.

    A context manager: the terminal gets its screen and cursor back on
    every way out, exceptions included.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self.block = "\u2588" if encoding == "utf8" else "#"

    def size(self) -> Tuple[int, Optional[int]]:
        """(columns, lines) of the terminal, asked at every frame so the
        view follows a resized one; off a terminal, PLAIN_WIDTH and no
        height limit."""
        if not self.live:
            return PLAIN_WIDTH, None
        size = shutil.get_terminal_size()
        return size.columns, size.lines

    def __enter__(self) -> "Screen":
        if self.live:
            self.stream.write(ENTER)
            self.stream.flush()
        return self

    def draw(self, frame: Frame) -> None:
        self.show(render(frame, self.size()[0], self.block))

    def show(self, lines: List[str]) -> None:
        """Put `lines` on the screen (or append them, off a terminal)."""
        width, height = self.size()
        if self.live:
            # Clipped to the screen: a wrapped line, or a line below the
            # last row, would scroll the view up.
            end = CLEAR_LINE_END + "\n"
            self.stream.write(HOME + end.join(line[:width] for line in lines[:height])
                              + CLEAR_LINE_END + CLEAR_BELOW)
        else:
            self.stream.write("\n".join(lines) + "\n\n")
        self.stream.flush()

    def __exit__(self, *exc_info: object) -> None:
        if self.live:
            self.stream.write(LEAVE)
            self.stream.flush()

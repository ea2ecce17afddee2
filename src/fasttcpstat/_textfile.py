"""Atomic writes for node_exporter's textfile collector.

node_exporter may read the file at any moment.  Written in place, it
could see it empty or cut in the middle, and export a partial sample (or
none) for that scrape.  So every sample goes to a temporary file in the
same directory (a rename is atomic only within one filesystem), is flushed
to disk, and replaces the old file with one rename: a reader opens either
the whole old file or the whole new one.
"""
from __future__ import annotations

import os

# node_exporter usually runs as another user than the writer (often as
# nobody): the file must be readable by others, whatever the umask.
FILE_MODE = 0o644


def write_atomically(path: str, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new
    content, never a mix; the data is on disk before the rename."""
    directory = os.path.dirname(os.path.abspath(path))
    # node_exporter's own advice: NAME.prom.$$ beside the file.  Hidden and
    # not ending in .prom, so the collector never reads it, nor one left
    # by a killed writer; the pid keeps concurrent writers apart.
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    # O_NOFOLLOW: a link planted under that name must not redirect the write.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                 | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(text)
            f.flush()
            # Without it, a crash soon after the rename can leave the new
            # name pointing at an empty file on some filesystems.
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # The rename itself is durable only once the directory is synced.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Running a function in a forked child inside a namespace and getting its
result back: the child joins the namespace, calls the function and sends
the pickled result (or exception, with its traceback text) through a pipe;
the parent reads to EOF and reaps the child with a deadline.  Also the
holders' control pipes, which every forked process closes so that a
holder sees EOF as soon as its creator dies.
"""
from __future__ import annotations

import os
import pickle
import select
import time
import traceback

from .population_netns import _setns_net


# Write ends of the holders' control pipes.  Every process this module forks
# closes the ones it does not own, so a holder sees EOF as soon as the process
# that created it dies, even if other holders or run() children are alive.
_CONTROL_FDS: set = set()

def _close_inherited_control_fds(keep: int = -1) -> None:
    for fd in list(_CONTROL_FDS):
        if fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass
    _CONTROL_FDS.clear()

def settle_threads(timeout: float = 5.0) -> None:
    """Wait (bounded) until this process runs one thread, before a fork.

    A thread that has finished its Python work may still be tearing down
    (freeing memory) for a moment after join(); a fork() in that moment
    copies the allocator's lock held.  glibc's malloc guards fork(), but the
    ASan runtime of the sanitizer suite (.ci/sanitize) does not, and the
    child then hangs in its first malloc() of that size.  Threads that stay
    are not waited for beyond `timeout`.
    """
    deadline = time.monotonic() + timeout
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.005)


def _read_all(fd: int, deadline: "float | None" = None) -> bytes:
    """Read until EOF; raise TimeoutError past `deadline` (monotonic)."""
    chunks = []
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no EOF before the deadline")
        data = os.read(fd, 1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

def _reap(pid: int, timeout: float) -> "int | None":
    """waitpid with a timeout; returns the raw status or None if still alive."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)

def _describe_status(status: "int | None") -> str:
    if status is None:
        return "still running"
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)

def _run_child(ns_path: str, w: int, func, args, kwargs) -> None:
    """Body of a run() child; never returns."""
    code = 0
    try:
        _close_inherited_control_fds()
        _setns_net(ns_path)
        payload = ("ok", func(*args, **kwargs), None)
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
        payload = ("error", exc, traceback.format_exc())
        code = 1
    try:
        data = pickle.dumps(payload)
    except Exception:  # the result or the exception is not picklable
        if payload[0] == "ok":
            payload = ("error", None, "result of %r is not picklable:\n%s"
                       % (func, traceback.format_exc()))
        else:
            payload = ("error", None, payload[2])
        data = pickle.dumps(payload)
        code = 1
    try:
        _write_all(w, data)
    finally:
        os._exit(code)

class ChildTraceback(Exception):
    """Carries a run() child's traceback text (as the re-raised exception's cause)."""

def _unpack_run_result(raw: bytes, func, status):
    if not raw:
        raise RuntimeError("run(%r): child died without a result (%s)"
                           % (func, _describe_status(status)))
    try:
        kind, value, tb_text = pickle.loads(raw)
    except Exception as exc:  # e.g. an exception class that does not unpickle
        raise RuntimeError("run(%r): could not unpickle the child's answer: %r"
                           % (func, exc)) from None
    if kind == "ok":
        return value
    if isinstance(value, BaseException):
        raise value from ChildTraceback("in the namespace child:\n" + tb_text)
    raise RuntimeError("run(%r) failed in the namespace child:\n%s" % (func, tb_text))


def run_in_netns(ns_path: str, func, *args, **kwargs):
    """Call func(*args, **kwargs) in a forked child that joined the network
    namespace at `ns_path`; return its (picklable) result, or re-raise its
    exception here."""
    r, w = os.pipe()
    settle_threads()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _run_child(ns_path, w, func, args, kwargs)  # never returns
    os.close(w)
    try:
        raw = _read_all(r)
    finally:
        os.close(r)
        status = _reap(pid, 60.0)
    return _unpack_run_result(raw, func, status)

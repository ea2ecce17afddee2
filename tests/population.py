"""Build real TCP socket populations inside a private network namespace.

A :class:`Population` forks a *holder* process that unshares a fresh network
namespace, brings ``lo`` up, tunes a few per-namespace sysctls, creates the
sockets a :class:`Spec` asks for (loopback only: 127.0.0.0/8 and ::1), waits
until the kernel shows exactly the intended per-family per-state counts, and
then keeps every socket alive until told to stop.  ``Population.run()`` forks
a short-lived child that joins that namespace and calls a function there, so
counting code under test sees only the population.

Large populations (the benchmark's 100k-1M sockets) do not fit in one process's
RLIMIT_NOFILE: ``Population(spec, workers="auto")`` splits the spec
(:func:`split_spec`) over worker processes that the holder forks after
unsharing, so they share its namespace; each builds and holds its part.

``Population.expected`` is derived from the spec alone (:func:`expected_counts`),
never from a measurement; the holder's convergence wait compares the kernel's
view against it and reports the difference if they never match.

Lifetimes: TIME_WAIT and orphaned FIN_WAIT2 sockets live ~60 s after the build,
so a population is exact only for about a minute (see ``Population.fresh_until``).
SYN_SENT lives ~4 min (tcp_syn_retries=7), SYN_RECV ~10 min (TCP_DEFER_ACCEPT).
For long measurements, ``long_lived=True`` keeps SYN_SENT and SYN_RECV for
hours, and ``Population.refresh_time_wait()`` replaces the TIME_WAIT sockets
with fresh ones (another ~60 s).

The module holds the public handle (:class:`Population`, its holder and
workers) and re-exports every name the tests use; the jobs live beside it:
population_spec.py (what to build and what it must count),
population_netns.py (the namespace itself), population_builder.py (the
sockets of each scenario), population_reference.py (ss, /proc and netlink
reference counters) and population_fork.py (running a function in a forked
child and getting its result back).

Only the standard library is used; Python >= 3.8 (no os.unshare/os.setns: libc
is called through ctypes).
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sys
import time
import traceback

# Besides what this module uses, the names other tests import from here
# (tests.population was one module): keep them importable.
from .population_builder import (
    DEFER_ACCEPT_SECONDS,
    LONG_DEFER_ACCEPT_SECONDS,
    _Builder,
    _build,
    _refresh_time_wait,
    _wait_converged,
)
from .population_fork import (
    ChildTraceback,
    _CONTROL_FDS,
    _close_inherited_control_fds,
    _describe_status,
    _read_all,
    _reap,
    run_in_netns,
    settle_threads,
    _write_all,
)
from .population_netns import (
    _bring_lo_up,
    _own_ehash,
    _raise_nofile,
    _unshare_net,
    _write_sysctls,
)
from .population_reference import (
    ALL_STATES_MASK,
    BOUND_INACTIVE_MASK,
    SS_STATE_NAMES,
    diag_counts,
    diff_counts,
    proc_counts,
    ss_counts,
    ss_shows_bound_inactive,
)
from .population_spec import (
    EXACT_FOR_SECONDS,
    FAMILIES,
    FD_RESERVE,
    PopulationError,
    SCENARIO_YIELDS,
    SMALL_SPEC,
    STATES,
    Spec,
    _port_ranges,
    _sum_counts,
    expected_counts,
    fds_needed,
    split_spec,
)

__all__ = [
    "STATES",
    "FAMILIES",
    "Spec",
    "SMALL_SPEC",
    "Population",
    "PopulationError",
    "split_spec",
    "ChildTraceback",
    "expected_counts",
    "fds_needed",
    "ss_counts",
    "SS_STATE_NAMES",
    "ss_shows_bound_inactive",
    "proc_counts",
    "diag_counts",
    "diff_counts",
    "netns_supported",
]


_netns_support = None

def netns_supported() -> "tuple[bool, str]":
    """(True, "") if this process may create a network namespace, else
    (False, reason).  Probed once, in a forked child, so the caller's own
    namespace is never touched."""
    global _netns_support
    if _netns_support is None:
        _netns_support = _probe_netns()
    return _netns_support

def _probe_netns() -> "tuple[bool, str]":
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux (platform is %s)" % sys.platform
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        msg = b""
        try:
            _unshare_net()
            _bring_lo_up()
        except BaseException as exc:  # noqa: BLE001 - report anything
            msg = ("unshare(CLONE_NEWNET) failed: %r" % (exc,)).encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    try:
        msg = _read_all(r)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if msg:
        return False, msg.decode(errors="replace")
    return True, ""

def _worker_main(part: Spec, ports, options: dict, hold_r: int, status_w: int) -> None:
    """Body of a worker process (forked by the holder, so in its namespace):
    build one part, report, hold it until the holder goes away.  Never returns."""
    try:
        t0 = time.monotonic()
        _raise_nofile()
        builder = _build(part, ports=ports, **options)  # noqa: F841 - keeps the sockets
        report = {"build_seconds": time.monotonic() - t0}
    except BaseException:  # noqa: BLE001 - everything must reach the holder
        report = {"error": "worker %d failed:\n%s" % (os.getpid(), traceback.format_exc())}
    try:
        _write_all(status_w, pickle.dumps(report))
        os.close(status_w)
    except OSError:
        os._exit(3)
    if "error" in report:
        os._exit(2)
    try:
        os.read(hold_r, 1)          # EOF: the holder has exited
    except BaseException:  # noqa: BLE001 - e.g. KeyboardInterrupt: just exit
        pass
    os._exit(0)

def _build_in_workers(parts: list, options: dict, keep_fds: "tuple[int, ...]") -> list:
    """Fork one worker per part, wait until each has built its part.
    Returns the write ends of the pipes the workers hold on (close them, or
    exit, to release the workers).  Raises PopulationError on any failure,
    after killing the workers."""
    pids, holds = [], []
    try:
        started = []
        for part, ports in zip(parts, _port_ranges(parts)):
            hold_r, hold_w = os.pipe()
            status_r, status_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    # Our pipes to the parent and the other workers' ends:
                    # a worker that kept them would hide EOFs.
                    for fd in keep_fds + tuple(holds) + (hold_w, status_r):
                        os.close(fd)
                finally:
                    _worker_main(part, ports, options, hold_r, status_w)
            os.close(hold_r)
            os.close(status_w)
            pids.append(pid)
            holds.append(hold_w)
            started.append(status_r)
        errors = []
        for status_r in started:
            try:
                raw = _read_all(status_r)
            finally:
                os.close(status_r)
            report = pickle.loads(raw) if raw else {"error": "a worker died without a report"}
            if "error" in report:
                errors.append(report["error"])
        if errors:
            raise PopulationError("%d of %d workers failed; first: %s"
                                  % (len(errors), len(parts), errors[0]))
        return holds
    except BaseException:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise

def _holder_main(spec: Spec, settle_timeout: float, control_r: int, status_w: int,
                 parts: "list | None" = None, long_lived: bool = False,
                 ehash_entries: int = 0) -> None:
    """Body of the holder process; never returns (os._exit)."""
    try:
        report = {"pid": os.getpid()}
        t0 = time.monotonic()
        if ehash_entries:
            _own_ehash(ehash_entries)
        _unshare_net()
        _bring_lo_up()
        _write_sysctls(long_lived)
        _raise_nofile()
        t1 = time.monotonic()
        options = {"timeout": max(5.0, settle_timeout),
                   "defer_accept": LONG_DEFER_ACCEPT_SECONDS if long_lived else DEFER_ACCEPT_SECONDS}
        # `builder` (or the workers' pipes) keeps every socket alive: it must
        # stay referenced (this frame never returns).
        if parts is None:
            builder = _build(spec, **options)  # noqa: F841
            expected = expected_counts(spec)
        else:
            builder = _build_in_workers(parts, options, (control_r, status_w))  # noqa: F841
            expected = _sum_counts([expected_counts(p) for p in parts])
        t2 = time.monotonic()
        diff = _wait_converged(expected, settle_timeout)
        t3 = time.monotonic()
        report.update(setup_seconds=t1 - t0, build_seconds=t2 - t1, settle_seconds=t3 - t2)
        if diff:
            report["error"] = ("kernel counts did not converge to the expected ones "
                               "within %.1f s; {family: {state: (expected, actual)}}: %r"
                               % (settle_timeout, diff))
    except BaseException:  # noqa: BLE001 - everything must reach the parent
        report = {"error": "holder failed:\n" + traceback.format_exc()}
    try:
        _write_all(status_w, pickle.dumps(report))
        os.close(status_w)
    except OSError:
        os._exit(3)
    if "error" in report:
        os._exit(2)
    # Hold every socket until the parent says stop or goes away (EOF).
    try:
        os.read(control_r, 64)
    except BaseException:  # noqa: BLE001 - e.g. KeyboardInterrupt: just exit
        pass
    os._exit(0)


class Population:
    """A socket population held by a forked process in its own network
    namespace.  Use as a context manager, or call close()."""

    def __init__(self, spec: Spec, *, settle_timeout: float = 30.0,
                 workers: "int | str | None" = None, long_lived: bool = False,
                 ehash_entries: int = 0) -> None:
        """workers: None builds and holds everything in the holder (the spec
        must fit its RLIMIT_NOFILE); "auto" splits the spec over as few
        worker processes as the fd limit allows; an int N spreads it over at
        least N workers (building in parallel).
        long_lived: keep SYN_SENT and SYN_RECV for hours instead of minutes.
        ehash_entries: give the namespace its own established-hash table
        of that many buckets (see _own_ehash); 0 shares the host's."""
        self.spec = spec
        self.long_lived = long_lived
        self.ehash_entries = ehash_entries
        self.parts = None if workers is None else self._split(spec, workers)
        if self.parts is None:
            self.expected = expected_counts(spec)
        else:
            self.expected = _sum_counts([expected_counts(p) for p in self.parts])
        self.holder_pid = 0
        self.ns_path = ""
        self.timings: dict = {}
        self.fresh_until = 0.0          # time.monotonic() bound for exact counts
        self._control_w = -1
        if self.parts is None:
            self._check_fd_budget()
        self._start(settle_timeout)

    @staticmethod
    def _split(spec: Spec, workers: "int | str") -> list:
        if workers == "auto":
            return split_spec(spec)
        if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
            return split_spec(spec, parts=workers)
        raise ValueError("workers must be None, 'auto' or an int >= 1, not %r" % (workers,))

    @property
    def workers(self) -> int:
        """Number of worker processes holding sockets (0: the holder alone)."""
        return len(self.parts) if self.parts is not None else 0

    # ---- lifecycle -------------------------------------------------------

    def _check_fd_budget(self) -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        need = fds_needed(self.spec) + FD_RESERVE
        if hard != resource.RLIM_INFINITY and need > hard:
            raise PopulationError(
                "spec needs ~%d file descriptors in one holder process but the "
                "RLIMIT_NOFILE hard limit is %d (pass workers='auto' to split it "
                "over worker processes, or raise the limit)" % (need, hard))

    def _start(self, settle_timeout: float) -> None:
        control_r, control_w = os.pipe()
        status_r, status_w = os.pipe()
        settle_threads()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # holder
            try:
                _close_inherited_control_fds()
                os.close(control_w)
                os.close(status_r)
            finally:
                _holder_main(self.spec, settle_timeout, control_r, status_w,
                             self.parts, self.long_lived, self.ehash_entries)
        os.close(control_r)
        os.close(status_w)
        self.holder_pid = pid
        self._control_w = control_w
        _CONTROL_FDS.add(control_w)
        try:
            # Generous: the holder enforces settle_timeout itself; this only
            # guards against a hung build.
            raw = _read_all(status_r, deadline=t0 + settle_timeout + 300)
        except TimeoutError:
            self.close()
            raise PopulationError("holder %d did not report within %.0f s"
                                  % (pid, settle_timeout + 300)) from None
        finally:
            os.close(status_r)
        report = pickle.loads(raw) if raw else None
        if report is None or "error" in report:
            status = _reap(pid, 5.0)
            self.close()
            detail = report["error"] if report else "no report (%s)" % _describe_status(status)
            raise PopulationError("population %r: %s" % (self.spec, detail))
        self.timings = {k: v for k, v in report.items() if k.endswith("_seconds")}
        # From the build's start: its first TIME_WAIT sockets expire first.
        self.fresh_until = t0 + EXACT_FOR_SECONDS
        self.ns_path = "/proc/%d/ns/net" % pid

    def close(self) -> None:
        """Tell the holder to exit and reap it.  Idempotent."""
        if self._control_w >= 0:
            _CONTROL_FDS.discard(self._control_w)
            try:
                os.write(self._control_w, b"stop")
            except OSError:
                pass                        # holder already gone
            os.close(self._control_w)
            self._control_w = -1
        if self.holder_pid:
            if _reap(self.holder_pid, 10.0) is None:
                os.kill(self.holder_pid, signal.SIGKILL)
                _reap(self.holder_pid, 10.0)
            self.holder_pid = 0

    def __enter__(self) -> "Population":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def total(self) -> int:
        """Expected number of visible sockets, both families."""
        return sum(sum(per.values()) for per in self.expected.values())

    def is_fresh(self) -> bool:
        """False once TIME_WAIT / orphan FIN_WAIT2 sockets may start expiring."""
        return time.monotonic() < self.fresh_until

    def refresh_time_wait(self) -> float:
        """Replace the spec's TIME_WAIT sockets with new ones, exact for
        another EXACT_FOR_SECONDS; returns the seconds it took.

        The old ones are destroyed first (SOCK_DESTROY, through `ss -K`: the
        kernel needs CONFIG_INET_DIAG_DESTROY), so the counts are the
        expected ones again once this returns; while it runs they are not.
        Orphaned FIN_WAIT2 sockets cannot be refreshed this way (their peer's
        fd lives in the holder): a spec with them is refused."""
        if self.spec.orphan_fin_wait2_4:
            raise PopulationError("refresh_time_wait: orphaned FIN_WAIT2 sockets cannot "
                                  "be refreshed; use a spec without orphan_fin_wait2_4")
        t0 = time.monotonic()
        self.run(_refresh_time_wait, self.spec.time_wait4, self.spec.time_wait6)
        self.fresh_until = t0 + EXACT_FOR_SECONDS
        return time.monotonic() - t0

    # ---- running code inside the namespace ---------------------------------

    def run(self, func, *args, **kwargs):
        """Call func(*args, **kwargs) in a forked child that joined the
        population's network namespace; return its (picklable) result, or
        re-raise its exception here."""
        if not self.holder_pid:
            raise PopulationError("population is closed")
        return run_in_netns(self.ns_path, func, *args, **kwargs)

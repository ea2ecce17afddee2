"""Running the methods on one population: workers, whole-process runs, rounds.

In-process: every method gets its own long-lived worker process inside the
population's namespace (bench/worker.py, or bare_diag --serve), started
once; its first count is a warm-up and is dropped.  Whole process: one
fresh process per count, started through bench/c/execwrap, which joins the
namespace, forks, execs and reports wait4()'s rusage.

Rounds are interleaved: each round runs every method once in-process and
once as a whole process, in an order rotated from round to round, so slow
drifts (page cache, kernel memory, timers) spread over all methods alike.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import methods as M

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# Rough per-count cost per 10k sockets (seconds), only to decide before the
# first count whether a TIME_WAIT refresh is due; measured values replace it.
GUESS_PER_10K = {"pyroute2": 1.0, "psutil": 0.25}
GUESS_DEFAULT_PER_10K = 0.06
START_UP_GUESS = 1.0         # a whole-process run's interpreter and imports

# A count that could run past this many seconds after a TIME_WAIT refresh
# is preceded by a new refresh (TIME_WAIT lives 60 s; tests.population's
# EXACT_FOR_SECONDS keeps a margin already).
SAFETY_SECONDS = 3.0


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# C helpers
# --------------------------------------------------------------------------

class Helpers:
    """bare_diag and execwrap, compiled at run time into a temporary dir
    (so a fresh checkout needs nothing but gcc)."""

    CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]

    def __init__(self, cc: str = "gcc") -> None:
        self.dir = tempfile.mkdtemp(prefix="fasttcpstat-bench-")
        self.cc = cc
        self.bare_diag = self._compile("bare_diag")
        self.execwrap = self._compile("execwrap")

    def _compile(self, name: str) -> str:
        src = os.path.join(BENCH_DIR, "c", name + ".c")
        out = os.path.join(self.dir, name)
        cmd = [self.cc] + self.CFLAGS + ["-o", out, src]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        if proc.returncode != 0:
            raise BenchError("compiling %s failed:\n%s\n%s" % (src, " ".join(cmd), proc.stdout))
        return out

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# In-process workers
# --------------------------------------------------------------------------

class _LineReader:
    """Read whole lines from a pipe with a timeout (select + os.read)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def readline(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("no answer within %.0f s" % timeout)
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise EOFError("worker closed its output")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


class InProcessWorker:
    """One method's long-lived counting process in the namespace."""

    def __init__(self, key: str, ns_path: str, helpers: Helpers, python: str,
                 timeout: float = 120.0) -> None:
        self.key = key
        self.life_report = os.path.join(helpers.dir, "life-%s.json" % key)
        if M.BY_KEY[key].runner == "c":
            inner = [helpers.bare_diag, "--serve"] + (["--legacy"] if key == "bare-c-legacy" else [])
        else:
            inner = [python, "-s", os.path.join(BENCH_DIR, "worker.py"), key]
        argv = [helpers.execwrap, "-n", ns_path, "-o", self.life_report, "--"] + inner
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, cwd=BENCH_DIR)
        self.reader = _LineReader(self.proc.stdout.fileno())
        self.ready = self._answer(timeout)

    def _answer(self, timeout: float) -> dict:
        try:
            return json.loads(self.reader.readline(timeout))
        except (TimeoutError, EOFError, ValueError) as exc:
            raise BenchError("%s worker: %s%s" % (self.key, exc, self._stderr_tail())) from None

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return ("\n  stderr: " + text[-2000:]) if text else ""

    def count(self, timeout: float) -> dict:
        try:
            self.proc.stdin.write(b"count\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError("%s worker died%s" % (self.key, self._stderr_tail())) from None
        return self._answer(timeout)

    def close(self) -> Optional[dict]:
        """Stop the worker; returns execwrap's report of its whole life."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()
        try:
            with open(self.life_report) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


# --------------------------------------------------------------------------
# Whole-process runs
# --------------------------------------------------------------------------

def whole_process(key: str, ns_path: str, helpers: Helpers, python: str,
                  timeout: float) -> dict:
    """One count by `key` in a fresh process; execwrap's report + counts."""
    report = os.path.join(helpers.dir, "whole-%s.json" % key)
    argv = [helpers.execwrap, "-n", ns_path, "-o", report, "--"] + M.whole_process_argv(
        key, python, BENCH_DIR, helpers.bare_diag)
    # Output goes to a file: `ss -tan` prints ~100 MB at 1M sockets.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdout=out, stderr=err, cwd=BENCH_DIR, timeout=timeout)
        out.seek(0)
        text = out.read().decode()
        err.seek(0)
        err_text = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise BenchError("whole-process %s exited %d: %s" % (key, proc.returncode, err_text[-2000:]))
    with open(report) as f:
        sample = json.load(f)
    sample["counts"] = M.parse_whole_process_output(key, text)
    return sample


# --------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------

class Freshness:
    """Keeps a population's TIME_WAIT sockets from expiring mid-count."""

    def __init__(self, pop, size: int, log: Callable[[str], None]) -> None:
        self.pop = pop
        self.size = size
        self.log = log
        self.has_time_wait = bool(pop.spec.time_wait4 or pop.spec.time_wait6)
        self.refreshes = 0
        self.refresh_seconds = 0.0
        self.estimates: Dict[tuple, float] = {}   # (key, mode) -> last wall seconds
        self.stale: List[str] = []       # counts that could not be kept fresh

    def estimate(self, key: str, mode: str) -> float:
        if (key, mode) in self.estimates:
            return self.estimates[(key, mode)]
        inproc = self.estimates.get((key, "inproc"))
        if inproc is None:
            inproc = GUESS_PER_10K.get(key, GUESS_DEFAULT_PER_10K) * self.size / 10_000
        return inproc + (START_UP_GUESS if mode == "whole" else 0.0)

    def learn(self, key: str, mode: str, wall: float) -> None:
        self.estimates[(key, mode)] = wall

    def before(self, key: str, mode: str) -> None:
        if not self.has_time_wait:
            return
        need = 1.5 * self.estimate(key, mode) + SAFETY_SECONDS
        if time.monotonic() + need < self.pop.fresh_until:
            return
        seconds = self.pop.refresh_time_wait()
        self.refreshes += 1
        self.refresh_seconds += seconds
        if time.monotonic() + need >= self.pop.fresh_until:
            self.stale.append("%s/%s (needs ~%.0f s)" % (key, mode, need))

    def after(self, key: str, mode: str) -> None:
        if self.has_time_wait and not self.pop.is_fresh():
            self.stale.append("%s/%s ended after TIME_WAIT could expire" % (key, mode))


def run_population(pop, size: int, keys: List[str], rounds: int, helpers: Helpers,
                   python: str, log: Callable[[str], None]) -> dict:
    """Measure every method in `keys` on `pop`; returns raw samples per method
    and bookkeeping.  Errors of one method are recorded, not raised."""
    fresh = Freshness(pop, size, log)
    timeout = max(120.0, 600.0 * size / 1_000_000)    # pyroute2 at 1M: ~150 s
    results: Dict[str, dict] = {k: {"inproc": [], "whole": [], "warmup": None, "errors": []}
                                for k in keys}
    workers: Dict[str, InProcessWorker] = {}
    try:
        for key in keys:
            try:
                workers[key] = InProcessWorker(key, pop.ns_path, helpers, python)
                results[key]["setup"] = workers[key].ready
            except BenchError as exc:
                results[key]["errors"].append(str(exc))
        log("  workers ready: %d/%d" % (len(workers), len(keys)))
        # Warm-up: one dropped count each (first-call costs: page faults,
        # lazy imports, the kernel's first dump into a cold netlink socket).
        for key, worker in list(workers.items()):
            fresh.before(key, "inproc")
            try:
                sample = worker.count(timeout)
            except BenchError as exc:
                results[key]["errors"].append(str(exc))
                del workers[key]
                continue
            fresh.learn(key, "inproc", sample["wall"])
            results[key]["warmup"] = sample
        for r in range(rounds):
            t0 = time.monotonic()
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for key in order:
                _one_round(key, r, workers, results, fresh, pop, helpers, python, timeout)
            log("  round %d/%d: %.1f s" % (r + 1, rounds, time.monotonic() - t0))
    finally:
        for key, worker in workers.items():
            results[key]["life"] = worker.close()
    return {
        "methods": results,
        "time_wait_refreshes": fresh.refreshes,
        "time_wait_refresh_seconds": fresh.refresh_seconds,
        "stale_counts": fresh.stale,
    }


def _one_round(key, r, workers, results, fresh, pop, helpers, python, timeout) -> None:
    if key in workers:
        fresh.before(key, "inproc")
        try:
            sample = workers[key].count(timeout)
            sample["round"] = r
            fresh.after(key, "inproc")
            fresh.learn(key, "inproc", sample["wall"])
            results[key]["inproc"].append(sample)
        except BenchError as exc:
            results[key]["errors"].append("round %d in-process: %s" % (r, exc))
            workers.pop(key).close()
    fresh.before(key, "whole")
    try:
        sample = whole_process(key, pop.ns_path, helpers, python, timeout + 60)
        sample["round"] = r
        fresh.after(key, "whole")
        fresh.learn(key, "whole", sample["wall"])
        results[key]["whole"].append(sample)
    except (BenchError, subprocess.TimeoutExpired, ValueError, OSError) as exc:
        results[key]["errors"].append("round %d whole process: %s" % (r, exc))


def median(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          stdout=subprocess.PIPE, universal_newlines=True).stdout.strip() \
        or sys.version.split()[0]

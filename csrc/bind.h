/*
 * Helpers shared by the Python binding's types (bind_util.c): errors,
 * locks, signals while the GIL is released, tallies as tuples.
 */
#ifndef FASTTCPSTAT_BIND_H
#define FASTTCPSTAT_BIND_H

#include "Python.h"

#include <time.h>

/* PyMem_Calloc is in the stable ABI since 3.7, but the 3.8 and 3.9 headers
 * declare it only outside the limited API (fixed in 3.10).  Without this,
 * a build on 3.8/3.9 sees an implicit int-returning declaration. */
#if defined(Py_LIMITED_API) && PY_VERSION_HEX < 0x030A0000
PyAPI_FUNC(void *) PyMem_Calloc(size_t nelem, size_t elsize);
#endif

#include "diag.h"

/* Raise OSError(errno, "<context>: <step>: <strerror>"); OSError's
 * constructor picks the subclass (PermissionError, ...) from errno. */
void fts_py_raise(const struct fts_error *e, const char *context);

/* Take a lock without holding the GIL while waiting. */
void fts_py_lock(PyThread_type_lock lock);

/* Let Python run its signal handlers during a system call made with the
 * GIL released: on EINTR, and every 10 ms between chunks of a dump (a
 * netlink dump never blocks, so EINTR alone would leave Ctrl-C unseen until
 * the end of a long dump).  A KeyboardInterrupt (or any exception a handler
 * raises) aborts.  Only the main thread runs handlers: elsewhere the
 * between-chunks look is skipped, since taking the GIL would only slow the
 * dump down.
 *   struct fts_py_released ctx;
 *   if (fts_py_released_prepare(&ctx) < 0) fail;  (with the GIL: runs Python)
 *   fts_py_released_start(&ctx);
 *   ctx.tstate = PyEval_SaveThread();
 *   ... fts_count(..., fts_py_check_signals, &ctx, ...) ...
 *   PyEval_RestoreThread(ctx.tstate); */
struct fts_py_released {
    PyThreadState *tstate;
    int poll;               /* look between chunks too */
    struct timespec next;   /* not before then */
};
/* Returns -1 with an exception set (a signal handler raised). */
int fts_py_released_prepare(struct fts_py_released *ctx);
void fts_py_released_start(struct fts_py_released *ctx);
int fts_py_check_signals(void *arg, int interrupted);

/* (ipv4, ipv6): two tuples of FTS_NSTATES counts. */
PyObject *fts_py_tally_pair(const uint64_t counts[FTS_NFAMILIES][FTS_NSTATES]);

/* Read a sequence of (low, high) port ranges into `out` (room for
 * `room`).  Returns the number read, or -1 with an exception set. */
Py_ssize_t fts_py_parse_ranges(PyObject *seq, const char *name,
                               struct fts_port_range *out, Py_ssize_t room);

/* Add the BPF iterator backend's type and functions (bind_bpf.c). */
int fts_py_add_bpf(PyObject *module);

#endif /* FASTTCPSTAT_BIND_H */

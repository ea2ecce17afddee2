/*
 * Helpers shared by the Python binding's types (bind_util.c): errors,
 * locks, signals while the GIL is released, tallies as tuples.
 */
#ifndef FASTTCPSTAT_BIND_H
#define FASTTCPSTAT_BIND_H

#include "Python.h"

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

/* The thread state saved by PyEval_SaveThread() around a system call.
 * fts_py_check_signals(&it) is an fts_interrupt_fn: on EINTR it runs
 * Python's signal handlers; one that raises (KeyboardInterrupt) aborts. */
struct fts_py_released {
    PyThreadState *tstate;
};
int fts_py_check_signals(void *arg);

/* (ipv4, ipv6): two tuples of FTS_NSTATES counts. */
PyObject *fts_py_tally_pair(const uint64_t counts[FTS_NFAMILIES][FTS_NSTATES]);

/* Read a sequence of (low, high) port ranges into `out` (room for
 * `room`).  Returns the number read, or -1 with an exception set. */
Py_ssize_t fts_py_parse_ranges(PyObject *seq, const char *name,
                               struct fts_port_range *out, Py_ssize_t room);

/* Add the BPF iterator backend's type and functions (bind_bpf.c). */
int fts_py_add_bpf(PyObject *module);

#endif /* FASTTCPSTAT_BIND_H */

/*
 * What the Python bindings of the backends share:
 *  - bind_core.c: the counter core every counter type embeds (one count
 *    at a time, fork(), re-entry, the closed state, the system call made
 *    with the GIL released while signal handlers keep running);
 *  - bind_util.c: errors, argument checks, tallies as tuples.
 */
#ifndef FASTTCPSTAT_BIND_H
#define FASTTCPSTAT_BIND_H

#include "Python.h"

#include <sys/types.h>
#include <time.h>

/* PyMem_Calloc is in the stable ABI since 3.7, but the 3.8 and 3.9 headers
 * declare it only outside the limited API (fixed in 3.10).  Without this,
 * a build on 3.8/3.9 sees an implicit int-returning declaration. */
#if defined(Py_LIMITED_API) && PY_VERSION_HEX < 0x030A0000
PyAPI_FUNC(void *) PyMem_Calloc(size_t nelem, size_t elsize);
#endif

#include "diag.h"
#include "diag_cgroup.h"

/* ---- the counter core (bind_core.c) ----------------------------------- */

/* The one message of every operation on a closed counter, any backend. */
#define FTS_CLOSED_MESSAGE "I/O operation on a closed counter"

struct fts_core {
    /* One count at a time: two threads must not share one socket mid-dump
     * or one counter map mid-walk. */
    PyThread_type_lock lock;
    /* The process the lock belongs to: a child of fork() gets a copy that
     * may be held by a thread fork() did not copy; it then gets a fresh
     * one.  The thread holding it, or 0, to refuse re-entry instead of
     * deadlocking.  Both only change with the GIL held. */
    pid_t lock_pid;
    unsigned long holder;
    /* close() was called: every operation raises ValueError, nothing is
     * reopened.  Read without the lock by `closed`, hence atomics. */
    int closed;
};

/* 0, or -1 with MemoryError set. */
int fts_core_init(struct fts_core *core);
void fts_core_free(struct fts_core *core);

/* Take the lock (the GIL released while waiting).  Returns -1 with an
 * exception set: RuntimeError for a re-entry from the counting thread (a
 * signal handler or a finalizer run between chunks), MemoryError. */
int fts_core_lock(struct fts_core *core);
/* The same, refusing a closed counter with ValueError. */
int fts_core_lock_open(struct fts_core *core);
void fts_core_unlock(struct fts_core *core);
/* 1 after close(); an atomic read, with or without the lock. */
int fts_core_is_closed(struct fts_core *core);
/* close(): under the lock, `release` frees the object's descriptors
 * (once: closing again does nothing, as for files).  Returns None, or
 * NULL with an exception set. */
PyObject *fts_core_close(struct fts_core *core, void (*release)(PyObject *),
                         PyObject *self);
/* The `closed` getter: needs no lock. */
PyObject *fts_core_closed(struct fts_core *core);

/* Let Python run its signal handlers during a system call made with the
 * GIL released: on EINTR, and every 10 ms between chunks of a dump (a
 * netlink dump never blocks, so EINTR alone would leave Ctrl-C unseen until
 * the end of a long dump).  A KeyboardInterrupt (or any exception a handler
 * raises) aborts.  Only the main thread runs handlers: elsewhere the
 * between-chunks look is skipped, since taking the GIL would only slow the
 * dump down.  Pass fts_py_check_signals and the struct to the core. */
struct fts_py_released {
    PyThreadState *tstate;
    int poll;               /* look between chunks too */
    struct timespec next;   /* not before then */
};
int fts_py_check_signals(void *arg, int interrupted);

/* One locked call: `work` runs with the GIL released and the lock held,
 * on an open counter.  It fills `err` (and may name another `context`)
 * on failure. */
struct fts_core_call {
    struct fts_py_released released;
    struct fts_error err;
    const char *context;
};
typedef int (*fts_core_work)(PyObject *self, void *arg,
                             struct fts_core_call *call);

/* Lock, refuse if closed, release the GIL, run `work`, and map a failure
 * to OSError("<context>: <step>: <strerror>") or to the exception a
 * signal handler raised.  Returns work's result, or -1 with an exception
 * set. */
int fts_core_run(struct fts_core *core, fts_core_work work, PyObject *self,
                 void *arg, const char *context);

/* ---- helpers (bind_util.c) -------------------------------------------- */

/* Raise OSError(errno, "<context>: <step>: <strerror>"), followed by
 * "; verifier log:\n<log>" if `log` (NULL or a BPF verifier's log, which
 * says why a program was refused) is not empty.  OSError's constructor
 * picks the subclass (PermissionError, ...) from errno. */
void fts_py_raise(const struct fts_error *e, const char *context,
                  const char *log);

/* Room for a verifier's log: enough for the reason of a refusal. */
#define FTS_PY_LOG_SIZE (256 * 1024)

/* Load a program for `self` with `load`, the GIL released, and on a
 * refusal raise OSError("<context>: ...") with the verifier's log.
 * Returns 0, or -1 with an exception set. */
typedef int (*fts_py_loader)(PyObject *self, char *log, size_t logsize,
                             struct fts_error *e);
int fts_py_load(PyObject *self, fts_py_loader load, const char *context);

/* ValueError unless `families` is FAMILY_IPV4, FAMILY_IPV6 or both. */
int fts_py_check_families(unsigned int families);

/* (ipv4, ipv6): two tuples of FTS_NSTATES counts. */
PyObject *fts_py_tally_pair(const uint64_t counts[FTS_NFAMILIES][FTS_NSTATES]);

/* A port filter read from Python: `local` then `remote` ranges in one
 * PyMem array (free it with fts_py_filter_free). */
struct fts_py_filter {
    struct fts_port_range *ranges;
    size_t nlocal;
    size_t nremote;
};
/* Read two sequences of (low, high) port ranges (NULL: none).  Returns 0,
 * or -1 with an exception naming the argument. */
int fts_py_filter_parse(PyObject *local, PyObject *remote,
                        struct fts_py_filter *out);
void fts_py_filter_free(struct fts_py_filter *f);

/* A per-cgroup tally with room for `max` (1..FTS_MAX_BY_CGROUP)
 * cgroups in a table at most half full; free its slots with PyMem_Free.
 * 0, or -1 with MemoryError set. */
int fts_py_cgroup_tally_alloc(struct fts_cgroup_tally *tally, int max);

/* (totals, ({cgroup id: (ipv4, ipv6)}, unowned, overflow)): a count's
 * result with its breakdown by cgroup.  Steals `totals` (NULL: an error
 * already set, passed through). */
PyObject *fts_py_cgroup_result(PyObject *totals,
                               const struct fts_cgroup_tally *tally);

/* Parse the kernel's BTF (`path` NULL: the running kernel's) and let
 * `read` fill `out` from it, the GIL released.  0, or -1 with OSError
 * ("<context>: ...") set. */
struct fts_btf;
typedef int (*fts_btf_reader)(const struct fts_btf *btf, void *out,
                              struct fts_error *err);
int fts_py_read_btf(const char *path, fts_btf_reader read, void *out,
                    const char *context);

/* Integer constants the extension exports: the one source of every
 * number Python shares with C (tests/test_constants.py ties Python's
 * copies to them). */
struct fts_py_constant {
    const char *name;
    long value;
};
/* Add a table ending with {NULL, 0}; -1 with an exception set. */
int fts_py_add_constants(PyObject *module,
                         const struct fts_py_constant *table);

/* Add the BPF iterator backend's type and functions (bind_bpf.c). */
int fts_py_add_bpf(PyObject *module);

/* Add the walk backend's type and function (bind_walk.c). */
int fts_py_add_walk(PyObject *module);

#endif /* FASTTCPSTAT_BIND_H */

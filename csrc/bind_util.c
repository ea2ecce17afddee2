/*
 * Helpers shared by the binding's types (bind.h).
 */
#include "bind.h"

#include <errno.h>
#include <string.h>

void
fts_py_raise(const struct fts_error *e, const char *context)
{
    PyObject *msg = PyUnicode_FromFormat("%s: %s: %s", context, e->what,
                                         strerror(e->err));
    if (msg == NULL) {
        return;
    }
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", e->err, msg);
    Py_DECREF(msg);
    if (exc == NULL) {
        return;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

void
fts_py_lock(PyThread_type_lock lock)
{
    if (!PyThread_acquire_lock(lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

#define POLL_INTERVAL_NS 10000000L  /* 10 ms */

/* 1 if the calling thread is the main one, 0 if not, -1 with an exception
 * set.  This runs Python code (threading.main_thread()), so a signal
 * handler may run and raise here, e.g. KeyboardInterrupt: that must reach
 * the caller, not be cleared. */
static int
runs_signal_handlers(void)
{
    int result = -1;
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main = threading == NULL ? NULL
        : PyObject_CallMethod(threading, "main_thread", NULL);
    PyObject *ident = main == NULL ? NULL
        : PyObject_GetAttrString(main, "ident");
    if (ident != NULL) {
        unsigned long id = PyLong_AsUnsignedLong(ident);
        if (!PyErr_Occurred()) {
            result = id == PyThread_get_thread_ident();
        }
    }
    Py_XDECREF(ident);
    Py_XDECREF(main);
    Py_XDECREF(threading);
    return result;
}

int
fts_py_released_prepare(struct fts_py_released *ctx)
{
    ctx->tstate = NULL;
    ctx->poll = runs_signal_handlers();
    fts_py_released_start(ctx);
    return ctx->poll < 0 ? -1 : 0;
}

void
fts_py_released_start(struct fts_py_released *ctx)
{
    clock_gettime(CLOCK_MONOTONIC, &ctx->next);
    ctx->next.tv_nsec += POLL_INTERVAL_NS;
    if (ctx->next.tv_nsec >= 1000000000L) {
        ctx->next.tv_sec++;
        ctx->next.tv_nsec -= 1000000000L;
    }
}

int
fts_py_check_signals(void *arg, int interrupted)
{
    struct fts_py_released *ctx = arg;
    if (!interrupted) {
        if (!ctx->poll) {
            return 0;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec < ctx->next.tv_sec
            || (now.tv_sec == ctx->next.tv_sec
                && now.tv_nsec < ctx->next.tv_nsec)) {
            return 0;
        }
        fts_py_released_start(ctx);
    }
    PyEval_RestoreThread(ctx->tstate);
    int failed = PyErr_CheckSignals();
    ctx->tstate = PyEval_SaveThread();
    return failed != 0;
}

static PyObject *
tally_to_tuple(const uint64_t counts[FTS_NSTATES])
{
    PyObject *t = PyTuple_New(FTS_NSTATES);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < FTS_NSTATES; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(counts[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SetItem(t, i, v);  /* steals v */
    }
    return t;
}

PyObject *
fts_py_tally_pair(const uint64_t counts[FTS_NFAMILIES][FTS_NSTATES])
{
    PyObject *v4 = tally_to_tuple(counts[FTS_IDX_IPV4]);
    if (v4 == NULL) {
        return NULL;
    }
    PyObject *v6 = tally_to_tuple(counts[FTS_IDX_IPV6]);
    if (v6 == NULL) {
        Py_DECREF(v4);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, v4, v6);
    Py_DECREF(v4);
    Py_DECREF(v6);
    return pair;
}

/* Read a sequence of (low, high) port ranges.  Returns the number read,
 * or -1 with an exception set. */
Py_ssize_t
fts_py_parse_ranges(PyObject *seq, const char *name, struct fts_port_range *out,
             Py_ssize_t room)
{
    Py_ssize_t n = PySequence_Size(seq);
    if (n < 0) {
        return -1;
    }
    if (n > room) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d port ranges in all",
                     name, FTS_MAX_PORT_RANGES);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_GetItem(seq, i);
        if (item == NULL) {
            return -1;
        }
        int low, high;
        int ok = 0;
        if (!PyTuple_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: each range must be a "
                         "(low, high) tuple", name);
        }
        else {
            ok = PyArg_ParseTuple(item, "ii", &low, &high);
        }
        Py_DECREF(item);
        if (!ok) {
            return -1;
        }
        if (low < 0 || high > 65535 || low > high) {
            PyErr_Format(PyExc_ValueError,
                         "%s: port range (%d, %d) is not within 0..65535 "
                         "with low <= high", name, low, high);
            return -1;
        }
        out[i].low = (uint16_t)low;
        out[i].high = (uint16_t)high;
    }
    return n;
}


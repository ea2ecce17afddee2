/*
 * The counter core every backend's Python type embeds (bind.h): the lock
 * that survives fork(), the re-entry guard, the closed state, and the
 * system call made with the GIL released while signal handlers run.
 * Written once: the netlink and BPF types only say what to do under it.
 */
#include "bind.h"

#include <errno.h>
#include <unistd.h>

#define POLL_INTERVAL_NS 10000000L  /* 10 ms */

int
fts_core_init(struct fts_core *core)
{
    core->lock = PyThread_allocate_lock();
    core->lock_pid = getpid();
    core->holder = 0;
    core->closed = 0;
    if (core->lock == NULL) {
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return -1;
    }
    return 0;
}

void
fts_core_free(struct fts_core *core)
{
    if (core->lock != NULL) {
        PyThread_free_lock(core->lock);
        core->lock = NULL;
    }
}

/* Called with the GIL: the GIL serialises everything below but the wait.
 * In a child of fork() the copied lock may be held by a thread that does
 * not exist there: the child takes a fresh lock and leaves the old one
 * alone (freeing a held lock is undefined; one lock per counter and fork
 * is the price). */
int
fts_core_lock(struct fts_core *core)
{
    if (core->lock_pid != getpid()) {
        PyThread_type_lock fresh = PyThread_allocate_lock();
        if (fresh == NULL) {
            PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
            return -1;
        }
        core->lock = fresh;
        core->lock_pid = getpid();
        core->holder = 0;
    }
    unsigned long me = PyThread_get_thread_ident();
    if (!PyThread_acquire_lock(core->lock, NOWAIT_LOCK)) {
        if (core->holder == me) {
            PyErr_SetString(PyExc_RuntimeError,
                            "counter used again by the thread that is "
                            "counting with it (from a signal handler or a "
                            "finalizer?)");
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(core->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    core->holder = me;
    return 0;
}

void
fts_core_unlock(struct fts_core *core)
{
    core->holder = 0;
    PyThread_release_lock(core->lock);
}

int
fts_core_is_closed(struct fts_core *core)
{
    return __atomic_load_n(&core->closed, __ATOMIC_ACQUIRE);
}

static int
check_open(struct fts_core *core)
{
    if (fts_core_is_closed(core)) {
        PyErr_SetString(PyExc_ValueError, FTS_CLOSED_MESSAGE);
        return -1;
    }
    return 0;
}

int
fts_core_lock_open(struct fts_core *core)
{
    if (fts_core_lock(core) < 0) {
        return -1;
    }
    if (check_open(core) < 0) {
        fts_core_unlock(core);
        return -1;
    }
    return 0;
}

PyObject *
fts_core_close(struct fts_core *core, void (*release)(PyObject *),
               PyObject *self)
{
    if (fts_core_lock(core) < 0) {
        return NULL;
    }
    if (!fts_core_is_closed(core)) {
        release(self);
        __atomic_store_n(&core->closed, 1, __ATOMIC_RELEASE);
    }
    fts_core_unlock(core);
    Py_RETURN_NONE;
}

PyObject *
fts_core_closed(struct fts_core *core)
{
    return PyBool_FromLong(fts_core_is_closed(core));
}

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

static void
poll_later(struct fts_py_released *ctx)
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
        poll_later(ctx);
    }
    PyEval_RestoreThread(ctx->tstate);
    int failed = PyErr_CheckSignals();
    ctx->tstate = PyEval_SaveThread();
    return failed != 0;
}

int
fts_core_run(struct fts_core *core, fts_core_work work, PyObject *self,
             void *arg, const char *context)
{
    struct fts_core_call call = {.err = {0, NULL}, .context = context};
    /* Before taking the lock: this runs Python code. */
    call.released.poll = runs_signal_handlers();
    if (call.released.poll < 0 || fts_core_lock_open(core) < 0) {
        return -1;
    }
    poll_later(&call.released);
    call.released.tstate = PyEval_SaveThread();
    int rc = work(self, arg, &call);
    PyEval_RestoreThread(call.released.tstate);
    fts_core_unlock(core);
    if (rc < 0 && !(call.err.err == EINTR && PyErr_Occurred())) {
        /* (else a signal handler raised, e.g. KeyboardInterrupt) */
        fts_py_raise(&call.err, call.context, NULL);
    }
    return rc;
}

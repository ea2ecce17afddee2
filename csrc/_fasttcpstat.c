/*
 * The Python binding of the sock_diag core: one type, NetlinkCounter, that
 * owns a NETLINK_SOCK_DIAG socket and a 32 KiB receive buffer, and returns
 * raw per-family tallies.  Python code (fasttcpstat/_netlink.py) names the
 * states and decides policy; this file only moves numbers and errors.
 *
 * Built against the limited API (abi3) unless the interpreter is
 * free-threaded, where the limited API is not available.
 */
#include "Python.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "diag.h"

typedef struct {
    PyObject_HEAD
    struct fts_conn conn;
    void *buf;
    /* Serialises dumps: two threads must not share one socket mid-dump. */
    PyThread_type_lock lock;
    /* close() was called: do not reopen.  Read without the lock by the
     * `closed` getter, hence the atomic accesses. */
    int closed;
} NetlinkCounter;

/* Raise OSError(errno, "<step>: <strerror>"); OSError's constructor picks
 * the subclass (PermissionError, FileNotFoundError, ...) from errno. */
static void
raise_diag_error(const struct fts_error *e, const char *context)
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

/* Take the object's lock without holding the GIL while we wait. */
static void
lock_counter(NetlinkCounter *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *
NetlinkCounter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":NetlinkCounter",
                                     kwlist)) {
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    NetlinkCounter *self = (NetlinkCounter *)alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    fts_conn_init(&self->conn);
    self->buf = NULL;
    self->lock = NULL;
    self->closed = 0;

    self->buf = PyMem_Malloc(FTS_RECV_BUFSIZE);
    if (self->buf == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        goto error;
    }
    struct fts_error e = {0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fts_conn_open(&self->conn, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_diag_error(&e, "cannot open the netlink socket");
        goto error;
    }
    return (PyObject *)self;

error:
    Py_DECREF(self);
    return NULL;
}

static void
NetlinkCounter_dealloc(NetlinkCounter *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    fts_conn_close(&self->conn);
    if (self->lock != NULL) {
        PyThread_free_lock(self->lock);
    }
    PyMem_Free(self->buf);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

/* On EINTR, let Python run its signal handlers; a KeyboardInterrupt (or
 * any exception they raise) aborts the dump. */
struct interrupt_ctx {
    PyThreadState *tstate;
};

static int
check_signals(void *arg)
{
    struct interrupt_ctx *ctx = arg;
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

PyDoc_STRVAR(count_doc,
"count(families, states, form)\n--\n\n"
"Dump the TCP sockets of this network namespace and tally them by state.\n\n"
"families: FAMILY_IPV4, FAMILY_IPV6 or both OR-ed; states: bit mask of\n"
"kernel TCP states (bit n = state n, within STATES_ALL); form: FORM_V2 or\n"
"FORM_LEGACY.  Returns (ipv4, ipv6), two tuples of 16 counts indexed by\n"
"the kernel's state number.");

static PyObject *
NetlinkCounter_count(NetlinkCounter *self, PyObject *args)
{
    unsigned int families, states;
    int form;
    if (!PyArg_ParseTuple(args, "IIi:count", &families, &states, &form)) {
        return NULL;
    }
    if (families == 0 || (families & ~FTS_FAMILY_BOTH) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "families must be FAMILY_IPV4, FAMILY_IPV6 or both, "
                     "not %u", families);
        return NULL;
    }
    if ((states & ~FTS_STATES_ALL) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "states must be a mask within STATES_ALL (0x%x), "
                     "not 0x%x", FTS_STATES_ALL, states);
        return NULL;
    }
    if (form != FTS_FORM_V2 && form != FTS_FORM_LEGACY) {
        PyErr_Format(PyExc_ValueError,
                     "form must be FORM_V2 or FORM_LEGACY, not %d", form);
        return NULL;
    }

    struct fts_tally tally;
    struct fts_error e = {0, NULL};
    const char *context = "netlink inet_diag dump";
    int rc = 0;
    memset(&tally, 0, sizeof(tally));

    lock_counter(self);
    if (self->closed) {
        PyThread_release_lock(self->lock);
        PyErr_SetString(PyExc_ValueError,
                        "I/O operation on a closed NetlinkCounter");
        return NULL;
    }
    struct interrupt_ctx ctx;
    ctx.tstate = PyEval_SaveThread();
    /* A socket inherited through fork() is shared with the parent; a
     * socket abandoned mid-dump holds stale replies: start afresh. */
    if (self->conn.fd >= 0 && self->conn.owner != getpid()) {
        fts_conn_close(&self->conn);
    }
    if (self->conn.fd < 0) {
        rc = fts_conn_open(&self->conn, &e);
        if (rc < 0) {
            context = "cannot reopen the netlink socket";
        }
    }
    if (rc == 0) {
        rc = fts_count(&self->conn, families, states,
                       (enum fts_request_form)form, self->buf,
                       FTS_RECV_BUFSIZE, &tally, check_signals, &ctx, &e);
        if (rc < 0) {
            fts_conn_close(&self->conn);
        }
    }
    PyEval_RestoreThread(ctx.tstate);
    PyThread_release_lock(self->lock);

    if (rc < 0) {
        if (e.err == EINTR && PyErr_Occurred()) {
            return NULL;  /* a signal handler raised, e.g. KeyboardInterrupt */
        }
        raise_diag_error(&e, context);
        return NULL;
    }
    PyObject *v4 = tally_to_tuple(tally.n[FTS_IDX_IPV4]);
    if (v4 == NULL) {
        return NULL;
    }
    PyObject *v6 = tally_to_tuple(tally.n[FTS_IDX_IPV6]);
    if (v6 == NULL) {
        Py_DECREF(v4);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, v4, v6);
    Py_DECREF(v4);
    Py_DECREF(v6);
    return result;
}

PyDoc_STRVAR(close_doc,
"close()\n--\n\n"
"Close the netlink socket.  Later count() calls raise ValueError.");

static PyObject *
NetlinkCounter_close(NetlinkCounter *self, PyObject *Py_UNUSED(ignored))
{
    lock_counter(self);
    fts_conn_close(&self->conn);
    __atomic_store_n(&self->closed, 1, __ATOMIC_RELEASE);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyObject *
NetlinkCounter_get_closed(NetlinkCounter *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(
        __atomic_load_n(&self->closed, __ATOMIC_ACQUIRE));
}

static PyMethodDef NetlinkCounter_methods[] = {
    {"count", (PyCFunction)NetlinkCounter_count, METH_VARARGS, count_doc},
    {"close", (PyCFunction)NetlinkCounter_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef NetlinkCounter_getset[] = {
    {"closed", (getter)NetlinkCounter_get_closed, NULL,
     "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyDoc_STRVAR(NetlinkCounter_doc,
"NetlinkCounter()\n--\n\n"
"A NETLINK_SOCK_DIAG socket that counts TCP sockets per state.\n\n"
"It counts the network namespace it was created in.  Counts from several\n"
"threads are serialised.");

static PyType_Slot NetlinkCounter_slots[] = {
    {Py_tp_new, NetlinkCounter_new},
    {Py_tp_dealloc, NetlinkCounter_dealloc},
    {Py_tp_methods, NetlinkCounter_methods},
    {Py_tp_getset, NetlinkCounter_getset},
    {Py_tp_doc, (void *)NetlinkCounter_doc},
    {0, NULL}
};

static PyType_Spec NetlinkCounter_spec = {
    .name = "fasttcpstat._fasttcpstat.NetlinkCounter",
    .basicsize = sizeof(NetlinkCounter),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = NetlinkCounter_slots,
};

static int
fasttcpstat_exec(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&NetlinkCounter_spec);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "NetlinkCounter", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "FAMILY_IPV4", FTS_FAMILY_IPV4) < 0
        || PyModule_AddIntConstant(module, "FAMILY_IPV6",
                                   FTS_FAMILY_IPV6) < 0
        || PyModule_AddIntConstant(module, "STATES_ALL", FTS_STATES_ALL) < 0
        || PyModule_AddIntConstant(module, "FORM_V2", FTS_FORM_V2) < 0
        || PyModule_AddIntConstant(module, "FORM_LEGACY",
                                   FTS_FORM_LEGACY) < 0
        || PyModule_AddIntConstant(module, "RECV_BUFSIZE",
                                   FTS_RECV_BUFSIZE) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot fasttcpstat_slots[] = {
    {Py_mod_exec, fasttcpstat_exec},
#ifdef Py_mod_multiple_interpreters
    /* No global state: every interpreter gets its own type object. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if !defined(Py_LIMITED_API) && defined(Py_mod_gil)
    /* Safe without the GIL: each object's lock serialises its socket and
     * buffer; nothing else is shared. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL}
};

PyDoc_STRVAR(module_doc,
"Counting TCP sockets per state with netlink sock_diag (Linux).");

static struct PyModuleDef fasttcpstat_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fasttcpstat._fasttcpstat",
    .m_doc = module_doc,
    .m_size = 0,
    .m_methods = NULL,
    .m_slots = fasttcpstat_slots,
};

PyMODINIT_FUNC
PyInit__fasttcpstat(void)
{
    return PyModuleDef_Init(&fasttcpstat_module);
}

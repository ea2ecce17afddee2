/*
 * The Python binding: the module, and NetlinkCounter, which owns a
 * NETLINK_SOCK_DIAG socket and a 32 KiB receive buffer and returns raw
 * per-family tallies (the BPF backend's type is in bind_bpf.c).  Python
 * code (fasttcpstat/_netlink.py) names the
 * states and decides policy; this file only moves numbers and errors.
 *
 * Built against the limited API (abi3) unless the interpreter is
 * free-threaded, where the limited API is not available.
 */
#include "Python.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bind.h"
#include "diag.h"

typedef struct {
    PyObject_HEAD
    struct fts_conn conn;
    void *buf;
    /* Serialises dumps: two threads must not share one socket mid-dump. */
    PyThread_type_lock lock;
    /* The process the lock belongs to: a child of fork() gets a copy of it
     * that may be held by a thread fork() did not copy (see lock_counter).
     * The thread holding it, or 0, to refuse re-entry instead of
     * deadlocking.  Both only change with the GIL held. */
    pid_t lock_pid;
    unsigned long holder;
    /* close() was called: do not reopen.  Read without the lock by the
     * `closed` getter, hence the atomic accesses. */
    int closed;
    /* Whether a socket lost to fork() or an aborted dump may be reopened
     * here.  Not for a socket opened in another network namespace: this
     * thread would reopen it in its own. */
    int reopen;
} NetlinkCounter;

/* Take the object's lock without holding the GIL while we wait.  Called
 * with the GIL; returns -1 with an exception set instead of deadlocking:
 *  - in a child of fork(), the copied lock may be held by a thread that
 *    does not exist there (another thread was counting at fork time):
 *    the child gets a fresh lock (the old one is left alone, as it may be
 *    held; one lock per counter and fork);
 *  - the thread holding it may come back through a signal handler (run
 *    between chunks of its dump) or a finalizer: RuntimeError. */
static int
lock_counter(NetlinkCounter *self)
{
    if (self->lock_pid != getpid()) {
        PyThread_type_lock fresh = PyThread_allocate_lock();
        if (fresh == NULL) {
            PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
            return -1;
        }
        self->lock = fresh;
        self->lock_pid = getpid();
        self->holder = 0;
    }
    unsigned long me = PyThread_get_thread_ident();
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        if (self->holder == me) {
            PyErr_SetString(PyExc_RuntimeError,
                            "NetlinkCounter used again by the thread that "
                            "is counting with it (from a signal handler or "
                            "a finalizer?)");
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    self->holder = me;
    return 0;
}

static void
unlock_counter(NetlinkCounter *self)
{
    self->holder = 0;
    PyThread_release_lock(self->lock);
}

static PyObject *
NetlinkCounter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"reopen", NULL};
    int reopen = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$p:NetlinkCounter",
                                     kwlist, &reopen)) {
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
    self->reopen = reopen;

    self->buf = PyMem_Malloc(FTS_RECV_BUFSIZE);
    if (self->buf == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    self->lock = PyThread_allocate_lock();
    self->lock_pid = getpid();
    self->holder = 0;
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
        fts_py_raise(&e, "cannot open the netlink socket");
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

/* Compile the port filter; *bytecode is PyMem memory or NULL. */
static int
compile_filter(PyObject *local, PyObject *remote, void **bytecode,
               size_t *len)
{
    struct fts_port_range *ranges = PyMem_Calloc(FTS_MAX_PORT_RANGES,
                                                 sizeof(*ranges));
    if (ranges == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = -1;
    Py_ssize_t nlocal = fts_py_parse_ranges(local, "local ports", ranges,
                                     FTS_MAX_PORT_RANGES);
    if (nlocal < 0) {
        goto done;
    }
    Py_ssize_t nremote = fts_py_parse_ranges(remote, "remote ports",
                                      ranges + nlocal,
                                      FTS_MAX_PORT_RANGES - nlocal);
    if (nremote < 0) {
        goto done;
    }
    *len = fts_port_filter_size((size_t)nlocal, (size_t)nremote);
    *bytecode = NULL;
    if (*len > 0) {
        *bytecode = PyMem_Malloc(*len);
        if (*bytecode == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        long built = fts_build_port_filter(*bytecode, *len, ranges,
                                           (size_t)nlocal, ranges + nlocal,
                                           (size_t)nremote);
        if (built != (long)*len) {
            PyMem_Free(*bytecode);
            *bytecode = NULL;
            PyErr_SetString(PyExc_SystemError,
                            "port filter compilation failed");
            goto done;
        }
    }
    rc = 0;
done:
    PyMem_Free(ranges);
    return rc;
}

/* Set up the per-port breakdown: a slot table and zeroed counters. */
static int
prepare_by_port(PyObject *ports, struct fts_tally *tally, Py_ssize_t *nports)
{
    Py_ssize_t n = PySequence_Size(ports);
    if (n < 0) {
        return -1;
    }
    *nports = n;
    if (n == 0) {
        return 0;
    }
    if (n > FTS_MAX_BY_PORT) {
        PyErr_Format(PyExc_ValueError, "by_port: at most %d ports",
                     FTS_MAX_BY_PORT);
        return -1;
    }
    uint16_t *slots = PyMem_Calloc(65536, sizeof(uint16_t));
    fts_state_counts *counts = PyMem_Calloc((size_t)n, sizeof(*counts));
    if (slots == NULL || counts == NULL) {
        PyMem_Free(slots);
        PyMem_Free(counts);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_GetItem(ports, i);
        long port = item == NULL ? -1 : PyLong_AsLong(item);
        Py_XDECREF(item);
        if (port == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (port < 0 || port > 65535) {
            PyErr_Format(PyExc_ValueError,
                         "by_port: port %ld is not within 0..65535", port);
            goto error;
        }
        if (slots[port] != 0) {
            PyErr_Format(PyExc_ValueError, "by_port: port %ld is listed "
                         "twice", port);
            goto error;
        }
        slots[port] = (uint16_t)(i + 1);
    }
    tally->port_slot = slots;
    tally->by_port = counts;
    return 0;
error:
    PyMem_Free(slots);
    PyMem_Free(counts);
    return -1;
}

static PyObject *
build_result(const struct fts_tally *tally, Py_ssize_t nports)
{
    PyObject *totals = fts_py_tally_pair(tally->n);
    if (totals == NULL || nports == 0) {
        return totals;
    }
    PyObject *per_port = PyTuple_New(nports);
    if (per_port == NULL) {
        Py_DECREF(totals);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nports; i++) {
        PyObject *pair = fts_py_tally_pair(
            (const uint64_t (*)[FTS_NSTATES])tally->by_port[i]);
        if (pair == NULL) {
            Py_DECREF(per_port);
            Py_DECREF(totals);
            return NULL;
        }
        PyTuple_SetItem(per_port, i, pair);  /* steals pair */
    }
    PyObject *result = PyTuple_Pack(2, totals, per_port);
    Py_DECREF(totals);
    Py_DECREF(per_port);
    return result;
}

PyDoc_STRVAR(count_doc,
"count(families, states, form, local=(), remote=(), by_port=(),\n"
"      by_remote=False)\n--\n\n"
"Dump the TCP sockets of the counter's network namespace and tally them\n"
"by state.\n\n"
"families: FAMILY_IPV4, FAMILY_IPV6 or both OR-ed; states: bit mask of\n"
"kernel TCP states (bit n = state n, within STATES_ALL); form: FORM_V2 or\n"
"FORM_LEGACY.  local/remote: sequences of inclusive (low, high) port\n"
"ranges, compiled to inet_diag bytecode (a socket passes if its local\n"
"port is in one of `local`, if any, and its remote port in one of\n"
"`remote`, if any).  Returns (ipv4, ipv6), two tuples of 16 counts\n"
"indexed by the kernel's state number.  With by_port (distinct ports,\n"
"at most MAX_BY_PORT), returns ((ipv4, ipv6), per_port) where per_port\n"
"holds an (ipv4, ipv6) pair for each listed port, keyed on the local\n"
"port, or on the remote one if by_remote.");

static PyObject *
NetlinkCounter_count(NetlinkCounter *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"families", "states", "form", "local", "remote",
                             "by_port", "by_remote", NULL};
    unsigned int families, states;
    int form, by_remote = 0;
    PyObject *local = NULL, *remote = NULL, *ports = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "IIi|OOOp:count", kwlist,
                                     &families, &states, &form, &local,
                                     &remote, &ports, &by_remote)) {
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
    struct fts_filter filter = {NULL, 0};
    void *bytecode = NULL;
    Py_ssize_t nports = 0;
    PyObject *result = NULL;
    memset(&tally, 0, sizeof(tally));
    tally.by_remote = by_remote;

    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) {
        return NULL;
    }
    int prepared = compile_filter(local ? local : empty,
                                  remote ? remote : empty, &bytecode,
                                  &filter.len) == 0
                   && prepare_by_port(ports ? ports : empty, &tally,
                                      &nports) == 0;
    Py_DECREF(empty);
    if (!prepared) {
        goto done;
    }
    filter.bytecode = bytecode;

    struct fts_error e = {0, NULL};
    const char *context = "netlink inet_diag dump";
    int rc = 0;
    /* Before taking the lock: this runs Python code. */
    struct fts_py_released ctx;
    if (fts_py_released_prepare(&ctx) < 0 || lock_counter(self) < 0) {
        goto done;
    }
    if (self->closed) {
        unlock_counter(self);
        PyErr_SetString(PyExc_ValueError,
                        "I/O operation on a closed NetlinkCounter");
        goto done;
    }
    fts_py_released_start(&ctx);
    ctx.tstate = PyEval_SaveThread();
    /* A socket inherited through fork() is shared with the parent; a
     * socket abandoned mid-dump holds stale replies: start afresh. */
    if (self->conn.fd >= 0 && self->conn.owner != getpid()) {
        fts_conn_close(&self->conn);
    }
    if (self->conn.fd < 0) {
        if (self->reopen) {
            rc = fts_conn_open(&self->conn, &e);
        }
        else {
            rc = -1;
            e.err = ESTALE;
            e.what = "the socket was lost (after fork() or an interrupted "
                     "dump) and must be reopened in its namespace";
        }
        if (rc < 0) {
            context = "cannot reopen the netlink socket";
        }
    }
    if (rc == 0) {
        rc = fts_count(&self->conn, families, states,
                       (enum fts_request_form)form, &filter, self->buf,
                       FTS_RECV_BUFSIZE, &tally, fts_py_check_signals, &ctx,
                       &e);
        if (rc < 0) {
            fts_conn_close(&self->conn);
        }
    }
    PyEval_RestoreThread(ctx.tstate);
    unlock_counter(self);

    if (rc < 0) {
        if (!(e.err == EINTR && PyErr_Occurred())) {
            fts_py_raise(&e, context);
        }
        /* else a signal handler raised, e.g. KeyboardInterrupt */
        goto done;
    }
    result = build_result(&tally, nports);

done:
    PyMem_Free(bytecode);
    PyMem_Free((void *)tally.port_slot);
    PyMem_Free(tally.by_port);
    return result;
}

PyDoc_STRVAR(close_doc,
"close()\n--\n\n"
"Close the netlink socket.  Later count() calls raise ValueError.");

static PyObject *
NetlinkCounter_close(NetlinkCounter *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_counter(self) < 0) {
        return NULL;
    }
    fts_conn_close(&self->conn);
    __atomic_store_n(&self->closed, 1, __ATOMIC_RELEASE);
    unlock_counter(self);
    Py_RETURN_NONE;
}

static PyObject *
NetlinkCounter_get_needs_reopen(NetlinkCounter *self,
                                void *Py_UNUSED(closure))
{
    if (lock_counter(self) < 0) {
        return NULL;
    }
    int lost = !self->closed
               && (self->conn.fd < 0 || self->conn.owner != getpid());
    unlock_counter(self);
    return PyBool_FromLong(lost);
}

static PyObject *
NetlinkCounter_get_closed(NetlinkCounter *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(
        __atomic_load_n(&self->closed, __ATOMIC_ACQUIRE));
}

static PyMethodDef NetlinkCounter_methods[] = {
    {"count", (PyCFunction)(void (*)(void))NetlinkCounter_count,
     METH_VARARGS | METH_KEYWORDS, count_doc},
    {"close", (PyCFunction)NetlinkCounter_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef NetlinkCounter_getset[] = {
    {"closed", (getter)NetlinkCounter_get_closed, NULL,
     "True after close().", NULL},
    {"needs_reopen", (getter)NetlinkCounter_get_needs_reopen, NULL,
     "True when the socket was lost (inherited through fork(), or dropped\n"
     "after an interrupted or failed dump) and the next count must open a\n"
     "new one.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyDoc_STRVAR(NetlinkCounter_doc,
"NetlinkCounter(*, reopen=True)\n--\n\n"
"A NETLINK_SOCK_DIAG socket that counts TCP sockets per state.\n\n"
"It counts the network namespace of the thread that created it.  A\n"
"socket lost to fork() or an interrupted dump is reopened by the next\n"
"count, in the counting thread's namespace, unless reopen is False (for a\n"
"socket created in another namespace): then count() raises OSError\n"
"(ESTALE) and needs_reopen tells the owner to make a new one.\n"
"Counts from several threads are serialised.");

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
                                   FTS_RECV_BUFSIZE) < 0
        || PyModule_AddIntConstant(module, "MAX_PORT_RANGES",
                                   FTS_MAX_PORT_RANGES) < 0
        || PyModule_AddIntConstant(module, "MAX_BY_PORT",
                                   FTS_MAX_BY_PORT) < 0) {
        return -1;
    }
    return fts_py_add_bpf(module);
}

static PyModuleDef_Slot fasttcpstat_slots[] = {
    {Py_mod_exec, fasttcpstat_exec},
#ifdef Py_mod_multiple_interpreters
    /* No global state: every interpreter gets its own type object. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    /* No {Py_mod_gil, Py_MOD_GIL_NOT_USED} slot: free-threaded builds keep
     * the GIL for this module.  Declaring it GIL-free needs the thread
     * tests (tests/test_hardening_threads.py) to run on a free-threaded
     * CPython, and none could be installed where the tests run (Debian 12
     * ships 3.11 only; PyPI has no interpreter builds).  Add the slot back,
     * under #if !defined(Py_LIMITED_API) && defined(Py_mod_gil), together
     * with a CI step that runs those tests on a 3.13t/3.14t build. */
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

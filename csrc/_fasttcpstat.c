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
#include "diag_cgroup.h"

typedef struct {
    PyObject_HEAD
    struct fts_core core;
    struct fts_conn conn;
    void *buf;
    /* Whether a socket lost to fork() or an aborted dump may be reopened
     * here.  Not for a socket opened in another network namespace: this
     * thread would reopen it in its own. */
    int reopen;
} NetlinkCounter;

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
    self->reopen = reopen;
    self->buf = PyMem_Malloc(FTS_RECV_BUFSIZE);
    if (self->buf == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    if (fts_core_init(&self->core) < 0) {
        goto error;
    }
    struct fts_error e = {0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fts_conn_open(&self->conn, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        fts_py_raise(&e, "cannot open the netlink socket", NULL);
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
    fts_core_free(&self->core);
    PyMem_Free(self->buf);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

/* One count's request, read from Python once; its memory is PyMem's. */
struct query {
    unsigned int families;
    unsigned int states;
    int form;
    struct fts_filter filter;
    struct fts_tally tally;
    Py_ssize_t nports;
    /* The per-cgroup breakdown, when by_cgroup > 0. */
    int by_cgroup;
    struct fts_cgroup_tally cgroups;
};

static void
query_free(struct query *q)
{
    PyMem_Free((void *)q->filter.bytecode);
    PyMem_Free((void *)q->tally.port_slot);
    PyMem_Free(q->tally.by_port);
    PyMem_Free(q->cgroups.slots);
}

static int
query_validate(const struct query *q)
{
    if (fts_py_check_families(q->families) < 0) {
        return -1;
    }
    if ((q->states & ~FTS_STATES_ALL) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "states must be a mask within STATES_ALL (0x%x), "
                     "not 0x%x", FTS_STATES_ALL, q->states);
        return -1;
    }
    if (q->form != FTS_FORM_V2 && q->form != FTS_FORM_LEGACY) {
        PyErr_Format(PyExc_ValueError,
                     "form must be FORM_V2 or FORM_LEGACY, not %d", q->form);
        return -1;
    }
    return 0;
}

/* Compile the port filter to inet_diag bytecode (none if no ranges). */
static int
compile_filter(PyObject *local, PyObject *remote, struct fts_filter *out)
{
    struct fts_py_filter f;
    if (fts_py_filter_parse(local, remote, &f) < 0) {
        return -1;
    }
    int rc = 0;
    size_t len = fts_port_filter_size(f.nlocal, f.nremote);
    void *bytecode = len > 0 ? PyMem_Malloc(len) : NULL;
    if (len > 0 && bytecode == NULL) {
        PyErr_NoMemory();
        rc = -1;
    }
    else if (len > 0
             && fts_build_port_filter(bytecode, len, f.ranges, f.nlocal,
                                      f.ranges + f.nlocal, f.nremote)
                != (long)len) {
        PyMem_Free(bytecode);
        bytecode = NULL;
        PyErr_SetString(PyExc_SystemError, "port filter compilation failed");
        rc = -1;
    }
    out->bytecode = bytecode;
    out->len = bytecode == NULL ? 0 : len;
    fts_py_filter_free(&f);
    return rc;
}

/* Set up the per-port breakdown: a slot table and zeroed counters. */
static int
prepare_by_port(PyObject *ports, struct fts_tally *tally, Py_ssize_t *nports)
{
    Py_ssize_t n = ports == NULL ? 0 : PySequence_Size(ports);
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

/* Set up the per-cgroup breakdown: room for `max` cgroups in a table at
 * most half full, so a power of two of at least 2 * max slots. */
static int
prepare_by_cgroup(struct query *q)
{
    if (q->by_cgroup == 0) {
        return 0;
    }
    if (q->by_cgroup < 0 || q->by_cgroup > FTS_MAX_BY_CGROUP) {
        PyErr_Format(PyExc_ValueError, "by_cgroup must be within 0..%d, "
                     "not %d", FTS_MAX_BY_CGROUP, q->by_cgroup);
        return -1;
    }
    if (q->nports > 0) {
        PyErr_SetString(PyExc_ValueError,
                        "by_port and by_cgroup cannot be combined");
        return -1;
    }
    if (fts_py_cgroup_tally_alloc(&q->cgroups, q->by_cgroup) < 0) {
        return -1;
    }
    q->tally.on_socket = fts_cgroup_on_socket;
    q->tally.on_socket_arg = &q->cgroups;
    return 0;
}

/* Read count()'s arguments into `q` (zeroed first; free it in any case). */
static int
query_parse(PyObject *args, PyObject *kwargs, struct query *q)
{
    static char *kwlist[] = {"families", "states", "form", "local", "remote",
                             "by_port", "by_remote", "by_cgroup", NULL};
    PyObject *local = NULL, *remote = NULL, *ports = NULL;
    memset(q, 0, sizeof(*q));
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "IIi|OOOpi:count", kwlist,
                                     &q->families, &q->states, &q->form,
                                     &local, &remote, &ports,
                                     &q->tally.by_remote, &q->by_cgroup)) {
        return -1;
    }
    if (query_validate(q) < 0
        || compile_filter(local, remote, &q->filter) < 0
        || prepare_by_port(ports, &q->tally, &q->nports) < 0
        || prepare_by_cgroup(q) < 0) {
        return -1;
    }
    return 0;
}

/* Under the lock, GIL released: a socket inherited through fork() is
 * shared with the parent, and one abandoned mid-dump holds stale
 * replies: start afresh where allowed. */
static int
ensure_socket(NetlinkCounter *self, struct fts_core_call *call)
{
    if (self->conn.fd >= 0 && self->conn.owner != getpid()) {
        fts_conn_close(&self->conn);
    }
    if (self->conn.fd >= 0) {
        return 0;
    }
    const char *context = call->context;
    call->context = "cannot reopen the netlink socket";
    if (!self->reopen) {
        return fts_fail(&call->err, ESTALE,
                        "the socket was lost (after fork() or an "
                        "interrupted dump) and must be reopened in its "
                        "namespace");
    }
    if (fts_conn_open(&self->conn, &call->err) < 0) {
        return -1;
    }
    /* Reopened: a later failure is the dump's, not the reopen's. */
    call->context = context;
    return 0;
}

static int
dump(PyObject *obj, void *arg, struct fts_core_call *call)
{
    NetlinkCounter *self = (NetlinkCounter *)obj;
    struct query *q = arg;
    if (ensure_socket(self, call) < 0) {
        return -1;
    }
    int rc = fts_count(&self->conn, q->families, q->states,
                       (enum fts_request_form)q->form, &q->filter, self->buf,
                       FTS_RECV_BUFSIZE, &q->tally, fts_py_check_signals,
                       &call->released, &call->err);
    if (rc < 0) {
        fts_conn_close(&self->conn);
    }
    return rc;
}

static PyObject *
build_result(const struct query *q)
{
    const struct fts_tally *tally = &q->tally;
    Py_ssize_t nports = q->nports;
    PyObject *totals = fts_py_tally_pair(tally->n);
    if (q->by_cgroup > 0) {
        return fts_py_cgroup_result(totals, &q->cgroups);
    }
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
"      by_remote=False, by_cgroup=0)\n--\n\n"
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
"port, or on the remote one if by_remote.  With by_cgroup = N > 0 (at\n"
"most MAX_BY_CGROUP; not with by_port), returns ((ipv4, ipv6),\n"
"(by_id, unowned, overflow)): by_id maps each owner cgroup id\n"
"(INET_DIAG_CGROUP_ID, Linux >= 5.7; OSError EOPNOTSUPP without it) to\n"
"an (ipv4, ipv6) pair for its first N cgroups; timewait and request\n"
"sockets are in unowned, sockets of further cgroups in overflow.");

static PyObject *
NetlinkCounter_count(NetlinkCounter *self, PyObject *args, PyObject *kwargs)
{
    struct query q;
    PyObject *result = NULL;
    if (query_parse(args, kwargs, &q) == 0
        && fts_core_run(&self->core, dump, (PyObject *)self, &q,
                        "netlink inet_diag dump") == 0) {
        result = build_result(&q);
    }
    query_free(&q);
    return result;
}

PyDoc_STRVAR(close_doc,
"close()\n--\n\n"
"Close the netlink socket.  Later count() calls raise ValueError.");

static void
release_socket(PyObject *self)
{
    fts_conn_close(&((NetlinkCounter *)self)->conn);
}

static PyObject *
NetlinkCounter_close(NetlinkCounter *self, PyObject *Py_UNUSED(ignored))
{
    return fts_core_close(&self->core, release_socket, (PyObject *)self);
}

static PyObject *
NetlinkCounter_get_needs_reopen(NetlinkCounter *self,
                                void *Py_UNUSED(closure))
{
    if (fts_core_lock(&self->core) < 0) {
        return NULL;
    }
    int lost = !fts_core_is_closed(&self->core)
               && (self->conn.fd < 0 || self->conn.owner != getpid());
    fts_core_unlock(&self->core);
    return PyBool_FromLong(lost);
}

static PyObject *
NetlinkCounter_get_closed(NetlinkCounter *self, void *Py_UNUSED(closure))
{
    return fts_core_closed(&self->core);
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

static const struct fts_py_constant constants[] = {
    {"FAMILY_IPV4", FTS_FAMILY_IPV4},
    {"FAMILY_IPV6", FTS_FAMILY_IPV6},
    {"FAMILY_BOTH", FTS_FAMILY_BOTH},
    /* Tallies are indexed by the kernel's state number, 0..NSTATES-1;
     * ALL_STATES_MASK has the bits of the 11 real states (1..11). */
    {"NSTATES", FTS_NSTATES},
    {"ALL_STATES_MASK", FTS_STATES_ALL},
    {"STATES_ALL", FTS_STATES_ALL},
    {"FORM_V2", FTS_FORM_V2},
    {"FORM_LEGACY", FTS_FORM_LEGACY},
    {"RECV_BUFSIZE", FTS_RECV_BUFSIZE},
    {"MAX_PORT_RANGES", FTS_MAX_PORT_RANGES},
    {"MAX_BY_PORT", FTS_MAX_BY_PORT},
    {"MAX_BY_CGROUP", FTS_MAX_BY_CGROUP},
    {NULL, 0}
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
    if (fts_py_add_constants(module, constants) < 0) {
        return -1;
    }
    if (fts_py_add_bpf(module) < 0) {
        return -1;
    }
    return fts_py_add_walk(module);
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

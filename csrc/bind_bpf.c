/*
 * The Python binding of the BPF iterator backend: btf_layout(), the
 * BpfCounter type and bpf_pin().  Python (fasttcpstat/_bpf.py) caches the
 * layout, chooses and falls back; this file moves numbers and errors.
 */
#include "bind.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bpf_iter.h"
#include "btf.h"

#define LAYOUT_FIELDS 17

typedef struct {
    PyObject_HEAD
    struct fts_core core;
    struct fts_bpf_counter bpf;
    /* What the program was built from, to build it again in a child of
     * fork() (see fts_bpf_counter.owner). */
    struct fts_btf_layout layout;
    struct fts_py_filter filter;
    unsigned int emit_shift;
    /* The cgroups told apart, 0 for no breakdown by cgroup. */
    int by_cgroup;
    struct fts_bpf_cgroup_layout cgroup;
} BpfCounter;

static PyObject *
layout_to_tuple(const struct fts_btf_layout *l)
{
    return Py_BuildValue(
        "(IIIIIIIIIIIIIIIII)", l->iter_tcp_func_id, l->ctx_meta,
        l->ctx_sk_common, l->meta_seq.offset, l->meta_seq.size,
        l->meta_session_id.offset, l->meta_session_id.size,
        l->skc_state.offset, l->skc_state.size, l->skc_family.offset,
        l->skc_family.size, l->skc_num.offset, l->skc_num.size,
        l->skc_dport.offset, l->skc_dport.size, l->tw_substate.offset,
        l->tw_substate.size);
}

static int
tuple_to_layout(PyObject *t, struct fts_btf_layout *l)
{
    if (!PyTuple_Check(t)) {
        PyErr_SetString(PyExc_TypeError,
                        "layout must be the tuple btf_layout() returns");
        return -1;
    }
    if (!PyArg_ParseTuple(
            t, "IIIIIIIIIIIIIIIII;layout must be the tuple btf_layout() "
               "returns",
            &l->iter_tcp_func_id, &l->ctx_meta, &l->ctx_sk_common,
            &l->meta_seq.offset, &l->meta_seq.size,
            &l->meta_session_id.offset, &l->meta_session_id.size,
            &l->skc_state.offset, &l->skc_state.size, &l->skc_family.offset,
            &l->skc_family.size, &l->skc_num.offset, &l->skc_num.size,
            &l->skc_dport.offset, &l->skc_dport.size,
            &l->tw_substate.offset, &l->tw_substate.size)) {
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(btf_layout_doc,
"btf_layout(path=None)\n--\n\n"
"Read the kernel's BTF (/sys/kernel/btf/vmlinux, or path) and return the\n"
"ids and offsets the iterator program is built from, as a tuple.");

static PyObject *
btf_layout(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", NULL};
    const char *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z:btf_layout", kwlist,
                                     &path)) {
        return NULL;
    }
    struct fts_btf_layout layout;
    struct fts_error e = {0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fts_btf_layout_from_file(path, &layout, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        fts_py_raise(&e, "cannot read the kernel's BTF", NULL);
        return NULL;
    }
    return layout_to_tuple(&layout);
}

PyDoc_STRVAR(btf_cgroup_layout_doc,
"btf_cgroup_layout(path=None)\n--\n\n"
"Read the kernel's BTF (/sys/kernel/btf/vmlinux, or path) and return the\n"
"offsets that lead from a socket to its owner cgroup's id, as a tuple\n"
"(BpfCounter's cgroup_layout).  FileNotFoundError (ENOENT) when the\n"
"kernel has no cgroup socket data.");

static int
read_cgroup_layout(const struct fts_btf *btf, void *out,
                   struct fts_error *err)
{
    return fts_bpf_cgroup_layout(btf, out, err);
}

static PyObject *
btf_cgroup_layout(PyObject *Py_UNUSED(module), PyObject *args,
                  PyObject *kwargs)
{
    static char *kwlist[] = {"path", NULL};
    const char *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z:btf_cgroup_layout",
                                     kwlist, &path)) {
        return NULL;
    }
    struct fts_bpf_cgroup_layout layout;
    if (fts_py_read_btf(path, read_cgroup_layout, &layout,
                        "cannot read the kernel's BTF") < 0) {
        return NULL;
    }
    return Py_BuildValue("(III)", layout.sk_cgroup, layout.cgroup_kn,
                         layout.kn_id);
}

static int
check_emit_shift(unsigned int emit_shift)
{
    if (emit_shift < 1 || emit_shift > 20) {
        PyErr_Format(PyExc_ValueError,
                     "emit_shift must be within 1..20, not %u", emit_shift);
        return -1;
    }
    return 0;
}

/* Load the program and its map for self's filter.  The verifier's log,
 * if it refused, goes to `log` (may be NULL). */
static int
load_program(PyObject *obj, char *log, size_t logsize, struct fts_error *e)
{
    BpfCounter *self = (BpfCounter *)obj;
    struct fts_bpf_filter filter = {
        self->filter.ranges, self->filter.nlocal,
        self->filter.ranges + self->filter.nlocal, self->filter.nremote,
    };
    return fts_bpf_open(&self->bpf, &self->layout, &filter,
                        self->by_cgroup > 0 ? &self->cgroup : NULL,
                        (unsigned)self->by_cgroup, self->emit_shift, log,
                        logsize, e);
}

/* by_cgroup and cgroup_layout, read into self. */
static int
parse_by_cgroup(BpfCounter *self, int by_cgroup, PyObject *cgroup_layout)
{
    if (by_cgroup < 0 || by_cgroup > FTS_MAX_BY_CGROUP) {
        PyErr_Format(PyExc_ValueError, "by_cgroup must be within 0..%d, "
                     "not %d", FTS_MAX_BY_CGROUP, by_cgroup);
        return -1;
    }
    self->by_cgroup = by_cgroup;
    if (by_cgroup == 0) {
        return 0;
    }
    struct fts_bpf_cgroup_layout *c = &self->cgroup;
    if (cgroup_layout == NULL || !PyTuple_Check(cgroup_layout)
        || !PyArg_ParseTuple(cgroup_layout, "III", &c->sk_cgroup,
                             &c->cgroup_kn, &c->kn_id)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "cgroup_layout must be the tuple "
                        "btf_cgroup_layout() returns when by_cgroup > 0");
        return -1;
    }
    return 0;
}

static PyObject *
BpfCounter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"layout", "local", "remote", "emit_shift",
                             "by_cgroup", "cgroup_layout", NULL};
    PyObject *layout_obj, *local = NULL, *remote = NULL;
    PyObject *cgroup_layout = NULL;
    unsigned int emit_shift = FTS_BPF_EMIT_SHIFT;
    int by_cgroup = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OOIiO:BpfCounter",
                                     kwlist, &layout_obj, &local, &remote,
                                     &emit_shift, &by_cgroup,
                                     &cgroup_layout)) {
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    BpfCounter *self = (BpfCounter *)alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    fts_bpf_init(&self->bpf);
    self->filter.ranges = NULL;
    self->emit_shift = emit_shift;
    if (fts_core_init(&self->core) < 0
        || tuple_to_layout(layout_obj, &self->layout) < 0
        || check_emit_shift(emit_shift) < 0
        || parse_by_cgroup(self, by_cgroup, cgroup_layout) < 0
        || fts_py_filter_parse(local, remote, &self->filter) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (fts_py_load((PyObject *)self, load_program,
                    "cannot load the BPF iterator") < 0) {
        Py_CLEAR(self);
    }
    return (PyObject *)self;
}

static void
BpfCounter_dealloc(BpfCounter *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    fts_bpf_close(&self->bpf);
    fts_core_free(&self->core);
    fts_py_filter_free(&self->filter);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

/* Under the lock, GIL released: in a child of fork(), drop the copies of
 * the parent's map and program and load private ones (the parent's stay
 * as they are). */
static int
ensure_private(BpfCounter *self, struct fts_core_call *call)
{
    if (fts_bpf_owned(&self->bpf)) {
        return 0;
    }
    fts_bpf_close(&self->bpf);
    call->context = "cannot reload the BPF iterator after fork()";
    return load_program((PyObject *)self, NULL, 0, &call->err);
}

static int
create_iter(PyObject *obj, void *arg, struct fts_core_call *call)
{
    BpfCounter *self = (BpfCounter *)obj;
    int *fd = arg;
    if (ensure_private(self, call) < 0) {
        return -1;
    }
    *fd = fts_bpf_iter_create(&self->bpf, &call->err);
    return *fd < 0 ? -1 : 0;
}

PyDoc_STRVAR(create_iter_doc,
"create_iter()\n--\n\n"
"Create an iterator fd; it will walk the calling thread's network\n"
"namespace.  Pass it to run(), which closes it.");

static PyObject *
BpfCounter_create_iter(BpfCounter *self, PyObject *Py_UNUSED(ignored))
{
    int fd = -1;
    if (fts_core_run(&self->core, create_iter, (PyObject *)self, &fd,
                     "cannot start the BPF iterator") < 0) {
        return NULL;
    }
    return PyLong_FromLong(fd);
}

PyDoc_STRVAR(run_doc,
"run(iter_fd, families=3)\n--\n\n"
"Read the iterator to its end (closing iter_fd) and return\n"
"((ipv4, ipv6), output_bytes): two tuples of 16 counts indexed by TCP\n"
"state, and how many bytes the program wrote (its progress marks).  With\n"
"by_cgroup, (((ipv4, ipv6), (by_id, unowned, overflow)), output_bytes),\n"
"the breakdown as NetlinkCounter.count(by_cgroup=N) returns it.\n"
"Python's signal handlers run between progress marks: Ctrl-C stops a\n"
"long count with KeyboardInterrupt.");

struct run {
    int fd;
    struct fts_tally tally;
    struct fts_cgroup_tally cgroups;  /* slots NULL: no breakdown */
    size_t output;
};

static int
run_iter(PyObject *obj, void *arg, struct fts_core_call *call)
{
    BpfCounter *self = (BpfCounter *)obj;
    struct run *r = arg;
    if (!fts_bpf_owned(&self->bpf)) {
        /* Created before a fork(): it walks into the parent's counters. */
        return fts_fail(&call->err, ESTALE, "the iterator was created by "
                        "another process; create one here");
    }
    int fd = r->fd;
    r->fd = -1;  /* fts_bpf_run closes it */
    return fts_bpf_run(&self->bpf, fd, &r->tally,
                       r->cgroups.slots != NULL ? &r->cgroups : NULL,
                       &r->output, fts_py_check_signals, &call->released,
                       &call->err);
}

/* (ipv4, ipv6), or ((ipv4, ipv6), by_cgroup) as NetlinkCounter.count()
 * returns them. */
static PyObject *
run_result(const struct run *r)
{
    PyObject *pair = fts_py_tally_pair(
        (const uint64_t (*)[FTS_NSTATES])r->tally.n);
    if (r->cgroups.slots == NULL) {
        return pair;
    }
    return fts_py_cgroup_result(pair, &r->cgroups);
}

static PyObject *
BpfCounter_run(BpfCounter *self, PyObject *args)
{
    struct run r = {.fd = -1, .output = 0};
    memset(&r.tally, 0, sizeof(r.tally));
    memset(&r.cgroups, 0, sizeof(r.cgroups));
    r.tally.families = FTS_FAMILY_BOTH;
    if (!PyArg_ParseTuple(args, "i|I:run", &r.fd, &r.tally.families)) {
        return NULL;
    }
    if (r.fd < 0) {
        PyErr_SetString(PyExc_ValueError, "iter_fd must be an open fd");
        return NULL;
    }
    int rc = -1;
    if (fts_py_check_families(r.tally.families) == 0
        && (self->by_cgroup == 0
            || fts_py_cgroup_tally_alloc(&r.cgroups, self->by_cgroup) == 0)) {
        rc = fts_core_run(&self->core, run_iter, (PyObject *)self, &r,
                          "BPF iterator count");
    }
    if (r.fd >= 0) {
        close(r.fd);  /* not reached by run_iter: it is ours to close */
    }
    PyObject *result = rc < 0 ? NULL : run_result(&r);
    PyMem_Free(r.cgroups.slots);
    if (result == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nn)", result, (Py_ssize_t)r.output);
}

static void
release_program(PyObject *self)
{
    fts_bpf_close(&((BpfCounter *)self)->bpf);
}

static PyObject *
BpfCounter_close(BpfCounter *self, PyObject *Py_UNUSED(ignored))
{
    return fts_core_close(&self->core, release_program, (PyObject *)self);
}

static PyObject *
BpfCounter_get_closed(BpfCounter *self, void *Py_UNUSED(closure))
{
    return fts_core_closed(&self->core);
}

static PyMethodDef BpfCounter_methods[] = {
    {"create_iter", (PyCFunction)BpfCounter_create_iter, METH_NOARGS,
     create_iter_doc},
    {"run", (PyCFunction)BpfCounter_run, METH_VARARGS, run_doc},
    {"close", (PyCFunction)BpfCounter_close, METH_NOARGS,
     "close()\n--\n\nUnload the program and free the counters."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef BpfCounter_getset[] = {
    {"closed", (getter)BpfCounter_get_closed, NULL, "True after close().",
     NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyDoc_STRVAR(BpfCounter_doc,
"BpfCounter(layout, *, local=(), remote=(), emit_shift=16, by_cgroup=0,\n"
"           cgroup_layout=None)\n--\n\n"
"A BPF `tcp` iterator that counts sockets per state in the kernel.\n\n"
"layout: btf_layout()'s tuple.  local/remote: (low, high) port ranges\n"
"kept, as for NetlinkCounter.count().  The program writes one byte every\n"
"2**emit_shift sockets (a read() visiting a million sockets without\n"
"output fails with EAGAIN).  by_cgroup = N > 0 also breaks the count\n"
"down by owner cgroup (N cgroups told apart), from cgroup_layout,\n"
"btf_cgroup_layout()'s tuple.  Needs CAP_BPF + CAP_PERFMON or\n"
"CAP_SYS_ADMIN, and Linux >= 5.9.");

static PyType_Slot BpfCounter_slots[] = {
    {Py_tp_new, BpfCounter_new},
    {Py_tp_dealloc, BpfCounter_dealloc},
    {Py_tp_methods, BpfCounter_methods},
    {Py_tp_getset, BpfCounter_getset},
    {Py_tp_doc, (void *)BpfCounter_doc},
    {0, NULL}
};

static PyType_Spec BpfCounter_spec = {
    .name = "fasttcpstat._fasttcpstat.BpfCounter",
    .basicsize = sizeof(BpfCounter),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = BpfCounter_slots,
};

PyDoc_STRVAR(bpf_pin_doc,
"bpf_pin(layout, path, emit_shift=16)\n--\n\n"
"Load the text iterator and pin it at path (in a BPF filesystem).\n"
"Reading that file prints the reader's namespace's counts per state.");

static PyObject *
bpf_pin(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"layout", "path", "emit_shift", NULL};
    PyObject *layout_obj, *path_obj;
    unsigned int emit_shift = FTS_BPF_EMIT_SHIFT;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&|I:bpf_pin", kwlist,
                                     &layout_obj, PyUnicode_FSConverter,
                                     &path_obj, &emit_shift)) {
        return NULL;
    }
    struct fts_btf_layout layout;
    PyObject *result = NULL;
    char *log = NULL;
    if (tuple_to_layout(layout_obj, &layout) < 0
        || check_emit_shift(emit_shift) < 0) {
        goto done;
    }
    log = PyMem_Malloc(FTS_PY_LOG_SIZE);
    if (log == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    log[0] = '\0';
    const char *path = PyBytes_AsString(path_obj);
    if (path == NULL) {
        goto done;
    }
    struct fts_error e = {0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fts_bpf_pin_text(&layout, path, emit_shift, log, FTS_PY_LOG_SIZE, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        fts_py_raise(&e, "cannot pin the BPF iterator", log);
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(log);
    Py_DECREF(path_obj);
    return result;
}

static PyMethodDef bpf_functions[] = {
    {"btf_layout", (PyCFunction)(void (*)(void))btf_layout,
     METH_VARARGS | METH_KEYWORDS, btf_layout_doc},
    {"btf_cgroup_layout", (PyCFunction)(void (*)(void))btf_cgroup_layout,
     METH_VARARGS | METH_KEYWORDS, btf_cgroup_layout_doc},
    {"bpf_pin", (PyCFunction)(void (*)(void))bpf_pin,
     METH_VARARGS | METH_KEYWORDS, bpf_pin_doc},
    {NULL, NULL, 0, NULL}
};

static const struct fts_py_constant bpf_constants[] = {
    {"BPF_EMIT_SHIFT", FTS_BPF_EMIT_SHIFT},
    {"BPF_MAP_TYPE_ARRAY", FTS_BPF_MAP_TYPE_ARRAY},
    {"BPF_MAP_TYPE_LRU_HASH", FTS_BPF_MAP_TYPE_LRU_HASH},
    {NULL, 0}
};

int
fts_py_add_bpf(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&BpfCounter_spec);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "BpfCounter", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    if (PyModule_AddFunctions(module, bpf_functions) < 0) {
        return -1;
    }
    return fts_py_add_constants(module, bpf_constants);
}

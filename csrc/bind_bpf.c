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

#define LOG_SIZE (256 * 1024)
#define LAYOUT_FIELDS 17

typedef struct {
    PyObject_HEAD
    struct fts_bpf_counter bpf;
    PyThread_type_lock lock;  /* one count at a time per counter map */
    int closed;
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
        fts_py_raise(&e, "cannot read the kernel's BTF");
        return NULL;
    }
    return layout_to_tuple(&layout);
}

/* Raise the load error with the verifier's log, which says why. */
static void
raise_with_log(const struct fts_error *e, const char *context,
               const char *log)
{
    if (log == NULL || log[0] == '\0') {
        fts_py_raise(e, context);
        return;
    }
    PyObject *msg = PyUnicode_FromFormat("%s: %s: %s; verifier log:\n%s",
                                         context, e->what, strerror(e->err),
                                         log);
    if (msg == NULL) {
        return;
    }
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", e->err, msg);
    Py_DECREF(msg);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

static PyObject *
BpfCounter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"layout", "local", "remote", "emit_shift",
                             NULL};
    PyObject *layout_obj, *local = NULL, *remote = NULL;
    unsigned int emit_shift = FTS_BPF_EMIT_SHIFT;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OOI:BpfCounter",
                                     kwlist, &layout_obj, &local, &remote,
                                     &emit_shift)) {
        return NULL;
    }
    struct fts_btf_layout layout;
    if (tuple_to_layout(layout_obj, &layout) < 0) {
        return NULL;
    }
    if (emit_shift < 1 || emit_shift > 20) {
        PyErr_Format(PyExc_ValueError,
                     "emit_shift must be within 1..20, not %u", emit_shift);
        return NULL;
    }
    struct fts_port_range *ranges = PyMem_Calloc(FTS_MAX_PORT_RANGES,
                                                 sizeof(*ranges));
    char *log = PyMem_Malloc(LOG_SIZE);
    BpfCounter *self = NULL;
    if (ranges == NULL || log == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    log[0] = '\0';
    struct fts_bpf_filter filter = {ranges, 0, NULL, 0};
    Py_ssize_t n = 0;
    if (local != NULL) {
        n = fts_py_parse_ranges(local, "local ports", ranges,
                                FTS_MAX_PORT_RANGES);
        if (n < 0) {
            goto done;
        }
    }
    filter.nlocal = (size_t)n;
    filter.remote = ranges + n;
    if (remote != NULL) {
        Py_ssize_t m = fts_py_parse_ranges(remote, "remote ports",
                                           ranges + n,
                                           FTS_MAX_PORT_RANGES - n);
        if (m < 0) {
            goto done;
        }
        filter.nremote = (size_t)m;
    }

    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    self = (BpfCounter *)alloc(type, 0);
    if (self == NULL) {
        goto done;
    }
    fts_bpf_init(&self->bpf);
    self->closed = 0;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        Py_CLEAR(self);
        goto done;
    }
    struct fts_error e = {0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fts_bpf_open(&self->bpf, &layout, &filter, emit_shift, log,
                      LOG_SIZE, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_with_log(&e, "cannot load the BPF iterator", log);
        Py_CLEAR(self);
    }
done:
    PyMem_Free(ranges);
    PyMem_Free(log);
    return (PyObject *)self;
}

static void
BpfCounter_dealloc(BpfCounter *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    fts_bpf_close(&self->bpf);
    if (self->lock != NULL) {
        PyThread_free_lock(self->lock);
    }
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

static int
check_open(BpfCounter *self)
{
    if (__atomic_load_n(&self->closed, __ATOMIC_ACQUIRE)) {
        PyErr_SetString(PyExc_ValueError,
                        "I/O operation on a closed BpfCounter");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(create_iter_doc,
"create_iter()\n--\n\n"
"Create an iterator fd; it will walk the calling thread's network\n"
"namespace.  Pass it to run(), which closes it.");

static PyObject *
BpfCounter_create_iter(BpfCounter *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0) {
        return NULL;
    }
    struct fts_error e = {0, NULL};
    int fd = fts_bpf_iter_create(&self->bpf, &e);
    if (fd < 0) {
        fts_py_raise(&e, "cannot start the BPF iterator");
        return NULL;
    }
    return PyLong_FromLong(fd);
}

PyDoc_STRVAR(run_doc,
"run(iter_fd, families=3)\n--\n\n"
"Read the iterator to its end (closing iter_fd) and return\n"
"((ipv4, ipv6), output_bytes): two tuples of 16 counts indexed by TCP\n"
"state, and how many bytes the program wrote (its progress marks).");

static PyObject *
BpfCounter_run(BpfCounter *self, PyObject *args)
{
    int fd;
    unsigned int families = FTS_FAMILY_BOTH;
    if (!PyArg_ParseTuple(args, "i|I:run", &fd, &families)) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "iter_fd must be an open fd");
        return NULL;
    }
    if (families == 0 || (families & ~FTS_FAMILY_BOTH) != 0) {
        close(fd);
        PyErr_Format(PyExc_ValueError,
                     "families must be FAMILY_IPV4, FAMILY_IPV6 or both, "
                     "not %u", families);
        return NULL;
    }
    struct fts_tally tally;
    memset(&tally, 0, sizeof(tally));
    tally.families = families;
    struct fts_error e = {0, NULL};
    size_t output = 0;
    int rc;

    struct fts_py_released ctx;
    if (fts_py_released_prepare(&ctx) < 0) {
        close(fd);
        return NULL;
    }
    fts_py_lock(self->lock);
    if (check_open(self) < 0) {
        PyThread_release_lock(self->lock);
        close(fd);
        return NULL;
    }
    ctx.tstate = PyEval_SaveThread();
    rc = fts_bpf_run(&self->bpf, fd, &tally, &output, fts_py_check_signals,
                     &ctx, &e);
    PyEval_RestoreThread(ctx.tstate);
    PyThread_release_lock(self->lock);
    if (rc < 0) {
        if (!(e.err == EINTR && PyErr_Occurred())) {
            fts_py_raise(&e, "BPF iterator count");
        }
        return NULL;
    }
    PyObject *pair = fts_py_tally_pair(
        (const uint64_t (*)[FTS_NSTATES])tally.n);
    if (pair == NULL) {
        return NULL;
    }
    PyObject *result = Py_BuildValue("(Nn)", pair, (Py_ssize_t)output);
    return result;
}

static PyObject *
BpfCounter_close(BpfCounter *self, PyObject *Py_UNUSED(ignored))
{
    fts_py_lock(self->lock);
    fts_bpf_close(&self->bpf);
    __atomic_store_n(&self->closed, 1, __ATOMIC_RELEASE);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyObject *
BpfCounter_get_closed(BpfCounter *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(__atomic_load_n(&self->closed, __ATOMIC_ACQUIRE));
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
"BpfCounter(layout, *, local=(), remote=(), emit_shift=16)\n--\n\n"
"A BPF `tcp` iterator that counts sockets per state in the kernel.\n\n"
"layout: btf_layout()'s tuple.  local/remote: (low, high) port ranges\n"
"kept, as for NetlinkCounter.count().  The program writes one byte every\n"
"2**emit_shift sockets (a read() visiting a million sockets without\n"
"output fails with EAGAIN).  Needs CAP_BPF + CAP_PERFMON or\n"
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
    if (tuple_to_layout(layout_obj, &layout) < 0) {
        goto done;
    }
    if (emit_shift < 1 || emit_shift > 20) {
        PyErr_Format(PyExc_ValueError,
                     "emit_shift must be within 1..20, not %u", emit_shift);
        goto done;
    }
    log = PyMem_Malloc(LOG_SIZE);
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
    rc = fts_bpf_pin_text(&layout, path, emit_shift, log, LOG_SIZE, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_with_log(&e, "cannot pin the BPF iterator", log);
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
    {"bpf_pin", (PyCFunction)(void (*)(void))bpf_pin,
     METH_VARARGS | METH_KEYWORDS, bpf_pin_doc},
    {NULL, NULL, 0, NULL}
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
    return PyModule_AddIntConstant(module, "BPF_EMIT_SHIFT",
                                   FTS_BPF_EMIT_SHIFT);
}

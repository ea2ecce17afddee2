/*
 * Helpers shared by the binding's types (bind.h): errors, argument
 * checks, tallies as tuples.
 */
#include "bind.h"

#include <errno.h>
#include <string.h>

#include "btf.h"

void
fts_py_raise(const struct fts_error *e, const char *context,
             const char *log)
{
    PyObject *msg;
    if (log != NULL && log[0] != '\0') {
        msg = PyUnicode_FromFormat("%s: %s: %s; verifier log:\n%s", context,
                                   e->what, strerror(e->err), log);
    }
    else {
        msg = PyUnicode_FromFormat("%s: %s: %s", context, e->what,
                                   strerror(e->err));
    }
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

int
fts_py_load(PyObject *self, fts_py_loader load, const char *context)
{
    char *log = PyMem_Malloc(FTS_PY_LOG_SIZE);
    if (log == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    log[0] = '\0';
    struct fts_error e = {0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = load(self, log, FTS_PY_LOG_SIZE, &e);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        fts_py_raise(&e, context, log);
    }
    PyMem_Free(log);
    return rc < 0 ? -1 : 0;
}

int
fts_py_check_families(unsigned int families)
{
    if (families == 0 || (families & ~FTS_FAMILY_BOTH) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "families must be FAMILY_IPV4, FAMILY_IPV6 or both, "
                     "not %u", families);
        return -1;
    }
    return 0;
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

/* Read a sequence of (low, high) port ranges (NULL: none) into `out`,
 * which has room for `room`.  Returns the number read, or -1 with an
 * exception set. */
static Py_ssize_t
parse_ranges(PyObject *seq, const char *name, struct fts_port_range *out,
             Py_ssize_t room)
{
    Py_ssize_t n = seq == NULL ? 0 : PySequence_Size(seq);
    if (n < 0) {
        return -1;
    }
    if (n > room) {
        PyErr_Format(PyExc_ValueError,
                     "%s: at most %d port ranges in all (after merging "
                     "adjacent ones), got %zd", name, FTS_MAX_PORT_RANGES, n);
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

int
fts_py_filter_parse(PyObject *local, PyObject *remote,
                    struct fts_py_filter *out)
{
    out->nlocal = out->nremote = 0;
    out->ranges = PyMem_Calloc(FTS_MAX_PORT_RANGES, sizeof(*out->ranges));
    if (out->ranges == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t nlocal = parse_ranges(local, "local ports", out->ranges,
                                     FTS_MAX_PORT_RANGES);
    Py_ssize_t nremote = nlocal < 0 ? -1
        : parse_ranges(remote, "remote ports", out->ranges + nlocal,
                       FTS_MAX_PORT_RANGES - nlocal);
    if (nremote < 0) {
        fts_py_filter_free(out);
        return -1;
    }
    out->nlocal = (size_t)nlocal;
    out->nremote = (size_t)nremote;
    /* A BpfCounter keeps its filter for life (to reload after fork()):
     * keep only what was read. */
    size_t used = out->nlocal + out->nremote;
    void *fitted = PyMem_Realloc(out->ranges,
                                 (used ? used : 1) * sizeof(*out->ranges));
    if (fitted != NULL) {
        out->ranges = fitted;
    }
    return 0;
}

void
fts_py_filter_free(struct fts_py_filter *f)
{
    PyMem_Free(f->ranges);
    f->ranges = NULL;
}

int
fts_py_add_constants(PyObject *module, const struct fts_py_constant *table)
{
    for (; table->name != NULL; table++) {
        if (PyModule_AddIntConstant(module, table->name, table->value) < 0) {
            return -1;
        }
    }
    return 0;
}

int
fts_py_cgroup_tally_alloc(struct fts_cgroup_tally *tally, int max)
{
    size_t capacity = 2;
    while (capacity < 2 * (size_t)max) {
        capacity *= 2;
    }
    struct fts_cgroup_slot *slots = PyMem_Calloc(capacity, sizeof(*slots));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    fts_cgroup_tally_init(tally, slots, capacity);
    return 0;
}

/* ({cgroup id: (ipv4, ipv6)}, unowned, overflow). */
static PyObject *
cgroup_tally(const struct fts_cgroup_tally *cg)
{
    PyObject *by_id = PyDict_New();
    PyObject *unowned = fts_py_tally_pair(
        (const uint64_t (*)[FTS_NSTATES])cg->unowned);
    PyObject *overflow = fts_py_tally_pair(
        (const uint64_t (*)[FTS_NSTATES])cg->overflow);
    PyObject *result = NULL;
    if (by_id == NULL || unowned == NULL || overflow == NULL) {
        goto done;
    }
    for (size_t i = 0; i < cg->capacity; i++) {
        const struct fts_cgroup_slot *slot = &cg->slots[i];
        if (!slot->used) {
            continue;
        }
        PyObject *key = PyLong_FromUnsignedLongLong(slot->id);
        PyObject *pair = fts_py_tally_pair(
            (const uint64_t (*)[FTS_NSTATES])slot->n);
        int rc = key == NULL || pair == NULL
                 ? -1 : PyDict_SetItem(by_id, key, pair);
        Py_XDECREF(key);
        Py_XDECREF(pair);
        if (rc < 0) {
            goto done;
        }
    }
    result = PyTuple_Pack(3, by_id, unowned, overflow);
done:
    Py_XDECREF(by_id);
    Py_XDECREF(unowned);
    Py_XDECREF(overflow);
    return result;
}


PyObject *
fts_py_cgroup_result(PyObject *totals, const struct fts_cgroup_tally *tally)
{
    if (totals == NULL) {
        return NULL;
    }
    PyObject *by_cgroup = cgroup_tally(tally);
    PyObject *result = by_cgroup == NULL ? NULL
        : PyTuple_Pack(2, totals, by_cgroup);
    Py_XDECREF(by_cgroup);
    Py_DECREF(totals);
    return result;
}

int
fts_py_read_btf(const char *path, fts_btf_reader read, void *out,
                const char *context)
{
    struct fts_error e = {0, NULL};
    int rc = -1;
    Py_BEGIN_ALLOW_THREADS
    struct fts_btf *btf = fts_btf_open_file(path, &e);
    if (btf != NULL) {
        rc = read(btf, out, &e);
        fts_btf_close(btf);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        fts_py_raise(&e, context, NULL);
    }
    return rc;
}

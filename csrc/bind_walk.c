/*
 * The Python binding of the walk backend: walk_layout() and the
 * WalkCounter type.  The engine (walk_run.c) walks; bind_core.c gives the
 * lock, the closed state and signal polling between runs; Python
 * (fasttcpstat/_walk.py) checks the engine on this kernel and decides.
 */
#include "bind.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "btf.h"
#include "walk_run.h"

#define DEFAULT_BUDGET 16384

/* The layout crosses to Python as a flat tuple, in this order: one table
 * instead of a format string and a list of fields written twice. */
struct layout_field {
    size_t offset;
    size_t size;
};

#define FIELD(name) {offsetof(struct fts_walk_layout, name), \
                     sizeof(((struct fts_walk_layout *)0)->name)}
static const struct layout_field layout_fields[] = {
    FIELD(kf_rcu_read_lock), FIELD(kf_rcu_read_unlock),
    FIELD(kf_rdonly_cast), FIELD(id_nulls_head), FIELD(id_sock_common),
    FIELD(id_tw_sock), FIELD(task_nsproxy), FIELD(nsproxy_net),
    FIELD(net_hashinfo), FIELD(net_inum), FIELD(hi_ehash),
    FIELD(hi_ehash_mask), FIELD(hi_lhash2), FIELD(hi_lhash2_mask),
    FIELD(ehash_size), FIELD(ehash_head), FIELD(lhash2_size),
    FIELD(lhash2_head), FIELD(head_first), FIELD(skc_node_next),
    FIELD(skc_node), FIELD(skc_net), FIELD(skc_state), FIELD(skc_family),
    FIELD(skc_num), FIELD(skc_dport), FIELD(tw_substate),
};
#undef FIELD
#define NFIELDS (sizeof(layout_fields) / sizeof(layout_fields[0]))

static PyObject *
layout_to_tuple(const struct fts_walk_layout *l)
{
    PyObject *t = PyTuple_New(NFIELDS);
    if (t == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *p = (const char *)l + layout_fields[i].offset;
        unsigned long v;
        if (layout_fields[i].size == sizeof(uint32_t)) {
            uint32_t u;
            memcpy(&u, p, sizeof(u));
            v = u;
        }
        else {
            uint16_t u;
            memcpy(&u, p, sizeof(u));
            v = u;
        }
        PyObject *n = PyLong_FromUnsignedLong(v);
        if (n == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SetItem(t, (Py_ssize_t)i, n);
    }
    return t;
}

static int
tuple_to_layout(PyObject *t, struct fts_walk_layout *l)
{
    if (!PyTuple_Check(t) || PyTuple_Size(t) != (Py_ssize_t)NFIELDS) {
        PyErr_Format(PyExc_TypeError, "layout must be the tuple of %d "
                     "integers walk_layout() returns", (int)NFIELDS);
        return -1;
    }
    memset(l, 0, sizeof(*l));
    for (size_t i = 0; i < NFIELDS; i++) {
        unsigned long v = PyLong_AsUnsignedLong(
            PyTuple_GetItem(t, (Py_ssize_t)i));
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            return -1;
        }
        char *p = (char *)l + layout_fields[i].offset;
        if (layout_fields[i].size == sizeof(uint32_t) && v <= UINT32_MAX) {
            uint32_t u = (uint32_t)v;
            memcpy(p, &u, sizeof(u));
        }
        else if (layout_fields[i].size == sizeof(uint16_t)
                 && v <= UINT16_MAX) {
            uint16_t u = (uint16_t)v;
            memcpy(p, &u, sizeof(u));
        }
        else {
            PyErr_Format(PyExc_ValueError, "layout[%d] is out of range: %lu",
                         (int)i, v);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(walk_layout_doc,
"walk_layout(path=None)\n--\n\n"
"Read the kernel's BTF (/sys/kernel/btf/vmlinux, or path) and return the\n"
"ids and offsets the walk program is built from, as a tuple.  OSError if\n"
"this kernel lacks one (below 6.2: no bpf_rcu_read_lock kfunc).");

static PyObject *
walk_layout(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", NULL};
    const char *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z:walk_layout", kwlist,
                                     &path)) {
        return NULL;
    }
    struct fts_walk_layout layout;
    struct fts_error e = {0, NULL};
    int rc = -1;
    Py_BEGIN_ALLOW_THREADS
    struct fts_btf *btf = fts_btf_open_file(path, &e);
    if (btf != NULL) {
        rc = fts_walk_layout(btf, &layout, &e);
        fts_btf_close(btf);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        fts_py_raise(&e, "cannot read the kernel's BTF for the walk", NULL);
        return NULL;
    }
    return layout_to_tuple(&layout);
}

typedef struct {
    PyObject_HEAD
    struct fts_core core;
    struct fts_walker walker;
    /* The process that loaded the program: the map is mmapped shared, so
     * a child of fork() would count into its parent's tallies.  It loads
     * its own from what the program was built from. */
    pid_t owner;
    struct fts_walk_layout layout;
    struct fts_py_filter ports;
    uint32_t states;
    uint32_t nslots;
} WalkCounter;

static int
load_program(PyObject *obj, char *log, size_t logsize, struct fts_error *e)
{
    WalkCounter *self = (WalkCounter *)obj;
    struct fts_walk_filter filter = {
        self->states, self->ports.ranges, self->ports.nlocal,
        self->ports.ranges + self->ports.nlocal, self->ports.nremote,
    };
    self->owner = getpid();
    return fts_walker_open(&self->walker, &self->layout, &filter,
                           self->nslots, log, logsize, NULL, e);
}

static int
check_slots(unsigned int slots)
{
    if (slots == 0 || slots > FTS_WALK_MAX_SLOTS || (slots & (slots - 1))) {
        PyErr_Format(PyExc_ValueError, "slots must be a power of two within "
                     "1..%d, not %u", FTS_WALK_MAX_SLOTS, slots);
        return -1;
    }
    return 0;
}

static PyObject *
WalkCounter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"layout", "states", "local", "remote", "slots",
                             NULL};
    PyObject *layout_obj, *local = NULL, *remote = NULL;
    unsigned int states = 0, slots = FTS_WALK_MAX_SLOTS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$IOOI:WalkCounter",
                                     kwlist, &layout_obj, &states, &local,
                                     &remote, &slots)) {
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    WalkCounter *self = (WalkCounter *)alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    fts_walker_init(&self->walker);
    self->ports.ranges = NULL;
    self->states = states;
    self->nslots = slots;
    if (fts_core_init(&self->core) < 0
        || tuple_to_layout(layout_obj, &self->layout) < 0
        || check_slots(slots) < 0
        || fts_py_filter_parse(local, remote, &self->ports) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (fts_py_load((PyObject *)self, load_program,
                    "cannot load the walk program") < 0) {
        Py_CLEAR(self);
    }
    return (PyObject *)self;
}

static void
WalkCounter_dealloc(WalkCounter *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    fts_walker_close(&self->walker);
    fts_core_free(&self->core);
    fts_py_filter_free(&self->ports);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

struct pass {
    uint32_t only_inum;
    unsigned tables;
    uint32_t budget;
    struct fts_walk_stats st;
    /* The slots, copied under the lock: the next pass overwrites them. */
    struct fts_walk_slot *slots;
    uint32_t nslots;
};

/* After fork(): the child's own program (see WalkCounter.owner). */
static int
own_program(WalkCounter *self, struct fts_core_call *call)
{
    if (self->owner != getpid()) {
        fts_walker_close(&self->walker);
        if (load_program((PyObject *)self, NULL, 0, &call->err) < 0) {
            call->context = "cannot reload the walk program after fork()";
            return -1;
        }
    }
    return 0;
}

static int
run_pass(PyObject *obj, void *arg, struct fts_core_call *call)
{
    WalkCounter *self = (WalkCounter *)obj;
    struct pass *p = arg;
    if (own_program(self, call) < 0) {
        return -1;
    }
    if (fts_walker_pass(&self->walker, p->tables, p->budget, p->only_inum,
                        &p->st, fts_py_check_signals, &call->released,
                        &call->err) < 0) {
        return -1;
    }
    if (p->only_inum != 0) {
        /* One namespace: copy its slot, not the whole table. */
        const struct fts_walk_slot *s = fts_walker_find(&self->walker,
                                                        p->only_inum);
        p->nslots = s != NULL;
        if (s != NULL) {
            p->slots[0] = *s;
        }
        return 0;
    }
    p->nslots = self->walker.nslots;
    memcpy(p->slots, self->walker.slots, p->nslots * sizeof(*p->slots));
    return 0;
}

/* The pass's statistics, anomalies included, by name. */
static PyObject *
stats_dict(const struct fts_walk_stats *st)
{
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsK}",
        "runs", (unsigned long long)st->runs,
        "loops", (unsigned long long)st->loops,
        "sockets", (unsigned long long)st->sockets,
        "counted", (unsigned long long)st->counted,
        "filtered", (unsigned long long)st->filtered,
        "buckets", (unsigned long long)st->buckets,
        "rescans", (unsigned long long)st->rescans,
        "undone", (unsigned long long)st->undone,
        "longest_held_ns", (unsigned long long)st->longest_held_ns,
        "giveups", (unsigned long long)st->giveups,
        "unreadable", (unsigned long long)st->unreadable,
        "bad_family", (unsigned long long)st->bad_family,
        "bad_state", (unsigned long long)st->bad_state,
        "bad_ns", (unsigned long long)st->bad_ns,
        "full", (unsigned long long)st->full,
        "log_overflow", (unsigned long long)st->log_overflow,
        "anomalies", (unsigned long long)fts_walk_anomalies(st));
}

/* {inum: (ipv4, ipv6)} of every namespace in `slots`. */
static PyObject *
tallies_dict(const struct fts_walk_slot *slots, uint32_t nslots)
{
    PyObject *d = PyDict_New();
    for (uint32_t i = 0; d != NULL && i < nslots; i++) {
        const struct fts_walk_slot *s = &slots[i];
        if (s->inum == 0) {
            continue;
        }
        PyObject *key = PyLong_FromUnsignedLong(s->inum);
        PyObject *pair = fts_py_tally_pair(s->n);
        if (key == NULL || pair == NULL || PyDict_SetItem(d, key, pair) < 0) {
            Py_CLEAR(d);
        }
        Py_XDECREF(key);
        Py_XDECREF(pair);
    }
    return d;
}

PyDoc_STRVAR(pass_doc,
"walk(only_inum=0, tables=3, budget=16384)\n--\n\n"
"Walk the TCP tables of the calling thread's network namespace (from the\n"
"host's: every namespace sharing its table) and return (tallies, stats):\n"
"{namespace inode: (ipv4, ipv6)} (only `only_inum` if not 0) and the\n"
"pass's statistics, whose 'anomalies' must be 0 for the tallies to be\n"
"exact.  tables: 1 ehash, 2 listeners, 3 both.  Python's signal handlers\n"
"run between runs of `budget` loop iterations.");

static PyObject *
WalkCounter_walk(WalkCounter *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"only_inum", "tables", "budget", NULL};
    struct pass p = {.tables = FTS_WALK_EHASH | FTS_WALK_LHASH2,
                     .budget = DEFAULT_BUDGET};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|III:walk", kwlist,
                                     &p.only_inum, &p.tables, &p.budget)) {
        return NULL;
    }
    if (p.budget == 0 || p.tables == 0
        || (p.tables & ~(FTS_WALK_EHASH | FTS_WALK_LHASH2))) {
        PyErr_SetString(PyExc_ValueError, "budget must be at least 1 and "
                        "tables 1 (ehash), 2 (listeners) or 3 (both)");
        return NULL;
    }
    p.slots = PyMem_Malloc((p.only_inum ? 1 : self->nslots)
                           * sizeof(*p.slots));
    if (p.slots == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *tallies = NULL;
    if (fts_core_run(&self->core, run_pass, (PyObject *)self, &p,
                     "walk count") == 0) {
        tallies = tallies_dict(p.slots, p.nslots);
    }
    PyMem_Free(p.slots);
    if (tallies == NULL) {
        return NULL;
    }
    PyObject *stats = stats_dict(&p.st);
    if (stats == NULL) {
        Py_DECREF(tallies);
        return NULL;
    }
    return Py_BuildValue("(NN)", tallies, stats);
}

struct batch {
    struct fts_walk_job *jobs;
    size_t njobs;
    uint32_t budget;
    size_t failed;
    /* The slots in use, copied under the lock. */
    struct fts_walk_slot *slots;
    uint32_t nslots;
};

static int
run_batch(PyObject *obj, void *arg, struct fts_core_call *call)
{
    WalkCounter *self = (WalkCounter *)obj;
    struct batch *b = arg;
    if (own_program(self, call) < 0) {
        return -1;
    }
    if (fts_walker_passes(&self->walker, b->jobs, b->njobs, b->budget,
                          &b->failed, fts_py_check_signals, &call->released,
                          &call->err) < 0) {
        return -1;
    }
    b->nslots = 0;
    for (uint32_t i = 0; i < self->walker.nslots; i++) {
        if (self->walker.slots[i].inum != 0) {
            b->slots[b->nslots++] = self->walker.slots[i];
        }
    }
    return 0;
}

/* jobs: a sequence of (fd, tables, only_inum), into b->jobs. */
static int
parse_jobs(PyObject *jobs, struct batch *b)
{
    Py_ssize_t n = PySequence_Size(jobs);
    if (n < 0) {
        PyErr_SetString(PyExc_TypeError, "jobs must be a sequence of "
                                         "(fd, tables, only_inum)");
        return -1;
    }
    b->jobs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(*b->jobs));
    if (b->jobs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->njobs = (size_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        struct fts_walk_job *j = &b->jobs[i];
        PyObject *item = PySequence_GetItem(jobs, i);
        int ok = item != NULL
                 && PyArg_ParseTuple(item, "iII;jobs must hold (fd, tables, "
                                     "only_inum)", &j->netns_fd, &j->tables,
                                     &j->only_inum);
        Py_XDECREF(item);
        if (!ok) {
            return -1;
        }
        if (j->netns_fd < -1 || j->tables == 0
            || (j->tables & ~(FTS_WALK_EHASH | FTS_WALK_LHASH2))) {
            PyErr_Format(PyExc_ValueError, "jobs[%zd]: fd must be -1 (this "
                         "thread's namespace) or an open namespace file, "
                         "and tables 1 (ehash), 2 (listeners) or 3 (both)",
                         i);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(passes_doc,
"walk_passes(jobs, budget=16384)\n--\n\n"
"Make one pass per job, in order, with the GIL released once, and return\n"
"(tallies, stats): tallies added up over every pass, {namespace inode:\n"
"(ipv4, ipv6)}, and a list of each pass's statistics (as walk() gives).\n"
"jobs: (fd, tables, only_inum) each: the pass walks `tables` of the\n"
"network namespace open as fd (setns(); -1: the calling thread's own),\n"
"tallying only only_inum if not 0.  The calling thread is back in its\n"
"own namespace afterwards, whatever failed (unless the error says it\n"
"could not return: call this from a thread that ends after).");

static PyObject *
WalkCounter_walk_passes(WalkCounter *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"jobs", "budget", NULL};
    PyObject *jobs_obj;
    struct batch b = {.budget = DEFAULT_BUDGET};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|I:walk_passes", kwlist,
                                     &jobs_obj, &b.budget)) {
        return NULL;
    }
    if (b.budget == 0) {
        PyErr_SetString(PyExc_ValueError, "budget must be at least 1");
        return NULL;
    }
    PyObject *tallies = NULL, *stats = NULL;
    if (parse_jobs(jobs_obj, &b) < 0) {
        goto done;
    }
    b.slots = PyMem_Malloc(self->nslots * sizeof(*b.slots));
    if (b.slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (fts_core_run(&self->core, run_batch, (PyObject *)self, &b,
                     "walk of every table") < 0) {
        goto done;
    }
    tallies = tallies_dict(b.slots, b.nslots);
    stats = tallies == NULL ? NULL : PyList_New((Py_ssize_t)b.njobs);
    for (size_t i = 0; stats != NULL && i < b.njobs; i++) {
        PyObject *one = stats_dict(&b.jobs[i].st);
        if (one == NULL) {
            Py_CLEAR(stats);
            break;
        }
        PyList_SetItem(stats, (Py_ssize_t)i, one);  /* steals one */
    }
    if (stats == NULL) {
        Py_CLEAR(tallies);
    }
done:
    PyMem_Free(b.jobs);
    PyMem_Free(b.slots);
    if (tallies == NULL) {
        return NULL;
    }
    return Py_BuildValue("(NN)", tallies, stats);
}

static void
release_program(PyObject *self)
{
    fts_walker_close(&((WalkCounter *)self)->walker);
}

static PyObject *
WalkCounter_close(WalkCounter *self, PyObject *Py_UNUSED(ignored))
{
    return fts_core_close(&self->core, release_program, (PyObject *)self);
}

static PyObject *
WalkCounter_get_closed(WalkCounter *self, void *Py_UNUSED(closure))
{
    return fts_core_closed(&self->core);
}

static PyObject *
WalkCounter_get_insns(WalkCounter *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->walker.insns);
}

static PyMethodDef WalkCounter_methods[] = {
    {"walk", (PyCFunction)(void (*)(void))WalkCounter_walk,
     METH_VARARGS | METH_KEYWORDS, pass_doc},
    {"walk_passes", (PyCFunction)(void (*)(void))WalkCounter_walk_passes,
     METH_VARARGS | METH_KEYWORDS, passes_doc},
    {"close", (PyCFunction)WalkCounter_close, METH_NOARGS,
     "close()\n--\n\nUnload the program and free the tallies."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef WalkCounter_getset[] = {
    {"closed", (getter)WalkCounter_get_closed, NULL, "True after close().",
     NULL},
    {"insns", (getter)WalkCounter_get_insns, NULL,
     "The program's length in instructions.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyDoc_STRVAR(WalkCounter_doc,
"WalkCounter(layout, *, states=0, local=(), remote=(), slots=4096)\n--\n\n"
"A BPF_PROG_TYPE_SYSCALL program that walks the kernel's TCP hash tables\n"
"and tallies sockets per network namespace, family and state.\n\n"
"layout: walk_layout()'s tuple.  states: bit mask of the states counted\n"
"(0: all).  local/remote: (low, high) port ranges kept.  slots: the\n"
"namespaces one pass can tell apart (a power of two).  Needs CAP_BPF +\n"
"CAP_PERFMON or CAP_SYS_ADMIN, and Linux >= 6.2.");

static PyType_Slot WalkCounter_slots[] = {
    {Py_tp_new, WalkCounter_new},
    {Py_tp_dealloc, WalkCounter_dealloc},
    {Py_tp_methods, WalkCounter_methods},
    {Py_tp_getset, WalkCounter_getset},
    {Py_tp_doc, (void *)WalkCounter_doc},
    {0, NULL}
};

static PyType_Spec WalkCounter_spec = {
    .name = "fasttcpstat._fasttcpstat.WalkCounter",
    .basicsize = sizeof(WalkCounter),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = WalkCounter_slots,
};

static PyMethodDef walk_functions[] = {
    {"walk_layout", (PyCFunction)(void (*)(void))walk_layout,
     METH_VARARGS | METH_KEYWORDS, walk_layout_doc},
    {NULL, NULL, 0, NULL}
};

int
fts_py_add_walk(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&WalkCounter_spec);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "WalkCounter", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return PyModule_AddFunctions(module, walk_functions);
}

/*
 * The bpf(2) side of the iterator backend: maps, program loading, links,
 * iterators, pinning.
 */
#include "bpf_iter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "bpf_sys.h"

static int
map_create(uint32_t type, uint32_t key_size, uint32_t value_size,
           uint32_t max_entries, uint32_t flags)
{
    struct fts_bpf_map_create_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_type = type;
    attr.key_size = key_size;
    attr.value_size = value_size;
    attr.max_entries = max_entries;
    attr.map_flags = flags;
    return fts_sys_bpf(FTS_BPF_MAP_CREATE, &attr, sizeof(attr));
}

/* Load a tracing program for the tcp iterator.  The verifier's log is
 * asked for only after a refusal, so a successful load pays nothing. */
static int
prog_load(const struct fts_bpf_insn *insns, size_t n, uint32_t btf_id,
          char *log, size_t logsize)
{
    struct fts_bpf_prog_load_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = FTS_BPF_PROG_TYPE_TRACING;
    attr.expected_attach_type = FTS_BPF_TRACE_ITER;
    attr.attach_btf_id = btf_id;
    attr.insns = fts_ptr_to_u64(insns);
    attr.insn_cnt = (uint32_t)n;
    attr.license = fts_ptr_to_u64("GPL");  /* the helpers used are GPL-only */
    memcpy(attr.prog_name, "fasttcpstat", sizeof("fasttcpstat"));
    int fd = fts_sys_bpf(FTS_BPF_PROG_LOAD, &attr, sizeof(attr));
    if (fd >= 0 || log == NULL || logsize < 2) {
        return fd;
    }
    int saved = errno;
    log[0] = '\0';
    attr.log_level = 1;
    attr.log_buf = fts_ptr_to_u64(log);
    attr.log_size = (uint32_t)(logsize > UINT32_MAX ? UINT32_MAX : logsize);
    int again = fts_sys_bpf(FTS_BPF_PROG_LOAD, &attr, sizeof(attr));
    if (again >= 0) {
        return again;  /* a transient refusal; keep the program */
    }
    log[logsize - 1] = '\0';
    errno = saved;
    return -1;
}

static int
link_create(int prog_fd)
{
    struct fts_bpf_link_create_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_fd = (uint32_t)prog_fd;
    attr.attach_type = FTS_BPF_TRACE_ITER;
    return fts_sys_bpf(FTS_BPF_LINK_CREATE, &attr, sizeof(attr));
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

void
fts_bpf_init(struct fts_bpf_counter *c)
{
    c->map_fd = -1;
    c->cgroup_fd = -1;
    c->prog_fd = -1;
    c->link_fd = -1;
    c->counters = NULL;
    c->mapped = 0;
    c->owner = 0;
}

int
fts_bpf_owned(const struct fts_bpf_counter *c)
{
    return c->link_fd >= 0 && c->owner == getpid();
}

void
fts_bpf_close(struct fts_bpf_counter *c)
{
    if (c->counters != NULL) {
        munmap((void *)c->counters, c->mapped);
        c->counters = NULL;
    }
    close_fd(&c->link_fd);
    close_fd(&c->prog_fd);
    close_fd(&c->cgroup_fd);
    close_fd(&c->map_fd);
}

/* Whether a bpf() failure may be a missing capability: EMFILE or ENOMEM
 * name their own cause, and a capability hint would send the reader the
 * wrong way. */
static int
lacks_privilege(int code)
{
    return code != EMFILE && code != ENFILE && code != ENOMEM;
}

int
fts_bpf_open(struct fts_bpf_counter *c, const struct fts_btf_layout *layout,
             const struct fts_bpf_filter *filter,
             const struct fts_bpf_cgroup_layout *cgroup,
             unsigned max_cgroups, unsigned emit_shift, char *log,
             size_t logsize, struct fts_error *err)
{
    fts_bpf_init(c);
    c->owner = getpid();
    if (emit_shift == 0 || emit_shift > 20) {
        return fts_fail(err, EINVAL,
                        "emit interval must be 2^1..2^20 sockets");
    }
    if (cgroup != NULL
        && (max_cgroups == 0 || max_cgroups > FTS_MAX_BY_CGROUP)) {
        return fts_fail(err, EINVAL, "the cgroups told apart must be "
                        "1..FTS_MAX_BY_CGROUP");
    }
    /* One array entry holding all counters, mmapped so that reading them
     * costs no system call. */
    c->map_fd = map_create(FTS_BPF_MAP_TYPE_ARRAY, 4,
                           FTS_BPF_COUNT_VALUE_SIZE, 1, FTS_BPF_F_MMAPABLE);
    if (c->map_fd < 0) {
        return fts_fail(err, errno, lacks_privilege(errno)
                        ? "bpf(BPF_MAP_CREATE) of the counter array "
                          "(needs CAP_BPF, or CAP_SYS_ADMIN)"
                        : "bpf(BPF_MAP_CREATE) of the counter array");
    }
    long page = sysconf(_SC_PAGESIZE);
    c->mapped = page > 0 ? (size_t)page : 4096;
    void *m = mmap(NULL, c->mapped, PROT_READ | PROT_WRITE, MAP_SHARED,
                   c->map_fd, 0);
    if (m == MAP_FAILED) {
        int saved = errno;
        fts_bpf_close(c);
        return fts_fail(err, saved, "mmap() of the counter array (needs Linux "
                                ">= 5.5)");
    }
    c->counters = m;
    struct fts_bpf_by_cgroup by_cgroup;
    if (cgroup != NULL) {
        /* Preallocated (the default): a tracing program may not create
         * entries in a hash map that allocates before Linux 6.1. */
        c->cgroup_fd = map_create(FTS_BPF_MAP_TYPE_HASH, 8, FTS_BPF_ROW_SIZE,
                                  max_cgroups, 0);
        if (c->cgroup_fd < 0) {
            int saved = errno;
            fts_bpf_close(c);
            return fts_fail(err, saved, "bpf(BPF_MAP_CREATE) of the "
                            "per-cgroup counters");
        }
        by_cgroup.layout = *cgroup;
        by_cgroup.map_fd = c->cgroup_fd;
    }

    size_t cap = fts_bpf_count_prog_len(filter);
    struct fts_bpf_insn *insns = calloc(cap, sizeof(*insns));
    if (insns == NULL) {
        fts_bpf_close(c);
        return fts_fail(err, ENOMEM, "generating the BPF program");
    }
    size_t n = fts_bpf_count_prog_by(insns, cap, layout, filter, c->map_fd,
                                     emit_shift,
                                     cgroup != NULL ? &by_cgroup : NULL);
    if (n == 0) {
        free(insns);
        fts_bpf_close(c);
        return fts_fail(err, EINVAL, "generating the BPF program");
    }
    c->prog_fd = prog_load(insns, n, layout->iter_tcp_func_id, log, logsize);
    int saved = errno;
    free(insns);
    if (c->prog_fd < 0) {
        fts_bpf_close(c);
        return fts_fail(err, saved, lacks_privilege(saved)
                        ? "bpf(BPF_PROG_LOAD) of the iterator program "
                          "(needs CAP_BPF + CAP_PERFMON, or "
                          "CAP_SYS_ADMIN; Linux >= 5.9)"
                        : "bpf(BPF_PROG_LOAD) of the iterator program");
    }
    c->link_fd = link_create(c->prog_fd);
    if (c->link_fd < 0) {
        saved = errno;
        fts_bpf_close(c);
        return fts_fail(err, saved, "bpf(BPF_LINK_CREATE) of the iterator");
    }
    return 0;
}

int
fts_bpf_iter_create(const struct fts_bpf_counter *c, struct fts_error *err)
{
    struct fts_bpf_iter_create_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_fd = (uint32_t)c->link_fd;
    int fd = fts_sys_bpf(FTS_BPF_ITER_CREATE, &attr, sizeof(attr));
    if (fd < 0) {
        return fts_fail(err, errno, "bpf(BPF_ITER_CREATE)");
    }
    return fd;
}

/* One bpf(2) command on an element of map `fd`. */
static int
map_elem(int cmd, int fd, const void *key, void *value)
{
    struct fts_bpf_map_elem_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)fd;
    attr.key = fts_ptr_to_u64(key);
    attr.value = fts_ptr_to_u64(value);  /* next_key for GET_NEXT_KEY */
    return fts_sys_bpf(cmd, &attr, sizeof(attr));
}

/* Empty the per-cgroup map, adding each row to `cgroups` (NULL: drop
 * them: what an interrupted or failed count left behind). */
static int
drain_cgroups(struct fts_bpf_counter *c, struct fts_cgroup_tally *cgroups,
              unsigned families, struct fts_error *err)
{
    uint64_t id;
    uint64_t row[FTS_BPF_ROW];
    /* The first key each time: the one before was deleted. */
    while (map_elem(FTS_BPF_MAP_GET_NEXT_KEY, c->cgroup_fd, NULL, &id) == 0) {
        if (map_elem(FTS_BPF_MAP_LOOKUP_ELEM, c->cgroup_fd, &id, row) < 0
            || map_elem(FTS_BPF_MAP_DELETE_ELEM, c->cgroup_fd, &id,
                        NULL) < 0) {
            return fts_fail(err, errno, "reading the per-cgroup counters");
        }
        if (cgroups != NULL) {
            fts_cgroup_add_row(cgroups, 1, id, row, families);
        }
    }
    if (errno != ENOENT) {
        return fts_fail(err, errno, "bpf(BPF_MAP_GET_NEXT_KEY) of the "
                        "per-cgroup counters");
    }
    return 0;
}

int
fts_bpf_run(struct fts_bpf_counter *c, int iter_fd, struct fts_tally *tally,
            struct fts_cgroup_tally *cgroups, size_t *output,
            fts_interrupt_fn on_interrupt, void *interrupt_arg,
            struct fts_error *err)
{
    /* One byte per read: the kernel stops a read once it has `size`
     * bytes, so each read returns after one progress mark (every
     * 2^emit_shift sockets), and signals are looked at in between. */
    char mark;
    size_t written = 0;
    int rc = 0;
    for (int i = 0; i < FTS_BPF_COUNT_NSLOTS; i++) {
        c->counters[i] = 0;
    }
    if (c->cgroup_fd >= 0 && drain_cgroups(c, NULL, 0, err) < 0) {
        close(iter_fd);
        return -1;
    }
    for (;;) {
        ssize_t n = read(iter_fd, &mark, 1);
        if (n > 0) {
            written += (size_t)n;
            if (on_interrupt != NULL && on_interrupt(interrupt_arg, 0)) {
                rc = fts_fail(err, EINTR, "reading the BPF iterator");
                break;
            }
            continue;
        }
        if (n == 0) {
            break;
        }
        if (errno == EINTR) {
            if (on_interrupt != NULL && on_interrupt(interrupt_arg, 1)) {
                rc = fts_fail(err, EINTR, "reading the BPF iterator");
                break;
            }
            continue;
        }
        rc = fts_fail(err, errno, "read() of the BPF iterator");
        break;
    }
    close(iter_fd);
    if (rc < 0) {
        return rc;
    }
    fts_counts_add_row(&tally->n, c->counters, tally->families);
    if (c->cgroup_fd >= 0 && cgroups != NULL) {
        fts_counts_add_row(&cgroups->unowned,
                           c->counters + FTS_BPF_SLOT_UNOWNED,
                           tally->families);
        fts_counts_add_row(&cgroups->overflow,
                           c->counters + FTS_BPF_SLOT_OVERFLOW,
                           tally->families);
        if (drain_cgroups(c, cgroups, tally->families, err) < 0) {
            return -1;
        }
    }
    *output = written;
    return 0;
}

int
fts_bpf_pin_text(const struct fts_btf_layout *layout, const char *path,
                 unsigned emit_shift, char *log, size_t logsize,
                 struct fts_error *err)
{
    int sessions = -1, strings = -1, prog = -1, link = -1, rc = -1;
    /* LRU: a reader that stops before the end never reaches the final
     * call that frees its entry; the oldest such entries get evicted. */
    sessions = map_create(FTS_BPF_MAP_TYPE_LRU_HASH, 8,
                          FTS_BPF_VALUE_SIZE, 4096, 0);
    if (sessions < 0) {
        fts_fail(err, errno, "bpf(BPF_MAP_CREATE) of the session map");
        goto done;
    }
    strings = map_create(FTS_BPF_MAP_TYPE_ARRAY, 4, FTS_BPF_TEXT_SIZE, 1,
                         FTS_BPF_F_RDONLY_PROG);
    if (strings < 0) {
        fts_fail(err, errno, "bpf(BPF_MAP_CREATE) of the format strings");
        goto done;
    }
    char text[FTS_BPF_TEXT_SIZE];
    uint32_t key = 0;
    fts_bpf_text_strings(text);
    struct fts_bpf_map_elem_attr elem;
    memset(&elem, 0, sizeof(elem));
    elem.map_fd = (uint32_t)strings;
    elem.key = fts_ptr_to_u64(&key);
    elem.value = fts_ptr_to_u64(text);
    if (fts_sys_bpf(FTS_BPF_MAP_UPDATE_ELEM, &elem, sizeof(elem)) < 0) {
        fts_fail(err, errno, "writing the format strings");
        goto done;
    }
    /* Frozen and read-only to the program: seq_printf formats must be. */
    struct fts_bpf_map_freeze_attr freeze = {.map_fd = (uint32_t)strings};
    if (fts_sys_bpf(FTS_BPF_MAP_FREEZE, &freeze, sizeof(freeze)) < 0) {
        fts_fail(err, errno, "bpf(BPF_MAP_FREEZE) of the format strings");
        goto done;
    }
    struct fts_bpf_insn insns[FTS_BPF_TEXT_PROG_MAXLEN];
    size_t n = fts_bpf_text_prog(insns, FTS_BPF_TEXT_PROG_MAXLEN, layout,
                                 sessions, strings, emit_shift);
    if (n == 0) {
        fts_fail(err, EINVAL, "generating the BPF text program");
        goto done;
    }
    prog = prog_load(insns, n, layout->iter_tcp_func_id, log, logsize);
    if (prog < 0) {
        fts_fail(err, errno, "bpf(BPF_PROG_LOAD) of the text program");
        goto done;
    }
    link = link_create(prog);
    if (link < 0) {
        fts_fail(err, errno, "bpf(BPF_LINK_CREATE) of the text iterator");
        goto done;
    }
    struct fts_bpf_obj_pin_attr pin;
    memset(&pin, 0, sizeof(pin));
    pin.pathname = fts_ptr_to_u64(path);
    pin.bpf_fd = (uint32_t)link;
    if (fts_sys_bpf(FTS_BPF_OBJ_PIN, &pin, sizeof(pin)) < 0) {
        fts_fail(err, errno, "bpf(BPF_OBJ_PIN) of the iterator (the path must "
                         "be in a mounted BPF filesystem, e.g. "
                         "/sys/fs/bpf)");
        goto done;
    }
    rc = 0;
done:
    /* The pinned link keeps the program and its maps alive. */
    close_fd(&link);
    close_fd(&prog);
    close_fd(&strings);
    close_fd(&sessions);
    return rc;
}

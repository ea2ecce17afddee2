/*
 * The bpf(2) side of the walk backend: map, program BTF, program load,
 * runs, and the rescan bookkeeping between runs.
 */
#include "walk_run.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include "bpf_abi.h"
#include "bpf_sys.h"

/* The part of the bpf(2) ABI only this backend uses (bpf_abi.h has the
 * iterator's). */
#define BPF_PROG_TEST_RUN 10
#define BPF_BTF_LOAD 18
#define BPF_PROG_TYPE_SYSCALL 31
#define BPF_F_SLEEPABLE (1u << 4)
#define LOG_LEVEL_VERBOSE 1
#define LOG_LEVEL_STATS 4

struct btf_load_attr {
    uint64_t btf;
    uint64_t btf_log_buf;
    uint32_t btf_size;
    uint32_t btf_log_size;
    uint32_t btf_log_level;
};

/* BPF_MAP_CREATE's attributes up to the BTF ids (bpf_abi.h's stop before
 * map_name), all zero but the name: the tally map is named in bpftool's
 * listing, and valgrind, which reads these whatever size is passed, finds
 * them initialised. */
struct map_create_attr {
    struct fts_bpf_map_create_attr base;
    uint32_t inner_map_fd;
    uint32_t numa_node;
    char map_name[16];
    uint32_t map_ifindex;
    uint32_t btf_fd;
    uint32_t btf_key_type_id;
    uint32_t btf_value_type_id;
};

struct test_run_attr {
    uint32_t prog_fd;
    uint32_t retval;
    uint32_t data_size_in;
    uint32_t data_size_out;
    uint64_t data_in;
    uint64_t data_out;
    uint32_t repeat;
    uint32_t duration;
    uint32_t ctx_size_in;
    uint32_t ctx_size_out;
    uint64_t ctx_in;
    uint64_t ctx_out;
    uint32_t flags;
    uint32_t cpu;
};



static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
fts_walk_anomalies(const struct fts_walk_stats *st)
{
    return st->giveups + st->unreadable + st->bad_family + st->bad_state
           + st->bad_ns + st->full + st->log_overflow;
}

void
fts_walker_init(struct fts_walker *w)
{
    memset(w, 0, sizeof(*w));
    w->map_fd = -1;
    w->prog_fd = -1;
    w->slack = FTS_WALK_SLACK;
    w->read_ahead = 1;
}

void
fts_walker_close(struct fts_walker *w)
{
    if (w->ctl != NULL) {
        munmap(w->ctl, w->mapped);
    }
    if (w->prog_fd >= 0) {
        close(w->prog_fd);
    }
    if (w->map_fd >= 0) {
        close(w->map_fd);
    }
    fts_walker_init(w);
}

static int
create_map(struct fts_walker *w, uint32_t nslots, struct fts_error *err)
{
    size_t size = fts_walk_value_size(nslots);
    struct map_create_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.base.map_type = FTS_BPF_MAP_TYPE_ARRAY;
    attr.base.key_size = 4;
    attr.base.value_size = (uint32_t)size;
    attr.base.max_entries = 1;
    attr.base.map_flags = FTS_BPF_F_MMAPABLE;
    memcpy(attr.map_name, "fasttcpstat_wlk", sizeof("fasttcpstat_wlk"));
    w->map_fd = fts_sys_bpf(FTS_BPF_MAP_CREATE, &attr, sizeof(attr));
    if (w->map_fd < 0) {
        return fts_fail(err, errno, "bpf(BPF_MAP_CREATE) of the walk's "
                                    "tally (needs CAP_BPF, or "
                                    "CAP_SYS_ADMIN)");
    }
    long page = sysconf(_SC_PAGESIZE);
    size_t p = page > 0 ? (size_t)page : 4096;
    w->mapped = (size + p - 1) / p * p;
    void *m = mmap(NULL, w->mapped, PROT_READ | PROT_WRITE, MAP_SHARED,
                   w->map_fd, 0);
    if (m == MAP_FAILED) {
        return fts_fail(err, errno, "mmap() of the walk's tally");
    }
    w->ctl = m;
    w->slots = (struct fts_walk_slot *)(w->ctl + 1);
    w->nslots = nslots;
    return 0;
}

static int
load_btf(uint32_t callback_at, uint32_t func_info[4], struct fts_error *err)
{
    unsigned char blob[FTS_WALK_BTF_MAXLEN];
    size_t len = fts_walk_prog_btf(blob, sizeof(blob), callback_at,
                                   func_info);
    if (len == 0) {
        return fts_fail(err, EINVAL, "generating the walk program's BTF");
    }
    struct btf_load_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.btf = fts_ptr_to_u64(blob);
    attr.btf_size = (uint32_t)len;
    int fd = fts_sys_bpf(BPF_BTF_LOAD, &attr, sizeof(attr));
    if (fd < 0) {
        return fts_fail(err, errno, "bpf(BPF_BTF_LOAD) of the walk "
                                    "program's BTF");
    }
    return fd;
}

/* "processed N insns" from a verifier log. */
static uint32_t
processed_insns(const char *log)
{
    const char *p = strstr(log, "processed ");
    unsigned long n = 0;
    if (p == NULL || sscanf(p, "processed %lu insns", &n) != 1) {
        return 0;
    }
    return (uint32_t)n;
}

static int
load_prog(struct fts_walker *w, const struct fts_bpf_insn *insns, size_t n,
          int btf_fd, const uint32_t func_info[4], char *log,
          size_t logsize, uint32_t *verified)
{
    char stats[1024];
    struct fts_bpf_prog_load_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SYSCALL;
    attr.prog_flags = BPF_F_SLEEPABLE;
    attr.insns = fts_ptr_to_u64(insns);
    attr.insn_cnt = (uint32_t)n;
    attr.license = fts_ptr_to_u64("GPL");  /* bpf_loop and kfuncs: GPL only */
    memcpy(attr.prog_name, "fasttcpstat_wlk", sizeof("fasttcpstat_wlk"));
    attr.prog_btf_fd = (uint32_t)btf_fd;
    attr.func_info_rec_size = 8;
    attr.func_info = fts_ptr_to_u64(func_info);
    attr.func_info_cnt = 2;
    if (verified != NULL) {
        stats[0] = '\0';
        attr.log_level = LOG_LEVEL_STATS;
        attr.log_buf = fts_ptr_to_u64(stats);
        attr.log_size = sizeof(stats);
    }
    w->prog_fd = fts_sys_bpf(FTS_BPF_PROG_LOAD, &attr, sizeof(attr));
    if (w->prog_fd >= 0) {
        if (verified != NULL) {
            *verified = processed_insns(stats);
        }
        return 0;
    }
    int saved = errno;
    if (log != NULL && logsize >= 2) {
        log[0] = '\0';
        attr.log_level = LOG_LEVEL_VERBOSE;
        attr.log_buf = fts_ptr_to_u64(log);
        attr.log_size = (uint32_t)(logsize > UINT32_MAX ? UINT32_MAX
                                                        : logsize);
        w->prog_fd = fts_sys_bpf(FTS_BPF_PROG_LOAD, &attr, sizeof(attr));
        log[logsize - 1] = '\0';
        if (w->prog_fd >= 0) {
            return 0;  /* a transient refusal; keep the program */
        }
    }
    errno = saved;
    return -1;
}

int
fts_walker_open(struct fts_walker *w, const struct fts_walk_layout *l,
                const struct fts_walk_filter *filter, uint32_t nslots,
                char *log, size_t logsize, uint32_t *verified,
                struct fts_error *err)
{
    fts_walker_init(w);
    if (nslots == 0 || nslots > FTS_WALK_MAX_SLOTS
        || (nslots & (nslots - 1)) != 0) {
        return fts_fail(err, EINVAL, "nslots must be a power of two up to "
                                     "FTS_WALK_MAX_SLOTS");
    }
    if (create_map(w, nslots, err) < 0) {
        fts_walker_close(w);
        return -1;
    }
    size_t cap = fts_walk_prog_len(filter);
    struct fts_bpf_insn *insns = calloc(cap, sizeof(*insns));
    if (insns == NULL) {
        fts_walker_close(w);
        return fts_fail(err, ENOMEM, "generating the walk program");
    }
    /* Raw reads where the kernel has them (fewer instructions a socket),
     * else typed ones: the same walk. */
    struct fts_walk_layout lay = *l;
    int btf_fd = -1, rc = -1;
    for (int raw = 1; raw >= 0; raw--) {
        lay.raw_reads = (uint16_t)raw;
        uint32_t callback_at = 0, func_info[4];
        size_t n = fts_walk_prog(insns, cap, &lay, filter, w->map_fd, nslots,
                                 &callback_at);
        if (n == 0) {
            fts_fail(err, EINVAL, "generating the walk program");
            goto done;
        }
        w->insns = (uint32_t)n;
        w->raw_reads = raw;
        btf_fd = load_btf(callback_at, func_info, err);
        if (btf_fd < 0) {
            goto done;
        }
        int loaded = load_prog(w, insns, n, btf_fd, func_info,
                               raw ? NULL : log, raw ? 0 : logsize,
                               verified);
        close(btf_fd);  /* the program holds its own reference */
        btf_fd = -1;
        if (loaded == 0) {
            break;
        }
        if (!raw) {
            fts_fail(err, errno, "bpf(BPF_PROG_LOAD) of the walk program "
                                 "(needs CAP_BPF + CAP_PERFMON, or "
                                 "CAP_SYS_ADMIN; Linux >= 6.2)");
            goto done;
        }
    }
    rc = 0;
done:
    if (btf_fd >= 0) {
        close(btf_fd);  /* the program holds its own reference */
    }
    free(insns);
    if (rc < 0) {
        fts_walker_close(w);
    }
    return rc;
}

static int
run_once(struct fts_walker *w, struct fts_walk_stats *st,
         struct fts_error *err)
{
    struct test_run_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_fd = (uint32_t)w->prog_fd;
    uint64_t t0 = now_ns();
    int rc = fts_sys_bpf(BPF_PROG_TEST_RUN, &attr, sizeof(attr));
    uint64_t took = now_ns() - t0;
    if (rc < 0) {
        return fts_fail(err, errno, "bpf(BPF_PROG_TEST_RUN) of the walk "
                                    "program");
    }
    st->runs++;
    st->loops += w->ctl->loops;
    if (w->ctl->held_ns > st->longest_held_ns) {
        st->longest_held_ns = w->ctl->held_ns;
    }
    if (took > st->longest_run_ns) {
        st->longest_run_ns = took;
    }
    return 0;
}

/* Take back the increments logged for the current bucket and place the
 * cursor at its start.  Returns -1 if the log overflowed (they cannot
 * all be taken back). */
static int
undo_bucket(struct fts_walker *w)
{
    struct fts_walk_ctl *c = w->ctl;
    uint32_t n = c->nlog;
    int rc = 0;
    if (n > FTS_WALK_LOG) {
        n = FTS_WALK_LOG;
        rc = -1;
    }
    unsigned char *base = (unsigned char *)c;
    size_t size = fts_walk_value_size(w->nslots);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t off = c->log[i];
        uint64_t v;
        if (off % 8 != 0 || off > size - 8) {
            rc = -1;  /* cannot happen: the program checked it */
            continue;
        }
        memcpy(&v, base + off, sizeof(v));
        v--;
        memcpy(base + off, &v, sizeof(v));
        c->counted--;
    }
    c->node = 0;
    c->nlog = 0;
    return rc;
}

static void
collect(const struct fts_walk_ctl *c, struct fts_walk_stats *st)
{
    st->sockets = c->counted + c->filtered + c->bad_family + c->bad_state
                  + c->bad_ns + c->full;
    st->counted = c->counted;
    st->filtered = c->filtered;
    st->buckets = c->buckets;
    st->unreadable = c->unreadable;
    st->bad_family = c->bad_family;
    st->bad_state = c->bad_state;
    st->bad_ns = c->bad_ns;
    st->full = c->full;
    st->hashinfo = c->hashinfo;
}

/* Skip the current bucket, its increments taken back. */
static void
give_up(struct fts_walker *w, struct fts_walk_stats *st)
{
    if (undo_bucket(w) < 0) {
        st->log_overflow++;
    }
    st->giveups++;
    w->ctl->bucket++;
}

/* The touch lanes read ahead along the chains, which pays where chains
 * are long; where most buckets hold one socket or none their refills cost
 * more than they save (100k sockets in 278,528 buckets: 0.89x-0.93x
 * without them; 300k: 1.09x).  The next pass takes them from 2 sockets per
 * 3 buckets of this one's. */
static void
choose_read_ahead(struct fts_walker *w, unsigned tables,
             const struct fts_walk_stats *st)
{
    if (tables & FTS_WALK_EHASH) {
        uint64_t buckets = (uint64_t)w->ctl->ehash_mask + 1;
        w->read_ahead = 3 * st->sockets >= 2 * buckets;
    }
}

static int
check_pass_args(unsigned tables, uint32_t budget, struct fts_error *err)
{
    if (budget == 0) {
        return fts_fail(err, EINVAL, "budget must be at least 1");
    }
    if (tables == 0 || (tables & ~(FTS_WALK_EHASH | FTS_WALK_LHASH2)) != 0) {
        return fts_fail(err, EINVAL, "tables must be FTS_WALK_EHASH and/or "
                                     "FTS_WALK_LHASH2");
    }
    return 0;
}

/* One pass, adding to the slots as they are: only the control block is
 * reset (the slots are most of the map value: 0.9 MB at 4096 slots, whose
 * zeroing was most of a small table's pass). */
static int
pass_adding(struct fts_walker *w, unsigned tables, uint32_t budget,
            uint32_t only_inum, struct fts_walk_stats *st,
            fts_interrupt_fn on_interrupt, void *interrupt_arg,
            struct fts_error *err)
{
    struct fts_walk_ctl *c = w->ctl;
    memset(st, 0, sizeof(*st));
    if (check_pass_args(tables, budget, err) < 0) {
        return -1;
    }
    memset(c, 0, sizeof(*c));
    c->budget = budget;
    c->slack = w->slack;
    c->only_inum = only_inum;
    c->tables = tables;
    c->read_ahead = (uint32_t)w->read_ahead;
    c->table = (tables & FTS_WALK_EHASH) ? FTS_WALK_TABLE_EHASH
                                         : FTS_WALK_TABLE_LHASH2;
    uint32_t tries = 0;
    for (;;) {
        uint32_t start_table = c->table, start_bucket = c->bucket;
        uint64_t table_before = c->hashinfo;
        if (run_once(w, st, err) < 0) {
            return -1;
        }
        if (c->status == FTS_WALK_ST_NO_TABLE) {
            return fts_fail(err, ENOENT, "the walk could not read this "
                                         "namespace's TCP table");
        }
        if (table_before != 0 && c->hashinfo != table_before) {
            return fts_fail(err, EAGAIN, "the walking thread changed "
                                         "network namespace mid-pass");
        }
        if (c->status == FTS_WALK_ST_RESCAN) {
            st->rescans++;
            if (++tries > FTS_WALK_MAX_TRIES) {
                give_up(w, st);
                tries = 0;
            }
            else if (undo_bucket(w) < 0) {
                st->log_overflow++;
            }
        }
        else if (c->node != 0) {
            /* Out of iterations mid-bucket: walk it again next run,
             * unless this run started there (it cannot fit in one). */
            if (c->table == start_table && c->bucket == start_bucket) {
                give_up(w, st);
            }
            else {
                st->undone++;
                if (undo_bucket(w) < 0) {
                    st->log_overflow++;
                }
            }
        }
        else {
            tries = 0;
        }
        if (c->table >= FTS_WALK_TABLE_DONE) {
            break;
        }
        if (on_interrupt != NULL && on_interrupt(interrupt_arg, 0)) {
            return fts_fail(err, EINTR, "the walk was interrupted");
        }
    }
    collect(c, st);
    choose_read_ahead(w, tables, st);
    return 0;
}

int
fts_walker_pass(struct fts_walker *w, unsigned tables, uint32_t budget,
                uint32_t only_inum,
                struct fts_walk_stats *st, fts_interrupt_fn on_interrupt,
                void *interrupt_arg, struct fts_error *err)
{
    memset(w->slots, 0, (size_t)w->nslots * sizeof(*w->slots));
    return pass_adding(w, tables, budget, only_inum, st, on_interrupt,
                       interrupt_arg, err);
}

/* The inode of the calling thread's network namespace, from its /proc
 * link ("net:[4026531840]").  Not fstat(): glibc >= 2.33 exports fstat as
 * a new symbol (GLIBC_2.33), which would make the wheel manylinux_2_34;
 * and not the link of the file entered: one opened through a bind mount
 * (/run/netns/NAME) reads as that path. */
static int
current_namespace(unsigned long long *inum)
{
    char link[64];
    ssize_t n = readlink("/proc/thread-self/ns/net", link, sizeof(link) - 1);
    if (n < 0) {
        return -1;
    }
    link[n] = '\0';
    if (strncmp(link, "net:[", 5) != 0) {
        errno = EPROTO;
        return -1;
    }
    char *end;
    *inum = strtoull(link + 5, &end, 10);
    if (end == link + 5 || strcmp(end, "]") != 0) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

/* Enter the namespace of `fd` (-1: `home`) unless there already.  A pass
 * that tallies one namespace (`only_inum`) must be made from inside that
 * one: from another, it would find none of its sockets and say 0. */
static int
enter(int fd, uint32_t only_inum, int home, int *at, struct fts_error *err)
{
    int target = fd >= 0 ? fd : home;
    if (target != *at) {
        if (setns(target, CLONE_NEWNET) < 0) {
            return fts_fail(err, errno,
                            fd >= 0 ? "setns() into a namespace to walk "
                                      "its table"
                                    : "setns() back into the walking "
                                      "thread's namespace");
        }
        *at = target;
    }
    if (fd >= 0 && only_inum != 0) {
        unsigned long long inum;
        if (current_namespace(&inum) < 0) {
            return fts_fail(err, errno, "readlink(/proc/thread-self/ns/net)"
                                        " after entering a namespace to walk");
        }
        if (inum != only_inum) {
            return fts_fail(err, EINVAL, "a pass that tallies one namespace "
                                         "must be made from inside it");
        }
    }
    return 0;
}

int
fts_walker_passes(struct fts_walker *w, struct fts_walk_job *jobs,
                  size_t n, uint32_t budget, size_t *failed,
                  fts_interrupt_fn on_interrupt, void *interrupt_arg,
                  struct fts_error *err)
{
    *failed = 0;
    for (size_t i = 0; i < n; i++) {
        memset(&jobs[i].st, 0, sizeof(jobs[i].st));
        if (check_pass_args(jobs[i].tables, budget, err) < 0) {
            *failed = i;
            return -1;
        }
    }
    int home = -1;
    for (size_t i = 0; i < n && home < 0; i++) {
        if (jobs[i].netns_fd >= 0) {
            home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
            if (home < 0) {
                return fts_fail(err, errno, "open(/proc/thread-self/ns/net)"
                                            " before walking other "
                                            "namespaces");
            }
        }
    }
    memset(w->slots, 0, (size_t)w->nslots * sizeof(*w->slots));
    int at = home, rc = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        struct fts_walk_job *j = &jobs[i];
        if (i > 0 && on_interrupt != NULL
            && on_interrupt(interrupt_arg, 0)) {
            fts_fail(err, EINTR, "the walk was interrupted");
            rc = -1;
            break;
        }
        if (enter(j->netns_fd, j->only_inum, home, &at, err) < 0
            || pass_adding(w, j->tables, budget, j->only_inum, &j->st,
                           on_interrupt, interrupt_arg, err) < 0) {
            rc = -1;
            break;
        }
    }
    *failed = i;
    if (home >= 0) {
        struct fts_error back = {0, NULL};
        if (enter(-1, 0, home, &at, &back) < 0) {
            *err = back;  /* worse than any failure of a pass */
            *failed = n;
            rc = -1;
        }
        close(home);
    }
    return rc;
}

const struct fts_walk_slot *
fts_walker_find(const struct fts_walker *w, uint32_t inum)
{
    for (uint32_t i = 0; i < w->nslots; i++) {
        if (inum != 0 && w->slots[i].inum == inum) {
            return &w->slots[i];
        }
    }
    return NULL;
}

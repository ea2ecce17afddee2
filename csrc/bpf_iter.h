/*
 * Counting TCP sockets inside the kernel with a BPF `tcp` iterator, with
 * the bpf(2) system call only: no libbpf, no compiler, no kernel module.
 *
 * One fts_bpf_counter owns a counter map (mmapped), a loaded counting
 * program and its iterator link.  A count zeroes the counters, creates an
 * iterator (which walks the network namespace of the calling thread),
 * reads it to the end and collects the counters: only the counters cross
 * into user space, never a per-socket record.
 */
#ifndef FASTTCPSTAT_BPF_ITER_H
#define FASTTCPSTAT_BPF_ITER_H

#include <stddef.h>
#include <sys/types.h>

#include "bpf_prog.h"
#include "btf.h"
#include "diag.h"
#include "diag_cgroup.h"

struct fts_bpf_counter {
    int map_fd;
    int cgroup_fd;  /* the per-cgroup rows, or -1 */
    int prog_fd;
    int link_fd;
    volatile uint64_t *counters;  /* the mmapped map value */
    size_t mapped;
    /* The process that opened it.  A child of fork() shares the map, its
     * mapping and the program with the parent: counting there would zero
     * and read the parent's counters.  It must close its copies (which
     * leaves the parent's alone) and open its own. */
    pid_t owner;
};

void fts_bpf_init(struct fts_bpf_counter *c);

/* Create the map, load the program for `filter` (NULL: all sockets) and
 * link it.  With `cgroup` (else NULL), the program also breaks the count
 * down by owner cgroup, telling `max_cgroups` cgroups apart (1 to
 * FTS_MAX_BY_CGROUP).  On a verifier refusal its log goes to `log` (may
 * be NULL). */
int fts_bpf_open(struct fts_bpf_counter *c,
                 const struct fts_btf_layout *layout,
                 const struct fts_bpf_filter *filter,
                 const struct fts_bpf_cgroup_layout *cgroup,
                 unsigned max_cgroups, unsigned emit_shift, char *log,
                 size_t logsize, struct fts_error *err);

void fts_bpf_close(struct fts_bpf_counter *c);

/* 1 if `c` is open and was opened by the calling process. */
int fts_bpf_owned(const struct fts_bpf_counter *c);

/* Create an iterator: it will count the calling thread's namespace. */
int fts_bpf_iter_create(const struct fts_bpf_counter *c,
                        struct fts_error *err);

/* Zero the counters, read iterator `iter_fd` to its end (closing it) and
 * add the counters to `tally` (keeping `tally->families`), and, for a
 * counter opened with a cgroup breakdown, to `cgroups` (else NULL).  `*output`
 * receives the number of bytes the program wrote (its progress marks).
 * The iterator is read one progress mark at a time, and `on_interrupt`
 * (arg, 0) is asked between marks whether to stop (EINTR), so that a
 * count of millions of sockets stays interruptible; on EINTR it is asked
 * with (arg, 1). */
int fts_bpf_run(struct fts_bpf_counter *c, int iter_fd,
                struct fts_tally *tally, struct fts_cgroup_tally *cgroups,
                size_t *output,
                fts_interrupt_fn on_interrupt, void *interrupt_arg,
                struct fts_error *err);

/* Load the text program, link it and pin the link at `path` in a BPF
 * filesystem: reading that file prints the reader's namespace's counts. */
int fts_bpf_pin_text(const struct fts_btf_layout *layout, const char *path,
                     unsigned emit_shift, char *log, size_t logsize,
                     struct fts_error *err);

#endif /* FASTTCPSTAT_BPF_ITER_H */

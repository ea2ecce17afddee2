/*
 * Loading and running the walk program (walk_prog.h) with bpf(2) only:
 * no libbpf, no Python types, so a C test or command can drive it.
 *
 * A pass walks the table of the calling thread's network namespace (from
 * the host namespace: the table every namespace without its own shares)
 * in runs of BPF_PROG_TEST_RUN, each under the RCU read lock for at most
 * budget + slack loop iterations.  Between runs, user space
 * takes back the increments of a bucket that must be walked again, and
 * checks for an interruption.
 */
#ifndef FASTTCPSTAT_WALK_RUN_H
#define FASTTCPSTAT_WALK_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "walk_prog.h"

/* A bucket whose chain ended in another bucket's nulls value is walked
 * again at most this many times, then given up (an anomaly). */
#define FTS_WALK_MAX_TRIES 8

struct fts_walker {
    int map_fd;
    int prog_fd;
    uint32_t nslots;
    size_t mapped;
    struct fts_walk_ctl *ctl;        /* the mmapped map value */
    struct fts_walk_slot *slots;     /* after it */
    uint32_t insns;                  /* program length, instructions */
    int raw_reads;                   /* the program reads raw memory */
    uint32_t slack;                  /* FTS_WALK_SLACK; tests lower it */
    int read_ahead;                  /* the next pass's ctl.read_ahead */
};

/* What a pass found besides the tallies.  Any of the anomaly counters
 * non-zero means the tallies may be wrong: do not show them. */
struct fts_walk_stats {
    uint64_t runs;
    uint64_t loops;           /* walk steps (a socket or a bucket), all runs */
    uint64_t sockets;         /* sockets classified (counted or not) */
    uint64_t counted;
    uint64_t filtered;
    uint64_t buckets;
    uint64_t rescans;         /* buckets walked again (not an anomaly) */
    uint64_t undone;          /* runs that ended mid-bucket, taken back */
    uint64_t hashinfo;        /* the table's identity */
    uint64_t longest_run_ns;  /* the longest run: bpf(2) call, wall clock */
    uint64_t longest_held_ns; /* the longest RCU read-side section */
    /* anomalies */
    uint64_t giveups;         /* buckets skipped after FTS_WALK_MAX_TRIES */
    uint64_t unreadable;
    uint64_t bad_family;
    uint64_t bad_state;
    uint64_t bad_ns;
    uint64_t full;
    uint64_t log_overflow;    /* a bucket too long to take back */
};

/* Number of anomalies in `st`: 0 means the tallies are exact. */
uint64_t fts_walk_anomalies(const struct fts_walk_stats *st);

void fts_walker_init(struct fts_walker *w);

/* Create the map, generate and load the program.  `nslots`: a power of
 * two <= FTS_WALK_MAX_SLOTS.  With `log` (may be NULL) the verifier's log
 * of a refusal; with `verified` non-NULL, the load asks for the verifier's
 * statistics and stores the instructions it processed there. */
int fts_walker_open(struct fts_walker *w, const struct fts_walk_layout *l,
                    const struct fts_walk_filter *filter, uint32_t nslots,
                    char *log, size_t logsize, uint32_t *verified,
                    struct fts_error *err);

void fts_walker_close(struct fts_walker *w);

/* One pass over the calling thread's namespace's tables (`tables`:
 * FTS_WALK_EHASH and/or FTS_WALK_LHASH2): every namespace found there gets
 * a slot (or only `only_inum`, if non-zero).  `budget`: loop iterations
 * per run (>= 1).  Returns 0 (read the slots and `st`), or -1 with `err`
 * set (EINTR if `on_interrupt` said stop). */
int fts_walker_pass(struct fts_walker *w, unsigned tables, uint32_t budget,
                    uint32_t only_inum, struct fts_walk_stats *st,
                    fts_interrupt_fn on_interrupt, void *interrupt_arg,
                    struct fts_error *err);

/* One pass of fts_walker_passes(): `tables` of the namespace open as
 * `netns_fd` (an nsfs file, open for the whole call; -1: the calling
 * thread's own namespace), tallying only `only_inum` if non-zero (with a
 * netns_fd, it must be that namespace's inode: EINVAL otherwise); `st`
 * receives its statistics. */
struct fts_walk_job {
    int netns_fd;
    unsigned tables;
    uint32_t only_inum;
    struct fts_walk_stats st;
};

/* Make the `n` passes of `jobs` in order, the slots zeroed once before the
 * first and each pass adding to them: each namespace's table is walked
 * from inside it (setns()), with no return to the caller between passes.
 * The calling thread is back in its own namespace when this returns, on
 * every path; if even that fails, the error says so (the caller should
 * then be a thread that ends).  Returns 0, or -1 with `err` set and
 * `*failed` the index of the pass that failed (n: none; the return). */
int fts_walker_passes(struct fts_walker *w, struct fts_walk_job *jobs,
                      size_t n, uint32_t budget, size_t *failed,
                      fts_interrupt_fn on_interrupt, void *interrupt_arg,
                      struct fts_error *err);

/* The slot of namespace `inum` after a pass, or NULL if none. */
const struct fts_walk_slot *fts_walker_find(const struct fts_walker *w,
                                            uint32_t inum);

#endif /* FASTTCPSTAT_WALK_RUN_H */

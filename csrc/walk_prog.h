/*
 * The walk backend's program: one BPF_PROG_TYPE_SYSCALL program, run with
 * BPF_PROG_TEST_RUN, that walks the running namespace's TCP hash tables
 * (ehash: full, request and timewait sockets; lhash2: listeners) under
 * RCU without locks, as the kernel's own lookup does, and tallies every
 * socket by network namespace (ns.inum), family and state.
 *
 * Generated here as an instruction array for the running kernel's layout
 * (struct fts_walk_layout, from its BTF); plain C, no system calls.
 *
 * The program and user space share one mmapped array-map value: a control
 * block (struct fts_walk_ctl) and a tally table (struct fts_walk_slot[]).
 * Each run takes steps (one per socket or empty bucket, several in one
 * bpf_loop iteration) until the first bucket boundary after ctl.budget
 * of them, or at most budget + ctl.slack; user space resumes it.  A chain
 * that ends in another bucket's nulls value (a socket moved while we read)
 * stops the run with FTS_WALK_ST_RESCAN; user space undoes the bucket's
 * increments (ctl.log) and the next run walks it again.
 */
#ifndef FASTTCPSTAT_WALK_PROG_H
#define FASTTCPSTAT_WALK_PROG_H

#include <stddef.h>
#include <stdint.h>

#include "bpf_abi.h"
#include "diag.h"

/* Everything the program is built from, all from the kernel's BTF. */
struct fts_walk_layout {
    /* kfuncs (FUNC ids in vmlinux BTF) */
    uint32_t kf_rcu_read_lock;
    uint32_t kf_rcu_read_unlock;
    uint32_t kf_rdonly_cast;
    /* struct ids for bpf_rdonly_cast */
    uint32_t id_nulls_head;      /* struct hlist_nulls_head */
    uint32_t id_sock_common;
    uint32_t id_tw_sock;         /* struct inet_timewait_sock */
    /* current task -> its namespace's TCP table */
    uint16_t task_nsproxy;       /* task_struct.nsproxy */
    uint16_t nsproxy_net;        /* nsproxy.net_ns */
    uint16_t net_hashinfo;       /* net.ipv4.tcp_death_row.hashinfo */
    uint16_t net_inum;           /* net.ns.inum */
    /* struct inet_hashinfo */
    uint16_t hi_ehash;
    uint16_t hi_ehash_mask;
    uint16_t hi_lhash2;
    uint16_t hi_lhash2_mask;
    /* buckets: size and offset of their hlist_nulls_head */
    uint16_t ehash_size;
    uint16_t ehash_head;         /* inet_ehash_bucket.chain */
    uint16_t lhash2_size;
    uint16_t lhash2_head;        /* inet_listen_hashbucket.nulls_head */
    uint16_t head_first;         /* hlist_nulls_head.first */
    /* struct sock_common (and the timewait sock's sub-state) */
    uint16_t skc_node_next;      /* skc_nulls_node.next */
    uint16_t skc_node;           /* skc_nulls_node: node - this = socket */
    uint16_t skc_net;            /* skc_net.net */
    uint16_t skc_state;
    uint16_t skc_family;
    uint16_t skc_num;
    uint16_t skc_dport;
    uint16_t tw_substate;
    /* Not from BTF: 1 if the kernel's bpf_rdonly_cast() takes type 0 and
     * gives raw read-only memory (the 2025 series; 6.18 does, 6.12 does
     * not).  Its loads need no BTF member (skc_family and skc_state read
     * at once) and read links as numbers.  The caller tries 1, then 0. */
    uint16_t raw_reads;
};

/* lhash2 bucket i ends with nulls value i + 2^29 (LISTENING_NULLS_BASE,
 * include/net/inet_hashtables.h): a constant BTF does not carry. */
#define FTS_WALK_LISTEN_NULLS_BASE (1u << 29)

/* Undo-log room per bucket: a longer chain cannot be rescanned. */
#define FTS_WALK_LOG 1024

/* A run stops at the first bucket boundary after ctl.budget steps;
 * past budget + ctl.slack it stops mid-bucket (user space then undoes the
 * bucket and the next run walks it again).  The default slack: */
#define FTS_WALK_SLACK 1024

/* Chains the program reads ahead of the count, in turn (a power of 2). */
#define FTS_WALK_LANES 8

/* Which tables a pass walks.  A namespace with its own table
 * (net.ipv4.tcp_child_ehash_entries) has its own ehash but shares the
 * host's lhash2 (inet_pernet_hashinfo_alloc() copies the pointer): every
 * listener is in the one lhash2, walked once. */
#define FTS_WALK_EHASH 1u
#define FTS_WALK_LHASH2 2u

#define FTS_WALK_TABLE_EHASH 0
#define FTS_WALK_TABLE_LHASH2 1
#define FTS_WALK_TABLE_DONE 2

/* Why the program stopped a run early. */
#define FTS_WALK_ST_OK 0
#define FTS_WALK_ST_RESCAN 1     /* wrong nulls value, or a NULL link */
#define FTS_WALK_ST_NO_TABLE 2   /* the namespace's hashinfo is unreadable */

/* The control block at the start of the map value.  "in": user space
 * sets it; "cursor": the program's position, kept between runs. */
struct fts_walk_ctl {
    uint64_t budget;       /* in: loop iterations per run */
    uint64_t slack;        /* in: more iterations to reach a boundary */
    uint64_t only_inum;    /* in: 0 = every namespace, else only this one */
    uint64_t tables;       /* in: FTS_WALK_EHASH | FTS_WALK_LHASH2 */
    uint64_t node;         /* cursor: next chain node; 0 = bucket start */
    uint64_t scratch;      /* turns a typed pointer into a number */
    uint64_t last_net;     /* cache: the last socket's struct net, and */
    uint64_t last_slot;    /* its slot's byte offset (0: filtered out) */
    uint64_t hashinfo;     /* out: the table walked (its identity) */
    uint64_t ehash;        /* bucket arrays, as numbers */
    uint64_t lhash2;
    uint64_t loops;        /* out: steps of the last run */
    uint64_t limit;        /* the run's most steps: budget + slack */
    uint64_t held_ns;      /* out: the last run's RCU read-side section */
    uint32_t ehash_mask;
    uint32_t lhash2_mask;
    uint32_t table;        /* cursor: FTS_WALK_TABLE_* */
    uint32_t bucket;       /* cursor */
    uint32_t nlog;         /* cursor: increments logged for this bucket
                            * (added to `counted` when it ends, or when
                            * the run stops in it) */
    uint32_t status;       /* out: FTS_WALK_ST_* */
    uint32_t ahead;        /* touch lanes (walk_prog.c): the next ehash
                            * bucket one takes */
    uint32_t read_ahead;   /* in: 1: the touch lanes move; 0: they stay
                            * idle (a sparse table: they cost more than
                            * they save) */
    uint64_t lanes[FTS_WALK_LANES];  /* their next nodes (0: none) */
    /* Counters over a pass (user space zeroes them). */
    uint64_t counted;
    uint64_t filtered;     /* left out by the state, port or ns filter */
    uint64_t buckets;      /* buckets finished */
    uint64_t unreadable;   /* a NULL chain head or link */
    uint64_t bad_family;
    uint64_t bad_state;
    uint64_t bad_ns;       /* a socket whose namespace reads as 0 */
    uint64_t full;         /* no free tally slot for a namespace */
    uint32_t log[FTS_WALK_LOG];  /* byte offsets of this bucket's increments */
};

struct fts_walk_slot {
    uint32_t inum;         /* 0: free */
    uint32_t pad;
    uint64_t n[FTS_NFAMILIES][FTS_NSTATES];
};

/* What to count. */
struct fts_walk_filter {
    uint32_t states;       /* bit mask of TCP states 1..11; 0 = all */
    const struct fts_port_range *local;
    size_t nlocal;
    const struct fts_port_range *remote;
    size_t nremote;
};

#define FTS_WALK_MAX_SLOTS 4096    /* namespaces one pass can tell apart */
#define FTS_WALK_PROBES 16         /* open addressing: slots tried */

/* Bytes of the shared map value for `nslots` (a power of two). */
size_t fts_walk_value_size(uint32_t nslots);

/* Room needed for the program with this filter. */
size_t fts_walk_prog_len(const struct fts_walk_filter *filter);

/* Generate the program into `insns` (room for `cap`).  `map_fd` is the
 * shared array map; `nslots` a power of two <= FTS_WALK_MAX_SLOTS.
 * `*callback_at` receives the first instruction of bpf_loop's callback
 * (for the program's func_info).  Returns the number of instructions, or
 * 0 if `cap` is too small or an argument is out of range. */
size_t fts_walk_prog(struct fts_bpf_insn *insns, size_t cap,
                     const struct fts_walk_layout *layout,
                     const struct fts_walk_filter *filter, int map_fd,
                     uint32_t nslots, uint32_t *callback_at);

/* The program's own BTF: two FUNCs (the main program and the callback),
 * which the kernel requires of a bpf_loop callback.  Writes at most `cap`
 * bytes; returns the length, or 0 if `cap` is too small.  `func_info`
 * receives the two {insn_off, type_id} records. */
#define FTS_WALK_BTF_MAXLEN 512
size_t fts_walk_prog_btf(unsigned char *out, size_t cap,
                         uint32_t callback_at, uint32_t func_info[4]);

/* Fill `layout` from parsed vmlinux BTF (btf.h). */
struct fts_btf;
int fts_walk_layout(const struct fts_btf *btf, struct fts_walk_layout *layout,
                    struct fts_error *err);

#endif /* FASTTCPSTAT_WALK_PROG_H */

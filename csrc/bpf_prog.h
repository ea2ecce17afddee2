/*
 * The BPF iterator programs, generated as instruction arrays for the
 * running kernel's layout (btf.h).  Plain C, no system calls: the
 * generator is unit-tested on its own.
 *
 * Two programs over the `tcp` iterator target:
 *   counting  adds each socket to a counter array in a map that user space
 *             mmaps (slot = family * 16 + state, slot 32 = sockets
 *             visited), optionally keeping only sockets whose ports pass
 *             the same filter as the netlink backend's bytecode;
 *   text      (for a pinned iterator any user may read) keeps counters per
 *             reading session in an LRU hash map and prints them as text
 *             at the end of the walk.
 * The counting program can also break its count down by the sockets'
 * owner cgroup (struct fts_bpf_by_cgroup).
 * Both fold request sockets (NEW_SYN_RECV) into SYN_RECV and count
 * timewait sockets by their sub-state, as netlink and /proc report them,
 * and write something every 2^emit_shift sockets: a read() that visits a
 * million sockets without output fails with EAGAIN.
 */
#ifndef FASTTCPSTAT_BPF_PROG_H
#define FASTTCPSTAT_BPF_PROG_H

#include <stddef.h>
#include <stdint.h>

#include "bpf_abi.h"
#include "btf.h"
#include "diag.h"

#define FTS_BPF_SLOT_VISITED 32
#define FTS_BPF_NSLOTS 33
#define FTS_BPF_VALUE_SIZE (FTS_BPF_NSLOTS * 8)
#define FTS_BPF_EMIT_SHIFT 16

/* A row of counters: slot = family * 16 + state, as fts_state_counts. */
#define FTS_BPF_ROW 32
#define FTS_BPF_ROW_SIZE (FTS_BPF_ROW * 8)
/* The counting program's array value: the totals and visits above, then
 * the cgroup breakdown's unowned and overflow rows. */
#define FTS_BPF_SLOT_UNOWNED FTS_BPF_NSLOTS
#define FTS_BPF_SLOT_OVERFLOW (FTS_BPF_SLOT_UNOWNED + FTS_BPF_ROW)
#define FTS_BPF_COUNT_NSLOTS (FTS_BPF_SLOT_OVERFLOW + FTS_BPF_ROW)
#define FTS_BPF_COUNT_VALUE_SIZE (FTS_BPF_COUNT_NSLOTS * 8)

/* The text program's read-only strings, laid out in one map value. */
#define FTS_BPF_TEXT_HEADER "state ipv4 ipv6\n"
#define FTS_BPF_TEXT_PROGRESS "# visited %llu\n"
#define FTS_BPF_TEXT_LINE "%s %llu %llu\n"
#define FTS_BPF_TEXT_SIZE 256

struct fts_bpf_filter {
    const struct fts_port_range *local;
    size_t nlocal;
    const struct fts_port_range *remote;
    size_t nremote;
};

/* Where a full socket's owner cgroup id is: the kernel's
 * cgroup_id(sock_cgroup_ptr(&sk->sk_cgrp_data)), i.e. the cgroup v2
 * id that netlink reports as INET_DIAG_CGROUP_ID, read through
 * tcp_sock -> sk_cgrp_data.cgroup -> kn -> id.  Offsets from BTF. */
struct fts_bpf_cgroup_layout {
    uint32_t sk_cgroup;   /* in struct tcp_sock */
    uint32_t cgroup_kn;   /* in struct cgroup */
    uint32_t kn_id;       /* in struct kernfs_node */
};

/* Read it from `btf`.  Returns 0, or -1 with `err` set (ENOENT: a kernel
 * without cgroup socket data, CONFIG_SOCK_CGROUP_DATA). */
int fts_bpf_cgroup_layout(const struct fts_btf *btf,
                          struct fts_bpf_cgroup_layout *out,
                          struct fts_error *err);

/* The counting program's breakdown by owner cgroup: each full socket is
 * also added to its cgroup's row in `map_fd`, a hash map (u64 cgroup id
 * -> FTS_BPF_ROW_SIZE) whose size bounds the cgroups told apart; sockets
 * of further cgroups go to the array's overflow row, timewait and
 * request sockets (no owner) to its unowned row. */
struct fts_bpf_by_cgroup {
    struct fts_bpf_cgroup_layout layout;
    int map_fd;
};

/* Room needed for the counting program with this filter. */
size_t fts_bpf_count_prog_len(const struct fts_bpf_filter *filter);

/* Generate the counting program into `insns` (room for `cap`).  `map_fd`
 * is the counter array's fd (an ld_imm64 of its value).  Returns the
 * number of instructions, or 0 if `cap` is too small. */
size_t fts_bpf_count_prog(struct fts_bpf_insn *insns, size_t cap,
                          const struct fts_btf_layout *layout,
                          const struct fts_bpf_filter *filter, int map_fd,
                          unsigned emit_shift);

/* The same, with a breakdown by cgroup (`by_cgroup` NULL: none). */
size_t fts_bpf_count_prog_by(struct fts_bpf_insn *insns, size_t cap,
                             const struct fts_btf_layout *layout,
                             const struct fts_bpf_filter *filter,
                             int map_fd, unsigned emit_shift,
                             const struct fts_bpf_by_cgroup *by_cgroup);

/* The text program's strings map value (FTS_BPF_TEXT_SIZE bytes). */
void fts_bpf_text_strings(char out[FTS_BPF_TEXT_SIZE]);

#define FTS_BPF_TEXT_PROG_MAXLEN 512

/* Generate the text program: `sessions_fd` is an LRU hash map (u64
 * session id -> FTS_BPF_VALUE_SIZE counters), `strings_fd` a frozen
 * read-only array holding fts_bpf_text_strings().  Returns the number of
 * instructions, or 0 if `cap` is too small. */
size_t fts_bpf_text_prog(struct fts_bpf_insn *insns, size_t cap,
                         const struct fts_btf_layout *layout,
                         int sessions_fd, int strings_fd,
                         unsigned emit_shift);

#endif /* FASTTCPSTAT_BPF_PROG_H */

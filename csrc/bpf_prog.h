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

/* Room needed for the counting program with this filter. */
size_t fts_bpf_count_prog_len(const struct fts_bpf_filter *filter);

/* Generate the counting program into `insns` (room for `cap`).  `map_fd`
 * is the counter array's fd (an ld_imm64 of its value).  Returns the
 * number of instructions, or 0 if `cap` is too small. */
size_t fts_bpf_count_prog(struct fts_bpf_insn *insns, size_t cap,
                          const struct fts_btf_layout *layout,
                          const struct fts_bpf_filter *filter, int map_fd,
                          unsigned emit_shift);

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

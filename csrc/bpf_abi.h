/*
 * The slice of the bpf(2) ABI the iterator backend uses, defined here
 * rather than taken from <linux/bpf.h>: wheels are built against old
 * kernel headers (manylinux2014 has Linux 3.10's), which lack BPF
 * iterators.  The kernel ABI is stable; tests/c/test_bpf_prog.c checks
 * every value against the system's <linux/bpf.h> where that has them.
 */
#ifndef FASTTCPSTAT_BPF_ABI_H
#define FASTTCPSTAT_BPF_ABI_H

#include <stdint.h>

/* Commands (enum bpf_cmd). */
#define FTS_BPF_MAP_CREATE 0
#define FTS_BPF_MAP_LOOKUP_ELEM 1
#define FTS_BPF_MAP_UPDATE_ELEM 2
#define FTS_BPF_MAP_DELETE_ELEM 3
#define FTS_BPF_MAP_GET_NEXT_KEY 4
#define FTS_BPF_PROG_LOAD 5
#define FTS_BPF_OBJ_PIN 6
#define FTS_BPF_MAP_FREEZE 22
#define FTS_BPF_LINK_CREATE 28
#define FTS_BPF_ITER_CREATE 33

#define FTS_BPF_MAP_TYPE_HASH 1
#define FTS_BPF_MAP_TYPE_ARRAY 2
#define FTS_BPF_MAP_TYPE_LRU_HASH 9
#define FTS_BPF_NOEXIST 1  /* map_update_elem flag */
#define FTS_BPF_F_RDONLY_PROG (1u << 7)
#define FTS_BPF_F_MMAPABLE (1u << 10)
#define FTS_BPF_PROG_TYPE_TRACING 26
#define FTS_BPF_TRACE_ITER 28
#define FTS_BPF_PSEUDO_MAP_VALUE 2

/* Helper function ids (enum bpf_func_id). */
#define FTS_BPF_FUNC_map_lookup_elem 1
#define FTS_BPF_FUNC_map_update_elem 2
#define FTS_BPF_FUNC_map_delete_elem 3
#define FTS_BPF_FUNC_seq_printf 126
#define FTS_BPF_FUNC_seq_write 127
#define FTS_BPF_FUNC_skc_to_tcp_sock 137
#define FTS_BPF_FUNC_skc_to_tcp_timewait_sock 138

/* One instruction (struct bpf_insn): the register byte holds dst_reg in
 * its first 4-bit field and src_reg in its second. */
struct fts_bpf_insn {
    uint8_t code;
    uint8_t regs;
    int16_t off;
    int32_t imm;
};

/* The attribute layouts, each a prefix of union bpf_attr's member. */
struct fts_bpf_map_create_attr {
    uint32_t map_type;
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t map_flags;
};

struct fts_bpf_map_elem_attr {
    uint32_t map_fd;
    uint32_t pad;
    uint64_t key;
    uint64_t value;
    uint64_t flags;
};

struct fts_bpf_prog_load_attr {
    uint32_t prog_type;
    uint32_t insn_cnt;
    uint64_t insns;
    uint64_t license;
    uint32_t log_level;
    uint32_t log_size;
    uint64_t log_buf;
    uint32_t kern_version;
    uint32_t prog_flags;
    char prog_name[16];
    uint32_t prog_ifindex;
    uint32_t expected_attach_type;
    uint32_t prog_btf_fd;
    uint32_t func_info_rec_size;
    uint64_t func_info;
    uint32_t func_info_cnt;
    uint32_t line_info_rec_size;
    uint64_t line_info;
    uint32_t line_info_cnt;
    uint32_t attach_btf_id;
};

struct fts_bpf_link_create_attr {
    uint32_t prog_fd;
    uint32_t target_fd;
    uint32_t attach_type;
    uint32_t flags;
};

struct fts_bpf_iter_create_attr {
    uint32_t link_fd;
    uint32_t flags;
};

struct fts_bpf_obj_pin_attr {
    uint64_t pathname;
    uint32_t bpf_fd;
    uint32_t file_flags;
};

struct fts_bpf_map_freeze_attr {
    uint32_t map_fd;
};

/* Each command passes its own struct, zeroed, with its exact size: the
 * kernel reads a shorter attribute as if zero-extended. */

#endif /* FASTTCPSTAT_BPF_ABI_H */

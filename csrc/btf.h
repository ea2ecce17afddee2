/*
 * A small reader of the kernel's BTF (/sys/kernel/btf/vmlinux): just what
 * the BPF iterator backend needs to build its program for the running
 * kernel, with no offset taken from one kernel build.
 *
 * Plain C, no Python types, no allocation beyond one index array: the
 * parser is fuzzed on its own and must reject malformed input cleanly.
 */
#ifndef FASTTCPSTAT_BTF_H
#define FASTTCPSTAT_BTF_H

#include <stddef.h>
#include <stdint.h>

#include "diag.h"

/* A field: byte offset in its struct and size in bytes. */
struct fts_btf_field {
    uint32_t offset;
    uint32_t size;
};

/* Everything the iterator program is built from. */
struct fts_btf_layout {
    uint32_t iter_tcp_func_id;   /* FUNC bpf_iter_tcp: attach_btf_id */
    uint32_t ctx_meta;           /* offset of `meta` in the context */
    uint32_t ctx_sk_common;      /* offset of `sk_common` */
    struct fts_btf_field meta_seq;         /* struct bpf_iter_meta */
    struct fts_btf_field meta_session_id;
    struct fts_btf_field skc_state;        /* struct sock_common */
    struct fts_btf_field skc_family;
    struct fts_btf_field skc_num;
    struct fts_btf_field skc_dport;
    struct fts_btf_field tw_substate;      /* struct tcp_timewait_sock */
};

/* Parse `len` bytes of BTF and fill `layout`.  Returns 0, or -1 with `err`
 * set (EINVAL: malformed BTF; ENOENT: a needed type or member is missing;
 * EPROTO: a member has an unexpected size; ENOMEM). */
int fts_btf_layout(const void *data, size_t len,
                   struct fts_btf_layout *layout, struct fts_error *err);

/* Read /sys/kernel/btf/vmlinux (mmap, or read() where mmap fails) and
 * parse it.  `path` NULL means the running kernel's. */
int fts_btf_layout_from_file(const char *path, struct fts_btf_layout *layout,
                             struct fts_error *err);

#endif /* FASTTCPSTAT_BTF_H */

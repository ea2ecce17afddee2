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

/* ---- General queries (the walk backend: csrc/btf_walk.c) --------------
 * The iterator needs a fixed set of scalar members; the walk also needs
 * struct sizes, embedded structs, pointer targets and kfunc ids.  A parsed
 * blob answers any number of such questions. */
struct fts_btf;

#define FTS_BTF_KIND_STRUCT 4
#define FTS_BTF_KIND_FUNC 12

/* Parse `len` bytes of BTF (kept by reference: `data` must outlive the
 * result).  Returns NULL with `err` set. */
struct fts_btf *fts_btf_open(const void *data, size_t len,
                             struct fts_error *err);

/* Map (or read) the whole file (`path` NULL: the running kernel's) and
 * parse it; the result owns the mapping or copy. */
struct fts_btf *fts_btf_open_file(const char *path, struct fts_error *err);

void fts_btf_close(struct fts_btf *b);

/* The id of the first type of `kind` named `name`, or 0. */
uint32_t fts_btf_find(const struct fts_btf *b, const char *name,
                      unsigned kind);

/* The same for `n` names in one pass over the types (vmlinux has ~150k):
 * ids[i] for names[i] of kinds[i], 0 where none. */
void fts_btf_find_many(const struct fts_btf *b, const char *const *names,
                       const unsigned *kinds, uint32_t *ids, size_t n);

/* What a member is: byte offset in the queried type, its type with
 * typedefs and qualifiers resolved, that type's kind and size (8 for a
 * pointer) and, for a pointer, the resolved id it points to. */
struct fts_btf_member {
    uint32_t offset;
    uint32_t type_id;
    uint32_t kind;
    uint32_t size;
    uint32_t target_id;
};

/* Member `name` of struct or union `id`, also found inside anonymous
 * members (not inside named ones: name those in the query).  Returns 0,
 * or -1 with `err` set (ENOENT: no such member; EPROTO: a bitfield or
 * an unaligned member). */
int fts_btf_member_of(const struct fts_btf *b, uint32_t id, const char *name,
                      struct fts_btf_member *out, struct fts_error *err);

/* fts_btf_member_of() along a dot-separated `path` of members from
 * struct `id` ("inet_conn.icsk_inet.sk"), through named embedded
 * structs; `out` describes the last member, at its offset in `id`.
 * (Defined in btf_walk.c, its first user.) */
int fts_btf_member_path(const struct fts_btf *b, uint32_t id,
                        const char *path, struct fts_btf_member *out,
                        struct fts_error *err);

/* The size in bytes of struct/union/scalar `id` (0 if it has none). */
uint32_t fts_btf_size_of(const struct fts_btf *b, uint32_t id);

#endif /* FASTTCPSTAT_BTF_H */

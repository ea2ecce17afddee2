/*
 * The walk program's layout, read from the running kernel's BTF: every
 * offset, struct id and kfunc id the program uses; nothing is taken from
 * one kernel build.  A member is named by its path from a struct, through
 * embedded structs ("ipv4.tcp_death_row.hashinfo"), and checked for the
 * kind and size the program's loads assume.
 */
#include "walk_prog.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "btf.h"

#define KIND_INT 1
#define KIND_PTR 2
#define KIND_STRUCT 4
#define KIND_ANY 0

struct query {
    const char *type;     /* a struct */
    const char *path;     /* members, dot separated */
    uint32_t kind;        /* of the last member (resolved) */
    uint32_t size;        /* of the last member; 0: any */
    size_t field;         /* offsetof(struct fts_walk_layout, ...) */
    const char *missing;  /* the error: what is missing or unexpected */
};

#define Q(type, path, kind, size, field)                                   \
    {type, path, kind, size, offsetof(struct fts_walk_layout, field),      \
     "BTF: struct " type "." path " is missing or not as the walk "     \
     "expects"}

static const struct query queries[] = {
    Q("task_struct", "nsproxy", KIND_PTR, 8, task_nsproxy),
    Q("nsproxy", "net_ns", KIND_PTR, 8, nsproxy_net),
    Q("net", "ipv4.tcp_death_row.hashinfo", KIND_PTR, 8, net_hashinfo),
    Q("net", "ns.inum", KIND_INT, 4, net_inum),
    Q("inet_hashinfo", "ehash", KIND_PTR, 8, hi_ehash),
    Q("inet_hashinfo", "ehash_mask", KIND_INT, 4, hi_ehash_mask),
    Q("inet_hashinfo", "lhash2", KIND_PTR, 8, hi_lhash2),
    Q("inet_hashinfo", "lhash2_mask", KIND_INT, 4, hi_lhash2_mask),
    Q("inet_ehash_bucket", "chain", KIND_STRUCT, 0, ehash_head),
    Q("inet_listen_hashbucket", "nulls_head", KIND_STRUCT, 0, lhash2_head),
    Q("hlist_nulls_head", "first", KIND_PTR, 8, head_first),
    Q("sock_common", "skc_nulls_node.next", KIND_PTR, 8, skc_node_next),
    Q("sock_common", "skc_nulls_node", KIND_STRUCT, 0, skc_node),
    Q("sock_common", "skc_net.net", KIND_PTR, 8, skc_net),
    Q("sock_common", "skc_state", KIND_INT, 1, skc_state),
    Q("sock_common", "skc_family", KIND_INT, 2, skc_family),
    Q("sock_common", "skc_num", KIND_INT, 2, skc_num),
    Q("sock_common", "skc_dport", KIND_INT, 2, skc_dport),
    Q("inet_timewait_sock", "tw_substate", KIND_INT, 1, tw_substate),
};

/* Every type the walk names, found in one pass over the BTF. */
static const char *const type_names[] = {
    "bpf_rcu_read_lock", "bpf_rcu_read_unlock", "bpf_rdonly_cast",
    "task_struct", "nsproxy", "net", "inet_hashinfo", "inet_ehash_bucket",
    "inet_listen_hashbucket", "hlist_nulls_head", "sock_common",
    "inet_timewait_sock",
};
#define NKFUNCS 3
#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

struct found {
    uint32_t ids[NTYPES];
};

static void
find_types(const struct fts_btf *btf, struct found *f)
{
    unsigned kinds[NTYPES];
    for (size_t i = 0; i < NTYPES; i++) {
        kinds[i] = i < NKFUNCS ? FTS_BTF_KIND_FUNC : FTS_BTF_KIND_STRUCT;
    }
    fts_btf_find_many(btf, type_names, kinds, f->ids, NTYPES);
}

static uint32_t
id_of(const struct found *f, const char *name)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if (strcmp(type_names[i], name) == 0) {
            return f->ids[i];
        }
    }
    return 0;
}

int
fts_btf_member_path(const struct fts_btf *btf, uint32_t id, const char *path,
                    struct fts_btf_member *out, struct fts_error *err)
{
    char name[64];
    uint32_t offset = 0;
    const char *p = path;
    for (;;) {
        size_t len = strcspn(p, ".");
        if (len == 0 || len >= sizeof(name)) {
            return fts_fail(err, EINVAL, "bad BTF member path");
        }
        memcpy(name, p, len);
        name[len] = '\0';
        if (fts_btf_member_of(btf, id, name, out, err) < 0) {
            return -1;
        }
        if (out->offset > UINT32_MAX - offset) {
            return fts_fail(err, EINVAL, "malformed BTF: member offset "
                                         "overflows");
        }
        offset += out->offset;
        if (p[len] == '\0') {
            out->offset = offset;
            return 0;
        }
        id = out->type_id;
        p += len + 1;
    }
}

static int
run_query(const struct fts_btf *btf, const struct found *f,
          const struct query *q, struct fts_walk_layout *layout,
          struct fts_error *err)
{
    uint32_t id = id_of(f, q->type);
    struct fts_btf_member m;
    if (id == 0 || fts_btf_member_path(btf, id, q->path, &m, err) < 0
        || m.kind != q->kind || (q->size != 0 && m.size != q->size)
        /* a load's offset is a signed 16-bit field */
        || m.offset > INT16_MAX) {
        return fts_fail(err, ENOENT, q->missing);
    }
    uint16_t value = (uint16_t)m.offset;
    memcpy((char *)layout + q->field, &value, sizeof(value));
    return 0;
}

static int
struct_size(const struct fts_btf *btf, const struct found *f,
            const char *name, uint16_t *out, uint32_t *id_out,
            struct fts_error *err)
{
    uint32_t id = id_of(f, name);
    uint32_t size = id == 0 ? 0 : fts_btf_size_of(btf, id);
    if (size == 0 || size > INT16_MAX) {
        return fts_fail(err, ENOENT, "BTF lacks a struct the walk needs "
                                     "(inet_ehash_bucket, "
                                     "inet_listen_hashbucket, "
                                     "hlist_nulls_head, sock_common or "
                                     "inet_timewait_sock)");
    }
    if (out != NULL) {
        *out = (uint16_t)size;
    }
    if (id_out != NULL) {
        *id_out = id;
    }
    return 0;
}

static int
kfunc(const struct found *f, const char *name, uint32_t *id,
      struct fts_error *err)
{
    *id = id_of(f, name);
    if (*id == 0) {
        return fts_fail(err, ENOENT, "the kernel lacks the kfuncs the walk "
                                     "needs (bpf_rcu_read_lock, "
                                     "bpf_rcu_read_unlock, bpf_rdonly_cast: "
                                     "Linux >= 6.2)");
    }
    return 0;
}

int
fts_walk_layout(const struct fts_btf *btf, struct fts_walk_layout *layout,
                struct fts_error *err)
{
    struct found f;
    find_types(btf, &f);
    memset(layout, 0, sizeof(*layout));
    if (kfunc(&f, "bpf_rcu_read_lock", &layout->kf_rcu_read_lock, err) < 0
        || kfunc(&f, "bpf_rcu_read_unlock", &layout->kf_rcu_read_unlock,
                 err) < 0
        || kfunc(&f, "bpf_rdonly_cast", &layout->kf_rdonly_cast, err) < 0
        || struct_size(btf, &f, "inet_ehash_bucket", &layout->ehash_size,
                       NULL, err) < 0
        || struct_size(btf, &f, "inet_listen_hashbucket",
                       &layout->lhash2_size, NULL, err) < 0
        || struct_size(btf, &f, "hlist_nulls_head", NULL,
                       &layout->id_nulls_head, err) < 0
        || struct_size(btf, &f, "sock_common", NULL,
                       &layout->id_sock_common, err) < 0
        || struct_size(btf, &f, "inet_timewait_sock", NULL,
                       &layout->id_tw_sock, err) < 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        if (run_query(btf, &f, &queries[i], layout, err) < 0) {
            return -1;
        }
    }
    return 0;
}

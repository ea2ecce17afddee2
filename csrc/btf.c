/*
 * Reading the kernel's BTF for the BPF iterator and walk backends.
 *
 * BTF is a header, a section of type records and a section of strings.
 * Type ids are implicit (the n-th record is id n, from 1), and a record's
 * length depends on its kind, so one pass indexes the records; every
 * length, offset and string is checked against the section that holds it
 * before it is used.
 */
#include "btf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define BTF_MAGIC 0xEB9F
#define HEADER_SIZE 24
#define TYPE_SIZE 12
#define MAX_DEPTH 8          /* nesting of anonymous/embedded structs */
#define MAX_CHAIN 32         /* typedef/const/volatile chains */
#define MAX_FILE_SIZE (256u << 20)

/* Called once per struct or union a member search enters; a test defines
 * it to count the work (tests/c/test_btf.c). */
#ifndef FTS_BTF_VISIT
#define FTS_BTF_VISIT() ((void)0)
#endif

enum btf_kind {
    KIND_INT = 1, KIND_PTR = 2, KIND_ARRAY = 3, KIND_STRUCT = 4,
    KIND_UNION = 5, KIND_ENUM = 6, KIND_FWD = 7, KIND_TYPEDEF = 8,
    KIND_VOLATILE = 9, KIND_CONST = 10, KIND_RESTRICT = 11, KIND_FUNC = 12,
    KIND_FUNC_PROTO = 13, KIND_VAR = 14, KIND_DATASEC = 15, KIND_FLOAT = 16,
    KIND_DECL_TAG = 17, KIND_TYPE_TAG = 18, KIND_ENUM64 = 19
};

struct btf {
    const unsigned char *types;
    size_t types_len;
    const char *strs;
    size_t strs_len;
    uint32_t *offsets;  /* offsets[id] of each record; [0] unused */
    uint32_t count;     /* ids 1..count */
    /* One bit per id: entered by the current member search.  Each struct
     * is searched at most once, so a search is linear in the input even
     * when (malformed) structs hold many copies of themselves.  Shares the
     * offsets' allocation. */
    uint32_t *entered;
};

struct btf_type {
    uint32_t name_off;
    uint32_t kind;
    uint32_t vlen;
    int kflag;
    uint32_t size_or_type;
    const unsigned char *extra;  /* what follows the record */
};


static uint32_t
read_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Bytes after the 12-byte record, by kind; -1 for an unknown kind. */
static long
extra_size(uint32_t kind, uint32_t vlen)
{
    switch (kind) {
    case KIND_INT:
    case KIND_VAR:
    case KIND_DECL_TAG:
        return 4;
    case KIND_ARRAY:
        return 12;
    case KIND_STRUCT:
    case KIND_UNION:
    case KIND_DATASEC:
    case KIND_ENUM64:
        return 12L * vlen;
    case KIND_ENUM:
    case KIND_FUNC_PROTO:
        return 8L * vlen;
    case KIND_PTR:
    case KIND_FWD:
    case KIND_TYPEDEF:
    case KIND_VOLATILE:
    case KIND_CONST:
    case KIND_RESTRICT:
    case KIND_FUNC:
    case KIND_FLOAT:
    case KIND_TYPE_TAG:
        return 0;
    default:
        return -1;
    }
}

static void
decode(const unsigned char *p, struct btf_type *t)
{
    uint32_t info = read_u32(p + 4);
    t->name_off = read_u32(p);
    t->kind = (info >> 24) & 0x1f;
    t->vlen = info & 0xffff;
    t->kflag = (int)(info >> 31);
    t->size_or_type = read_u32(p + 8);
    t->extra = p + TYPE_SIZE;
}

/* Index the records: offsets[id] for ids 1..*count (room for
 * types_len / TYPE_SIZE of them). */
static int
walk_records(struct btf *b, uint32_t *offsets, uint32_t *count,
             struct fts_error *err)
{
    size_t pos = 0;
    uint32_t n = 0;
    while (pos < b->types_len) {
        if (b->types_len - pos < TYPE_SIZE) {
            return fts_fail(err, EINVAL,
                            "malformed BTF: truncated type record");
        }
        struct btf_type t;
        decode(b->types + pos, &t);
        long extra = extra_size(t.kind, t.vlen);
        if (extra < 0) {
            return fts_fail(err, EINVAL, "malformed BTF: unknown type kind");
        }
        size_t need = TYPE_SIZE + (size_t)extra;
        if (need > b->types_len - pos) {
            return fts_fail(err, EINVAL, "malformed BTF: type record overruns "
                                     "its section");
        }
        offsets[++n] = (uint32_t)pos;  /* n <= types_len / TYPE_SIZE */
        pos += need;
    }
    *count = n;
    return 0;
}

static int
open_btf(struct btf *b, const void *data, size_t len, struct fts_error *err)
{
    const unsigned char *p = data;
    memset(b, 0, sizeof(*b));
    if (len < HEADER_SIZE) {
        return fts_fail(err, EINVAL, "malformed BTF: truncated header");
    }
    uint16_t magic;
    memcpy(&magic, p, sizeof(magic));
    if (magic != BTF_MAGIC) {
        return fts_fail(err, EINVAL, "malformed BTF: bad magic (or foreign "
                                 "byte order)");
    }
    if (p[2] != 1) {
        return fts_fail(err, EINVAL, "malformed BTF: unsupported version");
    }
    uint32_t hdr_len = read_u32(p + 4);
    uint32_t type_off = read_u32(p + 8), type_len = read_u32(p + 12);
    uint32_t str_off = read_u32(p + 16), str_len = read_u32(p + 20);
    if (hdr_len < HEADER_SIZE || hdr_len > len) {
        return fts_fail(err, EINVAL, "malformed BTF: bad header length");
    }
    size_t body = len - hdr_len;
    if ((size_t)type_off > body || (size_t)type_len > body - type_off
        || (size_t)str_off > body || (size_t)str_len > body - str_off) {
        return fts_fail(err, EINVAL, "malformed BTF: section out of bounds");
    }
    if ((type_off & 3) != 0 || (type_len & 3) != 0) {
        return fts_fail(err, EINVAL, "malformed BTF: misaligned type section");
    }
    b->types = p + hdr_len + type_off;
    b->types_len = type_len;
    b->strs = (const char *)p + hdr_len + str_off;
    b->strs_len = str_len;
    /* As the kernel requires: then every offset inside names a string. */
    if (str_len == 0 || b->strs[str_len - 1] != '\0') {
        return fts_fail(err, EINVAL, "malformed BTF: string section not "
                                     "NUL-terminated");
    }

    /* One pass into room for the most records the section can hold (each
     * is at least TYPE_SIZE bytes): untouched room costs no memory, a
     * second pass to count them first cost ~0.4 ms over vmlinux. */
    size_t most = type_len / TYPE_SIZE;
    size_t words = most / 32 + 1;
    b->offsets = malloc((most + 1 + words) * sizeof(uint32_t));
    if (b->offsets == NULL) {
        return fts_fail(err, ENOMEM, "indexing BTF types");
    }
    b->offsets[0] = 0;
    if (walk_records(b, b->offsets, &b->count, err) < 0) {
        free(b->offsets);
        b->offsets = NULL;
        return -1;
    }
    b->entered = b->offsets + most + 1;
    return 0;
}

static void
close_btf(struct btf *b)
{
    free(b->offsets);
    b->offsets = NULL;
}

/* A string of the string section (NUL-terminated: open_btf checked), or
 * NULL. */
static const char *
string_at(const struct btf *b, uint32_t off)
{
    return off < b->strs_len ? b->strs + off : NULL;
}

static int
get_type(const struct btf *b, uint32_t id, struct btf_type *t)
{
    if (id == 0 || id > b->count) {
        return -1;
    }
    decode(b->types + b->offsets[id], t);
    return 0;
}

static int
name_is(const struct btf *b, uint32_t name_off, const char *name)
{
    const char *s = string_at(b, name_off);
    return s != NULL && strcmp(s, name) == 0;
}

/* Follow typedefs and qualifiers to the type itself. */
static int
resolve(const struct btf *b, uint32_t id, uint32_t *out, struct btf_type *t)
{
    for (int i = 0; i < MAX_CHAIN; i++) {
        if (get_type(b, id, t) < 0) {
            return -1;
        }
        switch (t->kind) {
        case KIND_TYPEDEF:
        case KIND_VOLATILE:
        case KIND_CONST:
        case KIND_RESTRICT:
        case KIND_TYPE_TAG:
            id = t->size_or_type;
            continue;
        default:
            *out = id;
            return 0;
        }
    }
    return -1;
}

/* Mark struct `id` entered; 0 if it already was. */
static int
enter_once(const struct btf *b, uint32_t id)
{
    uint32_t bit = 1u << (id % 32);
    if (b->entered[id / 32] & bit) {
        return 0;
    }
    b->entered[id / 32] |= bit;
    return 1;
}

/* Member `out`: where it is (`bits` from the searched struct) and what its
 * type resolves to. */
static void
describe(const struct btf *b, uint32_t type, uint32_t bits,
         struct fts_btf_member *out)
{
    struct btf_type t;
    uint32_t rid = 0;
    memset(out, 0, sizeof(*out));
    out->offset = bits / 8;
    if (resolve(b, type, &rid, &t) < 0) {
        return;
    }
    out->type_id = rid;
    out->kind = t.kind;
    if (t.kind == KIND_PTR) {
        struct btf_type target;
        uint32_t tid;
        out->size = 8;  /* BPF tracing programs exist on 64-bit kernels only */
        if (resolve(b, t.size_or_type, &tid, &target) == 0) {
            out->target_id = tid;
        }
    }
    else if (t.kind != KIND_ARRAY) {
        out->size = t.size_or_type;
    }
}

/* Which nested structs and unions a member search looks into. */
enum nesting {
    ANONYMOUS_ONLY,  /* as C names members: the walk names embedded ones */
    EMBEDDED_TOO,    /* also named ones (the iterator's tw_sk) */
};

/* Find member `name` in struct/union `id`: first among its own members,
 * then inside the nested ones `nesting` allows.  A struct already
 * entered is not entered again: it did not hold `name` (or this search
 * would have ended), and in well-formed BTF a type is the same wherever it
 * is embedded; so a search is linear in the input even when (malformed)
 * structs hold many copies of themselves.  1: not found; 0: found; -1:
 * error. */
static int
search_member(const struct btf *b, uint32_t id, const char *name,
              enum nesting nesting, uint32_t base_bits, int depth,
              struct fts_btf_member *out, struct fts_error *err)
{
    struct btf_type t;
    uint32_t rid;
    if (depth > MAX_DEPTH || resolve(b, id, &rid, &t) < 0
        || (t.kind != KIND_STRUCT && t.kind != KIND_UNION)
        || !enter_once(b, rid)) {
        return 1;  /* not here */
    }
    FTS_BTF_VISIT();
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < t.vlen; i++) {
            const unsigned char *m = t.extra + 12 * (size_t)i;
            uint32_t mname = read_u32(m), mtype = read_u32(m + 4);
            uint32_t moff = read_u32(m + 8);
            uint32_t bits = t.kflag ? (moff & 0xffffff) : moff;
            uint32_t bitfield = t.kflag ? (moff >> 24) : 0;
            if (bits > UINT32_MAX - base_bits) {
                return fts_fail(err, EINVAL, "malformed BTF: member offset "
                                             "overflows");
            }
            if (pass == 0) {
                if (!name_is(b, mname, name)) {
                    continue;
                }
                if (bitfield != 0 || ((base_bits + bits) & 7) != 0) {
                    return fts_fail(err, EPROTO, "unexpected BTF layout: a "
                                                 "needed member is a "
                                                 "bitfield or unaligned");
                }
                describe(b, mtype, base_bits + bits, out);
                return 0;
            }
            if (mname != 0 && nesting == ANONYMOUS_ONLY) {
                continue;
            }
            int rc = search_member(b, mtype, name, nesting,
                                   base_bits + bits, depth + 1, out, err);
            if (rc <= 0) {
                return rc;
            }
        }
    }
    return 1;
}

/* One search: nothing entered yet. */
static int
find_member(const struct btf *b, uint32_t id, const char *name,
            enum nesting nesting, struct fts_btf_member *out,
            struct fts_error *err)
{
    memset(b->entered, 0, ((size_t)b->count / 32 + 1) * sizeof(uint32_t));
    return search_member(b, id, name, nesting, 0, 0, out, err);
}

/* The iterator's scalar member `name` of `expected_size` bytes, looked
 * for in embedded structs too. */
static int
scalar_member(const struct btf *b, uint32_t struct_id, const char *name,
              uint32_t expected_size, struct fts_btf_field *field,
              struct fts_error *err)
{
    struct fts_btf_member m;
    int rc = find_member(b, struct_id, name, EMBEDDED_TOO, &m, err);
    if (rc < 0) {
        return -1;
    }
    if (rc > 0) {
        return fts_fail(err, ENOENT, "BTF lacks a member the iterator needs "
                                 "(skc_state, skc_family, skc_num, "
                                 "skc_dport, tw_substate, seq or "
                                 "session_id)");
    }
    if (m.kind != KIND_INT && m.kind != KIND_ENUM && m.kind != KIND_ENUM64
        && m.kind != KIND_PTR) {
        return fts_fail(err, EPROTO, "unexpected BTF layout: a needed member "
                                 "is not a scalar");
    }
    if (m.size != expected_size) {
        return fts_fail(err, EPROTO, "unexpected BTF layout: a needed member "
                                 "has an unexpected size");
    }
    field->offset = m.offset;
    field->size = m.size;
    return 0;
}

/* Context offsets: the iterator's context is its FUNC's parameters laid
 * out as 8-byte slots, in order. */
static int
context_layout(const struct btf *b, uint32_t func_id,
               struct fts_btf_layout *layout, struct fts_error *err)
{
    struct btf_type func, proto;
    if (get_type(b, func_id, &func) < 0
        || get_type(b, func.size_or_type, &proto) < 0
        || proto.kind != KIND_FUNC_PROTO) {
        return fts_fail(err, EINVAL, "malformed BTF: bpf_iter_tcp has no "
                                 "prototype");
    }
    int have_meta = 0, have_sk = 0;
    for (uint32_t i = 0; i < proto.vlen; i++) {
        uint32_t pname = read_u32(proto.extra + 8 * (size_t)i);
        if (name_is(b, pname, "meta")) {
            layout->ctx_meta = 8 * i;
            have_meta = 1;
        }
        else if (name_is(b, pname, "sk_common")) {
            layout->ctx_sk_common = 8 * i;
            have_sk = 1;
        }
    }
    if (!have_meta || !have_sk) {
        return fts_fail(err, ENOENT, "bpf_iter_tcp's prototype lacks meta or "
                                 "sk_common");
    }
    return 0;
}

int
fts_btf_layout(const void *data, size_t len, struct fts_btf_layout *layout,
               struct fts_error *err)
{
    struct btf b;
    if (open_btf(&b, data, len, err) < 0) {
        return -1;
    }
    uint32_t func = 0, meta = 0, skc = 0, tw = 0;
    for (uint32_t id = 1; id <= b.count; id++) {
        struct btf_type t;
        decode(b.types + b.offsets[id], &t);
        if (t.kind == KIND_FUNC && func == 0
            && name_is(&b, t.name_off, "bpf_iter_tcp")) {
            func = id;
        }
        else if (t.kind == KIND_STRUCT) {
            if (meta == 0 && name_is(&b, t.name_off, "bpf_iter_meta")) {
                meta = id;
            }
            else if (skc == 0 && name_is(&b, t.name_off, "sock_common")) {
                skc = id;
            }
            else if (tw == 0
                     && name_is(&b, t.name_off, "tcp_timewait_sock")) {
                tw = id;
            }
        }
    }
    int rc = -1;
    memset(layout, 0, sizeof(*layout));
    if (func == 0) {
        fts_fail(err, ENOENT, "the kernel has no TCP BPF iterator "
                          "(FUNC bpf_iter_tcp; Linux >= 5.9)");
        goto done;
    }
    if (meta == 0 || skc == 0 || tw == 0) {
        fts_fail(err, ENOENT, "BTF lacks struct bpf_iter_meta, sock_common or "
                          "tcp_timewait_sock");
        goto done;
    }
    layout->iter_tcp_func_id = func;
    if (context_layout(&b, func, layout, err) < 0
        || scalar_member(&b, meta, "seq", 8, &layout->meta_seq, err) < 0
        || scalar_member(&b, meta, "session_id", 8,
                         &layout->meta_session_id, err) < 0
        || scalar_member(&b, skc, "skc_state", 1, &layout->skc_state,
                         err) < 0
        || scalar_member(&b, skc, "skc_family", 2, &layout->skc_family,
                         err) < 0
        || scalar_member(&b, skc, "skc_num", 2, &layout->skc_num, err) < 0
        || scalar_member(&b, skc, "skc_dport", 2, &layout->skc_dport,
                         err) < 0
        || scalar_member(&b, tw, "tw_substate", 1, &layout->tw_substate,
                         err) < 0) {
        goto done;
    }
    rc = 0;
done:
    close_btf(&b);
    return rc;
}

/* Read a whole file whose size stat() may not tell (sysfs). */
static int
read_all(int fd, size_t hint, unsigned char **out, size_t *len,
         struct fts_error *err)
{
    size_t cap = hint > 0 ? hint + 1 : (size_t)1 << 20, used = 0;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) {
        return fts_fail(err, ENOMEM, "reading BTF");
    }
    for (;;) {
        if (used == cap) {
            if (cap >= MAX_FILE_SIZE) {
                free(buf);
                return fts_fail(err, EFBIG, "BTF file too large");
            }
            unsigned char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return fts_fail(err, ENOMEM, "reading BTF");
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int saved = errno;
            free(buf);
            return fts_fail(err, saved, "read() of the kernel's BTF");
        }
        if (n == 0) {
            break;
        }
        used += (size_t)n;
    }
    *out = buf;
    *len = used;
    return 0;
}

int
fts_btf_layout_from_file(const char *path, struct fts_btf_layout *layout,
                         struct fts_error *err)
{
    if (path == NULL) {
        path = "/sys/kernel/btf/vmlinux";
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return fts_fail(err, errno, "open() of the kernel's BTF "
                                "(/sys/kernel/btf/vmlinux; needs "
                                "CONFIG_DEBUG_INFO_BTF)");
    }
    /* The size through lseek(), not fstat(): glibc >= 2.33 exports fstat as
     * a new symbol (GLIBC_2.33), which would make the wheel manylinux_2_34
     * instead of manylinux2014.  Unknown (0): read_all() reads to EOF. */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end > 0 && lseek(fd, 0, SEEK_SET) < 0) {
        int saved = errno;
        close(fd);
        return fts_fail(err, saved, "lseek() of the kernel's BTF");
    }
    int rc;
    size_t size = end > 0 ? (size_t)end : 0;
    void *map = size > 0 ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0)
                         : MAP_FAILED;
    if (map != MAP_FAILED) {
        rc = fts_btf_layout(map, size, layout, err);
        munmap(map, size);
    }
    else {
        /* sysfs supports mmap of BTF only on recent kernels. */
        unsigned char *buf;
        size_t len;
        rc = read_all(fd, size, &buf, &len, err);
        if (rc == 0) {
            rc = fts_btf_layout(buf, len, layout, err);
            free(buf);
        }
    }
    close(fd);
    return rc;
}

/* ---- General queries ---------------------------------------------------- */

struct fts_btf {
    struct btf btf;
    unsigned char *owned;  /* the file's bytes, for fts_btf_open_file() */
    void *mapped;          /* or its mapping */
    size_t mapped_len;
};

struct fts_btf *
fts_btf_open(const void *data, size_t len, struct fts_error *err)
{
    struct fts_btf *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        fts_fail(err, ENOMEM, "parsing BTF");
        return NULL;
    }
    if (open_btf(&q->btf, data, len, err) < 0) {
        free(q);
        return NULL;
    }
    return q;
}

struct fts_btf *
fts_btf_open_file(const char *path, struct fts_error *err)
{
    if (path == NULL) {
        path = "/sys/kernel/btf/vmlinux";
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fts_fail(err, errno, "open() of the kernel's BTF "
                             "(/sys/kernel/btf/vmlinux; needs "
                             "CONFIG_DEBUG_INFO_BTF)");
        return NULL;
    }
    /* As fts_btf_layout_from_file(): mmap where sysfs allows it (no copy
     * of ~6 MiB), else read() to EOF. */
    off_t end = lseek(fd, 0, SEEK_END);
    size_t size = end > 0 ? (size_t)end : 0;
    void *map = size > 0 ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0)
                         : MAP_FAILED;
    struct fts_btf *q;
    if (map != MAP_FAILED) {
        close(fd);
        q = fts_btf_open(map, size, err);
        if (q == NULL) {
            munmap(map, size);
            return NULL;
        }
        q->mapped = map;
        q->mapped_len = size;
        return q;
    }
    unsigned char *buf;
    size_t len;
    int rc = (size == 0 || lseek(fd, 0, SEEK_SET) == 0)
             ? read_all(fd, size, &buf, &len, err)
             : fts_fail(err, errno, "lseek() of the kernel's BTF");
    close(fd);
    if (rc < 0) {
        return NULL;
    }
    q = fts_btf_open(buf, len, err);
    if (q == NULL) {
        free(buf);
        return NULL;
    }
    q->owned = buf;
    return q;
}

void
fts_btf_close(struct fts_btf *q)
{
    if (q != NULL) {
        close_btf(&q->btf);
        free(q->owned);
        if (q->mapped != NULL) {
            munmap(q->mapped, q->mapped_len);
        }
        free(q);
    }
}

uint32_t
fts_btf_find(const struct fts_btf *q, const char *name, unsigned kind)
{
    const struct btf *b = &q->btf;
    for (uint32_t id = 1; id <= b->count; id++) {
        struct btf_type t;
        decode(b->types + b->offsets[id], &t);
        if (t.kind == kind && name_is(b, t.name_off, name)) {
            return id;
        }
    }
    return 0;
}

void
fts_btf_find_many(const struct fts_btf *q, const char *const *names,
                  const unsigned *kinds, uint32_t *ids, size_t n)
{
    const struct btf *b = &q->btf;
    size_t left = n;
    uint32_t wanted = 0;  /* kinds asked for, one bit each */
    memset(ids, 0, n * sizeof(*ids));
    for (size_t i = 0; i < n; i++) {
        wanted |= 1u << (kinds[i] & 31);
    }
    /* vmlinux has ~150k types: reject most on their kind and the first
     * letter of their name before comparing names. */
    for (uint32_t id = 1; id <= b->count && left > 0; id++) {
        struct btf_type t;
        decode(b->types + b->offsets[id], &t);
        if (t.name_off == 0 || !(wanted & (1u << t.kind))) {
            continue;
        }
        const char *name = string_at(b, t.name_off);
        for (size_t i = 0; name != NULL && i < n; i++) {
            if (ids[i] == 0 && t.kind == kinds[i] && name[0] == names[i][0]
                && strcmp(name, names[i]) == 0) {
                ids[i] = id;
                left--;
            }
        }
    }
}

uint32_t
fts_btf_size_of(const struct fts_btf *q, uint32_t id)
{
    struct btf_type t;
    uint32_t rid;
    if (resolve(&q->btf, id, &rid, &t) < 0) {
        return 0;
    }
    switch (t.kind) {
    case KIND_INT:
    case KIND_ENUM:
    case KIND_ENUM64:
    case KIND_STRUCT:
    case KIND_UNION:
        return t.size_or_type;
    case KIND_PTR:
        return 8;
    default:
        return 0;
    }
}

int
fts_btf_member_of(const struct fts_btf *q, uint32_t id, const char *name,
                  struct fts_btf_member *out, struct fts_error *err)
{
    int rc = find_member(&q->btf, id, name, ANONYMOUS_ONLY, out, err);
    if (rc > 0) {
        return fts_fail(err, ENOENT, "BTF lacks a member the walk needs");
    }
    return rc;
}

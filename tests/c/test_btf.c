/*
 * Unit tests of the BTF reader (csrc/btf.c) and the BPF program generator
 * (csrc/bpf_prog.c), with no kernel involved:
 *  - a hand-built BTF blob with the types the iterator needs (nested
 *    anonymous unions, an embedded struct, typedefs) gives the expected
 *    layout; every truncation and many corruptions of it are rejected or
 *    parsed without a crash (ASan/UBSan watch);
 *  - the running kernel's BTF, when readable, parses, and survives the
 *    same abuse;
 *  - our bpf(2) ABI constants equal the system header's where it has them;
 *  - generated programs have every jump resolved and in range.
 */
#include "bpf_prog.h"
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/bpf.h>

/* The reader is compiled in here (not linked) so that its member search
 * can be counted: a search that enters more structs than this has lost
 * its linear bound, and stops the test at once instead of running for
 * hours (the old reader needed N^8 steps for a struct holding N copies
 * of itself). */
#define VISIT_LIMIT 100000
static unsigned long visits;
#define FTS_BTF_VISIT()                                                   \
    do {                                                                  \
        if (++visits > VISIT_LIMIT) {                                     \
            fprintf(stderr, "BTF member search entered more than %d "     \
                    "structs: not linear\n", VISIT_LIMIT);                \
            exit(1);                                                      \
        }                                                                 \
    } while (0)
#include "btf.c"
#include "btf_blob.h"


/* FUNC bpf_iter_tcp(struct bpf_iter_meta *meta, struct sock_common
 * *sk_common[, uid]): pointer types, the prototype, the function; a `uid`
 * parameter of that type unless 0. */
static void
iter_tcp(struct blob *b, uint32_t meta, uint32_t skc, uint32_t uid)
{
    uint32_t pmeta = type(b, NULL, 2, 0, 0, meta);
    uint32_t pskc = type(b, NULL, 2, 0, 0, skc);
    uint32_t proto = type(b, NULL, 13, uid ? 3 : 2, 0, 0);
    put32(b, str(b, "meta"));
    put32(b, pmeta);
    put32(b, str(b, "sk_common"));
    put32(b, pskc);
    if (uid) {
        put32(b, str(b, "uid"));
        put32(b, uid);
    }
    type(b, "bpf_iter_tcp", 12, 0, 0, proto);
}

/* Types shaped like the kernel's, with different offsets than any real
 * kernel so nothing can pass by accident. */
static void
build_blob(struct blob *b)
{
    blob_init(b);
    uint32_t u8 = int_type(b, "unsigned char", 1);          /* 1 */
    uint32_t u16 = int_type(b, "short unsigned int", 2);    /* 2 */
    uint32_t u64 = int_type(b, "long long unsigned int", 8);/* 3 */
    uint32_t vu8 = type(b, NULL, 9, 0, 0, u8);              /* 4 volatile */
    uint32_t be16 = type(b, "__be16", 8, 0, 0, u16);        /* 5 typedef */
    uint32_t seqf = type(b, "seq_file", 4, 0, 0, 0);        /* 6 */
    uint32_t pseq = type(b, NULL, 2, 0, 0, seqf);           /* 7 ptr */
    /* struct bpf_iter_meta { seq_file *seq @0; u64 session_id @8; } */
    uint32_t meta = type(b, "bpf_iter_meta", 4, 2, 0, 16);  /* 8 */
    member(b, "seq", pseq, 0);
    member(b, "session_id", u64, 64);
    /* anonymous struct { __be16 skc_dport @0; u16 skc_num @2; } */
    uint32_t ports = type(b, NULL, 4, 2, 0, 4);             /* 9 */
    member(b, "skc_dport", be16, 0);
    member(b, "skc_num", u16, 16);
    /* anonymous union { u64 skc_portpair_ish; struct ports; } */
    uint32_t uni = type(b, NULL, 5, 2, 0, 8);               /* 10 */
    member(b, "skc_portpair", u64, 0);
    member(b, NULL, ports, 0);
    /* struct sock_common { union @40 (bits 320); u16 family @48;
     * volatile u8 state @50; } with kflag (bitfield encoding) */
    uint32_t skc = type(b, "sock_common", 4, 3, 1, 64);     /* 11 */
    member(b, NULL, uni, 320);
    member(b, "skc_family", u16, 384);
    member(b, "skc_state", vu8, 400);
    /* struct inet_timewait_sock { sock_common @0; u8 tw_substate @60 } */
    uint32_t itw = type(b, "inet_timewait_sock", 4, 2, 0, 64); /* 12 */
    member(b, "__tw_common", skc, 0);
    member(b, "tw_substate", u8, 480);
    /* struct tcp_timewait_sock { inet_timewait_sock tw_sk @0; ... } */
    uint32_t ttw = type(b, "tcp_timewait_sock", 4, 1, 0, 96); /* 13 */
    member(b, "tw_sk", itw, 0);
    iter_tcp(b, meta, skc, u16);                            /* 14..17 */
    (void)ttw;
}

static void
test_blob_layout(void)
{
    static struct blob b;
    static unsigned char data[8192];
    build_blob(&b);
    size_t len = finish(&b, data);
    struct fts_btf_layout l;
    struct fts_error e = {0, NULL};
    CHECK(fts_btf_layout(data, len, &l, &e) == 0);
    CHECK(l.iter_tcp_func_id == 17);
    CHECK(l.ctx_meta == 0 && l.ctx_sk_common == 8);
    CHECK(l.meta_seq.offset == 0 && l.meta_seq.size == 8);
    CHECK(l.meta_session_id.offset == 8);
    CHECK(l.skc_dport.offset == 40 && l.skc_dport.size == 2);
    CHECK(l.skc_num.offset == 42 && l.skc_num.size == 2);
    CHECK(l.skc_family.offset == 48 && l.skc_family.size == 2);
    CHECK(l.skc_state.offset == 50 && l.skc_state.size == 1);
    CHECK(l.tw_substate.offset == 60 && l.tw_substate.size == 1);

    /* Every truncation is refused without a crash. */
    int refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, data, cut);
        if (fts_btf_layout(copy, cut, &l, &e) < 0) {
            refused++;
        }
        free(copy);
    }
    CHECK(refused == (int)len);

    /* Corruptions: flip every byte of the header and type section in turn;
     * any result is fine as long as nothing reads out of bounds. */
    unsigned char *copy = malloc(len);
    for (size_t i = 0; i < 24 + b.types_len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(copy, data, len);
            copy[i] ^= (unsigned char)(1u << bit);
            (void)fts_btf_layout(copy, len, &l, &e);
        }
    }
    free(copy);
    passed++;

    /* A missing member says so. */
    build_blob(&b);
    char *name = memmem(b.strs, b.strs_len, "tw_substate",
                        sizeof("tw_substate"));
    CHECK(name != NULL);
    if (name != NULL) {
        name[0] = 'x';
    }
    len = finish(&b, data);
    CHECK(fts_btf_layout(data, len, &l, &e) < 0 && e.err == ENOENT);
}

/* A struct sock_common holding `copies` members of its own type and no
 * skc_state: every lookup in it must fail after entering it once. */
static void
build_self_referencing(struct blob *b, uint32_t copies)
{
    blob_init(b);
    uint32_t u64 = int_type(b, "long long unsigned int", 8);  /* 1 */
    uint32_t meta = type(b, "bpf_iter_meta", 4, 2, 0, 16);    /* 2 */
    member(b, "seq", u64, 0);
    member(b, "session_id", u64, 64);
    uint32_t skc = b->next_id;                                  /* 3 */
    type(b, "sock_common", 4, copies, 0, 8 * copies);
    for (uint32_t i = 0; i < copies; i++) {
        member(b, "c", skc, 64 * i);
    }
    type(b, "tcp_timewait_sock", 4, 1, 0, 8);                  /* 4 */
    member(b, "tw_sk", skc, 0);
    iter_tcp(b, meta, skc, 0);                                  /* 5..8 */
}

static void
test_member_search_is_linear(void)
{
    static struct blob b;
    static unsigned char data[8192];
    for (uint32_t copies = 1; copies <= 200; copies += copies < 16 ? 1 : 61) {
        build_self_referencing(&b, copies);
        size_t len = finish(&b, data);
        struct fts_btf_layout l;
        struct fts_error e = {0, NULL};
        visits = 0;
        CHECK(fts_btf_layout(data, len, &l, &e) < 0 && e.err == ENOENT);
        /* seq and session_id enter bpf_iter_meta once each; skc_state
         * enters sock_common once and none of its copies again. */
        CHECK(visits == 3);
    }
    /* The kernel-shaped blob: each of the 7 lookups enters each of its
     * 6 structs and unions at most once. */
    build_blob(&b);
    size_t len = finish(&b, data);
    struct fts_btf_layout l;
    struct fts_error e = {0, NULL};
    visits = 0;
    CHECK(fts_btf_layout(data, len, &l, &e) == 0);
    CHECK(visits > 0 && visits <= 7 * 6);
}

static void
test_kernel_btf(void)
{
    FILE *f = fopen("/sys/kernel/btf/vmlinux", "rb");
    if (f == NULL) {
        printf("# no /sys/kernel/btf/vmlinux: kernel BTF checks not run\n");
        return;
    }
    size_t cap = 64u << 20, len = 0;
    unsigned char *data = malloc(cap);
    size_t n;
    while ((n = fread(data + len, 1, cap - len, f)) > 0) {
        len += n;
    }
    fclose(f);
    struct fts_btf_layout l;
    struct fts_error e = {0, NULL};
    int rc = fts_btf_layout(data, len, &l, &e);
    /* Kernels without the tcp iterator (< 5.9) say ENOENT. */
    CHECK(rc == 0 || e.err == ENOENT);
    struct fts_btf_layout from_file;
    CHECK(fts_btf_layout_from_file(NULL, &from_file, &e) == rc);
    if (rc == 0) {
        CHECK(memcmp(&l, &from_file, sizeof(l)) == 0);
    }
    /* Truncated at many points, and with bytes flipped in the type
     * section: refused or parsed, never out of bounds. */
    srand(7);
    for (int i = 0; i < 40; i++) {
        size_t cut = (size_t)rand() % len;
        (void)fts_btf_layout(data, cut, &l, &e);
    }
    for (int i = 0; i < 40; i++) {
        size_t at = 24 + (size_t)rand() % (len - 24);
        unsigned char saved = data[at];
        data[at] ^= (unsigned char)(1 + rand() % 255);
        (void)fts_btf_layout(data, len, &l, &e);
        data[at] = saved;
    }
    CHECK(fts_btf_layout_from_file("/nonexistent/btf", &l, &e) < 0
          && e.err == ENOENT);
    free(data);
}

static void
test_abi_constants(void)
{
    CHECK(FTS_BPF_MAP_CREATE == BPF_MAP_CREATE);
    CHECK(FTS_BPF_MAP_UPDATE_ELEM == BPF_MAP_UPDATE_ELEM);
    CHECK(FTS_BPF_MAP_DELETE_ELEM == BPF_MAP_DELETE_ELEM);
    CHECK(FTS_BPF_MAP_GET_NEXT_KEY == BPF_MAP_GET_NEXT_KEY);
    CHECK(FTS_BPF_NOEXIST == BPF_NOEXIST);
    CHECK(FTS_BPF_MAP_TYPE_HASH == BPF_MAP_TYPE_HASH);
    CHECK(FTS_BPF_PROG_LOAD == BPF_PROG_LOAD);
    CHECK(FTS_BPF_OBJ_PIN == BPF_OBJ_PIN);
    CHECK(FTS_BPF_MAP_FREEZE == BPF_MAP_FREEZE);
    CHECK(FTS_BPF_LINK_CREATE == BPF_LINK_CREATE);
    CHECK(FTS_BPF_ITER_CREATE == BPF_ITER_CREATE);
    CHECK(FTS_BPF_MAP_TYPE_ARRAY == BPF_MAP_TYPE_ARRAY);
    CHECK(FTS_BPF_MAP_TYPE_LRU_HASH == BPF_MAP_TYPE_LRU_HASH);
    CHECK(FTS_BPF_F_MMAPABLE == BPF_F_MMAPABLE);
    CHECK(FTS_BPF_F_RDONLY_PROG == BPF_F_RDONLY_PROG);
    CHECK(FTS_BPF_PROG_TYPE_TRACING == BPF_PROG_TYPE_TRACING);
    CHECK(FTS_BPF_TRACE_ITER == BPF_TRACE_ITER);
    CHECK(FTS_BPF_PSEUDO_MAP_VALUE == BPF_PSEUDO_MAP_VALUE);
    CHECK(FTS_BPF_FUNC_map_lookup_elem == BPF_FUNC_map_lookup_elem);
    CHECK(FTS_BPF_FUNC_map_update_elem == BPF_FUNC_map_update_elem);
    CHECK(FTS_BPF_FUNC_map_delete_elem == BPF_FUNC_map_delete_elem);
    CHECK(FTS_BPF_FUNC_seq_printf == BPF_FUNC_seq_printf);
    CHECK(FTS_BPF_FUNC_seq_write == BPF_FUNC_seq_write);
    CHECK(FTS_BPF_FUNC_skc_to_tcp_timewait_sock
          == BPF_FUNC_skc_to_tcp_timewait_sock);
    CHECK(FTS_BPF_FUNC_skc_to_tcp_sock == BPF_FUNC_skc_to_tcp_sock);
    CHECK(sizeof(struct fts_bpf_insn) == sizeof(struct bpf_insn));
    union bpf_attr a;
    CHECK(offsetof(struct fts_bpf_prog_load_attr, attach_btf_id)
          == (size_t)((char *)&a.attach_btf_id - (char *)&a));
    CHECK(offsetof(struct fts_bpf_prog_load_attr, expected_attach_type)
          == (size_t)((char *)&a.expected_attach_type - (char *)&a));
    CHECK(offsetof(struct fts_bpf_prog_load_attr, log_buf)
          == (size_t)((char *)&a.log_buf - (char *)&a));
    CHECK(offsetof(struct fts_bpf_link_create_attr, attach_type)
          == (size_t)((char *)&a.link_create.attach_type - (char *)&a));
    CHECK(offsetof(struct fts_bpf_obj_pin_attr, bpf_fd)
          == (size_t)((char *)&a.bpf_fd - (char *)&a));
    CHECK(offsetof(struct fts_bpf_map_create_attr, map_flags)
          == (size_t)((char *)&a.map_flags - (char *)&a));
    /* The generator's register byte, read through the kernel's own
     * struct bpf_insn bitfields: its first instructions are r6 = r1 and
     * r7 = *(u64 *)(r6 + ctx_sk_common), in this host's byte order. */
    struct fts_bpf_insn mine[64];
    struct fts_btf_layout l;
    memset(&l, 0, sizeof(l));
    l.ctx_sk_common = 8;
    l.meta_seq.size = 8;
    l.skc_state.size = 1;
    l.skc_family.size = 2;
    l.skc_num.size = 2;
    l.skc_dport.size = 2;
    l.tw_substate.size = 1;
    CHECK(fts_bpf_count_prog(mine, 8, &l, NULL, 3, 16) == 0); /* too small */
    CHECK(fts_bpf_count_prog(mine, 64, &l, NULL, 3, 16) > 2);
    struct bpf_insn k[2];
    memcpy(k, mine, sizeof(k));
    CHECK(k[0].code == (BPF_ALU64 | BPF_MOV | BPF_X));
    CHECK(k[0].dst_reg == BPF_REG_6 && k[0].src_reg == BPF_REG_1);
    CHECK(k[1].code == (BPF_LDX | BPF_MEM | BPF_DW));
    CHECK(k[1].dst_reg == BPF_REG_7 && k[1].src_reg == BPF_REG_6);
    CHECK(k[1].off == 8);
}

/* Every jump lands inside the program; the last instruction exits. */
static int
well_formed(const struct fts_bpf_insn *p, size_t n)
{
    if (n == 0 || p[n - 1].code != (0x05 | 0x90)) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t cls = p[i].code & 7, op = p[i].code & 0xf0;
        if (cls == 0x05 && op != 0x80 && op != 0x90) {
            long target = (long)i + 1 + p[i].off;
            if (target < 0 || target >= (long)n) {
                return 0;
            }
        }
    }
    return 1;
}

static void
test_programs(void)
{
    static struct blob b;
    static unsigned char data[8192];
    build_blob(&b);
    size_t len = finish(&b, data);
    struct fts_btf_layout l;
    struct fts_error e;
    CHECK(fts_btf_layout(data, len, &l, &e) == 0);

    struct fts_port_range ranges[600];
    for (int i = 0; i < 600; i++) {
        ranges[i].low = (uint16_t)(i * 100);
        ranges[i].high = (uint16_t)(i * 100 + (i % 3 == 0 ? 0 : 50));
    }
    struct fts_bpf_filter filters[] = {
        {NULL, 0, NULL, 0},
        {ranges, 1, NULL, 0},
        {NULL, 0, ranges, 2},
        {ranges, 300, ranges + 300, 300},
    };
    for (size_t f = 0; f < sizeof(filters) / sizeof(filters[0]); f++) {
        size_t cap = fts_bpf_count_prog_len(&filters[f]);
        struct fts_bpf_insn *p = calloc(cap, sizeof(*p));
        size_t n = fts_bpf_count_prog(p, cap, &l, &filters[f], 5, 16);
        CHECK(n > 0 && n <= cap);
        CHECK(well_formed(p, n));
        /* The cgroup breakdown fits in the same room. */
        struct fts_bpf_by_cgroup by = {{600, 200, 64}, 7};
        n = fts_bpf_count_prog_by(p, cap, &l, &filters[f], 5, 16, &by);
        CHECK(n > 0 && n <= cap);
        CHECK(well_formed(p, n));
        free(p);
    }
    struct fts_bpf_insn text[FTS_BPF_TEXT_PROG_MAXLEN];
    size_t n = fts_bpf_text_prog(text, FTS_BPF_TEXT_PROG_MAXLEN, &l, 5, 6,
                                 16);
    CHECK(n > 0);
    CHECK(well_formed(text, n));
    CHECK(fts_bpf_text_prog(text, 10, &l, 5, 6, 16) == 0);

    char strings[FTS_BPF_TEXT_SIZE];
    fts_bpf_text_strings(strings);
    CHECK(strcmp(strings, FTS_BPF_TEXT_HEADER) == 0);
}

int
main(void)
{
    test_blob_layout();
    test_member_search_is_linear();
    test_kernel_btf();
    test_abi_constants();
    test_programs();
    return report();
}

/*
 * Unit tests of the walk engine's plain-C parts, no kernel involved
 * except reading its BTF where readable:
 *  - the BTF query API (btf.c's general queries): members inside
 *    anonymous unions, paths through embedded structs, pointer targets,
 *    bitfields refused, on a hand-built blob and every truncation of it;
 *  - the layout from the running kernel's BTF: every field found, and the
 *    relations the program relies on;
 *  - the generator: every jump and the callback's address resolved and in
 *    range, every kfunc call naming the layout's ids, no write past `cap`
 *    (ASan: exact-size heap arrays), arguments out of range refused, the
 *    length bound honoured with many port ranges;
 *  - the program's own BTF parses with our reader and names both FUNCs.
 */
#include "btf.h"
#include "btf_blob.h"
#include "check.h"
#include "walk_prog.h"
#include "bpf_asm.h"
#include "walk_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* struct node { struct node *next; }
 * struct outer { int a; union { int x; struct node nn; }; int bits:3;
 *                struct { struct node *first; } head; }  */
static size_t
query_blob(unsigned char *out)
{
    struct blob b;
    blob_init(&b);
    uint32_t t_int = type(&b, "int", 1, 0, 0, 4);
    put32(&b, (1u << 24) | 32);
    uint32_t t_node = type(&b, "node", 4, 1, 0, 8);
    member(&b, "next", t_node + 1, 0);
    uint32_t t_ptr = type(&b, NULL, 2, 0, 0, t_node);
    (void)t_ptr;
    uint32_t t_union = type(&b, NULL, 5, 2, 0, 8);
    member(&b, "x", t_int, 0);
    member(&b, "nn", t_node, 0);
    uint32_t t_head = type(&b, NULL, 4, 1, 0, 8);
    member(&b, "first", t_node + 1, 0);
    uint32_t t_outer = type(&b, "outer", 4, 4, 1, 32);
    member(&b, "a", t_int, 0);
    member(&b, NULL, t_union, 64);
    member(&b, "bits", t_int, (3u << 24) | 128);
    member(&b, "head", t_head, 192);
    (void)t_outer;
    return finish(&b, out);
}

static void
test_queries(void)
{
    unsigned char buf[4096];
    size_t len = query_blob(buf);
    struct fts_error err = {0, NULL};
    struct fts_btf *b = fts_btf_open(buf, len, &err);
    CHECK(b != NULL);
    if (b == NULL) {
        return;
    }
    uint32_t outer = fts_btf_find(b, "outer", FTS_BTF_KIND_STRUCT);
    uint32_t node = fts_btf_find(b, "node", FTS_BTF_KIND_STRUCT);
    CHECK(outer != 0 && node != 0);
    CHECK(fts_btf_find(b, "outer", FTS_BTF_KIND_FUNC) == 0);
    CHECK(fts_btf_size_of(b, outer) == 32);
    struct fts_btf_member m;
    CHECK(fts_btf_member_of(b, outer, "x", &m, &err) == 0 && m.offset == 8
          && m.size == 4);
    CHECK(fts_btf_member_of(b, outer, "nn", &m, &err) == 0 && m.offset == 8
          && m.type_id == node && m.kind == 4);
    CHECK(fts_btf_member_of(b, outer, "head", &m, &err) == 0
          && m.offset == 24);
    uint32_t head = m.type_id;
    CHECK(fts_btf_member_of(b, head, "first", &m, &err) == 0 && m.kind == 2
          && m.size == 8 && m.target_id == node);
    /* Named members are not searched: "first" is inside "head". */
    CHECK(fts_btf_member_of(b, outer, "first", &m, &err) < 0
          && err.err == ENOENT);
    CHECK(fts_btf_member_of(b, outer, "bits", &m, &err) < 0
          && err.err == EPROTO);
    CHECK(fts_btf_member_of(b, node, "nope", &m, &err) < 0);
    fts_btf_close(b);

    /* Every truncation: refused or parsed, never a crash (ASan). */
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        struct fts_btf *t = fts_btf_open(copy, cut, &err);
        if (t != NULL) {
            uint32_t id = fts_btf_find(t, "outer", FTS_BTF_KIND_STRUCT);
            fts_btf_member_of(t, id, "head", &m, &err);
            fts_btf_close(t);
        }
        free(copy);
    }
}

/* A layout with distinct, recognisable values (not a real kernel's). */
static void
fake_layout(struct fts_walk_layout *l)
{
    memset(l, 0, sizeof(*l));
    l->kf_rcu_read_lock = 70001;
    l->kf_rcu_read_unlock = 70002;
    l->kf_rdonly_cast = 70003;
    l->id_nulls_head = 501;
    l->id_sock_common = 502;
    l->id_tw_sock = 503;
    l->task_nsproxy = 1840;
    l->nsproxy_net = 40;
    l->net_hashinfo = 960;
    l->net_inum = 176;
    l->hi_ehash = 0;
    l->hi_ehash_mask = 16;
    l->hi_lhash2 = 64;
    l->hi_lhash2_mask = 60;
    l->ehash_size = 8;
    l->ehash_head = 0;
    l->lhash2_size = 16;
    l->lhash2_head = 8;
    l->head_first = 0;
    l->skc_node_next = 104;
    l->skc_node = 104;
    l->skc_net = 48;
    l->skc_state = 18;
    l->skc_family = 16;
    l->skc_num = 14;
    l->skc_dport = 12;
    l->tw_substate = 140;
}

/* The shared invariants, and what only a whole program shows: several
 * kfunc calls and exits. */
static void
check_program(const struct fts_bpf_insn *p, size_t n, uint32_t callback_at,
              const struct fts_walk_layout *l)
{
    CHECK(walk_check_program(p, n, callback_at, l) == 0);
    int kfuncs = 0, exits = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i].code == (FTS_JMP | FTS_J_CALL)
            && fts_insn_src(&p[i]) == FTS_PSEUDO_KFUNC_CALL) {
            kfuncs++;
        }
        exits += p[i].code == (FTS_JMP | FTS_J_EXIT);
    }
    CHECK(kfuncs >= 5);
    CHECK(exits >= 2);
}

static void
test_generator(int raw_reads)
{
    struct fts_walk_layout l;
    fake_layout(&l);
    l.raw_reads = (uint16_t)raw_reads;
    size_t cap = fts_walk_prog_len(NULL);
    struct fts_bpf_insn *p = calloc(cap, sizeof(*p));
    uint32_t cb = 0;
    size_t n = fts_walk_prog(p, cap, &l, NULL, 3, 1024, &cb);
    CHECK(n > 100 && n <= cap);
    if (n > 0) {
        check_program(p, n, cb, &l);
    }
    /* Too little room: refused, never written past (exact heap size). */
    for (size_t small = 0; small < n; small += (small < 16 ? 1 : 37)) {
        struct fts_bpf_insn *q = calloc(small ? small : 1, sizeof(*q));
        CHECK(fts_walk_prog(q, small, &l, NULL, 3, 1024, &cb) == 0);
        free(q);
    }
    /* nslots: a power of two up to the maximum. */
    CHECK(fts_walk_prog(p, cap, &l, NULL, 3, 0, &cb) == 0);
    CHECK(fts_walk_prog(p, cap, &l, NULL, 3, 1000, &cb) == 0);
    CHECK(fts_walk_prog(p, cap, &l, NULL, 3, 2 * FTS_WALK_MAX_SLOTS, &cb)
          == 0);
    CHECK(fts_walk_prog(p, cap, &l, NULL, 3, 1, &cb) > 0);
    CHECK(fts_walk_prog(p, cap, &l, NULL, 3, FTS_WALK_MAX_SLOTS, &cb) > 0);
    free(p);

    /* Filters: the length bound holds, and programs stay well formed. */
    static struct fts_port_range ranges[300];
    for (int i = 0; i < 300; i++) {
        ranges[i].low = (uint16_t)(100 * i);
        ranges[i].high = (uint16_t)(100 * i + (i % 3 ? 50 : 0));
    }
    size_t sizes[] = {0, 1, 2, 17, 300};
    for (size_t a = 0; a < 5; a++) {
        for (size_t b = 0; b < 5; b++) {
            struct fts_walk_filter f = {0x4C2, ranges, sizes[a], ranges,
                                        sizes[b]};
            size_t fcap = fts_walk_prog_len(&f);
            struct fts_bpf_insn *q = calloc(fcap, sizeof(*q));
            size_t m = fts_walk_prog(q, fcap, &l, &f, 3, 64, &cb);
            CHECK(m > 0 && m <= fcap);
            if (m > 0) {
                check_program(q, m, cb, &l);
            }
            free(q);
        }
    }
    struct fts_walk_filter too_many = {0, ranges, FTS_MAX_PORT_RANGES + 1,
                                       NULL, 0};
    struct fts_bpf_insn one;
    CHECK(fts_walk_prog(&one, 1, &l, &too_many, 3, 64, &cb) == 0);
}

static void
test_prog_btf(void)
{
    unsigned char out[FTS_WALK_BTF_MAXLEN];
    uint32_t info[4];
    size_t len = fts_walk_prog_btf(out, sizeof(out), 123, info);
    CHECK(len > 24 && len <= sizeof(out));
    CHECK(info[0] == 0 && info[2] == 123 && info[1] != info[3]);
    struct fts_error err;
    struct fts_btf *b = fts_btf_open(out, len, &err);
    CHECK(b != NULL);
    if (b != NULL) {
        CHECK(fts_btf_find(b, "fasttcpstat_walk", FTS_BTF_KIND_FUNC)
              == info[1]);
        CHECK(fts_btf_find(b, "walk_step", FTS_BTF_KIND_FUNC) == info[3]);
        fts_btf_close(b);
    }
    for (size_t cap = 0; cap < len; cap++) {
        unsigned char *small = malloc(cap ? cap : 1);
        CHECK(fts_walk_prog_btf(small, cap, 123, info) == 0);
        free(small);
    }
}

static void
test_kernel_layout(void)
{
    struct fts_error err = {0, NULL};
    struct fts_btf *b = fts_btf_open_file(NULL, &err);
    if (b == NULL) {
        printf("kernel BTF unreadable (%s): layout test skipped\n",
               err.what);
        return;
    }
    struct fts_walk_layout l;
    CHECK(fts_walk_layout(b, &l, &err) == 0);
    /* What the program relies on, whatever the offsets are. */
    CHECK(l.kf_rcu_read_lock && l.kf_rcu_read_unlock && l.kf_rdonly_cast);
    CHECK(l.id_nulls_head && l.id_sock_common && l.id_tw_sock);
    CHECK(l.skc_node_next == l.skc_node);  /* next is the node's first */
    CHECK(l.ehash_size >= 8 && l.lhash2_size >= 8);
    CHECK(l.skc_state != l.skc_family && l.net_inum != 0);
    CHECK(l.tw_substate >= 136);  /* after the embedded sock_common */
    size_t cap = fts_walk_prog_len(NULL);
    struct fts_bpf_insn *p = calloc(cap, sizeof(*p));
    uint32_t cb;
    size_t n = fts_walk_prog(p, cap, &l, NULL, 3, 1024, &cb);
    CHECK(n > 0);
    if (n > 0) {
        check_program(p, n, cb, &l);
    }
    free(p);
    fts_btf_close(b);
}

int
main(void)
{
    test_queries();
    test_generator(0);
    test_generator(1);  /* raw reads: no typed casts of sockets */
    test_prog_btf();
    test_kernel_layout();
    return report();
}

/*
 * Unit tests of the port filter compiler (csrc/diag_filter.c).
 *
 * The programs are checked against a model of the kernel's two routines
 * (bc_model.h, shared with fuzz/fuzz_filter.c): the audit that accepts or
 * rejects a program (inet_diag_bc_audit) and the interpreter that runs it
 * per socket (inet_diag_bc_run).  Every program built must pass the audit,
 * and for many random filters its verdict on sampled (and boundary) port
 * pairs must equal the filter's definition.
 */
#include "diag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/inet_diag.h>

#include "bc_model.h"
#include "check.h"


static int
in_ranges(unsigned port, const struct fts_port_range *r, size_t n)
{
    if (n == 0) {
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (port >= r[i].low && port <= r[i].high) {
            return 1;
        }
    }
    return 0;
}

static unsigned
rnd(unsigned limit)
{
    return (unsigned)(rand() % (int)limit);
}

static void
random_ranges(struct fts_port_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned a = rnd(65536), b;
        /* Mostly single ports and short ranges, as people write them. */
        switch (rnd(3)) {
        case 0:
            b = a;
            break;
        case 1:
            b = a + rnd(100);
            break;
        default:
            b = rnd(65536);
            break;
        }
        if (b > 65535) {
            b = 65535;
        }
        if (b < a) {
            unsigned t = a;
            a = b;
            b = t;
        }
        r[i].low = (uint16_t)a;
        r[i].high = (uint16_t)b;
    }
}

/* Ports worth probing: both ends of each range and their neighbours. */
static unsigned
probe(const struct fts_port_range *r, size_t n, unsigned k)
{
    if (n == 0 || rnd(4) == 0) {
        return rnd(65536);
    }
    const struct fts_port_range *x = &r[k % n];
    int choice = (int)rnd(4);
    long p = choice == 0 ? (long)x->low - 1
             : choice == 1 ? x->low
             : choice == 2 ? x->high
             : (long)x->high + 1;
    return (unsigned)(p < 0 ? 0 : p > 65535 ? 65535 : p);
}

static void
check_filter(const struct fts_port_range *local, size_t nlocal,
             const struct fts_port_range *remote, size_t nremote)
{
    static unsigned char bc[FTS_MAX_PORT_RANGES * 24];
    long len = fts_build_port_filter(bc, sizeof(bc), local, nlocal, remote,
                                     nremote);
    CHECK(len == (long)fts_port_filter_size(nlocal, nremote));
    if (len < 0) {
        return;
    }
    CHECK(len <= 0xFFFF - 4);
    /* An empty program is never sent (no attribute at all). */
    CHECK(len == 0 || bc_model_audit(bc, (int)len));
    int mismatches = 0;
    for (unsigned k = 0; k < 400; k++) {
        unsigned s = probe(local, nlocal, k);
        unsigned d = probe(remote, nremote, k * 7 + 3);
        int want = in_ranges(s, local, nlocal) && in_ranges(d, remote,
                                                            nremote);
        if (bc_model_run(bc, (int)len, s, d) != want) {
            mismatches++;
        }
    }
    CHECK(mismatches == 0);
}

static void
test_examples(void)
{
    struct fts_port_range https[] = {{443, 443}, {8443, 8443}};
    struct fts_port_range high[] = {{1024, 65535}};
    struct fts_port_range one[] = {{0, 0}};
    check_filter(https, 2, NULL, 0);
    check_filter(NULL, 0, https, 2);
    check_filter(https, 2, high, 1);
    check_filter(one, 1, one, 1);
    check_filter(NULL, 0, NULL, 0);

    unsigned char bc[64];
    CHECK(fts_build_port_filter(bc, sizeof(bc), NULL, 0, NULL, 0) == 0);
    /* ss -tan 'sport = :443 or sport = :8443' */
    long len = fts_build_port_filter(bc, sizeof(bc), https, 2, NULL, 0);
    CHECK(len == 36);
    CHECK(bc_model_run(bc, (int)len, 443, 1));
    CHECK(bc_model_run(bc, (int)len, 8443, 1));
    CHECK(!bc_model_run(bc, (int)len, 444, 1));
    CHECK(!bc_model_run(bc, (int)len, 0, 443));
}

static void
test_rejects(void)
{
    unsigned char bc[64];
    struct fts_port_range bad[] = {{10, 9}};
    struct fts_port_range ok[] = {{1, 2}};
    CHECK(fts_build_port_filter(bc, sizeof(bc), bad, 1, NULL, 0) == -1);
    CHECK(fts_build_port_filter(bc, sizeof(bc), ok, 1, bad, 1) == -1);
    CHECK(fts_build_port_filter(bc, 8, ok, 1, NULL, 0) == -1);
    CHECK(fts_build_port_filter(bc, sizeof(bc), ok,
                                FTS_MAX_PORT_RANGES + 1, NULL, 0) == -1);
}

static void
put_raw(unsigned char *p, unsigned char code, unsigned char yes,
        unsigned short no)
{
    struct inet_diag_bc_op op = {code, yes, no};
    memcpy(p, &op, sizeof(op));
}

/* The model must reject what the kernel rejects, or the checks above and
 * the fuzzer's would prove nothing. */
static void
test_model_rejects_bad_programs(void)
{
    unsigned char bc[64];
    /* A good one first: S_GE 10 (accept), reject otherwise. */
    put_raw(bc, INET_DIAG_BC_S_GE, 8, 12);
    put_raw(bc + 4, INET_DIAG_BC_NOP, 0, 10);
    CHECK(bc_model_audit(bc, 8));
    CHECK(bc_model_run(bc, 8, 10, 0));
    CHECK(!bc_model_run(bc, 8, 9, 0));

    CHECK(bc_model_audit_slow(bc, 8));
    CHECK(!bc_model_audit(bc, 0));            /* shorter than one op */
    CHECK(!bc_model_audit(bc, 4));            /* comparison cut short */
    put_raw(bc, INET_DIAG_BC_S_GE, 8, 16);    /* no: 8 past the end */
    CHECK(!bc_model_audit(bc, 8));
    put_raw(bc, INET_DIAG_BC_S_GE, 8, 6);     /* no: not a multiple of 4 */
    CHECK(!bc_model_audit(bc, 8));
    put_raw(bc, INET_DIAG_BC_S_GE, 4, 12);    /* yes: inside the op */
    CHECK(!bc_model_audit(bc, 8));
    put_raw(bc, INET_DIAG_BC_S_GE, 12, 12);   /* yes: overshoots the end */
    CHECK(!bc_model_audit(bc, 8));
    put_raw(bc, INET_DIAG_BC_S_EQ, 8, 12);    /* an op we never emit */
    CHECK(!bc_model_audit(bc, 8));

    /* A jump into the port-holding half of a comparison. */
    put_raw(bc, INET_DIAG_BC_JMP, 4, 8);
    put_raw(bc + 4, INET_DIAG_BC_S_LE, 8, 12);
    put_raw(bc + 8, INET_DIAG_BC_NOP, 0, 80);
    CHECK(!bc_model_audit(bc, 12));
    put_raw(bc, INET_DIAG_BC_JMP, 4, 4);      /* to the comparison: fine */
    CHECK(bc_model_audit(bc, 12));
}

/* The fast audit (boundaries marked once) answers like the kernel's
 * quadratic one, on built programs and on randomly damaged copies. */
static void
test_fast_audit_matches_kernel_walk(void)
{
    static struct fts_port_range local[64], remote[64];
    static unsigned char bc[FTS_MAX_PORT_RANGES * 24];
    int disagreements = 0, rejected = 0;
    srand(777);
    for (int round = 0; round < 2000; round++) {
        size_t nlocal = rnd(8), nremote = rnd(8);
        random_ranges(local, nlocal);
        random_ranges(remote, nremote);
        long len = fts_build_port_filter(bc, sizeof(bc), local, nlocal,
                                         remote, nremote);
        if (len <= 0) {
            continue;
        }
        for (int k = (int)rnd(4); k > 0; k--) {
            bc[rnd((unsigned)len)] = (unsigned char)rnd(256);
        }
        int cut = rnd(5) == 0 ? (int)rnd((unsigned)len + 1) : (int)len;
        int fast = bc_model_audit(bc, cut);
        rejected += !fast;
        disagreements += fast != bc_model_audit_slow(bc, cut);
    }
    CHECK(disagreements == 0);
    CHECK(rejected > 100);  /* the damage did get programs rejected */
}

static void
test_random_filters(void)
{
    static struct fts_port_range local[FTS_MAX_PORT_RANGES];
    static struct fts_port_range remote[FTS_MAX_PORT_RANGES];
    srand(12345);
    for (int round = 0; round < 300; round++) {
        size_t nlocal = rnd(6), nremote = rnd(6);
        random_ranges(local, nlocal);
        random_ranges(remote, nremote);
        check_filter(local, nlocal, remote, nremote);
    }
    /* The largest programs: every offset must still fit 16 bits. */
    random_ranges(local, FTS_MAX_PORT_RANGES);
    check_filter(local, FTS_MAX_PORT_RANGES, NULL, 0);
    random_ranges(local, FTS_MAX_PORT_RANGES / 2);
    random_ranges(remote, FTS_MAX_PORT_RANGES / 2);
    check_filter(local, FTS_MAX_PORT_RANGES / 2, remote,
                 FTS_MAX_PORT_RANGES / 2);
}

int
main(void)
{
    test_examples();
    test_rejects();
    test_model_rejects_bad_programs();
    test_fast_audit_matches_kernel_walk();
    test_random_filters();
    return report();
}

/*
 * Unit tests of the port filter compiler (csrc/diag_filter.c).
 *
 * The programs are checked against a model of the kernel's two routines,
 * written here from their documented behaviour: the audit that accepts or
 * rejects a program (inet_diag_bc_audit) and the interpreter that runs it
 * per socket (inet_diag_bc_run).  Every program built must pass the audit,
 * and for many random filters its verdict on sampled (and boundary) port
 * pairs must equal the filter's definition.
 */
#include "check.h"
#include "diag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/inet_diag.h>


static struct inet_diag_bc_op
op_at(const unsigned char *bc, int offset)
{
    struct inet_diag_bc_op op;
    memcpy(&op, bc + offset, sizeof(op));
    return op;
}

/* Is `target` bytes from the start an op boundary (or the end)? */
static int
model_valid_target(const unsigned char *bc, int len, int target)
{
    int pos = 0;
    while (pos < len) {
        if (pos == target) {
            return 1;
        }
        struct inet_diag_bc_op op = op_at(bc, pos);
        if (op.yes < 4 || (op.yes & 3)) {
            return 0;
        }
        pos += op.yes;
    }
    return pos == target;
}

/* The audit: ops walked by `yes`, jumps in range, aligned, and landing on
 * op boundaries; port comparisons carry a second op. */
static int
model_audit(const unsigned char *bc, int len)
{
    int pos = 0;
    while (pos < len) {
        int remaining = len - pos;
        if (remaining < 4) {
            return 0;
        }
        struct inet_diag_bc_op op = op_at(bc, pos);
        int min_len = 4;
        switch (op.code) {
        case INET_DIAG_BC_S_GE:
        case INET_DIAG_BC_S_LE:
        case INET_DIAG_BC_D_GE:
        case INET_DIAG_BC_D_LE:
            if (remaining < 8) {
                return 0;
            }
            min_len = 8;
            break;
        case INET_DIAG_BC_JMP:
        case INET_DIAG_BC_NOP:
            break;
        default:
            return 0;  /* no other op is ever emitted */
        }
        if (op.code != INET_DIAG_BC_NOP) {
            if (op.no < min_len || op.no > remaining + 4 || (op.no & 3)) {
                return 0;
            }
            if (op.no < remaining
                && !model_valid_target(bc, len, pos + op.no)) {
                return 0;
            }
        }
        if (op.yes < min_len || op.yes > remaining + 4 || (op.yes & 3)) {
            return 0;
        }
        pos += op.yes;
    }
    return pos == len;
}

/* The interpreter: accept iff execution ends exactly at the end. */
static int
model_run(const unsigned char *bc, int len, unsigned sport, unsigned dport)
{
    int pos = 0;
    while (pos < len) {
        struct inet_diag_bc_op op = op_at(bc, pos);
        int yes = 1;
        switch (op.code) {
        case INET_DIAG_BC_NOP:
            break;
        case INET_DIAG_BC_JMP:
            yes = 0;
            break;
        case INET_DIAG_BC_S_GE:
            yes = sport >= op_at(bc, pos + 4).no;
            break;
        case INET_DIAG_BC_S_LE:
            yes = sport <= op_at(bc, pos + 4).no;
            break;
        case INET_DIAG_BC_D_GE:
            yes = dport >= op_at(bc, pos + 4).no;
            break;
        case INET_DIAG_BC_D_LE:
            yes = dport <= op_at(bc, pos + 4).no;
            break;
        default:
            return 0;
        }
        pos += yes ? op.yes : op.no;
    }
    return pos == len;
}

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
    CHECK(model_audit(bc, (int)len));
    int mismatches = 0;
    for (unsigned k = 0; k < 400; k++) {
        unsigned s = probe(local, nlocal, k);
        unsigned d = probe(remote, nremote, k * 7 + 3);
        int want = in_ranges(s, local, nlocal) && in_ranges(d, remote,
                                                            nremote);
        if (model_run(bc, (int)len, s, d) != want) {
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
    CHECK(model_run(bc, (int)len, 443, 1));
    CHECK(model_run(bc, (int)len, 8443, 1));
    CHECK(!model_run(bc, (int)len, 444, 1));
    CHECK(!model_run(bc, (int)len, 0, 443));
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
    test_random_filters();
    return report();
}

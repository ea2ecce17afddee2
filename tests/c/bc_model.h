/*
 * A model of the kernel's inet_diag bytecode audit and interpreter, shared
 * by the filter compiler's unit test (tests/c/test_diag_filter.c) and its
 * fuzzer (fuzz/fuzz_filter.c).
 *
 * Written from net/ipv4/inet_diag.c (inet_diag_bc_audit, valid_cc,
 * valid_port_comparison, inet_diag_bc_run), restricted to the ops that
 * fasttcpstat may emit: the port comparisons, JMP and NOP.  Any other op
 * makes the model's audit reject the program, which is stricter than the
 * kernel (it would accept e.g. S_EQ) on purpose: the compiler must only
 * use the original ops every kernel with inet_diag knows.
 *
 * Every read goes through memcpy within [0, len): a broken program must
 * make the model say "rejected", never read out of bounds.
 */
#ifndef FASTTCPSTAT_BC_MODEL_H
#define FASTTCPSTAT_BC_MODEL_H

#include <string.h>
#include <linux/inet_diag.h>

#define BC_MODEL_OP_SIZE ((int)sizeof(struct inet_diag_bc_op))

static inline struct inet_diag_bc_op
bc_model_op_at(const unsigned char *bc, int offset)
{
    struct inet_diag_bc_op op;
    memcpy(&op, bc + offset, sizeof(op));
    return op;
}

/* valid_cc(): is `target` bytes from the start an op boundary (or the
 * end), walking the program by each op's `yes` length? */
static inline int
bc_model_valid_target(const unsigned char *bc, int len, int target)
{
    int pos = 0;
    while (pos < len) {
        if (pos == target) {
            return 1;
        }
        if (len - pos < BC_MODEL_OP_SIZE) {
            return 0;
        }
        struct inet_diag_bc_op op = bc_model_op_at(bc, pos);
        if (op.yes < 4 || (op.yes & 3)) {
            return 0;
        }
        pos += op.yes;
    }
    return pos == target;
}

/* The audit as the kernel writes it, valid_cc() walk per jump included:
 * quadratic, kept as the reference bc_model_audit() is tested against. */
static inline int
bc_model_audit_slow(const unsigned char *bc, int len)
{
    if (len < BC_MODEL_OP_SIZE) {
        return 0;
    }
    int pos = 0;
    while (pos < len) {
        int remaining = len - pos;
        if (remaining < BC_MODEL_OP_SIZE) {
            return 0;
        }
        struct inet_diag_bc_op op = bc_model_op_at(bc, pos);
        int min_len = BC_MODEL_OP_SIZE;
        switch (op.code) {
        case INET_DIAG_BC_S_GE:
        case INET_DIAG_BC_S_LE:
        case INET_DIAG_BC_D_GE:
        case INET_DIAG_BC_D_LE:
            min_len += BC_MODEL_OP_SIZE;
            if (remaining < min_len) {
                return 0;
            }
            break;
        case INET_DIAG_BC_JMP:
        case INET_DIAG_BC_NOP:
            break;
        default:
            return 0;
        }
        if (op.code != INET_DIAG_BC_NOP) {
            if (op.no < min_len || op.no > remaining + 4 || (op.no & 3)) {
                return 0;
            }
            if (op.no < remaining
                && !bc_model_valid_target(bc, len, pos + op.no)) {
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

/* The largest program the kernel can be sent (a 16-bit attribute). */
#define BC_MODEL_MAX_LEN 65536

/* inet_diag_bc_audit(): ops walked by `yes`; `yes` and `no` at least the
 * op's length, multiples of 4, at most 4 past the end; a `no` inside the
 * program lands on an op boundary; port comparisons carry a second op
 * holding the port; the walk ends exactly at the end.  The kernel also
 * refuses an attribute shorter than one op.
 *
 * The kernel checks each jump with valid_cc(), a walk from the start:
 * quadratic.  Here the boundaries valid_cc() would reach are marked once,
 * which answers the same for every target in constant time (checked
 * against bc_model_valid_target() by tests/c/test_diag_filter.c). */
static inline int
bc_model_audit(const unsigned char *bc, int len)
{
    static unsigned char boundary[BC_MODEL_MAX_LEN / 4 + 1];
    if (len < BC_MODEL_OP_SIZE || len > BC_MODEL_MAX_LEN) {
        return 0;
    }
    memset(boundary, 0, (size_t)len / 4 + 1);
    for (int pos = 0; pos < len;) {
        if (pos % 4 == 0) {
            boundary[pos / 4] = 1;
        }
        if (len - pos < BC_MODEL_OP_SIZE) {
            break;
        }
        struct inet_diag_bc_op op = bc_model_op_at(bc, pos);
        if (op.yes < 4 || (op.yes & 3)) {
            break;
        }
        pos += op.yes;
    }
    int pos = 0;
    while (pos < len) {
        int remaining = len - pos;
        if (remaining < BC_MODEL_OP_SIZE) {
            return 0;
        }
        struct inet_diag_bc_op op = bc_model_op_at(bc, pos);
        int min_len = BC_MODEL_OP_SIZE;
        switch (op.code) {
        case INET_DIAG_BC_S_GE:
        case INET_DIAG_BC_S_LE:
        case INET_DIAG_BC_D_GE:
        case INET_DIAG_BC_D_LE:
            min_len += BC_MODEL_OP_SIZE;
            if (remaining < min_len) {
                return 0;
            }
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
            /* pos and no are multiples of 4 here. */
            if (op.no < remaining && !boundary[(pos + op.no) / 4]) {
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

/* inet_diag_bc_run(): accept iff execution ends exactly at the end.  Only
 * meaningful for a program that passed bc_model_audit(). */
static inline int
bc_model_run(const unsigned char *bc, int len, unsigned sport, unsigned dport)
{
    int pos = 0;
    while (pos < len) {
        struct inet_diag_bc_op op = bc_model_op_at(bc, pos);
        int yes = 1;
        switch (op.code) {
        case INET_DIAG_BC_NOP:
            break;
        case INET_DIAG_BC_JMP:
            yes = 0;
            break;
        case INET_DIAG_BC_S_GE:
            yes = sport >= bc_model_op_at(bc, pos + 4).no;
            break;
        case INET_DIAG_BC_S_LE:
            yes = sport <= bc_model_op_at(bc, pos + 4).no;
            break;
        case INET_DIAG_BC_D_GE:
            yes = dport >= bc_model_op_at(bc, pos + 4).no;
            break;
        case INET_DIAG_BC_D_LE:
            yes = dport <= bc_model_op_at(bc, pos + 4).no;
            break;
        default:
            return 0;
        }
        pos += yes ? op.yes : op.no;
    }
    return pos == len;
}

#endif /* FASTTCPSTAT_BC_MODEL_H */

/*
 * The structural invariants of a generated walk program, shared by the
 * unit tests (tests/c/test_walk_prog.c) and the fuzz harness
 * (fuzz/fuzz_walkprog.c): every jump lands inside its own function and not
 * on an ld_imm64's second half, the only PSEUDO_FUNC names the callback,
 * every kfunc call names one of the layout's kfuncs, both functions end in
 * an exit.  Returns the number of violations.
 */
#ifndef FASTTCPSTAT_TEST_WALK_CHECK_H
#define FASTTCPSTAT_TEST_WALK_CHECK_H

#include <stdlib.h>

#include "bpf_asm.h"
#include "walk_prog.h"

static int
walk_is_ld_imm64(const struct fts_bpf_insn *i)
{
    return i->code == (FTS_LD | FTS_MODE_IMM | FTS_SZ_DW);
}

static int
walk_check_kfunc(const struct fts_bpf_insn *in,
                 const struct fts_walk_layout *l)
{
    return in->imm != (int32_t)l->kf_rcu_read_lock
           && in->imm != (int32_t)l->kf_rcu_read_unlock
           && in->imm != (int32_t)l->kf_rdonly_cast;
}

static int
walk_check_program(const struct fts_bpf_insn *p, size_t n,
                   uint32_t callback_at, const struct fts_walk_layout *l)
{
    if (n < 2 || callback_at == 0 || callback_at >= n) {
        return 1;
    }
    unsigned char *second_half = calloc(n, 1);
    if (second_half == NULL) {
        return 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        if (walk_is_ld_imm64(&p[i])) {
            second_half[i + 1] = 1;
            i++;
        }
    }
    int funcs = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        const struct fts_bpf_insn *in = &p[i];
        if (second_half[i]) {
            continue;
        }
        if (walk_is_ld_imm64(in) && fts_insn_src(in) == FTS_PSEUDO_FUNC) {
            funcs++;
            bad += (long)i + 1 + in->imm != (long)callback_at;
            continue;
        }
        if ((in->code & 0x07) != FTS_JMP) {
            continue;
        }
        uint8_t op = in->code & 0xf0;
        if (op == FTS_J_EXIT) {
            continue;
        }
        if (op == FTS_J_CALL) {
            if (fts_insn_src(in) == FTS_PSEUDO_KFUNC_CALL) {
                bad += walk_check_kfunc(in, l);
            }
            continue;
        }
        long target = (long)i + 1 + in->off;
        bad += target < 0 || target >= (long)n || second_half[target];
        /* no jump crosses between the main program and the callback */
        bad += ((long)i < (long)callback_at) != (target < (long)callback_at);
    }
    bad += funcs != 1;
    bad += p[callback_at - 1].code != (FTS_JMP | FTS_J_EXIT);
    bad += p[n - 1].code != (FTS_JMP | FTS_J_EXIT);
    free(second_half);
    return bad;
}

#endif /* FASTTCPSTAT_TEST_WALK_CHECK_H */

/*
 * A tiny BPF assembler shared by program generators: instructions are
 * appended to a caller-owned array; forward jumps (and the address of a
 * callback subprogram) name a label that is patched once placed.
 * Header-only (static inline): no object file for the build to link.
 */
#ifndef FASTTCPSTAT_BPF_ASM_H
#define FASTTCPSTAT_BPF_ASM_H

#include <stddef.h>
#include <stdint.h>

#include "bpf_abi.h"
#include "diag.h"

/* Opcode parts (include/uapi/linux/bpf_common.h, bpf.h). */
#define FTS_LD 0x00
#define FTS_LDX 0x01
#define FTS_ST 0x02
#define FTS_STX 0x03
#define FTS_ALU 0x04
#define FTS_JMP 0x05
#define FTS_ALU64 0x07
#define FTS_SZ_W 0x00
#define FTS_SZ_H 0x08
#define FTS_SZ_B 0x10
#define FTS_SZ_DW 0x18
#define FTS_MODE_IMM 0x00
#define FTS_MODE_MEM 0x60
#define FTS_OP_ADD 0x00
#define FTS_OP_SUB 0x10
#define FTS_OP_MUL 0x20
#define FTS_OP_OR 0x40
#define FTS_OP_AND 0x50
#define FTS_OP_LSH 0x60
#define FTS_OP_RSH 0x70
#define FTS_OP_MOV 0xb0
#define FTS_OP_END 0xd0
#define FTS_SRC_K 0x00
#define FTS_SRC_X 0x08
#define FTS_TO_BE 0x08
#define FTS_J_JA 0x00
#define FTS_J_JEQ 0x10
#define FTS_J_JGT 0x20
#define FTS_J_JGE 0x30
#define FTS_J_JSET 0x40
#define FTS_J_JNE 0x50
#define FTS_J_JLT 0xa0
#define FTS_J_JLE 0xb0
#define FTS_J_CALL 0x80
#define FTS_J_EXIT 0x90

/* Registers: r0 return value, r1-r5 arguments (clobbered by calls),
 * r6-r9 callee-saved, r10 the frame pointer. */
#define R0 0
#define R1 1
#define R2 2
#define R3 3
#define R4 4
#define R5 5
#define R6 6
#define R7 7
#define R8 8
#define R9 9
#define R10 10

/* src_reg values with a special meaning. */
#define FTS_PSEUDO_MAP_FD 1
#define FTS_PSEUDO_KFUNC_CALL 2
#define FTS_PSEUDO_FUNC 4

#define FTS_ASM_MAXLABELS 64

struct fts_asm {
    struct fts_bpf_insn *insns;
    size_t cap;
    size_t n;
    int overflow;
    long label_at[FTS_ASM_MAXLABELS];
};

static inline void
fts_asm_init(struct fts_asm *a, struct fts_bpf_insn *insns, size_t cap)
{
    a->insns = insns;
    a->cap = cap;
    a->n = 0;
    a->overflow = 0;
    for (int i = 0; i < FTS_ASM_MAXLABELS; i++) {
        a->label_at[i] = -1;
    }
}

static inline void
fts_emit(struct fts_asm *a, uint8_t code, int dst, int src, int16_t off,
         int32_t imm)
{
    if (a->n >= a->cap) {
        a->overflow = 1;
        return;
    }
    struct fts_bpf_insn *i = &a->insns[a->n++];
    i->code = code;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    i->regs = (uint8_t)((dst << 4) | src);
#else
    i->regs = (uint8_t)((src << 4) | dst);
#endif
    i->off = off;
    i->imm = imm;
}

static inline int
fts_insn_src(const struct fts_bpf_insn *i)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return i->regs & 0x0f;
#else
    return i->regs >> 4;
#endif
}

/* A jump to a label placed later: until fts_asm_finish(), `off` holds the
 * label number biased to the bottom of its range, which no real jump
 * uses. */
static inline void
fts_jump(struct fts_asm *a, uint8_t op, int dst, int src, int32_t imm,
         int label)
{
    fts_emit(a, FTS_JMP | op, dst, src,
             (int16_t)(INT16_MIN + 1 + label), imm);
}

static inline void
fts_place(struct fts_asm *a, int label)
{
    if (label >= 0 && label < FTS_ASM_MAXLABELS) {
        a->label_at[label] = (long)a->n;
    }
}

/* dst = address of the subprogram at `label` (bpf_loop's callback). */
static inline void
fts_ld_func(struct fts_asm *a, int dst, int label)
{
    fts_emit(a, FTS_LD | FTS_MODE_IMM | FTS_SZ_DW, dst, FTS_PSEUDO_FUNC, 0,
             label);
    fts_emit(a, 0, 0, 0, 0, 0);
}

static inline int
fts_asm_fixup(struct fts_asm *a)
{
    for (size_t i = 0; i < a->n; i++) {
        struct fts_bpf_insn *insn = &a->insns[i];
        if (insn->code == (FTS_LD | FTS_MODE_IMM | FTS_SZ_DW)
            && fts_insn_src(insn) == FTS_PSEUDO_FUNC) {
            if (insn->imm < 0 || insn->imm >= FTS_ASM_MAXLABELS
                || a->label_at[insn->imm] < 0) {
                return -1;
            }
            insn->imm = (int32_t)(a->label_at[insn->imm] - (long)i - 1);
            i++;  /* the second half of the ld_imm64 */
            continue;
        }
        if ((insn->code & 0x07) != FTS_JMP
            || insn->off > INT16_MIN + FTS_ASM_MAXLABELS
            || insn->off <= INT16_MIN) {
            continue;
        }
        int target = insn->off - INT16_MIN - 1;
        long at = a->label_at[target];
        long delta = at - (long)i - 1;
        if (at < 0 || delta < INT16_MIN + FTS_ASM_MAXLABELS + 1
            || delta > INT16_MAX) {
            return -1;
        }
        insn->off = (int16_t)delta;
    }
    return 0;
}

/* The number of instructions, or 0 if the array was too small or a label
 * was never placed. */
static inline size_t
fts_asm_finish(struct fts_asm *a)
{
    if (a->overflow || fts_asm_fixup(a) < 0) {
        return 0;
    }
    return a->n;
}

static inline uint8_t
fts_size_code(uint32_t bytes)
{
    return bytes == 1 ? FTS_SZ_B : bytes == 2 ? FTS_SZ_H
           : bytes == 4 ? FTS_SZ_W : FTS_SZ_DW;
}

static inline void
fts_mov_imm(struct fts_asm *a, int dst, int32_t imm)
{
    fts_emit(a, FTS_ALU64 | FTS_OP_MOV | FTS_SRC_K, dst, 0, 0, imm);
}

static inline void
fts_mov_reg(struct fts_asm *a, int dst, int src)
{
    fts_emit(a, FTS_ALU64 | FTS_OP_MOV | FTS_SRC_X, dst, src, 0, 0);
}

static inline void
fts_alu_imm(struct fts_asm *a, uint8_t op, int dst, int32_t imm)
{
    fts_emit(a, FTS_ALU64 | op | FTS_SRC_K, dst, 0, 0, imm);
}

static inline void
fts_alu_reg(struct fts_asm *a, uint8_t op, int dst, int src)
{
    fts_emit(a, FTS_ALU64 | op | FTS_SRC_X, dst, src, 0, 0);
}

/* dst = *(size *)(src + off) */
static inline void
fts_load(struct fts_asm *a, int dst, int src, int16_t off, uint32_t size)
{
    fts_emit(a, FTS_LDX | FTS_MODE_MEM | fts_size_code(size), dst, src, off,
             0);
}

/* *(size *)(dst + off) = src */
static inline void
fts_store(struct fts_asm *a, int dst, int16_t off, int src, uint32_t size)
{
    fts_emit(a, FTS_STX | FTS_MODE_MEM | fts_size_code(size), dst, src, off,
             0);
}

/* *(size *)(dst + off) = imm */
static inline void
fts_store_imm(struct fts_asm *a, int dst, int16_t off, int32_t imm,
              uint32_t size)
{
    fts_emit(a, FTS_ST | FTS_MODE_MEM | fts_size_code(size), dst, 0, off,
             imm);
}

static inline void
fts_call(struct fts_asm *a, int32_t helper)
{
    fts_emit(a, FTS_JMP | FTS_J_CALL, 0, 0, 0, helper);
}

/* A kernel function, by its FUNC id in vmlinux BTF. */
static inline void
fts_call_kfunc(struct fts_asm *a, uint32_t btf_id)
{
    fts_emit(a, FTS_JMP | FTS_J_CALL, 0, FTS_PSEUDO_KFUNC_CALL, 0,
             (int32_t)btf_id);
}

/* dst = a map's value (array, key 0) + off, or with FTS_PSEUDO_MAP_FD
 * the map. */
static inline void
fts_ld_map(struct fts_asm *a, int dst, int src_kind, int map_fd, int32_t off)
{
    fts_emit(a, FTS_LD | FTS_MODE_IMM | FTS_SZ_DW, dst, src_kind, 0, map_fd);
    fts_emit(a, 0, 0, 0, 0, off);
}

static inline void
fts_exit_imm(struct fts_asm *a, int32_t rc)
{
    fts_mov_imm(a, 0, rc);
    fts_emit(a, FTS_JMP | FTS_J_EXIT, 0, 0, 0, 0);
}

/* Jump to `fail` unless the port in `reg` is in one of `ranges`; `ok`
 * is placed after the test. */
static inline void
fts_port_group(struct fts_asm *a, int reg, const struct fts_port_range *r,
               size_t n, int ok, int fail)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].low == r[i].high) {
            fts_jump(a, FTS_J_JEQ | FTS_SRC_K, reg, 0, r[i].low, ok);
        }
        else {
            /* below low: skip the "<= high" test */
            fts_emit(a, FTS_JMP | FTS_J_JLT | FTS_SRC_K, reg, 0, 1, r[i].low);
            fts_jump(a, FTS_J_JLE | FTS_SRC_K, reg, 0, r[i].high, ok);
        }
    }
    fts_jump(a, FTS_J_JA, 0, 0, 0, fail);
    fts_place(a, ok);
}

#endif /* FASTTCPSTAT_BPF_ASM_H */

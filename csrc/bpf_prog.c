/*
 * Generating the BPF iterator programs.
 *
 * A tiny assembler: instructions are appended to the caller's array, and
 * forward jumps name a label that is patched once placed.  Register use:
 *   r6  the iterator context          r7  the socket (sock_common *)
 *   r8  family base slot offset (0 or 128), or the session's counters
 *   r9  the TCP state
 * r6-r9 survive helper calls; r0-r5 do not.
 */
#include "bpf_prog.h"

#include <string.h>
#include <sys/socket.h>

/* Opcode parts (include/uapi/linux/bpf_common.h, bpf.h). */
#define LD 0x00
#define LDX 0x01
#define ST 0x02
#define STX 0x03
#define ALU 0x04
#define JMP 0x05
#define ALU64 0x07
#define SZ_W 0x00
#define SZ_H 0x08
#define SZ_B 0x10
#define SZ_DW 0x18
#define MODE_IMM 0x00
#define MODE_MEM 0x60
#define OP_ADD 0x00
#define OP_AND 0x50
#define OP_LSH 0x60
#define OP_MOV 0xb0
#define OP_END 0xd0
#define SRC_K 0x00
#define SRC_X 0x08
#define TO_BE 0x08
#define J_JA 0x00
#define J_JEQ 0x10
#define J_JGT 0x20
#define J_JNE 0x50
#define J_JLT 0xa0
#define J_JLE 0xb0
#define J_CALL 0x80
#define J_EXIT 0x90
#define PSEUDO_MAP_FD 1

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

enum label {
    L_EXIT, L_AFTER_EMIT, L_FAM4, L_FAM6, L_FAM_DONE, L_NOT_REQ,
    L_STATE_DONE, L_LOCAL_OK, L_REMOTE_OK, L_HAVE, L_FINISH, L_COUNT,
    NLABELS
};

struct assembler {
    struct fts_bpf_insn *insns;
    size_t cap;
    size_t n;
    int overflow;
    long label_at[NLABELS];
};

static void
emit(struct assembler *a, uint8_t code, int dst, int src, int16_t off,
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

/* A jump to a label placed later: until fixup(), `off` holds the label
 * number biased to the bottom of its range, which no real jump uses. */
static void
jump(struct assembler *a, uint8_t code, int dst, int src, int32_t imm,
     enum label target)
{
    emit(a, code, dst, src, (int16_t)(INT16_MIN + 1 + target), imm);
}

static void
place(struct assembler *a, enum label l)
{
    a->label_at[l] = (long)a->n;
}

static int
fixup(struct assembler *a)
{
    for (size_t i = 0; i < a->n; i++) {
        struct fts_bpf_insn *insn = &a->insns[i];
        uint8_t cls = insn->code & 0x07;
        if (cls != JMP || insn->off > INT16_MIN + NLABELS
            || insn->off <= INT16_MIN) {
            continue;
        }
        int target = insn->off - INT16_MIN - 1;
        long at = a->label_at[target];
        long delta = at - (long)i - 1;
        if (at < 0 || delta < 0 || delta > INT16_MAX) {
            return -1;
        }
        insn->off = (int16_t)delta;
    }
    return 0;
}

static void
init(struct assembler *a, struct fts_bpf_insn *insns, size_t cap)
{
    a->insns = insns;
    a->cap = cap;
    a->n = 0;
    a->overflow = 0;
    for (int i = 0; i < NLABELS; i++) {
        a->label_at[i] = -1;
    }
}

static size_t
finish(struct assembler *a)
{
    if (a->overflow || fixup(a) < 0) {
        return 0;
    }
    return a->n;
}

static void
mov_imm(struct assembler *a, int dst, int32_t imm)
{
    emit(a, ALU64 | OP_MOV | SRC_K, dst, 0, 0, imm);
}

static void
mov_reg(struct assembler *a, int dst, int src)
{
    emit(a, ALU64 | OP_MOV | SRC_X, dst, src, 0, 0);
}

static void
add_imm(struct assembler *a, int dst, int32_t imm)
{
    emit(a, ALU64 | OP_ADD | SRC_K, dst, 0, 0, imm);
}

static uint8_t
size_code(uint32_t bytes)
{
    return bytes == 1 ? SZ_B : bytes == 2 ? SZ_H : bytes == 4 ? SZ_W : SZ_DW;
}

static void
load(struct assembler *a, int dst, int src, struct fts_btf_field f)
{
    emit(a, LDX | MODE_MEM | size_code(f.size), dst, src, (int16_t)f.offset,
         0);
}

static void
load64(struct assembler *a, int dst, int src, int16_t off)
{
    emit(a, LDX | MODE_MEM | SZ_DW, dst, src, off, 0);
}

static void
store64(struct assembler *a, int dst, int16_t off, int src)
{
    emit(a, STX | MODE_MEM | SZ_DW, dst, src, off, 0);
}

static void
call(struct assembler *a, int32_t helper)
{
    emit(a, JMP | J_CALL, 0, 0, 0, helper);
}

/* r = a map's value (array, key 0), or with PSEUDO_MAP_FD the map. */
static void
ld_map(struct assembler *a, int dst, int src_kind, int map_fd, int32_t off)
{
    emit(a, LD | MODE_IMM | SZ_DW, dst, src_kind, 0, map_fd);
    emit(a, 0, 0, 0, 0, off);
}

/* counters[r8 + 8 * r9] += 1, where r1 holds the counters' address
 * (r8: the family's base offset, r9: the state, both bounded so the
 * verifier can prove the access stays inside the map value). */
static void
increment(struct assembler *a)
{
    mov_reg(a, R2, R9);
    emit(a, ALU64 | OP_LSH | SRC_K, R2, 0, 0, 3);
    emit(a, ALU64 | OP_ADD | SRC_X, R1, R2, 0, 0);
    emit(a, ALU64 | OP_ADD | SRC_X, R1, R8, 0, 0);
    load64(a, R2, R1, 0);
    add_imm(a, R2, 1);
    store64(a, R1, 0, R2);
}

/* r1 = the iterator's seq_file (ctx->meta->seq), the first argument of
 * seq_write and seq_printf. */
static void
load_seq(struct assembler *a, const struct fts_btf_layout *l)
{
    load64(a, R1, R6, (int16_t)l->ctx_meta);
    load64(a, R1, R1, (int16_t)l->meta_seq.offset);
}

/* r1 = the sessions map, r2 = &key on the stack: a map helper's first
 * two arguments. */
static void
session_args(struct assembler *a, int sessions_fd, int16_t key)
{
    ld_map(a, R1, PSEUDO_MAP_FD, sessions_fd, 0);
    mov_reg(a, R2, R10);
    add_imm(a, R2, key);
}

/* Jump to `fail` unless the port in `reg` is in one of `ranges`. */
static void
port_group(struct assembler *a, int reg, const struct fts_port_range *r,
           size_t n, enum label ok, enum label fail)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].low == r[i].high) {
            jump(a, JMP | J_JEQ | SRC_K, reg, 0, r[i].low, ok);
        }
        else {
            /* below low: skip the "<= high" test */
            emit(a, JMP | J_JLT | SRC_K, reg, 0, 1, r[i].low);
            jump(a, JMP | J_JLE | SRC_K, reg, 0, r[i].high, ok);
        }
    }
    jump(a, JMP | J_JA, 0, 0, 0, fail);
    place(a, ok);
}

/* Every 2^shift sockets, write `progress` output.  `visits` is the
 * register holding the address of the visit counter. */
static void
count_visit(struct assembler *a, int visits, unsigned shift)
{
    load64(a, R2, visits, 0);
    add_imm(a, R2, 1);
    store64(a, visits, 0, R2);
    emit(a, ALU64 | OP_AND | SRC_K, R2, 0, 0,
         (int32_t)((1u << shift) - 1));
    jump(a, JMP | J_JNE | SRC_K, R2, 0, 0, L_AFTER_EMIT);
}

/* r7 = the socket or exit on the final (NULL) call's label;
 * r9 = its state as netlink reports it; r8 = family base offset. */
static void
classify(struct assembler *a, const struct fts_btf_layout *l,
         enum label on_null)
{
    jump(a, JMP | J_JEQ | SRC_K, R7, 0, 0, on_null);
    load(a, R9, R7, l->skc_state);
    load(a, R8, R7, l->skc_family);
    jump(a, JMP | J_JEQ | SRC_K, R8, 0, AF_INET, L_FAM4);
    jump(a, JMP | J_JEQ | SRC_K, R8, 0, AF_INET6, L_FAM6);
    jump(a, JMP | J_JA, 0, 0, 0, L_EXIT);
    place(a, L_FAM4);
    mov_imm(a, R8, 0);
    jump(a, JMP | J_JA, 0, 0, 0, L_FAM_DONE);
    place(a, L_FAM6);
    mov_imm(a, R8, 16 * 8);
    place(a, L_FAM_DONE);

    /* Request sockets (NEW_SYN_RECV, 12) are SYN_RECV (3). */
    jump(a, JMP | J_JNE | SRC_K, R9, 0, 12, L_NOT_REQ);
    mov_imm(a, R9, 3);
    jump(a, JMP | J_JA, 0, 0, 0, L_STATE_DONE);
    place(a, L_NOT_REQ);
    /* Timewait sockets (6) count by their sub-state. */
    jump(a, JMP | J_JNE | SRC_K, R9, 0, 6, L_STATE_DONE);
    mov_reg(a, R1, R7);
    call(a, FTS_BPF_FUNC_skc_to_tcp_timewait_sock);
    jump(a, JMP | J_JEQ | SRC_K, R0, 0, 0, L_EXIT);
    load(a, R9, R0, l->tw_substate);
    place(a, L_STATE_DONE);
    jump(a, JMP | J_JGT | SRC_K, R9, 0, FTS_NSTATES - 1, L_EXIT);
}

size_t
fts_bpf_count_prog_len(const struct fts_bpf_filter *filter)
{
    size_t ranges = filter == NULL ? 0 : filter->nlocal + filter->nremote;
    return 64 + 2 * ranges;
}

size_t
fts_bpf_count_prog(struct fts_bpf_insn *insns, size_t cap,
                   const struct fts_btf_layout *l,
                   const struct fts_bpf_filter *filter, int map_fd,
                   unsigned emit_shift)
{
    struct assembler a;
    init(&a, insns, cap);
    mov_reg(&a, R6, R1);
    load64(&a, R7, R6, (int16_t)l->ctx_sk_common);

    ld_map(&a, R1, FTS_BPF_PSEUDO_MAP_VALUE, map_fd,
           FTS_BPF_SLOT_VISITED * 8);
    count_visit(&a, R1, emit_shift);
    load_seq(&a, l);
    emit(&a, ST | MODE_MEM | SZ_B, R10, 0, -8, '.');
    mov_reg(&a, R2, R10);
    add_imm(&a, R2, -8);
    mov_imm(&a, R3, 1);
    call(&a, FTS_BPF_FUNC_seq_write);
    place(&a, L_AFTER_EMIT);

    classify(&a, l, L_EXIT);

    if (filter != NULL && filter->nlocal > 0) {
        load(&a, R1, R7, l->skc_num);  /* host byte order */
        port_group(&a, R1, filter->local, filter->nlocal, L_LOCAL_OK,
                   L_EXIT);
    }
    if (filter != NULL && filter->nremote > 0) {
        load(&a, R1, R7, l->skc_dport);  /* network byte order */
        emit(&a, ALU | OP_END | TO_BE, R1, 0, 0, 16);
        port_group(&a, R1, filter->remote, filter->nremote, L_REMOTE_OK,
                   L_EXIT);
    }

    ld_map(&a, R1, FTS_BPF_PSEUDO_MAP_VALUE, map_fd, 0);
    increment(&a);

    place(&a, L_EXIT);
    mov_imm(&a, R0, 0);
    emit(&a, JMP | J_EXIT, 0, 0, 0, 0);
    return finish(&a);
}

/* Offsets of the strings inside the read-only map value. */
#define STR_HEADER 0
#define STR_PROGRESS 32
#define STR_LINE 64
#define STR_NAMES 96   /* 11 names, 13 bytes each */
#define NAME_SIZE 13

static const char *const state_names[] = {
    "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
    "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
};

void
fts_bpf_text_strings(char out[FTS_BPF_TEXT_SIZE])
{
    memset(out, 0, FTS_BPF_TEXT_SIZE);
    memcpy(out + STR_HEADER, FTS_BPF_TEXT_HEADER,
           sizeof(FTS_BPF_TEXT_HEADER));
    memcpy(out + STR_PROGRESS, FTS_BPF_TEXT_PROGRESS,
           sizeof(FTS_BPF_TEXT_PROGRESS));
    memcpy(out + STR_LINE, FTS_BPF_TEXT_LINE, sizeof(FTS_BPF_TEXT_LINE));
    for (int i = 0; i < 11; i++) {
        strcpy(out + STR_NAMES + NAME_SIZE * i, state_names[i]);
    }
}

/* Stack layout of the text program (offsets from r10). */
#define STK_KEY (-8)
#define STK_ARGS (-32)       /* three u64 printf arguments */
#define STK_ZERO (-32 - FTS_BPF_VALUE_SIZE)

size_t
fts_bpf_text_prog(struct fts_bpf_insn *insns, size_t cap,
                  const struct fts_btf_layout *l, int sessions_fd,
                  int strings_fd, unsigned emit_shift)
{
    struct assembler a;
    init(&a, insns, cap);
    mov_reg(&a, R6, R1);

    /* r8 = this reading session's counters, created on its first call. */
    load64(&a, R1, R6, (int16_t)l->ctx_meta);
    load64(&a, R1, R1, (int16_t)l->meta_session_id.offset);
    store64(&a, R10, STK_KEY, R1);
    session_args(&a, sessions_fd, STK_KEY);
    call(&a, FTS_BPF_FUNC_map_lookup_elem);
    jump(&a, JMP | J_JNE | SRC_K, R0, 0, 0, L_HAVE);
    for (int i = 0; i < FTS_BPF_NSLOTS; i++) {
        emit(&a, ST | MODE_MEM | SZ_DW, R10, 0, (int16_t)(STK_ZERO + 8 * i),
             0);
    }
    session_args(&a, sessions_fd, STK_KEY);
    mov_reg(&a, R3, R10);
    add_imm(&a, R3, STK_ZERO);
    mov_imm(&a, R4, 0);
    call(&a, FTS_BPF_FUNC_map_update_elem);
    session_args(&a, sessions_fd, STK_KEY);
    call(&a, FTS_BPF_FUNC_map_lookup_elem);
    jump(&a, JMP | J_JEQ | SRC_K, R0, 0, 0, L_EXIT);  /* map full */
    place(&a, L_HAVE);
    mov_reg(&a, R8, R0);
    load64(&a, R7, R6, (int16_t)l->ctx_sk_common);

    /* Progress, as a comment line, every 2^shift sockets. */
    mov_reg(&a, R1, R8);
    add_imm(&a, R1, FTS_BPF_SLOT_VISITED * 8);
    jump(&a, JMP | J_JEQ | SRC_K, R7, 0, 0, L_AFTER_EMIT);
    count_visit(&a, R1, emit_shift);
    load64(&a, R2, R8, FTS_BPF_SLOT_VISITED * 8);
    store64(&a, R10, STK_ARGS, R2);
    load_seq(&a, l);
    ld_map(&a, R2, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd, STR_PROGRESS);
    mov_imm(&a, R3, (int32_t)sizeof(FTS_BPF_TEXT_PROGRESS));
    mov_reg(&a, R4, R10);
    add_imm(&a, R4, STK_ARGS);
    mov_imm(&a, R5, 8);
    call(&a, FTS_BPF_FUNC_seq_printf);
    place(&a, L_AFTER_EMIT);

    /* The classification below needs r8 as the family offset. */
    mov_reg(&a, R1, R8);
    store64(&a, R10, STK_ARGS + 16, R1);  /* park the counters pointer */
    classify(&a, l, L_FINISH);
    load64(&a, R1, R10, STK_ARGS + 16);
    increment(&a);
    jump(&a, JMP | J_JA, 0, 0, 0, L_EXIT);

    /* The final call: print the header and one line per state. */
    place(&a, L_FINISH);
    load64(&a, R8, R10, STK_ARGS + 16);
    load_seq(&a, l);
    ld_map(&a, R2, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd, STR_HEADER);
    mov_imm(&a, R3, (int32_t)(sizeof(FTS_BPF_TEXT_HEADER) - 1));
    call(&a, FTS_BPF_FUNC_seq_write);
    for (int s = 0; s < 11; s++) {
        ld_map(&a, R1, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd,
               STR_NAMES + NAME_SIZE * s);
        store64(&a, R10, STK_ARGS, R1);
        load64(&a, R1, R8, (int16_t)(8 * (s + 1)));
        store64(&a, R10, STK_ARGS + 8, R1);
        load64(&a, R1, R8, (int16_t)(8 * (16 + s + 1)));
        store64(&a, R10, STK_ARGS + 16, R1);
        load_seq(&a, l);
        ld_map(&a, R2, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd, STR_LINE);
        mov_imm(&a, R3, (int32_t)sizeof(FTS_BPF_TEXT_LINE));
        mov_reg(&a, R4, R10);
        add_imm(&a, R4, STK_ARGS);
        mov_imm(&a, R5, 24);
        call(&a, FTS_BPF_FUNC_seq_printf);
    }
    session_args(&a, sessions_fd, STK_KEY);
    call(&a, FTS_BPF_FUNC_map_delete_elem);

    place(&a, L_EXIT);
    mov_imm(&a, R0, 0);
    emit(&a, JMP | J_EXIT, 0, 0, 0, 0);
    return finish(&a);
}

/*
 * Generating the BPF iterator programs.
 *
 * With the assembler the walk program shares (bpf_asm.h).  Register use:
 *   r6  the iterator context          r7  the socket (sock_common *)
 *   r8  family base slot offset (0 or 128), or the session's counters
 *   r9  the TCP state
 * r6-r9 survive helper calls; r0-r5 do not.
 */
#include "bpf_prog.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "bpf_asm.h"

enum label {
    L_EXIT, L_AFTER_EMIT, L_FAM4, L_FAM6, L_FAM_DONE, L_NOT_REQ,
    L_STATE_DONE, L_LOCAL_OK, L_REMOTE_OK, L_HAVE, L_FINISH, L_COUNT,
    L_UNOWNED, L_OVERFLOW, L_OWNER_ROW,
    NLABELS
};
_Static_assert(NLABELS <= FTS_ASM_MAXLABELS, "too many labels");

/* A load of a member found in BTF, at its offset and width. */
static void
load(struct fts_asm *a, int dst, int src, struct fts_btf_field f)
{
    fts_load(a, dst, src, (int16_t)f.offset, f.size);
}

/* counters[r8 + 8 * r9] += 1, where r1 holds the counters' address
 * (r8: the family's base offset, r9: the state, both bounded so the
 * verifier can prove the access stays inside the map value). */
static void
increment(struct fts_asm *a)
{
    fts_mov_reg(a, R2, R9);
    fts_emit(a, FTS_ALU64 | FTS_OP_LSH | FTS_SRC_K, R2, 0, 0, 3);
    fts_emit(a, FTS_ALU64 | FTS_OP_ADD | FTS_SRC_X, R1, R2, 0, 0);
    fts_emit(a, FTS_ALU64 | FTS_OP_ADD | FTS_SRC_X, R1, R8, 0, 0);
    fts_load(a, R2, R1, 0, 8);
    fts_alu_imm(a, FTS_OP_ADD, R2, 1);
    fts_store(a, R1, 0, R2, 8);
}

/* r1 = the iterator's seq_file (ctx->meta->seq), the first argument of
 * seq_write and seq_printf. */
static void
load_seq(struct fts_asm *a, const struct fts_btf_layout *l)
{
    fts_load(a, R1, R6, (int16_t)l->ctx_meta, 8);
    fts_load(a, R1, R1, (int16_t)l->meta_seq.offset, 8);
}

/* r1 = the map, r2 = &key on the stack: a map helper's first two
 * arguments. */
static void
map_args(struct fts_asm *a, int map_fd, int16_t key)
{
    fts_ld_map(a, R1, FTS_PSEUDO_MAP_FD, map_fd, 0);
    fts_mov_reg(a, R2, R10);
    fts_alu_imm(a, FTS_OP_ADD, R2, key);
}

/* r0 = the hash map's entry for the key on the stack at `key`, created
 * zeroed (`nslots` u64 written at `zero` on the stack) when missing; at
 * `have` with r0 set, or at `on_full` when the map has no room. */
static void
lookup_or_create(struct fts_asm *a, int map_fd, int16_t key, int16_t zero,
                 int nslots, enum label have, enum label on_full)
{
    map_args(a, map_fd, key);
    fts_call(a, FTS_BPF_FUNC_map_lookup_elem);
    fts_jump(a, FTS_JMP | FTS_J_JNE | FTS_SRC_K, R0, 0, 0, have);
    for (int i = 0; i < nslots; i++) {
        fts_emit(a, FTS_ST | FTS_MODE_MEM | FTS_SZ_DW, R10, 0,
                 (int16_t)(zero + 8 * i), 0);
    }
    map_args(a, map_fd, key);
    fts_mov_reg(a, R3, R10);
    fts_alu_imm(a, FTS_OP_ADD, R3, zero);
    fts_mov_imm(a, R4, FTS_BPF_NOEXIST);
    fts_call(a, FTS_BPF_FUNC_map_update_elem);
    map_args(a, map_fd, key);
    fts_call(a, FTS_BPF_FUNC_map_lookup_elem);
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R0, 0, 0, on_full);
    fts_place(a, have);
}

/* Every 2^shift sockets, write `progress` output.  `visits` is the
 * register holding the address of the visit counter. */
static void
count_visit(struct fts_asm *a, int visits, unsigned shift)
{
    fts_load(a, R2, visits, 0, 8);
    fts_alu_imm(a, FTS_OP_ADD, R2, 1);
    fts_store(a, visits, 0, R2, 8);
    fts_emit(a, FTS_ALU64 | FTS_OP_AND | FTS_SRC_K, R2, 0, 0,
         (int32_t)((1u << shift) - 1));
    fts_jump(a, FTS_JMP | FTS_J_JNE | FTS_SRC_K, R2, 0, 0, L_AFTER_EMIT);
}

/* r7 = the socket or exit on the final (NULL) call's label;
 * r9 = its state as netlink reports it; r8 = family base offset. */
static void
classify(struct fts_asm *a, const struct fts_btf_layout *l,
         enum label on_null)
{
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R7, 0, 0, on_null);
    load(a, R9, R7, l->skc_state);
    load(a, R8, R7, l->skc_family);
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R8, 0, AF_INET, L_FAM4);
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R8, 0, AF_INET6, L_FAM6);
    fts_jump(a, FTS_JMP | FTS_J_JA, 0, 0, 0, L_EXIT);
    fts_place(a, L_FAM4);
    fts_mov_imm(a, R8, 0);
    fts_jump(a, FTS_JMP | FTS_J_JA, 0, 0, 0, L_FAM_DONE);
    fts_place(a, L_FAM6);
    fts_mov_imm(a, R8, 16 * 8);
    fts_place(a, L_FAM_DONE);

    /* Request sockets (NEW_SYN_RECV, 12) are SYN_RECV (3). */
    fts_jump(a, FTS_JMP | FTS_J_JNE | FTS_SRC_K, R9, 0, 12, L_NOT_REQ);
    fts_mov_imm(a, R9, 3);
    fts_jump(a, FTS_JMP | FTS_J_JA, 0, 0, 0, L_STATE_DONE);
    fts_place(a, L_NOT_REQ);
    /* Timewait sockets (6) count by their sub-state. */
    fts_jump(a, FTS_JMP | FTS_J_JNE | FTS_SRC_K, R9, 0, 6, L_STATE_DONE);
    fts_mov_reg(a, R1, R7);
    fts_call(a, FTS_BPF_FUNC_skc_to_tcp_timewait_sock);
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R0, 0, 0, L_EXIT);
    load(a, R9, R0, l->tw_substate);
    fts_place(a, L_STATE_DONE);
    fts_jump(a, FTS_JMP | FTS_J_JGT | FTS_SRC_K, R9, 0, FTS_NSTATES - 1,
             L_EXIT);
}

#define KIND_INT 1
#define KIND_PTR 2

int
fts_bpf_cgroup_layout(const struct fts_btf *btf,
                      struct fts_bpf_cgroup_layout *out,
                      struct fts_error *err)
{
    static const char *const types[] = {"tcp_sock", "cgroup", "kernfs_node"};
    static const unsigned kinds[] = {
        FTS_BTF_KIND_STRUCT, FTS_BTF_KIND_STRUCT, FTS_BTF_KIND_STRUCT,
    };
    static const char *const paths[] = {
        "inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup", "kn", "id",
    };
    static const uint32_t member_kinds[] = {KIND_PTR, KIND_PTR, KIND_INT};
    uint32_t *fields[] = {&out->sk_cgroup, &out->cgroup_kn, &out->kn_id};
    uint32_t ids[3];

    fts_btf_find_many(btf, types, kinds, ids, 3);
    for (size_t i = 0; i < 3; i++) {
        struct fts_btf_member m;
        if (ids[i] == 0
            || fts_btf_member_path(btf, ids[i], paths[i], &m, err) < 0
            || m.kind != member_kinds[i] || m.size != 8
            || m.offset > INT16_MAX) {
            /* Before 5.15 sk_cgrp_data packed the pointer in a u64. */
            return fts_fail(err, ENOENT, "BTF lacks the socket's cgroup "
                            "(sock.sk_cgrp_data.cgroup, cgroup.kn, "
                            "kernfs_node.id: Linux >= 5.15 with "
                            "CONFIG_SOCK_CGROUP_DATA)");
        }
        *fields[i] = m.offset;
    }
    return 0;
}

size_t
fts_bpf_count_prog_len(const struct fts_bpf_filter *filter)
{
    size_t ranges = filter == NULL ? 0 : filter->nlocal + filter->nremote;
    return 128 + 2 * ranges;
}

/* Stack layout of the counting program's cgroup breakdown. */
#define STK_CG_KEY (-8)
#define STK_CG_ZERO (-8 - FTS_BPF_ROW_SIZE)

/* Add the socket to its owner's row (r8, r9 as for increment(); r7 the
 * socket): a full socket's cgroup row in the hash map, created at its
 * first socket, or the overflow row when the map is full; timewait and
 * request sockets, which have no owner, to the unowned row. */
static void
tally_owner(struct fts_asm *a, const struct fts_bpf_by_cgroup *by,
            int map_fd)
{
    const struct fts_bpf_cgroup_layout *c = &by->layout;
    fts_mov_reg(a, R1, R7);
    fts_call(a, FTS_BPF_FUNC_skc_to_tcp_sock);  /* NULL unless full */
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R0, 0, 0, L_UNOWNED);
    fts_load(a, R1, R0, (int16_t)c->sk_cgroup, 8);
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_UNOWNED);
    fts_load(a, R1, R1, (int16_t)c->cgroup_kn, 8);
    fts_jump(a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_UNOWNED);
    fts_load(a, R1, R1, (int16_t)c->kn_id, 8);
    fts_store(a, R10, STK_CG_KEY, R1, 8);
    lookup_or_create(a, by->map_fd, STK_CG_KEY, STK_CG_ZERO, FTS_BPF_ROW,
                     L_OWNER_ROW, L_OVERFLOW);
    fts_mov_reg(a, R1, R0);
    fts_jump(a, FTS_JMP | FTS_J_JA, 0, 0, 0, L_COUNT);
    fts_place(a, L_OVERFLOW);
    fts_ld_map(a, R1, FTS_BPF_PSEUDO_MAP_VALUE, map_fd,
               FTS_BPF_SLOT_OVERFLOW * 8);
    fts_jump(a, FTS_JMP | FTS_J_JA, 0, 0, 0, L_COUNT);
    fts_place(a, L_UNOWNED);
    fts_ld_map(a, R1, FTS_BPF_PSEUDO_MAP_VALUE, map_fd,
               FTS_BPF_SLOT_UNOWNED * 8);
    fts_place(a, L_COUNT);
    increment(a);
}

size_t
fts_bpf_count_prog(struct fts_bpf_insn *insns, size_t cap,
                   const struct fts_btf_layout *l,
                   const struct fts_bpf_filter *filter, int map_fd,
                   unsigned emit_shift)
{
    return fts_bpf_count_prog_by(insns, cap, l, filter, map_fd, emit_shift,
                                 NULL);
}

size_t
fts_bpf_count_prog_by(struct fts_bpf_insn *insns, size_t cap,
                      const struct fts_btf_layout *l,
                      const struct fts_bpf_filter *filter, int map_fd,
                      unsigned emit_shift,
                      const struct fts_bpf_by_cgroup *by_cgroup)
{
    struct fts_asm a;
    fts_asm_init(&a, insns, cap);
    fts_mov_reg(&a, R6, R1);
    fts_load(&a, R7, R6, (int16_t)l->ctx_sk_common, 8);

    fts_ld_map(&a, R1, FTS_BPF_PSEUDO_MAP_VALUE, map_fd,
           FTS_BPF_SLOT_VISITED * 8);
    count_visit(&a, R1, emit_shift);
    load_seq(&a, l);
    fts_emit(&a, FTS_ST | FTS_MODE_MEM | FTS_SZ_B, R10, 0, -8, '.');
    fts_mov_reg(&a, R2, R10);
    fts_alu_imm(&a, FTS_OP_ADD, R2, -8);
    fts_mov_imm(&a, R3, 1);
    fts_call(&a, FTS_BPF_FUNC_seq_write);
    fts_place(&a, L_AFTER_EMIT);

    classify(&a, l, L_EXIT);

    if (filter != NULL && filter->nlocal > 0) {
        load(&a, R1, R7, l->skc_num);  /* host byte order */
        fts_port_group(&a, R1, filter->local, filter->nlocal, L_LOCAL_OK,
                   L_EXIT);
    }
    if (filter != NULL && filter->nremote > 0) {
        load(&a, R1, R7, l->skc_dport);  /* network byte order */
        fts_emit(&a, FTS_ALU | FTS_OP_END | FTS_TO_BE, R1, 0, 0, 16);
        fts_port_group(&a, R1, filter->remote, filter->nremote, L_REMOTE_OK,
                   L_EXIT);
    }

    fts_ld_map(&a, R1, FTS_BPF_PSEUDO_MAP_VALUE, map_fd, 0);
    increment(&a);
    if (by_cgroup != NULL) {
        tally_owner(&a, by_cgroup, map_fd);
    }

    fts_place(&a, L_EXIT);
    fts_mov_imm(&a, R0, 0);
    fts_emit(&a, FTS_JMP | FTS_J_EXIT, 0, 0, 0, 0);
    return fts_asm_finish(&a);
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

/* seq_printf(seq, the format at `fmt` in the strings map, its size, the
 * `nargs` u64 arguments stored at STK_ARGS). */
static void
seq_printf(struct fts_asm *a, const struct fts_btf_layout *l,
           int strings_fd, int32_t fmt, size_t fmt_size, int nargs)
{
    load_seq(a, l);
    fts_ld_map(a, R2, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd, fmt);
    fts_mov_imm(a, R3, (int32_t)fmt_size);
    fts_mov_reg(a, R4, R10);
    fts_alu_imm(a, FTS_OP_ADD, R4, STK_ARGS);
    fts_mov_imm(a, R5, 8 * nargs);
    fts_call(a, FTS_BPF_FUNC_seq_printf);
}

size_t
fts_bpf_text_prog(struct fts_bpf_insn *insns, size_t cap,
                  const struct fts_btf_layout *l, int sessions_fd,
                  int strings_fd, unsigned emit_shift)
{
    struct fts_asm a;
    fts_asm_init(&a, insns, cap);
    fts_mov_reg(&a, R6, R1);

    /* r8 = this reading session's counters, created on its first call. */
    fts_load(&a, R1, R6, (int16_t)l->ctx_meta, 8);
    fts_load(&a, R1, R1, (int16_t)l->meta_session_id.offset, 8);
    fts_store(&a, R10, STK_KEY, R1, 8);
    lookup_or_create(&a, sessions_fd, STK_KEY, STK_ZERO, FTS_BPF_NSLOTS,
                     L_HAVE, L_EXIT);
    fts_mov_reg(&a, R8, R0);
    fts_load(&a, R7, R6, (int16_t)l->ctx_sk_common, 8);

    /* Progress, as a comment line, every 2^shift sockets. */
    fts_mov_reg(&a, R1, R8);
    fts_alu_imm(&a, FTS_OP_ADD, R1, FTS_BPF_SLOT_VISITED * 8);
    fts_jump(&a, FTS_JMP | FTS_J_JEQ | FTS_SRC_K, R7, 0, 0, L_AFTER_EMIT);
    count_visit(&a, R1, emit_shift);
    fts_load(&a, R2, R8, FTS_BPF_SLOT_VISITED * 8, 8);
    fts_store(&a, R10, STK_ARGS, R2, 8);
    seq_printf(&a, l, strings_fd, STR_PROGRESS,
               sizeof(FTS_BPF_TEXT_PROGRESS), 1);
    fts_place(&a, L_AFTER_EMIT);

    /* The classification below needs r8 as the family offset. */
    fts_mov_reg(&a, R1, R8);
    fts_store(&a, R10, STK_ARGS + 16, R1, 8);  /* park the counters pointer */
    classify(&a, l, L_FINISH);
    fts_load(&a, R1, R10, STK_ARGS + 16, 8);
    increment(&a);
    fts_jump(&a, FTS_JMP | FTS_J_JA, 0, 0, 0, L_EXIT);

    /* The final call: print the header and one line per state. */
    fts_place(&a, L_FINISH);
    fts_load(&a, R8, R10, STK_ARGS + 16, 8);
    load_seq(&a, l);
    fts_ld_map(&a, R2, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd, STR_HEADER);
    fts_mov_imm(&a, R3, (int32_t)(sizeof(FTS_BPF_TEXT_HEADER) - 1));
    fts_call(&a, FTS_BPF_FUNC_seq_write);
    for (int s = 0; s < 11; s++) {
        fts_ld_map(&a, R1, FTS_BPF_PSEUDO_MAP_VALUE, strings_fd,
               STR_NAMES + NAME_SIZE * s);
        fts_store(&a, R10, STK_ARGS, R1, 8);
        fts_load(&a, R1, R8, (int16_t)(8 * (s + 1)), 8);
        fts_store(&a, R10, STK_ARGS + 8, R1, 8);
        fts_load(&a, R1, R8, (int16_t)(8 * (16 + s + 1)), 8);
        fts_store(&a, R10, STK_ARGS + 16, R1, 8);
        seq_printf(&a, l, strings_fd, STR_LINE, sizeof(FTS_BPF_TEXT_LINE),
                   3);
    }
    map_args(&a, sessions_fd, STK_KEY);
    fts_call(&a, FTS_BPF_FUNC_map_delete_elem);

    fts_place(&a, L_EXIT);
    fts_mov_imm(&a, R0, 0);
    fts_emit(&a, FTS_JMP | FTS_J_EXIT, 0, 0, 0, 0);
    return fts_asm_finish(&a);
}

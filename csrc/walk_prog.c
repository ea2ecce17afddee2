/*
 * Generating the walk program (see walk_prog.h for what it does).
 *
 * Two functions: the main program takes the RCU read lock, finds the
 * calling task's namespace's table, and calls bpf_loop() with the
 * callback; the callback takes up to STEPS_PER_CALL steps (an empty
 * bucket, or one socket, with its bucket's start or its chain's end) in
 * a loop of its own.  The cursor lives in the shared map value, so a run
 * can stop after any step and the next one resumes.
 *
 * Pointers read through bpf_rdonly_cast() keep their BTF type, and the
 * verifier refuses arithmetic on them (testing a chain pointer's nulls
 * bit, indexing the bucket array).  Stored to the map value and read back
 * they are plain numbers (this needs CAP_PERFMON's leak allowance); a
 * number is cast back to a typed pointer with bpf_rdonly_cast(), whose
 * loads the kernel guards (a faulting load reads 0).
 *
 * Callback registers: r6 the map value, r7 the run's steps (stored at
 * the callback's exits), r8 a lane's slot during its move, then the
 * socket's state, then its counter's offset in a tally slot (family *
 * 128 + state * 8), r9 the steps this call may still take, r0 (SK) the
 * socket from its cast to its count (no call comes between but the
 * timewait cast, which keeps it).  The walk waits on memory, and loads
 * cost more than register operations there: 1M sockets, 4 more loads of
 * cached lines per socket 1.14x, 16 more ALU instructions 1.04x (but
 * keeping the cursor in a register, so that no load reads back a value
 * just stored, gained nothing).
 */
#include "walk_prog.h"

#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include "bpf_asm.h"

#define HELPER_ktime_get_ns 5
#define HELPER_get_current_task_btf 158
#define HELPER_loop 181

/* The socket a step counts (see the register list above). */
#define SK R0

#define CTL(field) ((int16_t)offsetof(struct fts_walk_ctl, field))
#define SLOTS_AT ((int32_t)sizeof(struct fts_walk_ctl))
#define SLOT_SIZE ((int32_t)sizeof(struct fts_walk_slot))
#define FAMILY_STRIDE ((int32_t)(FTS_NSTATES * 8))

/* TCP states (include/net/tcp_states.h), a stable ABI. */
#define TCP_SYN_RECV 3
#define TCP_TIME_WAIT 6
#define TCP_CLOSING 11
#define TCP_NEW_SYN_RECV 12

/* Steps per bpf_loop iteration: each call's entry and return, and the
 * cursor's reload, are shared by this many sockets or empty buckets.
 * The verifier walks the loop this many times over. */
#define STEPS_PER_CALL 8
_Static_assert(STEPS_PER_CALL == FTS_WALK_LANES,
               "a call's steps take the lanes in turn (lane_step())");

enum label {
    L_UNLOCK, L_CALLBACK, L_STEP, L_EHASH_DONE, L_TO_LHASH2, L_LHASH2,
    L_HEAD, L_FINISHED, L_STOP, L_UNREADABLE, L_EMPTY, L_EMPTY_LHASH2,
    L_LAST, L_LAST_LHASH2, L_SOCKET, L_NEXT, L_RESCAN, L_NOT_REQ,
    L_STATE_CHECK, L_STATE_OK, L_BAD_STATE, L_BAD_FAMILY, L_STATES_OK,
    L_LOCAL_OK, L_REMOTE_OK, L_SKIP, L_ANY_NS,
    L_BAD_NS, L_CLAIM, L_FOUND, L_FULL, L_NS_LOOKUP, L_COUNT,
    L_LANE_NEW, L_LANE_AHEAD, L_LANE_MOVED, L_LANE_DONE, L_ACCOUNT,
    L_TOP, L_MID, L_CUT, L_FLUSH, L_LANES, L_LIMIT, L_BOUNDARY, L_SCAN,
    L_SCANNED, L_LANES_ON, L_SCAN_LHASH2, L_SCANNED_LHASH2,
    NLABELS
};
_Static_assert(NLABELS <= FTS_ASM_MAXLABELS, "too many labels");

size_t
fts_walk_value_size(uint32_t nslots)
{
    return sizeof(struct fts_walk_ctl)
           + (size_t)nslots * sizeof(struct fts_walk_slot);
}

size_t
fts_walk_prog_len(const struct fts_walk_filter *filter)
{
    size_t ranges = filter == NULL ? 0 : filter->nlocal + filter->nremote;
    return 720 + 8 * FTS_WALK_PROBES + 2 * ranges;
}

/* ctl.field += 1 */
static void
bump(struct fts_asm *a, int16_t field)
{
    fts_load(a, R1, R6, field, 8);
    fts_alu_imm(a, FTS_OP_ADD, R1, 1);
    fts_store(a, R6, field, R1, 8);
}

/* reg = the number a typed pointer in `reg` holds. */
static void
launder(struct fts_asm *a, int reg)
{
    fts_store(a, R6, CTL(scratch), reg, 8);
    fts_load(a, reg, R6, CTL(scratch), 8);
}

/* r1 = the link at r0 + off, as a number; jump to `if_null` if it is
 * NULL, to `if_nulls` if it is a nulls marker (a chain's end). */
static void
load_link(struct fts_asm *a, int16_t off, int if_null, int if_nulls)
{
    fts_load(a, R1, R0, off, 8);
    launder(a, R1);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, if_null);
    fts_jump(a, FTS_J_JSET | FTS_SRC_K, R1, 0, 1, if_nulls);
}

/* r0 = bpf_rdonly_cast(r1, type) */
static void
cast(struct fts_asm *a, const struct fts_walk_layout *l, uint32_t type)
{
    fts_mov_imm(a, R2, (int32_t)type);
    fts_call_kfunc(a, l->kf_rdonly_cast);
}

/* r0 = the socket at r1, for reading */
static void
cast_sock(struct fts_asm *a, const struct fts_walk_layout *l)
{
    cast(a, l, l->raw_reads ? 0 : l->id_sock_common);
}

/* A field of the socket whose node is at r1 (raw reads: read from the
 * node itself, at a negative offset: no subtraction a socket). */
static int16_t
sk_field(const struct fts_walk_layout *l, uint16_t off)
{
    return (int16_t)(l->raw_reads ? (int)off - (int)l->skc_node : (int)off);
}

/* r0 = the socket whose node is r1, for reading with sk_field() */
static void
cast_node(struct fts_asm *a, const struct fts_walk_layout *l)
{
    if (!l->raw_reads) {
        fts_alu_imm(a, FTS_OP_SUB, R1, l->skc_node);
    }
    cast_sock(a, l);
}

/* Raw reads take skc_family and skc_state (its neighbour) in one load. */
static int
one_load(const struct fts_walk_layout *l)
{
    return l->raw_reads && l->skc_state == l->skc_family + 2;
}

static void
main_program(struct fts_asm *a, const struct fts_walk_layout *l, int map_fd)
{
    fts_ld_map(a, R6, FTS_BPF_PSEUDO_MAP_VALUE, map_fd, 0);
    fts_store_imm(a, R6, CTL(status), FTS_WALK_ST_OK, 4);
    fts_store_imm(a, R6, CTL(loops), 0, 8);
    /* The namespace cache starts empty each run: between runs RCU is not
     * held, and a freed struct net's memory may become another's.  1
     * matches no pointer, not even a faulting load's 0. */
    fts_store_imm(a, R6, CTL(last_net), 1, 8);
    /* So do the touch lanes (the same reason). */
    for (int j = 0; j < FTS_WALK_LANES; j++) {
        fts_store_imm(a, R6, (int16_t)(CTL(lanes) + 8 * j), 0, 8);
    }
    /* Idle lanes: their next bucket is never near enough to take. */
    fts_load(a, R1, R6, CTL(read_ahead), 4);
    fts_store_imm(a, R6, CTL(ahead), 0, 4);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R1, 0, 0, L_LANES_ON);
    fts_store_imm(a, R6, CTL(ahead), -1, 4);
    fts_place(a, L_LANES_ON);
    fts_call_kfunc(a, l->kf_rcu_read_lock);
    fts_call(a, HELPER_ktime_get_ns);
    fts_store(a, R6, CTL(held_ns), R0, 8);

    /* r7 = current->nsproxy->net_ns->ipv4.tcp_death_row.hashinfo */
    fts_call(a, HELPER_get_current_task_btf);
    fts_load(a, R1, R0, (int16_t)l->task_nsproxy, 8);
    fts_load(a, R1, R1, (int16_t)l->nsproxy_net, 8);
    fts_load(a, R7, R1, (int16_t)l->net_hashinfo, 8);
    fts_mov_reg(a, R1, R7);
    launder(a, R1);
    fts_store(a, R6, CTL(hashinfo), R1, 8);
    fts_store_imm(a, R6, CTL(status), FTS_WALK_ST_NO_TABLE, 4);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_UNLOCK);
    fts_store_imm(a, R6, CTL(status), FTS_WALK_ST_OK, 4);

    fts_load(a, R1, R7, (int16_t)l->hi_ehash, 8);
    launder(a, R1);
    fts_store(a, R6, CTL(ehash), R1, 8);
    fts_load(a, R1, R7, (int16_t)l->hi_ehash_mask, 4);
    fts_store(a, R6, CTL(ehash_mask), R1, 4);
    fts_load(a, R1, R7, (int16_t)l->hi_lhash2, 8);
    launder(a, R1);
    fts_store(a, R6, CTL(lhash2), R1, 8);
    fts_load(a, R1, R7, (int16_t)l->hi_lhash2_mask, 4);
    fts_store(a, R6, CTL(lhash2_mask), R1, 4);

    /* bpf_loop(ctl.budget + ctl.slack, callback, NULL, 0): every call
     * takes a step at least, or ends the run. */
    fts_load(a, R1, R6, CTL(budget), 8);
    fts_load(a, R2, R6, CTL(slack), 8);
    fts_alu_reg(a, FTS_OP_ADD, R1, R2);
    fts_store(a, R6, CTL(limit), R1, 8);
    fts_ld_func(a, R2, L_CALLBACK);
    fts_mov_imm(a, R3, 0);
    fts_mov_imm(a, R4, 0);
    fts_call(a, HELPER_loop);

    fts_place(a, L_UNLOCK);
    fts_call(a, HELPER_ktime_get_ns);
    fts_load(a, R1, R6, CTL(held_ns), 8);
    fts_alu_reg(a, FTS_OP_SUB, R0, R1);
    fts_store(a, R6, CTL(held_ns), R0, 8);
    fts_call_kfunc(a, l->kf_rcu_read_unlock);
    fts_exit_imm(a, 0);
}

/* r1 = the address of the chain head of the bucket `ahead` past the
 * cursor, or jump to `past_end` past the last bucket.  `mask`, `base`:
 * the table's fields in ctl; `size`, `head`: its bucket layout. */
static void
bucket_head(struct fts_asm *a, int16_t mask, int16_t base, uint16_t size,
            uint16_t head, int past_end, int ahead)
{
    fts_load(a, R3, R6, CTL(bucket), 4);
    if (ahead != 0) {
        fts_alu_imm(a, FTS_OP_ADD, R3, ahead);
    }
    fts_load(a, R4, R6, mask, 4);
    fts_jump(a, FTS_J_JGT | FTS_SRC_X, R3, R4, 0, past_end);
    fts_alu_imm(a, FTS_OP_MUL, R3, size);
    fts_load(a, R1, R6, base, 8);
    fts_alu_reg(a, FTS_OP_ADD, R1, R3);
    fts_alu_imm(a, FTS_OP_ADD, R1, head);
}

/* Touch lanes.  A socket's lines are read when its predecessor's link
 * arrives, so a chain costs one memory latency per socket, one after the
 * other.  Loads whose results nothing waits for let the CPU fetch other
 * chains meanwhile.  FTS_WALK_LANES cursors walk the ehash chains ahead
 * of the count: when its chain ends a lane takes the next non-empty
 * bucket not yet taken, LANE_LEAD to LANE_LEAD + LANE_SPAN past the
 * count's (nearer, the line would not have arrived; farther, it would
 * be gone again).  Each socket's step (not an empty bucket's, nor a
 * chain's first after an empty bucket) moves one lane, in turn, one
 * socket on and touches that socket's lines; the lane comes back
 * FTS_WALK_LANES moves later, when the lines have arrived.
 * The lanes only read, under the same RCU section as the count: whatever
 * they follow (a socket that moved) changes no count.  They start empty
 * each run (RCU is not held between runs).
 * Measured (CPU per pass, same-binary alternations): lanes moving from a
 * chain's second socket on, against none: 2.0M sockets in the host's
 * table (7.7 a chain) 0.71x, 1.0M (3.8 a chain) 0.93x-0.95x, 100k in a
 * table of their own (262,144 buckets) 0.96x-1.01x, in the host's 0.86x;
 * lead 2 instead of 64: 1.2x slower at 2M; moving on empty buckets' steps
 * too: 100k 1.09x.  Moving on a chain's first socket too (the lanes then
 * keep up with the count): 1M + 10 0.855x, but 100k 1.056x (chains are
 * short there: most sockets are a chain's first, and the lanes' refills
 * cost more than they save); not after an empty bucket (1M: 2% of
 * buckets, 100k: 68%): 1M 0.99x of that, 100k 0.96x.  With them all,
 * no lanes at all is 1.9x.  At 1M neither 8 or 32 lanes, lead 32 or 128,
 * nor two moves per step helped (0.99x-1.07x): more lines in flight do
 * not make the walk faster.  Where a pass met fewer than 2 sockets per 3
 * buckets the next keeps them idle (ctl.read_ahead, walk_run.c): there
 * they cost more than they save (100k in 278,528 buckets: 0.89x-0.93x
 * without; 300k: 1.09x slower without). */
/* lanes[r9 - 1] is at r6 + 8 * r9 + LANE_AT (r9: 1 to STEPS_PER_CALL) */
#define LANE_AT ((int16_t)(CTL(lanes) - 8))

#define LANE_LEAD 64
#define LANE_TRIES 4
#define LANE_SPAN 192

/* r1: a node.  Touch its socket's lines; its link (the load that
 * touches the node's line) is where the lane moves next. */
static void
lane_move(struct fts_asm *a, const struct fts_walk_layout *l)
{
    fts_place(a, L_LANE_MOVED);
    cast_node(a, l);
    fts_load(a, R1, R0, sk_field(l, l->skc_node_next), 8);
    fts_store(a, R8, LANE_AT, R1, 8);
    fts_load(a, R2, R0, sk_field(l, l->skc_state), 1);
    fts_place(a, L_LANE_DONE);
}

/* One lane's move (r7: the run's steps); clobbers r0-r5 and r8.  A lane
 * whose chain ended is refilled out of the common path (lane_refill()). */
static void
lane_step(struct fts_asm *a, const struct fts_walk_layout *l)
{
    /* r8 = the map value + 8 * (the lane's index + 1) (then lanes[] past
     * it, less one): a call's steps (r9 counts them down from
     * STEPS_PER_CALL) take them in turn. */
    fts_mov_reg(a, R8, R9);
    fts_alu_imm(a, FTS_OP_LSH, R8, 3);
    fts_alu_reg(a, FTS_OP_ADD, R8, R6);
    fts_load(a, R1, R8, LANE_AT, 8);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_LANE_NEW);
    fts_jump(a, FTS_J_JSET | FTS_SRC_K, R1, 0, 1, L_LANE_NEW);
    lane_move(a, l);
}

/* Out of the common path: the lane's chain ended.  Take bucket
 * max(ahead, the count's + LANE_LEAD), then on at L_LANE_MOVED with its
 * first node, or at L_LANE_DONE. */
static void
lane_refill(struct fts_asm *a, const struct fts_walk_layout *l)
{
    fts_place(a, L_LANE_NEW);
    fts_load(a, R2, R6, CTL(table), 4);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R2, 0, FTS_WALK_TABLE_EHASH,
             L_LANE_DONE);
    fts_load(a, R3, R6, CTL(ahead), 4);
    fts_load(a, R4, R6, CTL(bucket), 4);
    fts_alu_imm(a, FTS_OP_ADD, R4, LANE_LEAD);
    fts_jump(a, FTS_J_JGE | FTS_SRC_X, R3, R4, 0, L_LANE_AHEAD);
    fts_mov_reg(a, R3, R4);
    fts_place(a, L_LANE_AHEAD);
    /* Not too far ahead either: what they touch must still be cached. */
    fts_alu_imm(a, FTS_OP_ADD, R4, LANE_SPAN);
    fts_jump(a, FTS_J_JGT | FTS_SRC_X, R3, R4, 0, L_LANE_DONE);
    /* An empty bucket has nothing to touch: the lane takes the next,
     * up to LANE_TRIES (bucket heads are adjacent: one line has 8). */
    for (int t = 0; t < LANE_TRIES; t++) {
        if (t > 0) {
            fts_load(a, R3, R6, CTL(ahead), 4);
        }
        fts_load(a, R4, R6, CTL(ehash_mask), 4);
        fts_jump(a, FTS_J_JGT | FTS_SRC_X, R3, R4, 0, L_LANE_DONE);
        fts_mov_reg(a, R4, R3);
        fts_alu_imm(a, FTS_OP_ADD, R4, 1);
        fts_store(a, R6, CTL(ahead), R4, 4);
        fts_alu_imm(a, FTS_OP_MUL, R3, l->ehash_size);
        fts_load(a, R1, R6, CTL(ehash), 8);
        fts_alu_reg(a, FTS_OP_ADD, R1, R3);
        fts_alu_imm(a, FTS_OP_ADD, R1, l->ehash_head);
        cast(a, l, l->id_nulls_head);
        fts_load(a, R1, R0, (int16_t)l->head_first, 8);
        if (t + 1 < LANE_TRIES) {
            launder(a, R1);
            fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_LANE_DONE);
            fts_mov_reg(a, R2, R1);
            fts_alu_imm(a, FTS_OP_AND, R2, 1);
            fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R2, 0, 0, L_LANE_MOVED);
        }
    }

    /* The last try's link, unchecked: the lane's next move checks it. */
    fts_store(a, R8, LANE_AT, R1, 8);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_LANE_DONE);
}

/* After an empty ehash bucket, the step goes on over the empty buckets
 * that follow, up to SCAN_EMPTY: where most buckets are empty (100k
 * sockets in 278,528), a step each cost more than the sockets.  A head
 * that is anything but its own bucket's nulls value (a socket, NULL, a
 * wrong nulls value) is left for the next step, which starts it as any.
 * Both tables (lhash2: 16,384 buckets here, nearly all empty).
 * Raw reads only: the head array is read through one cast, its pointer
 * moved along (typed pointers refuse arithmetic). */
#define SCAN_EMPTY 8

/* One table's copy of the scan: `mask`, `base`, `size`, `head` as in
 * bucket_head(); its buckets' nulls values start at `nulls`. */
static void
scan_table(struct fts_asm *a, const struct fts_walk_layout *l, int16_t mask,
           int16_t base, uint16_t size, uint16_t head, uint32_t nulls,
           int done)
{
    fts_load(a, R3, R6, CTL(bucket), 4);
    fts_load(a, R4, R6, mask, 4);
    fts_jump(a, FTS_J_JGT | FTS_SRC_X, R3, R4, 0, L_NEXT);
    fts_mov_reg(a, R1, R3);
    fts_alu_imm(a, FTS_OP_MUL, R1, size);
    fts_load(a, R2, R6, base, 8);
    fts_alu_reg(a, FTS_OP_ADD, R1, R2);
    fts_alu_imm(a, FTS_OP_ADD, R1, head);
    cast(a, l, 0);
    /* r3: the bucket, r4: the last, r5: the buckets passed */
    fts_load(a, R3, R6, CTL(bucket), 4);
    fts_load(a, R4, R6, mask, 4);
    fts_mov_imm(a, R5, 0);
    for (int k = 0; k < SCAN_EMPTY; k++) {
        fts_load(a, R1, R0, (int16_t)l->head_first, 8);
        fts_mov_reg(a, R2, R3);
        if (nulls != 0) {
            fts_alu_imm(a, FTS_OP_ADD, R2, (int32_t)nulls);
        }
        fts_alu_imm(a, FTS_OP_LSH, R2, 1);
        fts_alu_imm(a, FTS_OP_OR, R2, 1);
        fts_jump(a, FTS_J_JNE | FTS_SRC_X, R1, R2, 0, done);
        fts_alu_imm(a, FTS_OP_ADD, R3, 1);
        fts_alu_imm(a, FTS_OP_ADD, R5, 1);
        if (k + 1 < SCAN_EMPTY) {
            fts_jump(a, FTS_J_JGT | FTS_SRC_X, R3, R4, 0, done);
            fts_alu_imm(a, FTS_OP_ADD, R0, size);
        }
    }
    fts_place(a, done);
    fts_store(a, R6, CTL(bucket), R3, 4);
    fts_load(a, R1, R6, CTL(buckets), 8);
    fts_alu_reg(a, FTS_OP_ADD, R1, R5);
    fts_store(a, R6, CTL(buckets), R1, 8);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_NEXT);
}

static void
scan_empty(struct fts_asm *a, const struct fts_walk_layout *l)
{
    fts_place(a, L_SCAN);
    fts_load(a, R2, R6, CTL(table), 4);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R2, 0, FTS_WALK_TABLE_EHASH,
             L_SCAN_LHASH2);
    scan_table(a, l, CTL(ehash_mask), CTL(ehash), l->ehash_size,
               l->ehash_head, 0, L_SCANNED);
    fts_place(a, L_SCAN_LHASH2);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R2, 0, FTS_WALK_TABLE_LHASH2, L_NEXT);
    scan_table(a, l, CTL(lhash2_mask), CTL(lhash2), l->lhash2_size,
               l->lhash2_head, FTS_WALK_LISTEN_NULLS_BASE, L_SCANNED_LHASH2);
}

/* r8 = the state as netlink reports it, or jump to L_BAD_STATE.  With
 * one_load(), r2 holds skc_family's 32 bits, skc_state the third byte
 * (and keeps them: no call comes between). */
static void
classify_state(struct fts_asm *a, const struct fts_walk_layout *l)
{
    if (one_load(l)) {
        /* r8 = the third byte * 8, r2 kept for classify_family() */
        fts_load(a, R2, SK, sk_field(l, l->skc_family), 4);
        fts_mov_reg(a, R8, R2);
        fts_alu_imm(a, FTS_OP_RSH, R8, 16 - 3);
        fts_alu_imm(a, FTS_OP_AND, R8, 0xff << 3);
    }
    else {
        fts_load(a, R8, SK, sk_field(l, l->skc_state), 1);
        fts_alu_imm(a, FTS_OP_LSH, R8, 3);
    }
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R8, 0, TCP_NEW_SYN_RECV * 8,
             L_NOT_REQ);
    fts_mov_imm(a, R8, TCP_SYN_RECV * 8);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_STATE_OK);
    fts_place(a, L_NOT_REQ);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R8, 0, TCP_TIME_WAIT * 8,
             L_STATE_CHECK);
    /* SK becomes the socket as an inet_timewait_sock, whose sock_common
     * comes first: the loads after read the same fields. */
    if (!l->raw_reads) {
        fts_mov_reg(a, R1, SK);
        cast(a, l, l->id_tw_sock);
    }
    fts_load(a, R8, SK, sk_field(l, l->tw_substate), 1);
    fts_alu_imm(a, FTS_OP_LSH, R8, 3);
    fts_place(a, L_STATE_CHECK);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R8, 0, 0, L_BAD_STATE);
    fts_jump(a, FTS_J_JGT | FTS_SRC_K, R8, 0, TCP_CLOSING * 8, L_BAD_STATE);
    fts_place(a, L_STATE_OK);
}

/* Leave out what the filter does not want (jump to L_SKIP). */
static void
apply_filter(struct fts_asm *a, const struct fts_walk_layout *l,
             const struct fts_walk_filter *f)
{
    if (f == NULL) {
        return;
    }
    if (f->states != 0) {
        /* r8 = family * 128 + state * 8 */
        fts_mov_reg(a, R2, R8);
        fts_alu_imm(a, FTS_OP_RSH, R2, 3);
        fts_alu_imm(a, FTS_OP_AND, R2, FTS_NSTATES - 1);
        fts_mov_imm(a, R1, (int32_t)f->states);
        fts_alu_reg(a, FTS_OP_RSH, R1, R2);
        fts_jump(a, FTS_J_JSET | FTS_SRC_K, R1, 0, 1, L_STATES_OK);
        fts_jump(a, FTS_J_JA, 0, 0, 0, L_SKIP);
        fts_place(a, L_STATES_OK);
    }
    if (f->nlocal > 0) {
        fts_load(a, R1, SK, sk_field(l, l->skc_num), 2);  /* host order */
        fts_port_group(a, R1, f->local, f->nlocal, L_LOCAL_OK, L_SKIP);
    }
    if (f->nremote > 0) {
        fts_load(a, R1, SK, sk_field(l, l->skc_dport), 2);  /* network order */
        fts_emit(a, FTS_ALU | FTS_OP_END | FTS_TO_BE, R1, 0, 0, 16);
        fts_port_group(a, R1, f->remote, f->nremote, L_REMOTE_OK, L_SKIP);
    }
}

/* r8 (the state) = the counter's offset in a slot's counts, family *
 * 128 + state * 8, or jump to L_BAD_FAMILY.  A v4-mapped socket is an
 * AF_INET6 socket: IPv6, as netlink says.  (skc_family and skc_state are
 * neighbours, but one load of both is refused: "access beyond the end of
 * member skc_family".) */
static void
classify_family(struct fts_asm *a, const struct fts_walk_layout *l)
{
    _Static_assert((AF_INET | 8) == AF_INET6 && (AF_INET & 8) == 0
                   && (8 << 4) == FAMILY_STRIDE,
                   "the families differ in bit 3 only, worth a stride");
    if (!one_load(l)) {
        fts_load(a, R2, SK, sk_field(l, l->skc_family), 2);
    }
    /* skc_family's 16 bits less bit 3 (one_load(): the bits above it
     * are the state's and others) must be AF_INET. */
    fts_mov_reg(a, R3, R2);
    fts_alu_imm(a, FTS_OP_AND, R3, 0xfff7);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R3, 0, AF_INET, L_BAD_FAMILY);
    fts_alu_imm(a, FTS_OP_AND, R2, 8);
    fts_alu_imm(a, FTS_OP_LSH, R2, 4);
    fts_alu_reg(a, FTS_OP_ADD, R8, R2);
}

/* r3 = the byte offset of the tally slot for namespace r1 (open
 * addressing, FTS_WALK_PROBES tries), claiming a free one; else jump to
 * L_FULL. */
static void
find_slot(struct fts_asm *a, uint32_t nslots)
{
    /* Fibonacci hashing: the top bits of a 32-bit product, as the
     * kernel's hash_32(); inode numbers come in arithmetic runs, which
     * the product's middle bits would crowd into a few clusters. */
    int bits = 0;
    while ((1u << bits) < nslots) {
        bits++;
    }
    fts_mov_reg(a, R2, R1);
    fts_emit(a, FTS_ALU | FTS_OP_MUL | FTS_SRC_K, R2, 0, 0,
             -1640531527);  /* GOLDEN_RATIO_32 (0x9E3779B9) as an s32 */
    fts_alu_imm(a, FTS_OP_RSH, R2, 32 - bits);
    for (int k = 0; k < FTS_WALK_PROBES; k++) {
        fts_mov_reg(a, R3, R2);
        fts_alu_imm(a, FTS_OP_ADD, R3, k);
        fts_alu_imm(a, FTS_OP_AND, R3, (int32_t)(nslots - 1));
        fts_alu_imm(a, FTS_OP_MUL, R3, SLOT_SIZE);
        fts_alu_imm(a, FTS_OP_ADD, R3, SLOTS_AT);
        fts_mov_reg(a, R4, R6);
        fts_alu_reg(a, FTS_OP_ADD, R4, R3);
        fts_load(a, R5, R4, (int16_t)offsetof(struct fts_walk_slot, inum), 4);
        fts_jump(a, FTS_J_JEQ | FTS_SRC_X, R5, R1, 0, L_FOUND);
        fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R5, 0, 0, L_CLAIM);
    }
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_FULL);
    fts_place(a, L_CLAIM);
    fts_store(a, R4, (int16_t)offsetof(struct fts_walk_slot, inum), R1, 4);
    fts_place(a, L_FOUND);
}

/* slot r3, counter r8: add one, and log the counter's offset so that a
 * rescan of this bucket can take it back.  `counted` grows by the log's
 * length when the bucket ends (flush()), not once per socket. */
static void
count(struct fts_asm *a, uint32_t nslots)
{
    fts_alu_reg(a, FTS_OP_ADD, R3, R8);
    /* Always true; it shows the verifier the access is in bounds. */
    fts_jump(a, FTS_J_JGT | FTS_SRC_K, R3, 0,
             (int32_t)(fts_walk_value_size(nslots) - 8), L_SKIP);

    fts_load(a, R4, R6, CTL(nlog), 4);
    fts_mov_reg(a, R5, R4);
    fts_alu_imm(a, FTS_OP_ADD, R5, 1);
    fts_store(a, R6, CTL(nlog), R5, 4);
    _Static_assert((FTS_WALK_LOG & (FTS_WALK_LOG - 1)) == 0,
                   "the log's index is masked");
    /* Past FTS_WALK_LOG the log wraps: user space sees nlog > FTS_WALK_LOG
     * and cannot take the bucket back (an anomaly, if it must). */
    fts_alu_imm(a, FTS_OP_AND, R4, FTS_WALK_LOG - 1);
    fts_alu_imm(a, FTS_OP_LSH, R4, 2);
    fts_alu_reg(a, FTS_OP_ADD, R4, R6);
    fts_store(a, R4, CTL(log), R3, 4);

    fts_alu_reg(a, FTS_OP_ADD, R3, R6);
    fts_load(a, R5, R3, 0, 8);
    fts_alu_imm(a, FTS_OP_ADD, R5, 1);
    fts_store(a, R3, 0, R5, 8);
}

/* ctl.counted += ctl.nlog: the increments of the bucket the run is in,
 * or just ended, each counted once.  A bucket user space undoes (a
 * rescan, a run cut mid-bucket) is flushed before it: its undo takes
 * `counted` back by one for each increment it takes back. */
static void
flush(struct fts_asm *a)
{
    fts_load(a, R1, R6, CTL(nlog), 4);
    fts_load(a, R2, R6, CTL(counted), 8);
    fts_alu_reg(a, FTS_OP_ADD, R2, R1);
    fts_store(a, R6, CTL(counted), R2, 8);
}

/* r1 holds a nulls marker: the chain ended.  Its value must name this
 * bucket (else L_RESCAN); then move the cursor to the next bucket and go
 * on at `then`.  `lhash2_ok` is a label free for this copy's use. */
static void
chain_end(struct fts_asm *a, int lhash2_ok, int then)
{
    fts_alu_imm(a, FTS_OP_RSH, R1, 1);
    fts_load(a, R2, R6, CTL(bucket), 4);
    fts_load(a, R3, R6, CTL(table), 4);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R3, 0, FTS_WALK_TABLE_EHASH,
             lhash2_ok);
    fts_alu_imm(a, FTS_OP_ADD, R2, (int32_t)FTS_WALK_LISTEN_NULLS_BASE);
    fts_place(a, lhash2_ok);
    fts_jump(a, FTS_J_JNE | FTS_SRC_X, R1, R2, 0, L_RESCAN);
    fts_load(a, R1, R6, CTL(bucket), 4);
    fts_alu_imm(a, FTS_OP_ADD, R1, 1);
    fts_store(a, R6, CTL(bucket), R1, 4);
    fts_store_imm(a, R6, CTL(node), 0, 8);
    bump(a, CTL(buckets));
    fts_jump(a, FTS_J_JA, 0, 0, 0, then);
}

/* Namespace r1 (a struct net) missed the cache: r3 = its slot, then on
 * at L_COUNT; or L_SKIP (not --only's), L_BAD_NS, L_FULL.  Only a slot
 * or a skip is cached, never an anomaly. */
static void
ns_lookup(struct fts_asm *a, const struct fts_walk_layout *l,
          uint32_t nslots)
{
    fts_place(a, L_NS_LOOKUP);
    if (l->raw_reads) {
        /* r1 is a number: read through a cast, keep it in r0. */
        fts_store(a, R6, CTL(scratch), R1, 8);
        cast(a, l, 0);
        fts_load(a, R1, R0, (int16_t)l->net_inum, 4);
        fts_load(a, R0, R6, CTL(scratch), 8);
    }
    else {
        fts_mov_reg(a, R0, R1);
        fts_load(a, R1, R1, (int16_t)l->net_inum, 4);
    }
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_BAD_NS);
    fts_load(a, R2, R6, CTL(only_inum), 8);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R2, 0, 0, L_ANY_NS);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_X, R1, R2, 0, L_ANY_NS);
    fts_store(a, R6, CTL(last_net), R0, 8);
    fts_store_imm(a, R6, CTL(last_slot), 0, 8);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_SKIP);
    fts_place(a, L_ANY_NS);
    find_slot(a, nslots);
    fts_alu_imm(a, FTS_OP_ADD, R3,
                (int32_t)offsetof(struct fts_walk_slot, n));
    fts_store(a, R6, CTL(last_net), R0, 8);
    fts_store(a, R6, CTL(last_slot), R3, 8);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_COUNT);
}

/* ctl.field += 1, and on to the next step. */
static void
tally_next(struct fts_asm *a, int label, int16_t field)
{
    fts_place(a, label);
    bump(a, field);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_NEXT);
}


/* One bpf_loop iteration: up to STEPS_PER_CALL steps, each an empty
 * bucket, or one socket (with its bucket's start if it is the first,
 * with its chain's end if it is the last).  Checking the end in the same
 * step as the last socket makes a bucket atomic unless it has more
 * sockets than a run has steps left. */
static void
callback(struct fts_asm *a, const struct fts_walk_layout *l,
         const struct fts_walk_filter *filter, int map_fd, uint32_t nslots)
{
    fts_place(a, L_CALLBACK);
    fts_ld_map(a, R6, FTS_BPF_PSEUDO_MAP_VALUE, map_fd, 0);
    fts_mov_imm(a, R9, STEPS_PER_CALL);
    fts_load(a, R7, R6, CTL(loops), 8);
    /* Past budget + slack steps, stop (mid-bucket: user space undoes the
     * bucket and the next run walks it again).  Checked once a call, so
     * a run takes at most STEPS_PER_CALL - 1 steps more. */
    fts_load(a, R2, R6, CTL(limit), 8);
    fts_jump(a, FTS_J_JGE | FTS_SRC_X, R7, R2, 0, L_LIMIT);
    fts_place(a, L_TOP);
    fts_load(a, R1, R6, CTL(node), 8);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_BOUNDARY);

    fts_place(a, L_MID);
    fts_alu_imm(a, FTS_OP_ADD, R7, 1);
    fts_place(a, L_LANES);
    lane_step(a, l);
    fts_load(a, R1, R6, CTL(node), 8);

    /* One socket: r1 = its node. */
    fts_place(a, L_STEP);
    cast_node(a, l);
    /* The link is the next cursor; stored there, it reads back as a
     * number (a nulls marker or a NULL link leave the cursor anyway).
     * A raw read gives a number already. */
    fts_load(a, R1, SK, sk_field(l, l->skc_node_next), 8);
    fts_store(a, R6, CTL(node), R1, 8);
    if (!l->raw_reads) {
        fts_load(a, R1, R6, CTL(node), 8);
    }
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_UNREADABLE);
    fts_jump(a, FTS_J_JSET | FTS_SRC_K, R1, 0, 1, L_LAST);

    fts_place(a, L_SOCKET);
    classify_state(a, l);
    classify_family(a, l);
    apply_filter(a, l, filter);

    /* r1 = the socket's struct net.  Chains hold mostly one namespace:
     * its slot (or 0, left out by --only) is cached for the next socket. */
    fts_load(a, R1, SK, sk_field(l, l->skc_net), 8);
    fts_load(a, R2, R6, CTL(last_net), 8);
    fts_jump(a, FTS_J_JNE | FTS_SRC_X, R1, R2, 0, L_NS_LOOKUP);
    fts_load(a, R3, R6, CTL(last_slot), 8);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R3, 0, 0, L_SKIP);
    fts_place(a, L_COUNT);
    count(a, nslots);
    fts_place(a, L_NEXT);
    fts_alu_imm(a, FTS_OP_SUB, R9, 1);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R9, 0, 0, L_TOP);
    fts_store(a, R6, CTL(loops), R7, 8);
    fts_exit_imm(a, 0);

    /* Out of the common path: a bucket's start, the chain's end, then a
     * namespace not in the cache. */
    fts_place(a, L_BOUNDARY);
    /* At a bucket boundary past the budget: end the run here (it may
     * take ctl.slack more steps to reach one). */
    fts_load(a, R2, R6, CTL(budget), 8);
    fts_jump(a, FTS_J_JGE | FTS_SRC_X, R7, R2, 0, L_STOP);
    /* The bucket before is done: its increments join `counted`.  r8:
     * whether it had any, which tells the chain's first socket below
     * whether to move a lane (see the touch lanes). */
    fts_load(a, R8, R6, CTL(nlog), 4);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R8, 0, 0, L_FLUSH);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_ACCOUNT);

    fts_place(a, L_ACCOUNT);
    fts_alu_imm(a, FTS_OP_ADD, R7, 1);

    /* Start a bucket: r1 = its head's address, then r1 = its first node. */
    fts_load(a, R2, R6, CTL(table), 4);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R2, 0, FTS_WALK_TABLE_EHASH, L_LHASH2);
    bucket_head(a, CTL(ehash_mask), CTL(ehash), l->ehash_size,
                l->ehash_head, L_EHASH_DONE, 0);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_HEAD);
    fts_place(a, L_EHASH_DONE);
    fts_load(a, R1, R6, CTL(tables), 8);
    fts_jump(a, FTS_J_JSET | FTS_SRC_K, R1, 0, FTS_WALK_LHASH2, L_TO_LHASH2);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_FINISHED);
    fts_place(a, L_TO_LHASH2);
    fts_store_imm(a, R6, CTL(table), FTS_WALK_TABLE_LHASH2, 4);
    fts_store_imm(a, R6, CTL(bucket), 0, 4);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_NEXT);
    fts_place(a, L_LHASH2);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R2, 0, FTS_WALK_TABLE_LHASH2, L_STOP);
    bucket_head(a, CTL(lhash2_mask), CTL(lhash2), l->lhash2_size,
                l->lhash2_head, L_FINISHED, 0);
    fts_place(a, L_HEAD);
    cast(a, l, l->id_nulls_head);
    load_link(a, (int16_t)l->head_first, L_UNREADABLE, L_EMPTY);
    fts_store(a, R6, CTL(node), R1, 8);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R8, 0, 0, L_STEP);
    fts_load(a, R2, R6, CTL(read_ahead), 4);
    fts_jump(a, FTS_J_JNE | FTS_SRC_K, R2, 0, 0, L_LANES);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_STEP);
    fts_place(a, L_EMPTY);
    chain_end(a, L_EMPTY_LHASH2, l->raw_reads ? L_SCAN : L_NEXT);
    if (l->raw_reads) {
        scan_empty(a, l);
    }
    fts_place(a, L_FINISHED);
    fts_store_imm(a, R6, CTL(table), FTS_WALK_TABLE_DONE, 4);
    fts_place(a, L_STOP);
    fts_store(a, R6, CTL(loops), R7, 8);
    flush(a);
    fts_store_imm(a, R6, CTL(nlog), 0, 4);
    fts_exit_imm(a, 1);

    fts_place(a, L_FLUSH);
    flush(a);
    fts_store_imm(a, R6, CTL(nlog), 0, 4);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_ACCOUNT);


    fts_place(a, L_LAST);
    chain_end(a, L_LAST_LHASH2, L_SOCKET);
    lane_refill(a, l);
    fts_place(a, L_LIMIT);
    fts_load(a, R1, R6, CTL(node), 8);
    fts_jump(a, FTS_J_JEQ | FTS_SRC_K, R1, 0, 0, L_STOP);
    fts_jump(a, FTS_J_JA, 0, 0, 0, L_CUT);
    ns_lookup(a, l, nslots);

    tally_next(a, L_SKIP, CTL(filtered));
    tally_next(a, L_BAD_STATE, CTL(bad_state));
    tally_next(a, L_BAD_FAMILY, CTL(bad_family));
    tally_next(a, L_BAD_NS, CTL(bad_ns));
    tally_next(a, L_FULL, CTL(full));

    /* A NULL head or link: no valid chain has one.  Stop the run; user
     * space undoes the bucket and rescans it, then gives up on it. */
    fts_place(a, L_UNREADABLE);
    bump(a, CTL(unreadable));
    fts_place(a, L_RESCAN);
    fts_store_imm(a, R6, CTL(status), FTS_WALK_ST_RESCAN, 4);
    fts_place(a, L_CUT);
    fts_store(a, R6, CTL(loops), R7, 8);
    flush(a);
    fts_exit_imm(a, 1);
}

size_t
fts_walk_prog(struct fts_bpf_insn *insns, size_t cap,
              const struct fts_walk_layout *layout,
              const struct fts_walk_filter *filter, int map_fd,
              uint32_t nslots, uint32_t *callback_at)
{
    if (nslots == 0 || nslots > FTS_WALK_MAX_SLOTS
        || (nslots & (nslots - 1)) != 0
        || (filter != NULL && (filter->nlocal > FTS_MAX_PORT_RANGES
                               || filter->nremote > FTS_MAX_PORT_RANGES))) {
        return 0;
    }
    struct fts_asm a;
    fts_asm_init(&a, insns, cap);
    main_program(&a, layout, map_fd);
    callback(&a, layout, filter, map_fd, nslots);
    size_t n = fts_asm_finish(&a);
    if (n > 0) {
        *callback_at = (uint32_t)a.label_at[L_CALLBACK];
    }
    return n;
}

/* ---- the program's BTF ---------------------------------------------- */

#define BTF_KIND_INT 1
#define BTF_KIND_PTR 2
#define BTF_KIND_FUNC 12
#define BTF_KIND_FUNC_PROTO 13
#define BTF_INT_SIGNED 1
#define FUNC_STATIC 0
#define FUNC_GLOBAL 1

struct writer {
    unsigned char *buf;
    size_t cap;
    size_t n;
};

static void
put32(struct writer *w, uint32_t v)
{
    if (w->n + 4 <= w->cap) {
        memcpy(w->buf + w->n, &v, 4);
    }
    w->n += 4;
}

static void
put_type(struct writer *w, uint32_t name, uint32_t kind, uint32_t vlen,
         uint32_t size_or_type)
{
    put32(w, name);
    put32(w, (kind << 24) | vlen);
    put32(w, size_or_type);
}

/* Type ids below; names are offsets into STRINGS. */
#define STRINGS "\0int\0u64\0ctx\0index\0fasttcpstat_walk\0walk_step"
#define S_INT 1
#define S_U64 5
#define S_CTX 9
#define S_INDEX 13
#define S_MAIN 19
#define S_STEP 36
enum { T_INT = 1, T_U64, T_PTR, T_MAIN_PROTO, T_MAIN, T_STEP_PROTO, T_STEP };

size_t
fts_walk_prog_btf(unsigned char *out, size_t cap, uint32_t callback_at,
                  uint32_t func_info[4])
{
    struct writer w = {out, cap, 24};
    put_type(&w, S_INT, BTF_KIND_INT, 0, 4);
    put32(&w, (BTF_INT_SIGNED << 24) | 32);
    put_type(&w, S_U64, BTF_KIND_INT, 0, 8);
    put32(&w, 64);
    put_type(&w, 0, BTF_KIND_PTR, 0, 0);                  /* void * */
    put_type(&w, 0, BTF_KIND_FUNC_PROTO, 1, T_INT);       /* int (void *ctx) */
    put32(&w, S_CTX);
    put32(&w, T_PTR);
    put_type(&w, S_MAIN, BTF_KIND_FUNC, FUNC_GLOBAL, T_MAIN_PROTO);
    put_type(&w, 0, BTF_KIND_FUNC_PROTO, 2, T_INT);  /* int (u64, void *) */
    put32(&w, S_INDEX);
    put32(&w, T_U64);
    put32(&w, S_CTX);
    put32(&w, T_PTR);
    /* bpf_loop's callback must be static. */
    put_type(&w, S_STEP, BTF_KIND_FUNC, FUNC_STATIC, T_STEP_PROTO);
    size_t types_len = w.n - 24;
    size_t total = w.n + sizeof(STRINGS);
    if (total > cap) {
        return 0;
    }
    memcpy(out + w.n, STRINGS, sizeof(STRINGS));
    /* The header: magic, version 1, flags 0, its length, then the type
     * and string sections' offsets and lengths after it. */
    uint16_t magic = 0xEB9F;
    uint32_t hdr[5] = {24, 0, (uint32_t)types_len, (uint32_t)types_len,
                       (uint32_t)sizeof(STRINGS)};
    memcpy(out, &magic, 2);
    out[2] = 1;
    out[3] = 0;
    memcpy(out + 4, hdr, sizeof(hdr));
    func_info[0] = 0;
    func_info[1] = T_MAIN;
    func_info[2] = callback_at;
    func_info[3] = T_STEP;
    return total;
}

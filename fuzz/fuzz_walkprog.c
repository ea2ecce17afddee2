/*
 * libFuzzer target: the walk backend's generator (csrc/walk_prog.c) and
 * its BTF queries (csrc/btf_walk.c over csrc/btf.c's general API).
 *
 * Byte 0 chooses:
 *   even  the generator.  Then the layout (LAYOUT_BYTES bytes, any
 *         values), a byte for nslots (1 << (b & 15), so some
 *         are out of range), two for the room given, one each for the
 *         numbers of local and remote ranges, four for the state mask,
 *         then the ranges (4 bytes each; low > high allowed).  The program
 *         goes into an exactly-sized heap array (ASan sees any overrun).
 *         Invariants: refused only for a bad nslots, too many ranges or
 *         too little room; accepted programs are well formed
 *         (tests/c/walk_check.h) and within fts_walk_prog_len().
 *   odd   the rest is a BTF blob for fts_walk_layout(): it refuses with
 *         an errno and a message, or every id is set and every offset
 *         fits a load's 16-bit field.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "btf.h"
#include "walk_check.h"
#include "walk_prog.h"

static size_t
take(const uint8_t **data, size_t *size, void *out, size_t n)
{
    size_t k = *size < n ? *size : n;
    memset(out, 0, n);
    memcpy(out, *data, k);
    *data += k;
    *size -= k;
    return k;
}

/* Fixed, so that inputs keep their meaning if the layout grows. */
#define LAYOUT_BYTES 80
_Static_assert(sizeof(struct fts_walk_layout) <= LAYOUT_BYTES,
               "the layout outgrew the fuzz input's room for it");

static void
fuzz_generator(const uint8_t *data, size_t size)
{
    struct fts_walk_layout l;
    unsigned char raw[LAYOUT_BYTES];
    uint8_t nslots_log = 0, nlocal = 0, nremote = 0;
    uint16_t room = 0;
    uint32_t states = 0;
    take(&data, &size, raw, sizeof(raw));
    memcpy(&l, raw, sizeof(l));
    take(&data, &size, &nslots_log, 1);
    take(&data, &size, &room, 2);
    take(&data, &size, &nlocal, 1);
    take(&data, &size, &nremote, 1);
    take(&data, &size, &states, 4);
    size_t nranges = size / 4;
    struct fts_port_range *ranges = malloc((nranges ? nranges : 1)
                                           * sizeof(*ranges));
    if (ranges == NULL) {
        return;
    }
    for (size_t i = 0; i < nranges; i++) {
        memcpy(&ranges[i].low, data + 4 * i, 2);
        memcpy(&ranges[i].high, data + 4 * i + 2, 2);
    }
    size_t nl = nlocal < nranges ? nlocal : nranges;
    size_t nr = nremote < nranges - nl ? nremote : nranges - nl;
    struct fts_walk_filter f = {states, ranges, nl, ranges + nl, nr};
    uint32_t nslots = 1u << (nslots_log & 15);
    size_t need = fts_walk_prog_len(&f);
    size_t cap = room % (need + 8);  /* below, at and just above the need */
    struct fts_bpf_insn *insns = malloc((cap ? cap : 1) * sizeof(*insns));
    if (insns == NULL) {
        free(ranges);
        return;
    }
    uint32_t callback_at = 0;
    size_t n = fts_walk_prog(insns, cap, &l, &f, 3, nslots, &callback_at);
    int valid_slots = nslots <= FTS_WALK_MAX_SLOTS;
    if (n == 0 && cap >= need && valid_slots) {
        abort();  /* enough room, valid arguments: must generate */
    }
    if (n > 0 && (!valid_slots || n > cap || n > need
                  || walk_check_program(insns, n, callback_at, &l) != 0)) {
        abort();
    }
    free(insns);
    free(ranges);
}

static void
fuzz_layout(const uint8_t *data, size_t size)
{
    unsigned char *copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, data, size);
    struct fts_error e = {0, NULL};
    struct fts_btf *b = fts_btf_open(copy, size, &e);
    if (b == NULL) {
        if (e.err <= 0 || e.what == NULL) {
            abort();
        }
        free(copy);
        return;
    }
    struct fts_walk_layout l;
    int rc = fts_walk_layout(b, &l, &e);
    if (rc < 0 && (e.err <= 0 || e.what == NULL)) {
        abort();
    }
    if (rc == 0
        && (l.kf_rcu_read_lock == 0 || l.kf_rcu_read_unlock == 0
            || l.kf_rdonly_cast == 0 || l.id_sock_common == 0
            || l.id_nulls_head == 0 || l.id_tw_sock == 0
            || l.skc_state > INT16_MAX || l.tw_substate > INT16_MAX
            || l.net_hashinfo > INT16_MAX || l.ehash_size == 0)) {
        abort();
    }
    fts_btf_close(b);
    free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if (data[0] & 1) {
        fuzz_layout(data + 1, size - 1);
    }
    else {
        fuzz_generator(data + 1, size - 1);
    }
    return 0;
}

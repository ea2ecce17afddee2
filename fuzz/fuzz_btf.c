/*
 * libFuzzer target: the BTF reader (csrc/btf.c) over arbitrary bytes.
 *
 * The input is a whole BTF blob, copied to an exactly-sized heap buffer so
 * that ASan sees any read past its end.  Invariants: the parser either
 * refuses with a positive errno and a message, or returns a layout whose
 * fields lie where the verifier could check them (sizes as required,
 * offsets small enough to be real struct offsets).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "btf.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }
    memcpy(copy, data, size);
    struct fts_btf_layout l;
    struct fts_error e = {0, NULL};
    int rc = fts_btf_layout(copy, size, &l, &e);
    if (rc < 0) {
        if (e.err <= 0 || e.what == NULL) {
            abort();
        }
    }
    else if (rc != 0 || l.iter_tcp_func_id == 0 || l.skc_state.size != 1
             || l.skc_family.size != 2 || l.skc_num.size != 2
             || l.skc_dport.size != 2 || l.tw_substate.size != 1
             || l.meta_seq.size != 8 || l.meta_session_id.size != 8
             || l.skc_state.offset >= (1u << 29)
             || l.tw_substate.offset >= (1u << 29)) {
        abort();
    }
    free(copy);
    return 0;
}

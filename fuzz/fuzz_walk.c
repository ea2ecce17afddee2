/*
 * libFuzzer harness: fts_walk() on arbitrary netlink reply bytes.
 *
 * Input layout (everything after the 12-byte prefix is the reply):
 *   byte 0      options: bit 0 by_remote, bit 1 per-port breakdown,
 *               bits 2-3 family mask (0 = both, 1 IPv4, 2 IPv6, 3 both),
 *               bits 4-5 misalignment of the reply buffer (0..3 bytes)
 *   bytes 1-4   the request's sequence number
 *   bytes 5-8   our port id
 *   bytes 9-10  a port to break down (with bit 1), network order
 *   byte 11     how many ports follow it in the breakdown (0..255)
 *
 * The fuzzer finds matching and mismatching seq/portid values itself
 * (its comparison tracing sees fts_walk's checks); the seed corpus
 * (fuzz/make_seeds.py) starts it from real-looking dumps: many sockets,
 * DONE with and without a code, NLMSG_ERROR, NOOP, unpadded last messages.
 *
 * The reply is copied into a heap block of exactly its length, so ASan
 * flags any read past it; the breakdown's counters are a heap block of
 * exactly nports entries.  After the walk, invariants that hold for any
 * input are checked, and the result is compared with a second, naive
 * reading of the same rules (ref_walk below: the return value, the errno,
 * every counter); any violation aborts (a finding).
 */
#include "diag.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#define PREFIX 12

static uint16_t slots[65536];

static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

/* The rules of fts_walk() (diag.h, diag_msg.c), written out plainly. */
struct ref_result {
    int rc;
    int err;
    int interrupted;
    uint64_t n[FTS_NFAMILIES][FTS_NSTATES];
};

static int
ref_fail(struct ref_result *r, int err)
{
    r->rc = FTS_WALK_ERROR;
    r->err = err;
    return r->rc;
}

static int32_t
ref_i32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)v;
}

/* The breakdown: ports first..first+nports-1 (wrapping), keyed on the
 * local port or, with by_remote, the remote one. */
struct ref_ports {
    unsigned first;
    size_t n;
    int by_remote;
    fts_state_counts *counts;  /* n entries, zeroed by the caller */
};

static int
ref_walk(const uint8_t *buf, size_t len, uint32_t seq, uint32_t portid,
         unsigned families, const struct ref_ports *ports,
         struct ref_result *r)
{
    memset(r, 0, sizeof(*r));
    size_t off = 0;
    while (off < len) {
        struct nlmsghdr h;
        if (len - off < sizeof(h)) {
            return ref_fail(r, EPROTO);
        }
        memcpy(&h, buf + off, sizeof(h));
        if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > len - off) {
            return ref_fail(r, EPROTO);
        }
        if (h.nlmsg_pid != portid) {
            return ref_fail(r, ESRCH);
        }
        if (h.nlmsg_seq != seq) {
            return ref_fail(r, EPROTO);
        }
        if (h.nlmsg_flags & NLM_F_DUMP_INTR) {
            r->interrupted = 1;
        }
        const uint8_t *p = buf + off + sizeof(h);
        size_t plen = h.nlmsg_len - sizeof(h);
        if (h.nlmsg_type == NLMSG_ERROR) {
            if (plen < 4) {
                return ref_fail(r, EPROTO);
            }
            int32_t code = ref_i32(p);
            if (code == 0 || code == INT32_MIN) {
                return ref_fail(r, EPROTO);
            }
            return ref_fail(r, code < 0 ? -code : code);
        }
        if (h.nlmsg_type == NLMSG_DONE) {
            if (plen >= 4 && ref_i32(p) < 0) {
                int32_t code = ref_i32(p);
                return ref_fail(r, code == INT32_MIN ? EPROTO : -code);
            }
            r->rc = FTS_WALK_DONE;
            return r->rc;
        }
        if (h.nlmsg_type == NLMSG_OVERRUN) {
            return ref_fail(r, ENOBUFS);
        }
        if (h.nlmsg_type == SOCK_DIAG_BY_FAMILY
            || h.nlmsg_type == TCPDIAG_GETSOCK) {
            if (plen < sizeof(struct inet_diag_msg)) {
                return ref_fail(r, EPROTO);
            }
            int f = p[0] == AF_INET ? 0 : p[0] == AF_INET6 ? 1 : -1;
            if (f < 0 || p[1] >= FTS_NSTATES) {
                return ref_fail(r, EPROTO);
            }
            if (families == 0 || (families & (1u << f))) {
                r->n[f][p[1]]++;
                /* inet_diag_msg: family, state, timer, retrans, then
                 * sport and dport in network order. */
                const uint8_t *port = p + (ports->by_remote ? 6 : 4);
                unsigned value = (unsigned)port[0] << 8 | port[1];
                size_t i = (value - ports->first) & 0xFFFF;
                if (i < ports->n) {
                    ports->counts[i][f][p[1]]++;
                }
            }
        }
        else if (h.nlmsg_type != NLMSG_NOOP) {
            return ref_fail(r, EPROTO);
        }
        off += (h.nlmsg_len + 3u) & ~3u;
    }
    r->rc = FTS_WALK_MORE;
    return r->rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX) {
        return 0;
    }
    uint8_t opts = data[0];
    uint32_t seq = le32(data + 1);
    uint32_t portid = le32(data + 5);
    unsigned first_port = (unsigned)data[9] << 8 | data[10];
    size_t nports = (opts & 2) ? 1 + (size_t)data[11] : 0;
    size_t misalign = (opts >> 4) & 3;
    const uint8_t *reply = data + PREFIX;
    size_t len = size - PREFIX;

    struct fts_tally tally;
    memset(&tally, 0, sizeof(tally));
    tally.by_remote = opts & 1;
    tally.families = (opts >> 2) & 3;

    fts_state_counts *by_port = NULL;
    if (nports > 0) {
        by_port = calloc(nports, sizeof(*by_port));
        if (by_port == NULL) {
            return 0;
        }
        /* Consecutive ports, wrapping: slot i + 1 for port first + i. */
        for (size_t i = 0; i < nports; i++) {
            slots[(first_port + i) & 0xFFFF] = (uint16_t)(i + 1);
        }
        tally.port_slot = slots;
        tally.by_port = by_port;
    }

    /* malloc(0) may return NULL; keep one byte so the pointer is valid. */
    uint8_t *block = malloc(misalign + len + (len == 0));
    if (block == NULL) {
        free(by_port);
        return 0;
    }
    memcpy(block + misalign, reply, len);
    /* The block ends exactly where the reply does. */
    uint8_t *buf = block + misalign;

    struct fts_error err = {0, NULL};
    int rc = fts_walk(buf, len, seq, portid, &tally, &err);

    /* Invariants. */
    if (rc != FTS_WALK_ERROR && rc != FTS_WALK_DONE && rc != FTS_WALK_MORE) {
        abort();
    }
    if (rc == FTS_WALK_ERROR && (err.err <= 0 || err.what == NULL)) {
        abort();
    }
    if (rc != FTS_WALK_ERROR && (err.err != 0 || err.what != NULL)) {
        abort();  /* success leaves the error untouched */
    }
    /* Every counted socket is a whole message of at least this size. */
    const uint64_t min_msg = NLMSG_HDRLEN + sizeof(struct inet_diag_msg);
    uint64_t total = 0;
    for (int f = 0; f < FTS_NFAMILIES; f++) {
        for (int s = 0; s < FTS_NSTATES; s++) {
            total += tally.n[f][s];
            /* A family outside the mask is never counted. */
            if (tally.families != 0 && !(tally.families & (1u << f))
                && tally.n[f][s] != 0) {
                abort();
            }
            /* The breakdown never counts more than the totals. */
            uint64_t sum = 0;
            for (size_t i = 0; i < nports; i++) {
                sum += by_port[i][f][s];
            }
            if (sum > tally.n[f][s]) {
                abort();
            }
        }
    }
    if (total * min_msg > (uint64_t)len) {
        abort();  /* counted more sockets than the bytes can hold */
    }

    struct ref_result ref;
    struct ref_ports ports = {first_port, nports, tally.by_remote, NULL};
    if (nports > 0) {
        ports.counts = calloc(nports, sizeof(*ports.counts));
        if (ports.counts == NULL) {
            abort();
        }
    }
    ref_walk(buf, len, seq, portid, tally.families, &ports, &ref);
    if (ref.rc != rc || (rc == FTS_WALK_ERROR && ref.err != err.err)
        || ref.interrupted != tally.dump_interrupted
        || memcmp(ref.n, tally.n, sizeof(ref.n)) != 0
        || (nports > 0 && memcmp(ports.counts, by_port,
                                 nports * sizeof(*by_port)) != 0)) {
        abort();
    }
    free(ports.counts);

    if (nports > 0) {
        for (size_t i = 0; i < nports; i++) {
            slots[(first_port + i) & 0xFFFF] = 0;
        }
    }
    free(block);
    free(by_port);
    return 0;
}

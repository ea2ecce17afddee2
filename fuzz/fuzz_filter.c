/*
 * libFuzzer harness: the port filter compiler (fts_build_port_filter) and
 * the request builder that carries its program (fts_build_request).
 *
 * Input layout:
 *   byte 0      bits 0-1 capacity: 0 exact, 1 one op short, 2 from
 *               bytes 1-2, 3 exact plus slack; bit 2 tile mode; bit 3
 *               also build a request; bit 4 legacy request form
 *   bytes 1-2   capacity (mode 2), little endian
 *   bytes 3-4   tile mode: number of local ranges (mod 2100)
 *   bytes 5-6   tile mode: number of remote ranges (mod 2100);
 *               otherwise byte 5 is how many of the ranges are local
 *   bytes 7-10  the request's states mask and sequence number seed
 *   then        ranges, 4 bytes each: low, high (16-bit little endian),
 *               in any order (low > high included)
 *
 * Tile mode repeats the given ranges to reach sizes around
 * FTS_MAX_PORT_RANGES, where 16-bit jump offsets would overflow if the
 * size checks were wrong.
 *
 * Checks (a violation aborts): an invalid input returns -1 and writes
 * nothing; a valid one returns fts_port_filter_size(), writes nothing past
 * it, passes the model of the kernel's audit (tests/c/bc_model.h), and its
 * verdict, run by the model of the kernel's interpreter, equals "local
 * port in one of the local ranges and remote port in one of the remote
 * ones" on the ranges' boundaries, their neighbours and the extremes.
 */
#include "diag.h"
#include "bc_model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <linux/inet_diag.h>
#include <sys/socket.h>

#define PREFIX 11
#define TILE_MAX 2100
#define PATTERN 0xA5

static uint16_t
le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
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

/* Probe ports of one side: the extremes, and around up to `limit` of its
 * ranges' ends. */
static size_t
probes(const struct fts_port_range *r, size_t n, size_t limit,
       unsigned *out)
{
    size_t k = 0;
    out[k++] = 0;
    out[k++] = 65535;
    size_t step = n > limit ? n / limit : 1;
    for (size_t i = 0; i < n && k + 4 <= 2 + 4 * limit; i += step) {
        long ends[4] = {(long)r[i].low - 1, r[i].low, r[i].high,
                        (long)r[i].high + 1};
        for (int j = 0; j < 4; j++) {
            if (ends[j] >= 0 && ends[j] <= 65535) {
                out[k++] = (unsigned)ends[j];
            }
        }
    }
    return k;
}

/* A port the side accepts and one it rejects (-1 when there is none). */
static void
witnesses(const struct fts_port_range *r, size_t n, const unsigned *p,
          size_t np, long *yes, long *no)
{
    *yes = -1;
    *no = -1;
    for (size_t i = 0; i < np; i++) {
        if (in_ranges(p[i], r, n)) {
            if (*yes < 0) {
                *yes = p[i];
            }
        }
        else if (*no < 0) {
            *no = p[i];
        }
    }
}

static void
check_verdicts(const unsigned char *bc, long len,
               const struct fts_port_range *local, size_t nlocal,
               const struct fts_port_range *remote, size_t nremote,
               size_t limit)
{
    unsigned lp[2 + 4 * 16], rp[2 + 4 * 16];
    size_t nlp = probes(local, nlocal, limit, lp);
    size_t nrp = probes(remote, nremote, limit, rp);
    long lyes, lno, ryes, rno;
    witnesses(local, nlocal, lp, nlp, &lyes, &lno);
    witnesses(remote, nremote, rp, nrp, &ryes, &rno);

    for (size_t i = 0; i < nlp; i++) {
        int want = in_ranges(lp[i], local, nlocal);
        if (ryes >= 0 && bc_model_run(bc, (int)len, lp[i], (unsigned)ryes)
                             != want) {
            abort();
        }
        if (rno >= 0 && bc_model_run(bc, (int)len, lp[i], (unsigned)rno)) {
            abort();
        }
    }
    for (size_t i = 0; i < nrp; i++) {
        int want = in_ranges(rp[i], remote, nremote);
        if (lyes >= 0 && bc_model_run(bc, (int)len, (unsigned)lyes, rp[i])
                             != want) {
            abort();
        }
        if (lno >= 0 && bc_model_run(bc, (int)len, (unsigned)lno, rp[i])) {
            abort();
        }
    }
}

static void
check_request(const uint8_t *data, long len, int legacy)
{
    unsigned char req[FTS_REQUEST_MAXSIZE];
    uint32_t states = (uint32_t)data[7] | (uint32_t)data[8] << 8;
    uint32_t seq = (uint32_t)data[9] | (uint32_t)data[10] << 8;
    size_t n = fts_build_request(req, sizeof(req),
                                 legacy ? FTS_FORM_LEGACY : FTS_FORM_V2,
                                 AF_INET, states, seq, (size_t)len);
    size_t fixed = NLMSG_HDRLEN + (legacy ? sizeof(struct inet_diag_req)
                                          : sizeof(struct inet_diag_req_v2));
    if (len > 0xFFFF - NLA_HDRLEN) {
        if (n != 0) {
            abort();  /* the attribute's 16-bit length would overflow */
        }
        return;
    }
    size_t attr = len > 0 ? NLA_HDRLEN : 0;
    if (n != fixed + attr) {
        abort();
    }
    struct nlmsghdr h;
    memcpy(&h, req, sizeof(h));
    if (h.nlmsg_len != fixed + attr + (size_t)len || h.nlmsg_seq != seq
        || h.nlmsg_flags != (NLM_F_REQUEST | NLM_F_DUMP)) {
        abort();
    }
    if (len > 0) {
        struct nlattr a;
        memcpy(&a, req + fixed, sizeof(a));
        if (a.nla_type != INET_DIAG_REQ_BYTECODE
            || a.nla_len != NLA_HDRLEN + len) {
            abort();
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX) {
        return 0;
    }
    uint8_t opts = data[0];
    const uint8_t *body = data + PREFIX;
    size_t given = (size - PREFIX) / 4;
    size_t nlocal, nremote;
    int tile = (opts & 4) != 0;
    if (tile) {
        nlocal = le16(data + 3) % TILE_MAX;
        nremote = le16(data + 5) % TILE_MAX;
        if (given == 0 && nlocal + nremote > 0) {
            return 0;
        }
    }
    else {
        nlocal = data[5] < given ? data[5] : given;
        nremote = given - nlocal;
    }

    struct fts_port_range *ranges =
        malloc((nlocal + nremote + 1) * sizeof(*ranges));
    if (ranges == NULL) {
        return 0;
    }
    for (size_t i = 0; i < nlocal + nremote; i++) {
        const uint8_t *p = body + 4 * (i % (given ? given : 1));
        ranges[i].low = le16(p);
        ranges[i].high = le16(p + 2);
    }
    const struct fts_port_range *local = ranges;
    const struct fts_port_range *remote = ranges + nlocal;

    int valid = nlocal + nremote <= FTS_MAX_PORT_RANGES;
    for (size_t i = 0; i < nlocal + nremote; i++) {
        if (ranges[i].low > ranges[i].high) {
            valid = 0;
        }
    }
    size_t need = fts_port_filter_size(nlocal, nremote);
    size_t cap;
    switch (opts & 3) {
    case 0:
        cap = need;
        break;
    case 1:
        cap = need >= 4 ? need - 4 : 0;
        break;
    case 2:
        cap = le16(data + 1);
        break;
    default:
        cap = need + 64;
        break;
    }
    if (cap < need) {
        valid = 0;
    }

    /* Exactly `cap` bytes (one spare for malloc(0)), pre-filled. */
    unsigned char *bc = malloc(cap + 1);
    if (bc == NULL) {
        free(ranges);
        return 0;
    }
    memset(bc, PATTERN, cap + 1);
    long len = fts_build_port_filter(bc, cap, local, nlocal, remote, nremote);

    if (!valid) {
        if (len != -1) {
            abort();
        }
        for (size_t i = 0; i < cap; i++) {
            if (bc[i] != PATTERN) {
                abort();  /* a refused filter must write nothing */
            }
        }
    }
    else {
        if (len != (long)need || (len & 3) != 0) {
            abort();
        }
        for (size_t i = (size_t)len; i < cap; i++) {
            if (bc[i] != PATTERN) {
                abort();  /* nothing past the program */
            }
        }
        if (len == 0) {
            if (nlocal + nremote != 0) {
                abort();
            }
        }
        else {
            if (!bc_model_audit(bc, (int)len)) {
                abort();  /* the kernel would refuse it: EINVAL */
            }
            check_verdicts(bc, len, local, nlocal, remote, nremote,
                           tile ? 2 : 16);
        }
        if (opts & 8) {
            check_request(data, len, (opts & 16) != 0);
        }
    }
    free(bc);
    free(ranges);
    return 0;
}

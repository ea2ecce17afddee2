/*
 * Unit tests of the netlink parsing core (csrc/diag_msg.c), with no
 * kernel and no Python: replies are built by hand, including the malformed
 * ones a real kernel will not produce on demand.
 *
 * Built and run by tests/test_c_core.py (with ASan and UBSan where the
 * compiler has them).  Prints "N passed, N failed" and exits non-zero on
 * any failure.
 */
#include "check.h"
#include "diag.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#define PORTID 4242u
#define SEQ 7u


/* A reply under construction, in a buffer with room to spare. */
struct reply {
    unsigned char buf[8192];
    size_t len;
};

static void *
put_header(struct reply *r, uint16_t type, uint16_t flags, size_t paylen,
           uint32_t seq, uint32_t pid)
{
    struct nlmsghdr h;
    memset(&h, 0, sizeof(h));
    h.nlmsg_len = (uint32_t)NLMSG_LENGTH(paylen);
    h.nlmsg_type = type;
    h.nlmsg_flags = flags;
    h.nlmsg_seq = seq;
    h.nlmsg_pid = pid;
    memcpy(r->buf + r->len, &h, sizeof(h));
    void *payload = r->buf + r->len + NLMSG_HDRLEN;
    memset(payload, 0, NLMSG_ALIGN(paylen));
    r->len += NLMSG_ALIGN(h.nlmsg_len);
    return payload;
}

static void
put_socket(struct reply *r, uint8_t family, uint8_t state)
{
    struct inet_diag_msg m;
    memset(&m, 0, sizeof(m));
    m.idiag_family = family;
    m.idiag_state = state;
    void *p = put_header(r, SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, sizeof(m),
                         SEQ, PORTID);
    memcpy(p, &m, sizeof(m));
}

static void
put_done(struct reply *r, int32_t code)
{
    void *p = put_header(r, NLMSG_DONE, NLM_F_MULTI, sizeof(code), SEQ,
                         PORTID);
    memcpy(p, &code, sizeof(code));
}

static void
put_error(struct reply *r, int32_t code)
{
    struct nlmsgerr e;
    memset(&e, 0, sizeof(e));
    e.error = code;
    void *p = put_header(r, NLMSG_ERROR, 0, sizeof(e), SEQ, PORTID);
    memcpy(p, &e, sizeof(e));
}

static int
walk(const struct reply *r, struct fts_tally *t, struct fts_error *e)
{
    memset(t, 0, sizeof(*t));
    e->err = 0;
    e->what = NULL;
    return fts_walk(r->buf, r->len, SEQ, PORTID, t, e);
}

static void
test_tally_and_done(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    put_socket(&r, AF_INET, 1);
    put_socket(&r, AF_INET, 1);
    put_socket(&r, AF_INET6, 10);
    put_socket(&r, AF_INET6, 6);
    CHECK(walk(&r, &t, &e) == FTS_WALK_MORE);
    CHECK(t.n[FTS_IDX_IPV4][1] == 2);
    CHECK(t.n[FTS_IDX_IPV6][10] == 1);
    CHECK(t.n[FTS_IDX_IPV6][6] == 1);
    CHECK(t.dump_interrupted == 0);
    put_done(&r, 0);
    CHECK(walk(&r, &t, &e) == FTS_WALK_DONE);
    CHECK(t.n[FTS_IDX_IPV4][1] == 2);
}

static void
test_done_variants(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    put_done(&r, -EPERM);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPERM);

    /* A DONE with no payload, as very old kernels sent. */
    r.len = 0;
    put_header(&r, NLMSG_DONE, 0, 0, SEQ, PORTID);
    CHECK(walk(&r, &t, &e) == FTS_WALK_DONE);

    /* A DONE with a 2-byte payload: too short to hold a code. */
    r.len = 0;
    put_header(&r, NLMSG_DONE, 0, 2, SEQ, PORTID);
    CHECK(walk(&r, &t, &e) == FTS_WALK_DONE);

    r.len = 0;
    put_done(&r, INT32_MIN);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);
}

static void
test_error_messages(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    put_error(&r, -EINVAL);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EINVAL);
    CHECK(e.what != NULL && strstr(e.what, "refused") != NULL);

    r.len = 0;
    put_error(&r, EACCES);  /* positive: sign normalised */
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EACCES);

    r.len = 0;
    put_error(&r, 0);  /* an ACK: not expected in a dump */
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);

    r.len = 0;
    put_error(&r, INT32_MIN);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);

    r.len = 0;
    put_header(&r, NLMSG_ERROR, 0, 2, SEQ, PORTID);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);

    r.len = 0;
    put_header(&r, NLMSG_OVERRUN, 0, 0, SEQ, PORTID);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == ENOBUFS);
}

static void
test_identity_checks(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    struct inet_diag_msg m;
    memset(&m, 0, sizeof(m));
    m.idiag_family = AF_INET;
    m.idiag_state = 1;

    void *p = put_header(&r, SOCK_DIAG_BY_FAMILY, 0, sizeof(m), SEQ + 1,
                         PORTID);
    memcpy(p, &m, sizeof(m));
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);
    CHECK(t.n[FTS_IDX_IPV4][1] == 0);

    r.len = 0;
    p = put_header(&r, SOCK_DIAG_BY_FAMILY, 0, sizeof(m), SEQ, PORTID + 1);
    memcpy(p, &m, sizeof(m));
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == ESRCH);
}

static void
test_malformed(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;

    /* Shorter than a header. */
    put_socket(&r, AF_INET, 1);
    r.len = 10;
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);

    /* nlmsg_len 0 would loop forever if accepted. */
    r.len = 0;
    put_socket(&r, AF_INET, 1);
    memset(r.buf, 0, 4);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);

    /* nlmsg_len past the end of the buffer. */
    r.len = 0;
    put_socket(&r, AF_INET, 1);
    r.len -= 8;
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);

    /* Huge nlmsg_len. */
    r.len = 0;
    put_socket(&r, AF_INET, 1);
    uint32_t huge = 0xFFFFFFFFu;
    memcpy(r.buf, &huge, sizeof(huge));
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);

    /* A socket message too short for an inet_diag_msg. */
    r.len = 0;
    put_header(&r, SOCK_DIAG_BY_FAMILY, 0, 8, SEQ, PORTID);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);

    /* Unknown family, state out of range, unknown type. */
    r.len = 0;
    put_socket(&r, AF_UNIX, 1);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    r.len = 0;
    put_socket(&r, AF_INET, FTS_NSTATES);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
    r.len = 0;
    put_header(&r, 99, 0, 0, SEQ, PORTID);
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);

    /* A trailing fragment after a good message. */
    r.len = 0;
    put_socket(&r, AF_INET, 1);
    r.len += 3;
    CHECK(walk(&r, &t, &e) == FTS_WALK_ERROR);
}

static void
test_unpadded_last_message_and_noop(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    put_header(&r, NLMSG_NOOP, 0, 0, SEQ, PORTID);
    put_socket(&r, AF_INET6, 3);
    /* A message whose length is not a multiple of 4, last in the buffer. */
    struct inet_diag_msg m;
    memset(&m, 0, sizeof(m));
    m.idiag_family = AF_INET;
    m.idiag_state = 2;
    void *p = put_header(&r, SOCK_DIAG_BY_FAMILY, 0, sizeof(m) + 1, SEQ,
                         PORTID);
    memcpy(p, &m, sizeof(m));
    r.len -= 3;  /* drop the padding */
    CHECK(walk(&r, &t, &e) == FTS_WALK_MORE);
    CHECK(t.n[FTS_IDX_IPV6][3] == 1);
    CHECK(t.n[FTS_IDX_IPV4][2] == 1);
}

static void
test_dump_interrupted_flag(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    struct inet_diag_msg m;
    memset(&m, 0, sizeof(m));
    m.idiag_family = AF_INET;
    m.idiag_state = 1;
    void *p = put_header(&r, SOCK_DIAG_BY_FAMILY,
                         NLM_F_MULTI | NLM_F_DUMP_INTR, sizeof(m), SEQ,
                         PORTID);
    memcpy(p, &m, sizeof(m));
    CHECK(walk(&r, &t, &e) == FTS_WALK_MORE);
    CHECK(t.dump_interrupted == 1);
    CHECK(t.n[FTS_IDX_IPV4][1] == 1);
}

static void
test_unaligned_buffer(void)
{
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    put_socket(&r, AF_INET, 1);
    put_done(&r, 0);
    unsigned char *copy = malloc(r.len + 1);
    CHECK(copy != NULL);
    if (copy == NULL) {
        return;
    }
    memcpy(copy + 1, r.buf, r.len);
    memset(&t, 0, sizeof(t));
    CHECK(fts_walk(copy + 1, r.len, SEQ, PORTID, &t, &e) == FTS_WALK_DONE);
    CHECK(t.n[FTS_IDX_IPV4][1] == 1);
    free(copy);
}

static void
test_build_requests(void)
{
    unsigned char buf[FTS_REQUEST_MAXSIZE];
    struct nlmsghdr h;

    size_t n = fts_build_request(buf, sizeof(buf), FTS_FORM_V2, AF_INET6,
                                 FTS_STATES_ALL, 99, 0);
    CHECK(n == NLMSG_LENGTH(sizeof(struct inet_diag_req_v2)));
    memcpy(&h, buf, sizeof(h));
    CHECK(h.nlmsg_len == n);
    CHECK(h.nlmsg_type == SOCK_DIAG_BY_FAMILY);
    CHECK(h.nlmsg_flags == (NLM_F_REQUEST | NLM_F_DUMP));
    CHECK(h.nlmsg_seq == 99);
    struct inet_diag_req_v2 v2;
    memcpy(&v2, buf + NLMSG_HDRLEN, sizeof(v2));
    CHECK(v2.sdiag_family == AF_INET6);
    CHECK(v2.sdiag_protocol == IPPROTO_TCP);
    CHECK(v2.idiag_ext == 0);
    CHECK(v2.idiag_states == FTS_STATES_ALL);
    /* Neither NEW_SYN_RECV (12) nor BOUND_INACTIVE (13) is asked for. */
    CHECK((v2.idiag_states & ((1u << 12) | (1u << 13))) == 0);

    n = fts_build_request(buf, sizeof(buf), FTS_FORM_LEGACY, AF_UNSPEC,
                          1u << 10, 5, 0);
    CHECK(n == NLMSG_LENGTH(sizeof(struct inet_diag_req)));
    memcpy(&h, buf, sizeof(h));
    CHECK(h.nlmsg_type == TCPDIAG_GETSOCK);
    struct inet_diag_req legacy;
    memcpy(&legacy, buf + NLMSG_HDRLEN, sizeof(legacy));
    CHECK(legacy.idiag_ext == 0);
    CHECK(legacy.idiag_states == (1u << 10));

    CHECK(fts_build_request(buf, 8, FTS_FORM_V2, AF_INET, 2, 1, 0) == 0);
    CHECK(fts_build_request(buf, 8, FTS_FORM_LEGACY, AF_INET, 2, 1, 0) == 0);

    /* With bytecode: the attribute header follows, nlmsg_len covers the
     * bytecode the caller sends after it. */
    n = fts_build_request(buf, sizeof(buf), FTS_FORM_V2, AF_INET, 2, 1, 36);
    CHECK(n == NLMSG_LENGTH(sizeof(struct inet_diag_req_v2)) + NLA_HDRLEN);
    memcpy(&h, buf, sizeof(h));
    CHECK(h.nlmsg_len == n + 36);
    struct nlattr a;
    memcpy(&a, buf + n - NLA_HDRLEN, sizeof(a));
    CHECK(a.nla_type == INET_DIAG_REQ_BYTECODE);
    CHECK(a.nla_len == NLA_HDRLEN + 36);
    n = fts_build_request(buf, sizeof(buf), FTS_FORM_LEGACY, AF_INET, 2, 1,
                          8);
    CHECK(n == NLMSG_LENGTH(sizeof(struct inet_diag_req)) + NLA_HDRLEN);
    /* Unaligned or oversized bytecode is refused. */
    CHECK(fts_build_request(buf, sizeof(buf), FTS_FORM_V2, AF_INET, 2, 1,
                            6) == 0);
    CHECK(fts_build_request(buf, sizeof(buf), FTS_FORM_V2, AF_INET, 2, 1,
                            0x10000) == 0);
}

static void
put_socket_ports(struct reply *r, uint8_t family, uint8_t state,
                 uint16_t sport, uint16_t dport)
{
    struct inet_diag_msg m;
    memset(&m, 0, sizeof(m));
    m.idiag_family = family;
    m.idiag_state = state;
    m.id.idiag_sport = htons(sport);
    m.id.idiag_dport = htons(dport);
    void *p = put_header(r, SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, sizeof(m),
                         SEQ, PORTID);
    memcpy(p, &m, sizeof(m));
}

static void
test_by_port_and_family_mask(void)
{
    static uint16_t slots[65536];
    fts_state_counts by_port[2];
    struct reply r = {.len = 0};
    struct fts_tally t;
    struct fts_error e;
    put_socket_ports(&r, AF_INET, 1, 443, 50000);
    put_socket_ports(&r, AF_INET6, 1, 443, 50001);
    put_socket_ports(&r, AF_INET6, 10, 8443, 0);
    put_socket_ports(&r, AF_INET, 1, 22, 443);

    memset(slots, 0, sizeof(slots));
    memset(by_port, 0, sizeof(by_port));
    slots[443] = 1;
    slots[8443] = 2;
    memset(&t, 0, sizeof(t));
    t.port_slot = slots;
    t.by_port = by_port;
    CHECK(fts_walk(r.buf, r.len, SEQ, PORTID, &t, &e) == FTS_WALK_MORE);
    CHECK(by_port[0][FTS_IDX_IPV4][1] == 1);
    CHECK(by_port[0][FTS_IDX_IPV6][1] == 1);
    CHECK(by_port[1][FTS_IDX_IPV6][10] == 1);
    CHECK(t.n[FTS_IDX_IPV4][1] == 2);  /* totals keep every socket */

    /* Keyed on the remote port. */
    memset(by_port, 0, sizeof(by_port));
    memset(&t, 0, sizeof(t));
    t.port_slot = slots;
    t.by_port = by_port;
    t.by_remote = 1;
    CHECK(fts_walk(r.buf, r.len, SEQ, PORTID, &t, &e) == FTS_WALK_MORE);
    CHECK(by_port[0][FTS_IDX_IPV4][1] == 1);
    CHECK(by_port[0][FTS_IDX_IPV6][1] == 0);
    CHECK(by_port[1][FTS_IDX_IPV6][10] == 0);

    /* The legacy request's single walk: keep one family only. */
    memset(&t, 0, sizeof(t));
    t.families = FTS_FAMILY_IPV6;
    CHECK(fts_walk(r.buf, r.len, SEQ, PORTID, &t, &e) == FTS_WALK_MORE);
    CHECK(t.n[FTS_IDX_IPV4][1] == 0);
    CHECK(t.n[FTS_IDX_IPV6][1] == 1);
    CHECK(t.n[FTS_IDX_IPV6][10] == 1);
}

int
main(void)
{
    test_tally_and_done();
    test_done_variants();
    test_error_messages();
    test_identity_checks();
    test_malformed();
    test_unpadded_last_message_and_noop();
    test_dump_interrupted_flag();
    test_unaligned_buffer();
    test_build_requests();
    test_by_port_and_family_mask();
    return report();
}

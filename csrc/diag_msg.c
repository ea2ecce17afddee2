/*
 * Building inet_diag requests and walking netlink replies.
 *
 * Every read of the reply buffer goes through memcpy or single bytes: the
 * buffer may come from a fuzzer at any alignment, and a malformed reply
 * must end in an error, never in a read past `len`.
 */
#include "diag.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

struct request_v2 {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
};

struct request_legacy {
    struct nlmsghdr nlh;
    struct inet_diag_req req;
};

/* Fill the request's fixed part; the caller has zeroed it. */
static void
put_request_header(struct nlmsghdr *nlh, uint16_t type, uint32_t seq,
                   size_t len)
{
    nlh->nlmsg_len = (uint32_t)len;
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
}

size_t
fts_build_request(void *buf, size_t cap, enum fts_request_form form,
                  int family, uint32_t states, uint32_t seq,
                  size_t bytecode_len)
{
    /* The attribute's length is 16 bits and includes its header. */
    if (bytecode_len > 0xFFFF - NLA_HDRLEN || (bytecode_len & 3) != 0) {
        return 0;
    }
    size_t attr = bytecode_len > 0 ? NLA_HDRLEN : 0;
    size_t fixed;
    /* idiag_ext stays 0: any extension (INET_DIAG_INFO above all) makes the
     * kernel build data per socket that a counter never reads. */
    if (form == FTS_FORM_LEGACY) {
        struct request_legacy r;
        fixed = sizeof(r);
        if (cap < fixed + attr) {
            return 0;
        }
        memset(&r, 0, sizeof(r));
        put_request_header(&r.nlh, TCPDIAG_GETSOCK, seq,
                           fixed + attr + bytecode_len);
        r.req.idiag_family = AF_INET;  /* the compat path ignores it */
        r.req.idiag_states = states;
        memcpy(buf, &r, sizeof(r));
    }
    else {
        struct request_v2 r;
        fixed = sizeof(r);
        if (cap < fixed + attr) {
            return 0;
        }
        memset(&r, 0, sizeof(r));
        put_request_header(&r.nlh, SOCK_DIAG_BY_FAMILY, seq,
                           fixed + attr + bytecode_len);
        r.req.sdiag_family = (uint8_t)family;
        r.req.sdiag_protocol = IPPROTO_TCP;
        r.req.idiag_states = states;
        memcpy(buf, &r, sizeof(r));
    }
    if (attr > 0) {
        struct nlattr a;
        a.nla_len = (uint16_t)(NLA_HDRLEN + bytecode_len);
        a.nla_type = INET_DIAG_REQ_BYTECODE;
        memcpy((unsigned char *)buf + fixed, &a, sizeof(a));
    }
    return fixed + attr;
}


/* NLMSG_ERROR carries the kernel's negative errno; 0 would be an ACK,
 * which a dump without NLM_F_ACK does not produce. */
static int
on_error_message(const unsigned char *payload, size_t paylen,
                 struct fts_error *err)
{
    int32_t code;
    if (paylen < sizeof(code)) {
        return fts_fail(err, EPROTO,
                    "malformed netlink reply: NLMSG_ERROR too short");
    }
    memcpy(&code, payload, sizeof(code));
    if (code == 0) {
        return fts_fail(err, EPROTO,
                    "malformed netlink reply: unexpected acknowledgement");
    }
    /* Normalise the sign: some senders use positive codes.  Guard the
     * one value whose negation overflows. */
    if (code == INT32_MIN) {
        return fts_fail(err, EPROTO,
                    "malformed netlink reply: NLMSG_ERROR code out of range");
    }
    return fts_fail(err, code < 0 ? -code : code,
                    "kernel refused the request");
}

/* NLMSG_DONE may carry the dump's final error code (an int). */
static int
on_done_message(const unsigned char *payload, size_t paylen,
                struct fts_error *err)
{
    int32_t code;
    if (paylen < sizeof(code)) {
        return FTS_WALK_DONE;
    }
    memcpy(&code, payload, sizeof(code));
    if (code < 0) {
        if (code == INT32_MIN) {
            return fts_fail(err, EPROTO,
                        "malformed netlink reply: NLMSG_DONE code out of "
                        "range");
        }
        return fts_fail(err, -code, "kernel ended the dump with an error");
    }
    return FTS_WALK_DONE;
}

static int
on_socket_message(const unsigned char *payload, size_t paylen,
                  struct fts_tally *tally, struct fts_error *err)
{
    /* Only the first two bytes are read, but a shorter message than an
     * inet_diag_msg is not one the kernel sends. */
    if (paylen < sizeof(struct inet_diag_msg)) {
        return fts_fail(err, EPROTO,
                    "malformed netlink reply: inet_diag_msg truncated");
    }
    uint8_t family = payload[offsetof(struct inet_diag_msg, idiag_family)];
    uint8_t state = payload[offsetof(struct inet_diag_msg, idiag_state)];
    size_t port_at = offsetof(struct inet_diag_msg, id)
                     + (tally->by_remote
                        ? offsetof(struct inet_diag_sockid, idiag_dport)
                        : offsetof(struct inet_diag_sockid, idiag_sport));
    int idx;
    if (family == AF_INET) {
        idx = FTS_IDX_IPV4;
    }
    else if (family == AF_INET6) {
        idx = FTS_IDX_IPV6;
    }
    else {
        return fts_fail(err, EPROTO,
                    "malformed netlink reply: unexpected address family");
    }
    if (state >= FTS_NSTATES) {
        return fts_fail(err, EPROTO,
                    "malformed netlink reply: TCP state out of range");
    }
    if (tally->families != 0 && !(tally->families & (1u << idx))) {
        return FTS_WALK_MORE;
    }
    tally->n[idx][state]++;
    if (tally->port_slot != NULL) {
        /* Ports travel in network byte order. */
        uint16_t port = (uint16_t)((payload[port_at] << 8)
                                   | payload[port_at + 1]);
        uint16_t slot = tally->port_slot[port];
        if (slot != 0) {
            tally->by_port[slot - 1][idx][state]++;
        }
    }
    if (tally->on_socket != NULL) {
        return tally->on_socket(tally->on_socket_arg, payload, paylen, idx,
                                state, err);
    }
    return FTS_WALK_MORE;
}

int
fts_walk(const void *buf, size_t len, uint32_t seq, uint32_t portid,
         struct fts_tally *tally, struct fts_error *err)
{
    const unsigned char *p = buf;

    while (len > 0) {
        struct nlmsghdr h;
        if (len < sizeof(h)) {
            return fts_fail(err, EPROTO,
                        "malformed netlink reply: truncated header");
        }
        memcpy(&h, p, sizeof(h));
        if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > len) {
            return fts_fail(err, EPROTO,
                        "malformed netlink reply: bad message length");
        }
        if (h.nlmsg_pid != portid) {
            return fts_fail(err, ESRCH,
                        "netlink reply addressed to another port id");
        }
        if (h.nlmsg_seq != seq) {
            return fts_fail(err, EPROTO,
                        "netlink reply with an unexpected sequence number");
        }
        if (h.nlmsg_flags & NLM_F_DUMP_INTR) {
            tally->dump_interrupted = 1;
        }

        const unsigned char *payload = p + sizeof(h);
        size_t paylen = h.nlmsg_len - sizeof(h);
        int rc;
        switch (h.nlmsg_type) {
        case NLMSG_NOOP:
            rc = FTS_WALK_MORE;
            break;
        case NLMSG_ERROR:
            return on_error_message(payload, paylen, err);
        case NLMSG_DONE:
            return on_done_message(payload, paylen, err);
        case NLMSG_OVERRUN:
            return fts_fail(err, ENOBUFS, "netlink reported an overrun");
        case SOCK_DIAG_BY_FAMILY:
        case TCPDIAG_GETSOCK:
            rc = on_socket_message(payload, paylen, tally, err);
            break;
        default:
            return fts_fail(err, EPROTO,
                        "malformed netlink reply: unexpected message type");
        }
        if (rc != FTS_WALK_MORE) {
            return rc;
        }

        /* The last message of a datagram need not be padded. */
        size_t step = ((size_t)h.nlmsg_len + NLMSG_ALIGNTO - 1)
                      & ~(size_t)(NLMSG_ALIGNTO - 1);
        if (step >= len) {
            break;
        }
        p += step;
        len -= step;
    }
    return FTS_WALK_MORE;
}

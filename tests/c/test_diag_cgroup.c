/*
 * Unit tests of the per-cgroup core (csrc/diag_cgroup.c): reply payloads
 * built by hand, with the attributes a kernel sends and malformed ones,
 * and the bounded tally's collisions, buckets and bound.
 *
 * Built and run by tests/test_c_core.py.
 */
#include "check.h"
#include "diag_cgroup.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/* One inet_diag_msg payload and its attributes. */
struct payload {
    unsigned char buf[512];
    size_t len;
};

static void
start(struct payload *m)
{
    memset(m, 0, sizeof(*m));
    m->len = NLMSG_ALIGN(sizeof(struct inet_diag_msg));
}

static void
put_attr(struct payload *m, uint16_t type, const void *data, size_t len)
{
    struct rtattr a;
    a.rta_len = (unsigned short)RTA_LENGTH(len);
    a.rta_type = type;
    memcpy(m->buf + m->len, &a, sizeof(a));
    if (len > 0) {
        memcpy(m->buf + m->len + RTA_LENGTH(0), data, len);
    }
    m->len += RTA_ALIGN(a.rta_len);
}

/* What inet_diag_msg_attrs_fill() puts: shutdown, a pad for the u64's
 * alignment, the cgroup id. */
static void
put_kernel_attrs(struct payload *m, uint64_t id)
{
    uint8_t shutdown = 0;
    put_attr(m, INET_DIAG_SHUTDOWN, &shutdown, 1);
    put_attr(m, INET_DIAG_PAD, NULL, 0);
    put_attr(m, INET_DIAG_CGROUP_ID, &id, sizeof(id));
}

static void
test_extract(void)
{
    struct payload m;
    uint64_t id = 0;

    start(&m);
    put_kernel_attrs(&m, UINT64_C(0x123456789abcdef0));
    CHECK(fts_diag_cgroup_id(m.buf, m.len, &id) == 1);
    CHECK(id == UINT64_C(0x123456789abcdef0));

    /* At an odd address: memcpy reads only. */
    unsigned char shifted[sizeof(m.buf) + 1];
    memcpy(shifted + 1, m.buf, m.len);
    id = 0;
    CHECK(fts_diag_cgroup_id(shifted + 1, m.len, &id) == 1);
    CHECK(id == UINT64_C(0x123456789abcdef0));

    /* The type's flag bits are ignored. */
    start(&m);
    uint64_t seven = 7;
    put_attr(&m, INET_DIAG_CGROUP_ID | NLA_F_NET_BYTEORDER, &seven, 8);
    CHECK(fts_diag_cgroup_id(m.buf, m.len, &id) == 1 && id == 7);

    /* A timewait or request socket: no attributes at all. */
    start(&m);
    CHECK(fts_diag_cgroup_id(m.buf, m.len, &id) == 0);
    /* Other attributes only (a kernel < 5.7). */
    uint8_t shutdown = 3;
    put_attr(&m, INET_DIAG_SHUTDOWN, &shutdown, 1);
    CHECK(fts_diag_cgroup_id(m.buf, m.len, &id) == 0);
    /* Trailing bytes shorter than an attribute header. */
    CHECK(fts_diag_cgroup_id(m.buf, m.len + 3, &id) == 0);
}

static void
test_malformed(void)
{
    struct payload m;
    uint64_t id = 0;

    /* Shorter than an inet_diag_msg. */
    start(&m);
    CHECK(fts_diag_cgroup_id(m.buf, sizeof(struct inet_diag_msg) - 1, &id) == -1);

    /* An attribute running past the message. */
    start(&m);
    put_kernel_attrs(&m, 9);
    CHECK(fts_diag_cgroup_id(m.buf, m.len - 1, &id) == -1);

    /* A length below the header's own. */
    start(&m);
    struct rtattr bad = {.rta_len = 2, .rta_type = INET_DIAG_CGROUP_ID};
    memcpy(m.buf + m.len, &bad, sizeof(bad));
    CHECK(fts_diag_cgroup_id(m.buf, m.len + sizeof(bad), &id) == -1);

    /* A cgroup id of 4 bytes. */
    start(&m);
    uint32_t small = 5;
    put_attr(&m, INET_DIAG_CGROUP_ID, &small, sizeof(small));
    CHECK(fts_diag_cgroup_id(m.buf, m.len, &id) == -1);

    /* Every truncation of a good message: never a read past the end
     * (ASan), and never an id that is not there. */
    start(&m);
    put_kernel_attrs(&m, 11);
    for (size_t len = 0; len < m.len; len++) {
        unsigned char copy[sizeof(m.buf)];
        memcpy(copy, m.buf, len);
        id = 0;
        int rc = fts_diag_cgroup_id(copy, len, &id);
        CHECK(rc != 1);
    }
}

static void
test_tally(void)
{
    struct fts_cgroup_slot slots[8];
    struct fts_cgroup_tally t;

    CHECK(fts_cgroup_tally_init(&t, slots, 6) == -1);
    CHECK(fts_cgroup_tally_init(&t, slots, 1) == -1);
    CHECK(fts_cgroup_tally_init(&t, slots, 8) == 0);

    CHECK(fts_cgroup_add(&t, 1, 100, FTS_IDX_IPV4, 1) == 0);
    CHECK(fts_cgroup_add(&t, 1, 100, FTS_IDX_IPV4, 1) == 0);
    CHECK(fts_cgroup_add(&t, 1, 100, FTS_IDX_IPV6, 10) == 0);
    CHECK(fts_cgroup_add(&t, 0, 0, FTS_IDX_IPV4, 6) == 0);
    /* Id 0 with found = 1 is a cgroup like any other, not "unowned". */
    CHECK(fts_cgroup_add(&t, 1, 0, FTS_IDX_IPV4, 1) == 0);

    const struct fts_cgroup_slot *s = fts_cgroup_find(&t, 100);
    CHECK(s != NULL && s->n[FTS_IDX_IPV4][1] == 2 && s->n[FTS_IDX_IPV6][10] == 1);
    s = fts_cgroup_find(&t, 0);
    CHECK(s != NULL && s->n[FTS_IDX_IPV4][1] == 1);
    CHECK(t.unowned[FTS_IDX_IPV4][6] == 1);
    CHECK(fts_cgroup_find(&t, 101) == NULL);
    CHECK(t.used == 2);

    /* Half of 8 slots: two more ids fit, the fifth overflows. */
    CHECK(fts_cgroup_add(&t, 1, 101, FTS_IDX_IPV4, 1) == 0);
    CHECK(fts_cgroup_add(&t, 1, 102, FTS_IDX_IPV4, 1) == 0);
    CHECK(fts_cgroup_add(&t, 1, 103, FTS_IDX_IPV4, 2) == 1);
    CHECK(fts_cgroup_add(&t, 1, 103, FTS_IDX_IPV4, 2) == 1);
    CHECK(t.overflow[FTS_IDX_IPV4][2] == 2);
    CHECK(fts_cgroup_find(&t, 103) == NULL);
    /* Known ids still count once the table is full. */
    CHECK(fts_cgroup_add(&t, 1, 101, FTS_IDX_IPV4, 1) == 0);
    CHECK(fts_cgroup_find(&t, 101)->n[FTS_IDX_IPV4][1] == 2);
    CHECK(t.used == 4);
}

static void
test_many_ids(void)
{
    /* Sequential ids (as the kernel allocates them) and ids that collide
     * in the low bits: every one found again with its own count. */
    static struct fts_cgroup_slot slots[4096];
    struct fts_cgroup_tally t;
    CHECK(fts_cgroup_tally_init(&t, slots, 4096) == 0);
    int ok = 1;
    for (uint64_t i = 0; i < 1024; i++) {
        uint64_t id = i < 512 ? 5000 + i : (i << 40);
        for (uint64_t k = 0; k <= i % 3; k++) {
            ok &= fts_cgroup_add(&t, 1, id, FTS_IDX_IPV6, 1) == 0;
        }
    }
    for (uint64_t i = 0; i < 1024; i++) {
        uint64_t id = i < 512 ? 5000 + i : (i << 40);
        const struct fts_cgroup_slot *s = fts_cgroup_find(&t, id);
        ok &= s != NULL && s->n[FTS_IDX_IPV6][1] == i % 3 + 1;
    }
    CHECK(ok);
    CHECK(t.used == 1024);
}

/* The walk's hook: full sockets must carry an id, timewait and request
 * sockets go to unowned, malformed attributes stop the walk. */
static void
test_on_socket(void)
{
    struct fts_cgroup_slot slots[8];
    struct fts_cgroup_tally t;
    struct fts_error e = {0, NULL};
    struct payload m;
    CHECK(fts_cgroup_tally_init(&t, slots, 8) == 0);

    start(&m);
    put_kernel_attrs(&m, 42);
    CHECK(fts_cgroup_on_socket(&t, m.buf, m.len, FTS_IDX_IPV4, TCP_LISTEN, &e)
          == FTS_WALK_MORE);
    const struct fts_cgroup_slot *s = fts_cgroup_find(&t, 42);
    CHECK(s != NULL && s->n[FTS_IDX_IPV4][TCP_LISTEN] == 1);

    start(&m);
    CHECK(fts_cgroup_on_socket(&t, m.buf, m.len, FTS_IDX_IPV6, TCP_TIME_WAIT, &e)
          == FTS_WALK_MORE);
    CHECK(fts_cgroup_on_socket(&t, m.buf, m.len, FTS_IDX_IPV6, TCP_SYN_RECV, &e)
          == FTS_WALK_MORE);
    /* An orphan's timewait socket in FIN_WAIT2: no attributes either. */
    CHECK(fts_cgroup_on_socket(&t, m.buf, m.len, FTS_IDX_IPV6, TCP_FIN_WAIT2, &e)
          == FTS_WALK_MORE);
    CHECK(t.unowned[FTS_IDX_IPV6][TCP_TIME_WAIT] == 1);
    CHECK(t.unowned[FTS_IDX_IPV6][TCP_SYN_RECV] == 1);
    CHECK(t.unowned[FTS_IDX_IPV6][TCP_FIN_WAIT2] == 1);

    /* A full socket without an id: a kernel older than 5.7. */
    uint8_t shutdown = 0;
    put_attr(&m, INET_DIAG_SHUTDOWN, &shutdown, 1);
    CHECK(fts_cgroup_on_socket(&t, m.buf, m.len, FTS_IDX_IPV4,
                               TCP_ESTABLISHED, &e) == FTS_WALK_ERROR);
    CHECK(e.err == EOPNOTSUPP && strstr(e.what, "5.7") != NULL);
    CHECK(t.unowned[FTS_IDX_IPV4][TCP_ESTABLISHED] == 0);

    start(&m);
    put_kernel_attrs(&m, 42);
    CHECK(fts_cgroup_on_socket(&t, m.buf, m.len - 1, FTS_IDX_IPV4, TCP_LISTEN,
                               &e) == FTS_WALK_ERROR);
    CHECK(e.err == EPROTO);
    CHECK(s->n[FTS_IDX_IPV4][TCP_LISTEN] == 1);
}

int
main(void)
{
    test_extract();
    test_malformed();
    test_tally();
    test_many_ids();
    test_on_socket();
    return report();
}

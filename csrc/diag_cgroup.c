/*
 * INET_DIAG_CGROUP_ID and the bounded per-cgroup tally.
 *
 * As in diag_msg.c, the reply buffer is only read through memcpy or
 * single bytes: it may come from a fuzzer at any alignment.
 */
#include "diag_cgroup.h"

#include <errno.h>
#include <string.h>
#include <netinet/tcp.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/* Find attribute `type` after the inet_diag_msg: 1 with *at (its offset
 * in `payload`) and *len (its length, header included) set, 0 if there is
 * none, -1 if the attributes are malformed. */
static int
find_attr(const unsigned char *p, size_t paylen, unsigned type, size_t *at,
          size_t *len)
{
    size_t off = NLMSG_ALIGN(sizeof(struct inet_diag_msg));

    if (paylen < sizeof(struct inet_diag_msg)) {
        return -1;
    }
    while (off + sizeof(struct rtattr) <= paylen) {
        struct rtattr a;
        memcpy(&a, p + off, sizeof(a));
        if (a.rta_len < sizeof(a) || a.rta_len > paylen - off) {
            return -1;
        }
        /* The kernel may set NLA_F_NESTED and NLA_F_NET_BYTEORDER. */
        if ((a.rta_type & NLA_TYPE_MASK) == type) {
            *at = off;
            *len = a.rta_len;
            return 1;
        }
        off += RTA_ALIGN(a.rta_len);
    }
    /* Fewer bytes left than an attribute header: padding at most. */
    return 0;
}

int
fts_diag_cgroup_id(const void *payload, size_t paylen, uint64_t *id)
{
    size_t at, len;
    int found = find_attr(payload, paylen, INET_DIAG_CGROUP_ID, &at, &len);
    if (found <= 0) {
        return found;
    }
    if (len < RTA_LENGTH(sizeof(*id))) {
        return -1;
    }
    memcpy(id, (const unsigned char *)payload + at + RTA_LENGTH(0),
           sizeof(*id));
    return 1;
}

int
fts_cgroup_tally_init(struct fts_cgroup_tally *tally,
                      struct fts_cgroup_slot *slots, size_t capacity)
{
    if (capacity < 2 || (capacity & (capacity - 1)) != 0) {
        return -1;
    }
    memset(tally, 0, sizeof(*tally));
    memset(slots, 0, capacity * sizeof(*slots));
    tally->slots = slots;
    tally->capacity = capacity;
    return 0;
}

/* Fibonacci hashing: cgroup ids are allocated in sequence, and
 * multiplying spreads neighbours over the table. */
static size_t
slot_of(const struct fts_cgroup_tally *tally, uint64_t id)
{
    return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 32)
           & (tally->capacity - 1);
}

/* The slot holding `id`, or the empty slot where it would go. */
static struct fts_cgroup_slot *
probe(const struct fts_cgroup_tally *tally, uint64_t id)
{
    size_t i = slot_of(tally, id);
    /* Terminates: the table is never more than half full. */
    while (tally->slots[i].used && tally->slots[i].id != id) {
        i = (i + 1) & (tally->capacity - 1);
    }
    return &tally->slots[i];
}

/* Where cgroup `id`'s counts go: its slot (taken now if it has none),
 * else the unowned or the overflow bucket.  Sets *overflowed. */
static fts_state_counts *
counts_of(struct fts_cgroup_tally *tally, int found, uint64_t id,
          int *overflowed)
{
    *overflowed = 0;
    if (!found) {
        return &tally->unowned;
    }
    struct fts_cgroup_slot *slot = probe(tally, id);
    if (!slot->used) {
        if (tally->used + 1 > tally->capacity / 2) {
            *overflowed = 1;
            return &tally->overflow;
        }
        slot->used = 1;
        slot->id = id;
        tally->used++;
    }
    return &slot->n;
}

int
fts_cgroup_add(struct fts_cgroup_tally *tally, int found, uint64_t id,
               int family_idx, uint8_t state)
{
    int overflowed;
    fts_state_counts *n = counts_of(tally, found, id, &overflowed);
    (*n)[family_idx][state]++;
    return overflowed;
}

static int
family_kept(unsigned families, int f)
{
    return families == 0 || (families & (1u << f)) != 0;
}

void
fts_counts_add_row(fts_state_counts *dst, const volatile uint64_t *row,
                   unsigned families)
{
    for (int f = 0; f < FTS_NFAMILIES; f++) {
        for (int s = 0; s < FTS_NSTATES && family_kept(families, f); s++) {
            (*dst)[f][s] += row[FTS_NSTATES * f + s];
        }
    }
}

int
fts_cgroup_add_row(struct fts_cgroup_tally *tally, int found, uint64_t id,
                   const volatile uint64_t *row, unsigned families)
{
    uint64_t any = 0;
    for (int f = 0; f < FTS_NFAMILIES; f++) {
        for (int s = 0; s < FTS_NSTATES && family_kept(families, f); s++) {
            any |= row[FTS_NSTATES * f + s];
        }
    }
    if (any == 0) {
        return 0;
    }
    int overflowed;
    fts_counts_add_row(counts_of(tally, found, id, &overflowed), row,
                       families);
    return overflowed;
}

const struct fts_cgroup_slot *
fts_cgroup_find(const struct fts_cgroup_tally *tally, uint64_t id)
{
    const struct fts_cgroup_slot *slot = probe(tally, id);
    return slot->used ? slot : NULL;
}

int
fts_cgroup_on_socket(void *tally, const void *payload, size_t paylen,
                     int family_idx, uint8_t state, struct fts_error *err)
{
    (void)state;  /* a timewait socket may be FIN_WAIT2 as well */
    uint64_t id = 0;
    int found = fts_diag_cgroup_id(payload, paylen, &id);
    if (found < 0) {
        return fts_fail(err, EPROTO, "malformed netlink reply: bad "
                        "attributes after inet_diag_msg");
    }
    /* Timewait sockets (TIME_WAIT, and FIN_WAIT2 of an orphan) and
     * request sockets come with no attribute at all; a full socket always
     * with INET_DIAG_SHUTDOWN.  A full one without a cgroup id means a
     * kernel that sends none. */
    size_t at, len;
    if (!found
        && find_attr(payload, paylen, INET_DIAG_SHUTDOWN, &at, &len) == 1) {
        return fts_fail(err, EOPNOTSUPP, "the kernel sends no socket cgroup "
                        "(INET_DIAG_CGROUP_ID needs Linux >= 5.7 with "
                        "CONFIG_SOCK_CGROUP_DATA)");
    }
    fts_cgroup_add(tally, found, id, family_idx, state);
    return FTS_WALK_MORE;
}

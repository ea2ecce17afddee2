/*
 * Per-cgroup breakdown of a sock_diag dump: plain C, no system calls, no
 * allocation, like the rest of the netlink core.
 *
 * A full socket's reply carries INET_DIAG_CGROUP_ID (Linux >= 5.7): the
 * cgroup v2 id of the socket's owner, i.e. the inode number of the
 * cgroup's directory.  Timewait and request sockets carry none: they are
 * tallied in an explicit "unowned" bucket.  The table has a fixed number
 * of slots, given by the caller; sockets of cgroups beyond it are tallied
 * in an "overflow" bucket, so a host with more cgroups than expected
 * loses detail, never counts.
 *
 * The walk (diag_msg.c) hands each socket's payload, family and state
 * here through fts_tally.on_socket (fts_cgroup_on_socket below).
 */
#ifndef FASTTCPSTAT_DIAG_CGROUP_H
#define FASTTCPSTAT_DIAG_CGROUP_H

#include "diag.h"

#include <stddef.h>
#include <stdint.h>

/* Find INET_DIAG_CGROUP_ID among the attributes after the inet_diag_msg
 * at `payload` (the message minus its netlink header, `paylen` bytes).
 * Returns 1 with `*id` set, 0 if the message has none, -1 if the
 * attributes are malformed (a length past the message, a cgroup id
 * attribute shorter than 8 bytes) or the payload is shorter than an
 * inet_diag_msg. */
int fts_diag_cgroup_id(const void *payload, size_t paylen, uint64_t *id);

/* The most cgroups one count breaks down (a slot is 272 bytes, the
 * table twice as many slots: 2.2 MiB at most); sockets of further
 * cgroups are tallied in the overflow bucket. */
#define FTS_MAX_BY_CGROUP 4096

struct fts_cgroup_slot {
    uint64_t id;
    int used;
    fts_state_counts n;
};

struct fts_cgroup_tally {
    /* Caller-owned, `capacity` slots, a power of two; at most half are
     * filled, so that a probe stays short. */
    struct fts_cgroup_slot *slots;
    size_t capacity;
    size_t used;
    fts_state_counts unowned;
    fts_state_counts overflow;
};

/* Zero `slots` and attach them; returns -1 if `capacity` is not a power
 * of two of at least 2. */
int fts_cgroup_tally_init(struct fts_cgroup_tally *tally,
                          struct fts_cgroup_slot *slots, size_t capacity);

/* Tally one socket: `found` is fts_diag_cgroup_id()'s return (1 or 0),
 * `family_idx` an fts_family_index, `state` < FTS_NSTATES (checked by the
 * walk).  Returns 0, or 1 when the socket went to the overflow bucket. */
int fts_cgroup_add(struct fts_cgroup_tally *tally, int found, uint64_t id,
                   int family_idx, uint8_t state);

/* Add a row of counts (FTS_NFAMILIES * FTS_NSTATES, laid out as
 * fts_state_counts) to `dst`, keeping the families in `families`
 * (FTS_FAMILY_* bits, 0: both). */
void fts_counts_add_row(fts_state_counts *dst, const volatile uint64_t *row,
                        unsigned families);

/* Tally a row of counts at once (a BPF program's tally of one cgroup,
 * as for fts_counts_add_row); `found` 0
 * means unowned.  A row with nothing left after that takes no slot, as
 * a cgroup with no socket reported would not.  Returns 0, or 1 when the
 * row went to the overflow bucket. */
int fts_cgroup_add_row(struct fts_cgroup_tally *tally, int found,
                       uint64_t id, const volatile uint64_t *row,
                       unsigned families);

/* fts_tally.on_socket for a `struct fts_cgroup_tally *` arg: tallies
 * the socket by its cgroup; timewait sockets (TIME_WAIT, or FIN_WAIT2
 * for an orphan that closed first) and request sockets, which come with
 * no attribute at all, as unowned.  A full socket (it always carries
 * INET_DIAG_SHUTDOWN) without INET_DIAG_CGROUP_ID means a kernel older
 * than 5.7 or built without cgroup socket data: the walk stops with
 * EOPNOTSUPP rather than report every socket as unowned.  Malformed
 * attributes end it with EPROTO. */
int fts_cgroup_on_socket(void *tally, const void *payload, size_t paylen,
                         int family_idx, uint8_t state,
                         struct fts_error *err);

/* The slot of `id`, or NULL. */
const struct fts_cgroup_slot *
fts_cgroup_find(const struct fts_cgroup_tally *tally, uint64_t id);

#endif /* FASTTCPSTAT_DIAG_CGROUP_H */

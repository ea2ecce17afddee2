/*
 * fasttcpstat's netlink sock_diag core: plain C, no Python types.
 *
 * Two layers, in the spirit of libmnl:
 *   diag_msg.c   builds inet_diag requests into a caller-owned buffer and
 *                walks a buffer of netlink replies, tallying socket states.
 *                No system calls, no allocation: a fuzzer or a unit test
 *                can drive it with arbitrary bytes.
 *   diag_filter.c compiles port filters to inet_diag bytecode, also
 *                without system calls or allocation.
 *   diag_sock.c  owns the NETLINK_SOCK_DIAG socket: open, send, receive
 *                into one fixed buffer until NLMSG_DONE.
 */
#ifndef FASTTCPSTAT_DIAG_H
#define FASTTCPSTAT_DIAG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Tally slots, indexed by the kernel's TCP state number (1..11 in use). */
#define FTS_NSTATES 16

/* The kernel caps one dump chunk at 32 KiB (SKB_WITH_OVERHEAD(32768)), so
 * a larger receive buffer gains nothing; a smaller one truncates. */
#define FTS_RECV_BUFSIZE 32768

/* Room for either request form; both are well under this. */
#define FTS_REQUEST_MAXSIZE 128

/* Bits of the kernel's idiag_states for TCP_ESTABLISHED..TCP_CLOSING.
 * Bit 12 (NEW_SYN_RECV) is added by the kernel itself when SYN_RECV is
 * asked for; bit 13 (BOUND_INACTIVE) is left out on purpose: the kernel
 * would report those bound-only sockets as CLOSE. */
#define FTS_STATES_ALL 0xFFEu

/* Family selection, a bit mask. */
#define FTS_FAMILY_IPV4 1u
#define FTS_FAMILY_IPV6 2u
#define FTS_FAMILY_BOTH (FTS_FAMILY_IPV4 | FTS_FAMILY_IPV6)

enum fts_family_index {
    FTS_IDX_IPV4 = 0,
    FTS_IDX_IPV6 = 1,
    FTS_NFAMILIES = 2
};

/* Which request the dump is made of. */
enum fts_request_form {
    /* SOCK_DIAG_BY_FAMILY + inet_diag_req_v2, one request per family. */
    FTS_FORM_V2 = 0,
    /* TCPDIAG_GETSOCK + the legacy inet_diag_req: the kernel treats it as
     * family AF_UNSPEC and walks its socket tables once for both. */
    FTS_FORM_LEGACY = 1
};

/* Port filters: at most this many ranges in one program, so that every
 * jump fits the bytecode's 16-bit offsets and the attribute its 16-bit
 * length (20 bytes a range: 2048 ranges are 40 KiB). */
#define FTS_MAX_PORT_RANGES 2048

struct fts_port_range {
    uint16_t low;
    uint16_t high;  /* inclusive */
};

/* Per-port breakdown: at most this many ports, tallied in one dump. */
#define FTS_MAX_BY_PORT 1024

typedef uint64_t fts_state_counts[FTS_NFAMILIES][FTS_NSTATES];

/* What failed: a positive errno and a static description of the step. */
struct fts_error {
    int err;
    const char *what;
};

struct fts_tally {
    uint64_t n[FTS_NFAMILIES][FTS_NSTATES];
    /* Optional per-port breakdown.  port_slot has 65536 entries: 0 for a
     * port not broken down, else 1 + its index in by_port.  by_remote
     * keys on the remote port instead of the local one. */
    const uint16_t *port_slot;
    fts_state_counts *by_port;
    int by_remote;
    /* FTS_FAMILY_* mask of families to keep; 0 keeps both. */
    unsigned families;
    /* Optional: called for each socket kept, with its message payload
     * (after the netlink header), to tally more than the state, e.g. its
     * cgroup (diag_cgroup.c).  A pointer rather than a call, so that the
     * walk links without the breakdowns.  Returns FTS_WALK_MORE, or
     * FTS_WALK_ERROR with `err` filled in. */
    int (*on_socket)(void *arg, const void *payload, size_t paylen,
                     int family_idx, uint8_t state, struct fts_error *err);
    void *on_socket_arg;
    /* The kernel flagged NLM_F_DUMP_INTR.  It does not do so for inet
     * dumps today; kept so callers can tell if that ever changes. */
    int dump_interrupted;
};


/* Fill `err` and return -1 (FTS_WALK_ERROR): the one failure idiom of
 * the plain-C core. */
static inline int
fts_fail(struct fts_error *err, int code, const char *what)
{
    err->err = code;
    err->what = what;
    return -1;
}

/* Return values of fts_walk(), as in libmnl: error < 0, stop = 0,
 * go on > 0. */
#define FTS_WALK_ERROR (-1)
#define FTS_WALK_DONE 0
#define FTS_WALK_MORE 1

/* Build the fixed part of one dump request for `family` (AF_INET or
 * AF_INET6; ignored by the legacy form) asking for the TCP states in the
 * bit mask `states`.  With `bytecode_len` > 0 the request ends with the
 * header of an INET_DIAG_REQ_BYTECODE attribute whose `bytecode_len`
 * bytes of payload the caller sends right after (nlmsg_len counts them).
 * Returns the length written, or 0 if `cap` is too small or the
 * bytecode too long. */
size_t fts_build_request(void *buf, size_t cap, enum fts_request_form form,
                         int family, uint32_t states, uint32_t seq,
                         size_t bytecode_len);

/* Compile "local port in any of `local` and remote port in any of
 * `remote`" (an empty list puts no condition on that side) into `buf`.
 * Returns the program's length (0 for no condition at all), or -1 if a
 * range has low > high, there are more than FTS_MAX_PORT_RANGES ranges,
 * or `cap` is too small. */
long fts_build_port_filter(void *buf, size_t cap,
                           const struct fts_port_range *local, size_t nlocal,
                           const struct fts_port_range *remote,
                           size_t nremote);

/* The length fts_build_port_filter() needs for that many ranges. */
size_t fts_port_filter_size(size_t nlocal, size_t nremote);

/* Walk `len` bytes of netlink messages received for the request `seq` on
 * the socket bound to `portid`, adding each socket to `tally`.
 * Returns FTS_WALK_MORE when the buffer is used up and more is to come,
 * FTS_WALK_DONE on NLMSG_DONE, FTS_WALK_ERROR with `err` filled in. */
int fts_walk(const void *buf, size_t len, uint32_t seq, uint32_t portid,
             struct fts_tally *tally, struct fts_error *err);

/* A NETLINK_SOCK_DIAG socket.  `owner` is the pid that opened it: after
 * fork() the child must not share the parent's socket (and port id). */
struct fts_conn {
    int fd;
    uint32_t portid;
    uint32_t seq;
    pid_t owner;
};

/* A compiled filter to send with each request (not owned). */
struct fts_filter {
    const void *bytecode;
    size_t len;
};

/* Called when a system call returns EINTR (`interrupted` = 1) and after
 * each chunk of a dump (`interrupted` = 0).  The second is what makes a
 * signal seen during a long dump: recvmsg() of a netlink dump does not
 * block (the kernel builds the next chunk inside the call), so it never
 * returns EINTR and a signal would wait for the whole dump otherwise.
 * A non-zero return aborts the dump (the socket is then mid-dump and
 * must be closed).  The per-chunk call should be cheap. */
typedef int (*fts_interrupt_fn)(void *arg, int interrupted);

void fts_conn_init(struct fts_conn *conn);
/* Open the socket in the calling thread's network namespace (the dump
 * will always count that namespace). */
int fts_conn_open(struct fts_conn *conn, struct fts_error *err);
void fts_conn_close(struct fts_conn *conn);

/* Dump the TCP sockets of `families` in `states` and add them to `tally`
 * (which the caller zeroes), keeping only sockets that pass `filter`
 * (NULL or empty: all).  `buf` of `bufsize` bytes receives the
 * replies.  Returns 0, or -1 with `err` filled in.  On any error other
 * than a refusal reported by the kernel the connection may hold unread
 * replies: close it. */
int fts_count(struct fts_conn *conn, unsigned families, uint32_t states,
              enum fts_request_form form, const struct fts_filter *filter,
              void *buf, size_t bufsize,
              struct fts_tally *tally, fts_interrupt_fn on_interrupt,
              void *interrupt_arg, struct fts_error *err);

#endif /* FASTTCPSTAT_DIAG_H */

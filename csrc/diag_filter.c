/*
 * Compiling port filters to inet_diag bytecode (INET_DIAG_REQ_BYTECODE).
 *
 * The kernel runs the program on each socket before it builds a message,
 * so filtered-out sockets cost a comparison, not a copy.  The program for
 * "local port in L1 or L2 ... and remote port in R1 or R2 ..." is two
 * groups of alternatives, each alternative a pair of port comparisons:
 *
 *     GE lo  (false: next alternative, or reject if last)
 *     LE hi  (false: same)
 *     JMP    (to the end of the group; left out after the last alternative)
 *
 * The kernel's audit (inet_diag_bc_audit) walks ops by their `yes` field,
 * so `yes` is always the op's own length and only `no` jumps; a program
 * accepts a socket when execution falls off exactly at its end, and
 * rejects it by jumping 4 bytes past the end, the furthest the audit
 * allows.  Only original ops (GE, LE, JMP) are used: every kernel with
 * inet_diag accepts them.
 */
#include "diag.h"

#include <string.h>
#include <linux/inet_diag.h>

#define OP_SIZE ((size_t)sizeof(struct inet_diag_bc_op))
/* A port comparison is an op followed by an op-sized slot with the port. */
#define CMP_SIZE (2 * OP_SIZE)
#define ALT_SIZE (2 * CMP_SIZE)

static size_t
group_size(size_t n)
{
    /* Every alternative but the last is followed by a JMP. */
    return n == 0 ? 0 : n * ALT_SIZE + (n - 1) * OP_SIZE;
}

size_t
fts_port_filter_size(size_t nlocal, size_t nremote)
{
    return group_size(nlocal) + group_size(nremote);
}

static void
put_op(unsigned char *p, unsigned char code, size_t yes, size_t no)
{
    struct inet_diag_bc_op op;
    op.code = code;
    op.yes = (unsigned char)yes;
    op.no = (unsigned short)no;
    memcpy(p, &op, sizeof(op));
}

static void
put_compare(unsigned char *p, unsigned char code, size_t no, uint16_t port)
{
    put_op(p, code, CMP_SIZE, no);
    /* The kernel reads the port from the second op's `no` field. */
    put_op(p + OP_SIZE, INET_DIAG_BC_NOP, 0, port);
}

/* Write one group at `buf + start` in a program of `total` bytes. */
static void
put_group(unsigned char *buf, size_t start, size_t total,
          const struct fts_port_range *ranges, size_t n, int remote)
{
    unsigned char ge = remote ? INET_DIAG_BC_D_GE : INET_DIAG_BC_S_GE;
    unsigned char le = remote ? INET_DIAG_BC_D_LE : INET_DIAG_BC_S_LE;
    size_t end = start + group_size(n);
    size_t reject = total + OP_SIZE;
    size_t pos = start;

    for (size_t i = 0; i < n; i++) {
        int last = (i + 1 == n);
        size_t next = last ? reject : pos + ALT_SIZE + OP_SIZE;
        put_compare(buf + pos, ge, next - pos, ranges[i].low);
        pos += CMP_SIZE;
        put_compare(buf + pos, le, next - pos, ranges[i].high);
        pos += CMP_SIZE;
        if (!last) {
            put_op(buf + pos, INET_DIAG_BC_JMP, OP_SIZE, end - pos);
            pos += OP_SIZE;
        }
    }
}

long
fts_build_port_filter(void *buf, size_t cap,
                      const struct fts_port_range *local, size_t nlocal,
                      const struct fts_port_range *remote, size_t nremote)
{
    if (nlocal > FTS_MAX_PORT_RANGES || nremote > FTS_MAX_PORT_RANGES
        || nlocal + nremote > FTS_MAX_PORT_RANGES) {
        return -1;
    }
    for (size_t i = 0; i < nlocal; i++) {
        if (local[i].low > local[i].high) {
            return -1;
        }
    }
    for (size_t i = 0; i < nremote; i++) {
        if (remote[i].low > remote[i].high) {
            return -1;
        }
    }
    size_t total = fts_port_filter_size(nlocal, nremote);
    if (total > cap) {
        return -1;
    }
    put_group(buf, 0, total, local, nlocal, 0);
    put_group(buf, group_size(nlocal), total, remote, nremote, 1);
    return (long)total;
}

/*
 * The NETLINK_SOCK_DIAG socket: open, send a dump request, receive the
 * replies into one caller-owned buffer and hand them to fts_walk().
 *
 * Memory does not grow with the number of sockets: the only buffer is the
 * caller's, reused for every chunk of the dump.
 */
#include "diag.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>


void
fts_conn_init(struct fts_conn *conn)
{
    conn->fd = -1;
    conn->portid = 0;
    conn->seq = 0;
    conn->owner = 0;
}

int
fts_conn_open(struct fts_conn *conn, struct fts_error *err)
{
    struct sockaddr_nl addr;
    socklen_t addrlen = sizeof(addr);
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) {
        return fts_fail(err, errno, "socket(AF_NETLINK, NETLINK_SOCK_DIAG)");
    }
    /* Binding to port id 0 lets the kernel pick a unique one; we learn it
     * to check that each reply is really addressed to us. */
    memset(&addr, 0, sizeof(addr));
    addr.nl_family = AF_NETLINK;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int saved = errno;
        close(fd);
        return fts_fail(err, saved, "bind() of the netlink socket");
    }
    if (getsockname(fd, (struct sockaddr *)&addr, &addrlen) < 0) {
        int saved = errno;
        close(fd);
        return fts_fail(err, saved, "getsockname() of the netlink socket");
    }
    if (addrlen != sizeof(addr) || addr.nl_family != AF_NETLINK) {
        close(fd);
        return fts_fail(err, EPROTO,
                        "getsockname() returned a foreign address");
    }
    conn->fd = fd;
    conn->portid = addr.nl_pid;
    conn->owner = getpid();
    return 0;
}

void
fts_conn_close(struct fts_conn *conn)
{
    if (conn->fd >= 0) {
        /* close() is not retried on EINTR: on Linux the fd is gone. */
        close(conn->fd);
        conn->fd = -1;
    }
}

static uint32_t
next_seq(struct fts_conn *conn)
{
    /* Never 0, which is what an unsolicited message would carry. */
    conn->seq++;
    if (conn->seq == 0) {
        conn->seq = 1;
    }
    return conn->seq;
}

/* Send the request's fixed part and the bytecode as one datagram. */
static int
send_request(struct fts_conn *conn, const void *head, size_t headlen,
             const struct fts_filter *filter, fts_interrupt_fn on_interrupt,
             void *interrupt_arg, struct fts_error *err)
{
    struct sockaddr_nl kernel;
    memset(&kernel, 0, sizeof(kernel));
    kernel.nl_family = AF_NETLINK;
    struct iovec iov[2] = {
        {.iov_base = (void *)head, .iov_len = headlen},
        {.iov_base = (void *)filter->bytecode, .iov_len = filter->len},
    };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_name = &kernel;
    msg.msg_namelen = sizeof(kernel);
    msg.msg_iov = iov;
    msg.msg_iovlen = filter->len > 0 ? 2 : 1;
    size_t total = headlen + filter->len;
    for (;;) {
        ssize_t n = sendmsg(conn->fd, &msg, 0);
        if (n == (ssize_t)total) {
            return 0;
        }
        if (n >= 0) {
            return fts_fail(err, EIO, "sendmsg() of the inet_diag request was "
                                  "cut short");
        }
        if (errno != EINTR) {
            return fts_fail(err, errno, "sendmsg() of the inet_diag request");
        }
        if (on_interrupt != NULL && on_interrupt(interrupt_arg, 1)) {
            return fts_fail(err, EINTR, "sending the inet_diag request");
        }
    }
}

/* Receive one datagram; returns its length, or -1 with `err` set. */
static ssize_t
receive_chunk(struct fts_conn *conn, void *buf, size_t bufsize,
              fts_interrupt_fn on_interrupt, void *interrupt_arg,
              struct fts_error *err)
{
    for (;;) {
        struct sockaddr_nl from;
        struct iovec iov = {.iov_base = buf, .iov_len = bufsize};
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_name = &from;
        msg.msg_namelen = sizeof(from);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;

        ssize_t n = recvmsg(conn->fd, &msg, 0);
        if (n < 0) {
            if (errno != EINTR) {
                fts_fail(err, errno, "recvmsg() of the inet_diag dump");
                return -1;
            }
            if (on_interrupt != NULL && on_interrupt(interrupt_arg, 1)) {
                fts_fail(err, EINTR, "receiving the inet_diag dump");
                return -1;
            }
            continue;
        }
        if (msg.msg_flags & MSG_TRUNC) {
            fts_fail(err, ENOSPC, "a netlink reply did not fit the receive "
                              "buffer");
            return -1;
        }
        if (msg.msg_namelen != sizeof(from) || from.nl_pid != 0) {
            /* Other processes may unicast to our port id; only the
             * kernel's replies are data. */
            continue;
        }
        if (n == 0) {
            fts_fail(err, EPROTO, "the kernel sent an empty netlink reply");
            return -1;
        }
        return n;
    }
}

static int
dump_one(struct fts_conn *conn, enum fts_request_form form, int family,
         uint32_t states, const struct fts_filter *filter, void *buf,
         size_t bufsize, struct fts_tally *tally,
         fts_interrupt_fn on_interrupt, void *interrupt_arg,
         struct fts_error *err)
{
    unsigned char req[FTS_REQUEST_MAXSIZE];
    uint32_t seq = next_seq(conn);
    size_t reqlen = fts_build_request(req, sizeof(req), form, family, states,
                                      seq, filter->len);
    if (reqlen == 0) {
        return fts_fail(err, EINVAL, "building the inet_diag request");
    }
    if (send_request(conn, req, reqlen, filter, on_interrupt, interrupt_arg,
                     err) < 0) {
        return -1;
    }
    for (;;) {
        ssize_t n = receive_chunk(conn, buf, bufsize, on_interrupt,
                                  interrupt_arg, err);
        if (n < 0) {
            return -1;
        }
        int rc = fts_walk(buf, (size_t)n, seq, conn->portid, tally, err);
        if (rc == FTS_WALK_DONE) {
            return 0;
        }
        if (rc == FTS_WALK_ERROR) {
            return -1;
        }
        if (on_interrupt != NULL && on_interrupt(interrupt_arg, 0)) {
            return fts_fail(err, EINTR, "receiving the inet_diag dump");
        }
    }
}

int
fts_count(struct fts_conn *conn, unsigned families, uint32_t states,
          enum fts_request_form form, const struct fts_filter *filter,
          void *buf, size_t bufsize, struct fts_tally *tally,
          fts_interrupt_fn on_interrupt, void *interrupt_arg,
          struct fts_error *err)
{
    static const struct fts_filter no_filter = {NULL, 0};
    if (filter == NULL) {
        filter = &no_filter;
    }
    if (families == 0 || (families & ~FTS_FAMILY_BOTH) != 0) {
        return fts_fail(err, EINVAL, "families must be IPv4, IPv6 or both");
    }
    if ((states & ~FTS_STATES_ALL) != 0) {
        return fts_fail(err, EINVAL, "state mask has bits outside TCP states "
                                 "1..11");
    }
    if (states == 0) {
        return 0;   /* nothing asked, nothing to walk */
    }
    if (form == FTS_FORM_LEGACY) {
        /* One walk returns both families; drop the one not asked for. */
        /* One walk returns both families; the tally drops any family not
         * asked for. */
        tally->families = families;
        return dump_one(conn, form, AF_UNSPEC, states, filter, buf, bufsize,
                        tally, on_interrupt, interrupt_arg, err);
    }
    if ((families & FTS_FAMILY_IPV4)
        && dump_one(conn, form, AF_INET, states, filter, buf, bufsize,
                    tally, on_interrupt, interrupt_arg, err) < 0) {
        return -1;
    }
    if ((families & FTS_FAMILY_IPV6)
        && dump_one(conn, form, AF_INET6, states, filter, buf, bufsize,
                    tally, on_interrupt, interrupt_arg, err) < 0) {
        return -1;
    }
    return 0;
}

/*
 * bare_diag: the benchmark's yardstick.  The least a C program can do to
 * count TCP sockets per state through netlink sock_diag: one
 * NETLINK_SOCK_DIAG socket, an inet_diag_req_v2 dump for AF_INET and then
 * AF_INET6 (or, with --legacy, one TCPDIAG_GETSOCK dump for both), no
 * extensions, states 1..11, one static 32 KiB receive buffer, a tally of
 * idiag_state.  No error recovery beyond "report and exit".
 *
 *   bare_diag                 one count, prints {"ESTABLISHED": n, ...}
 *   bare_diag --loop N        N counts, one JSON line each with its cost
 *   bare_diag --serve         one count (with cost) per line read on stdin
 *
 * The cost of a count is measured inside this process like the Python
 * methods' (bench/worker.py): wall clock, user and system CPU from
 * getrusage(), and the peak RSS during the call (VmHWM after resetting it
 * through /proc/self/clear_refs) minus VmRSS before it.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o bare_diag bare_diag.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef TCPDIAG_GETSOCK
#define TCPDIAG_GETSOCK 18
#endif

#define STATES_ALL 0xFFEu /* TCP_ESTABLISHED (1) .. TCP_CLOSING (11) */
#define NSTATES 12

static const char *const state_names[NSTATES] = {
    NULL, "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
    "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
};

/* The kernel caps one dump chunk at 32 KiB: a larger buffer gains nothing. */
static char buf[32768] __attribute__((aligned(8)));

static void die(const char *what)
{
    fprintf(stderr, "bare_diag: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void send_request(int fd, int legacy, int family, uint32_t seq)
{
    struct {
        struct nlmsghdr nlh;
        union {
            struct inet_diag_req_v2 v2;
            struct inet_diag_req legacy;
        } u;
    } req;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    size_t len;

    memset(&req, 0, sizeof(req));
    if (legacy) {
        len = NLMSG_LENGTH(sizeof(req.u.legacy));
        req.nlh.nlmsg_type = TCPDIAG_GETSOCK;
        req.u.legacy.idiag_family = AF_INET; /* ignored: the walk is AF_UNSPEC */
        req.u.legacy.idiag_states = STATES_ALL;
    } else {
        len = NLMSG_LENGTH(sizeof(req.u.v2));
        req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        req.u.v2.sdiag_family = (uint8_t)family;
        req.u.v2.sdiag_protocol = IPPROTO_TCP;
        req.u.v2.idiag_states = STATES_ALL;
    }
    req.nlh.nlmsg_len = (uint32_t)len;
    req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.nlh.nlmsg_seq = seq;
    if (sendto(fd, &req, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        die("sendto");
}

/* Receive one dump's replies, adding each socket's state to tally. */
static void receive_dump(int fd, uint64_t *tally)
{
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("recv");
        }
        size_t left = (size_t)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left);
             h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_type == NLMSG_DONE)
                return;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                errno = -e->error;
                die("dump refused");
            }
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            if (m->idiag_state < NSTATES)
                tally[m->idiag_state]++;
        }
    }
}

static void count(int fd, int legacy, uint64_t *tally)
{
    static uint32_t seq;

    memset(tally, 0, NSTATES * sizeof(*tally));
    if (legacy) {
        send_request(fd, 1, 0, ++seq);
        receive_dump(fd, tally);
    } else {
        send_request(fd, 0, AF_INET, ++seq);
        receive_dump(fd, tally);
        send_request(fd, 0, AF_INET6, ++seq);
        receive_dump(fd, tally);
    }
}

static void print_counts(const uint64_t *tally)
{
    printf("{");
    for (int s = 1; s < NSTATES; s++)
        printf("%s\"%s\": %llu", s > 1 ? ", " : "", state_names[s],
               (unsigned long long)tally[s]);
    printf("}");
}

/* One field of /proc/self/status, in KiB ("VmRSS", "VmHWM"). */
static long status_kib(const char *field)
{
    char line[256];
    size_t flen = strlen(field);
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kib = strtol(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

/* Reset VmHWM to the current RSS (proc(5), clear_refs "5"). */
static void reset_peak_rss(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);

    if (fd >= 0) {
        if (write(fd, "5", 1) < 0) {
            /* not fatal: the peak then covers the process's whole life */
        }
        close(fd);
    }
}

static double seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void measured_count(int fd, int legacy)
{
    uint64_t tally[NSTATES];
    struct rusage r0, r1;
    struct timespec t0, t1;

    reset_peak_rss();
    long rss_before = status_kib("VmRSS");
    getrusage(RUSAGE_SELF, &r0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    count(fd, legacy, tally);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &r1);
    long hwm_after = status_kib("VmHWM");

    printf("{\"wall\": %.9f, \"user\": %.6f, \"sys\": %.6f, "
           "\"rss_before_kib\": %ld, \"hwm_after_kib\": %ld, \"counts\": ",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
           seconds(r1.ru_utime) - seconds(r0.ru_utime),
           seconds(r1.ru_stime) - seconds(r0.ru_stime), rss_before, hwm_after);
    print_counts(tally);
    printf("}\n");
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: bare_diag [--legacy] [--loop N | --serve]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int legacy = 0, serve = 0;
    long loops = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--legacy") == 0)
            legacy = 1;
        else if (strcmp(argv[i], "--serve") == 0)
            serve = 1;
        else if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc)
            loops = strtol(argv[++i], NULL, 10);
        else
            usage();
    }

    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        die("socket(AF_NETLINK, NETLINK_SOCK_DIAG)");

    if (serve) {
        char line[64];
        printf("{\"ready\": true, \"rss_kib\": %ld}\n", status_kib("VmRSS"));
        fflush(stdout);
        while (fgets(line, sizeof(line), stdin))
            measured_count(fd, legacy);
    } else if (loops > 0) {
        for (long i = 0; i < loops; i++)
            measured_count(fd, legacy);
    } else {
        uint64_t tally[NSTATES];
        count(fd, legacy, tally);
        print_counts(tally);
        printf("\n");
    }
    close(fd);
    return 0;
}

/*
 * Connection churn on loopback, for tests/test_hardening_churn.py.
 *
 *   churn WORKERS SECONDS STATS_FILE FIRST_PORT
 *
 * Forks WORKERS processes.  Worker i listens on 127.0.0.1:FIRST_PORT+2i and
 * [::1]:FIRST_PORT+2i+1 and, until SECONDS have passed (it always stops by
 * itself), opens a connection to one of its listeners (alternating the
 * families), accepts it, and closes both ends with SO_LINGER 0: a reset,
 * so no TIME_WAIT piles up and the ephemeral ports never run out.
 *
 * At any instant a worker has at most 2 connection sockets in the kernel's
 * tables (its client, and the request socket, child or accepted socket of
 * the server side); each connection inserts 3 sockets into the established
 * hash (client, request socket, child replacing it) and removes 3.
 *
 * STATS_FILE (created by the caller, at least 8 * (WORKERS + 1) bytes) is
 * shared memory: word 0 is set to WORKERS once every listener is up; word
 * 1 + i counts the connections worker i has completed (opened and closed).
 * Only loopback addresses are used.  The workers die with the process that
 * forked them, however it ends (a test kills it when its counts are done).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
    perror(what);
    _exit(2);
}

static int
listener(int family, int port, struct sockaddr_storage *addr, socklen_t *len)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket");
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(addr, 0, sizeof(*addr));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof(*a);
    }
    else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        *len = sizeof(*a);
    }
    if (bind(fd, (struct sockaddr *)addr, *len) < 0) {
        die("bind");
    }
    if (listen(fd, 64) < 0) {
        die("listen");
    }
    return fd;
}

static void
reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void
worker(int index, double deadline, volatile uint64_t *stats, int first_port)
{
    struct sockaddr_storage addr[2];
    socklen_t len[2];
    int lst[2];
    lst[0] = listener(AF_INET, first_port + 2 * index, &addr[0], &len[0]);
    lst[1] = listener(AF_INET6, first_port + 2 * index + 1, &addr[1], &len[1]);
    __atomic_add_fetch(&stats[0], 1, __ATOMIC_SEQ_CST);

    uint64_t done = 0;
    for (unsigned i = 0;; i++) {
        if ((i & 63) == 0 && now() >= deadline) {
            break;
        }
        int f = i & 1;
        int c = socket(addr[f].ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0) {
            die("socket");
        }
        if (connect(c, (struct sockaddr *)&addr[f], len[f]) < 0) {
            if (errno == EINTR) {
                close(c);
                break;
            }
            die("connect");
        }
        int s = accept4(lst[f], NULL, NULL, SOCK_CLOEXEC);
        if (s < 0) {
            die("accept");
        }
        reset_close(c);
        close(s);
        done++;
        __atomic_store_n(&stats[1 + index], done, __ATOMIC_RELEASE);
    }
    close(lst[0]);
    close(lst[1]);
}

int
main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: churn WORKERS SECONDS STATS_FILE FIRST_PORT\n");
        return 2;
    }
    int workers = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int first_port = atoi(argv[4]);
    if (workers < 1 || workers > 64 || seconds <= 0 || seconds > 600
        || first_port < 1024 || first_port + 2 * workers > 65535) {
        fprintf(stderr, "churn: bad arguments\n");
        return 2;
    }
    int fd = open(argv[3], O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        die(argv[3]);
    }
    size_t size = sizeof(uint64_t) * (size_t)(workers + 1);
    volatile uint64_t *stats = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                    MAP_SHARED, fd, 0);
    if (stats == MAP_FAILED) {
        die("mmap");
    }
    close(fd);
    double deadline = now() + seconds;
    pid_t parent = getpid();
    for (int i = 0; i < workers; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            die("fork");
        }
        if (pid == 0) {
            /* Killing the parent alone must stop the churn: orphans went
             * on loading the machine for the rest of SECONDS. */
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
                die("prctl");
            }
            if (getppid() != parent) {
                _exit(0);  /* the parent died before prctl() */
            }
            worker(i, deadline, stats, first_port);
            _exit(0);
        }
    }
    int failed = 0;
    for (int i = 0; i < workers; i++) {
        int status;
        if (wait(&status) < 0 || !WIFEXITED(status)
            || WEXITSTATUS(status) != 0) {
            failed = 1;
        }
    }
    return failed;
}

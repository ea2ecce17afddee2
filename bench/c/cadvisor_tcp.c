/*
 * cadvisor_tcp: cAdvisor's way of counting TCP states per container, in C.
 *
 * cAdvisor (container/libcontainer/handler.go, scanTCPStats) reads
 * /proc/PID/net/tcp and /proc/PID/net/tcp6 of one process of each
 * container and counts the state column ("st", hex), in its one process.
 * Written in C here so that the comparison measures what dominates, the
 * kernel formatting every socket as text, not the reader's parsing.
 *
 *   cadvisor_tcp [--rounds N] PID...
 *
 * Each round reads every PID's two files and prints one JSON line:
 * {"cpu": s, "wall": s, "maxrss_kib": n, "counts": {"PID": [n0..n11]}},
 * maxrss_kib being the process's VmHWM,
 * cpu from getrusage(RUSAGE_SELF) (user + system) around the round.
 * A PID whose files are gone is left out of "counts".
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o cadvisor_tcp cadvisor_tcp.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NSTATES 12

/* cAdvisor's bufio.Scanner reads 4 KiB at a time; /proc/net/tcp hands out
 * about a page per read() whatever the buffer, so the size hardly matters. */
static char buf[65536];

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* The state of one line: its 4th whitespace-separated field, two hex
 * digits.  -1 for a line that has none (the header: "st" is not hex). */
static int
line_state(const char *line, size_t len)
{
    size_t i = 0;
    for (int field = 0; field < 3; field++) {
        while (i < len && line[i] == ' ') {
            i++;
        }
        while (i < len && line[i] != ' ') {
            i++;
        }
    }
    while (i < len && line[i] == ' ') {
        i++;
    }
    if (i + 2 > len) {
        return -1;
    }
    int hi = hex_digit(line[i]), lo = hex_digit(line[i + 1]);
    if (hi < 0 || lo < 0) {
        return -1;
    }
    return hi * 16 + lo;
}

/* Add the states of one file to `counts`; -1 if it cannot be opened. */
static int
count_file(const char *path, uint64_t counts[NSTATES])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    size_t have = 0;  /* bytes of an unfinished line kept at buf[0] */
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        size_t end = have + (size_t)n, start = 0;
        for (size_t i = 0; i < end; i++) {
            if (buf[i] == '\n') {
                int st = line_state(buf + start, i - start);
                if (st > 0 && st < NSTATES) {
                    counts[st]++;
                }
                start = i + 1;
            }
        }
        have = end - start;
        memmove(buf, buf + start, have);
        if (have == sizeof(buf)) {
            have = 0;  /* no line is this long: drop it */
        }
    }
    close(fd);
    return 0;
}

/* VmHWM, not ru_maxrss: that survives exec, so a process started by a
 * bigger one would report its parent's peak. */
static long
peak_rss_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

static double
seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double
cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return seconds(ru.ru_utime) + seconds(ru.ru_stime);
}

static double
wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
    int rounds = 1, first = 1;
    if (argc > 2 && strcmp(argv[1], "--rounds") == 0) {
        rounds = atoi(argv[2]);
        first = 3;
    }
    int npids = argc - first;
    uint64_t (*counts)[NSTATES] = calloc((size_t)(npids > 0 ? npids : 1),
                                         sizeof(*counts));
    int *ok = calloc((size_t)(npids > 0 ? npids : 1), sizeof(int));
    if (counts == NULL || ok == NULL) {
        perror("cadvisor_tcp: calloc");
        return 1;
    }
    for (int r = 0; r < rounds; r++) {
        double cpu0 = cpu_now(), wall0 = wall_now();
        for (int p = 0; p < npids; p++) {
            char path[64];
            memset(counts[p], 0, sizeof(counts[p]));
            snprintf(path, sizeof(path), "/proc/%s/net/tcp", argv[first + p]);
            ok[p] = count_file(path, counts[p]) == 0;
            snprintf(path, sizeof(path), "/proc/%s/net/tcp6", argv[first + p]);
            ok[p] = ok[p] && count_file(path, counts[p]) == 0;
        }
        double cpu = cpu_now() - cpu0, wall = wall_now() - wall0;
        printf("{\"cpu\": %.6f, \"wall\": %.6f, \"maxrss_kib\": %ld, \"counts\": {",
               cpu, wall, peak_rss_kib());
        const char *sep = "";
        for (int p = 0; p < npids; p++) {
            if (!ok[p]) {
                continue;
            }
            printf("%s\"%s\": [", sep, argv[first + p]);
            for (int s = 0; s < NSTATES; s++) {
                printf("%s%llu", s ? ", " : "", (unsigned long long)counts[p][s]);
            }
            printf("]");
            sep = ", ";
        }
        printf("}}\n");
        fflush(stdout);
    }
    free(counts);
    free(ok);
    return 0;
}

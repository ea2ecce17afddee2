/*
 * execwrap: run one command as a whole process and report what it cost.
 *
 *   execwrap [-n NETNS_PATH] -o REPORT -- COMMAND [ARG...]
 *
 * Joins the network namespace at NETNS_PATH (if given), forks, execs
 * COMMAND with the inherited stdin/stdout/stderr, waits with wait4() and
 * writes one JSON object to REPORT: wall seconds (fork to reap), user and
 * system CPU seconds, peak RSS in KiB and the exit status.
 *
 * Why a C wrapper: ru_maxrss survives exec (the kernel keeps the pre-exec
 * high-water mark), so a command forked from a large Python process would
 * report Python's peak.  Forked from this small program, the command's
 * ru_maxrss is its own.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o execwrap execwrap.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "execwrap: %s: %s\n", what, strerror(errno));
    exit(127);
}

static double seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    const char *netns = NULL, *report = NULL;
    int opt;

    while ((opt = getopt(argc, argv, "+n:o:")) != -1) {
        switch (opt) {
        case 'n':
            netns = optarg;
            break;
        case 'o':
            report = optarg;
            break;
        default:
            fprintf(stderr, "usage: execwrap [-n NETNS] -o REPORT -- CMD [ARG...]\n");
            return 127;
        }
    }
    if (!report || optind >= argc) {
        fprintf(stderr, "usage: execwrap [-n NETNS] -o REPORT -- CMD [ARG...]\n");
        return 127;
    }
    if (netns) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die(netns);
        if (setns(fd, CLONE_NEWNET) != 0)
            die("setns");
        close(fd);
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        execvp(argv[optind], argv + optind);
        fprintf(stderr, "execwrap: exec %s: %s\n", argv[optind], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR)
            die("wait4");
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);

    FILE *out = fopen(report, "w");
    if (!out)
        die(report);
    fprintf(out,
            "{\"wall\": %.9f, \"user\": %.6f, \"sys\": %.6f, \"maxrss_kib\": %ld, "
            "\"exit_status\": %d, \"signal\": %d}\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            seconds(ru.ru_utime), seconds(ru.ru_stime), ru.ru_maxrss,
            WIFEXITED(status) ? WEXITSTATUS(status) : -1,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    if (fclose(out) != 0)
        die(report);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

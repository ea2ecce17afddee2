/*
 * walk_count: drive the walk engine (csrc/walk_run.c) from the command
 * line, for the tests (here, so that tests run from a wheel's
 * test-sources have it) and bench/walk_bench.py.  Walks the table of the
 * namespace it runs in (from the host namespace: every namespace sharing
 * the host's table) and prints one JSON object per pass:
 *   {"pass": i, "cpu_ms": .., "wall_ms": .., "longest_run_ms": ..,
 *    "runs": .., "stats": {...}, "ns": {"<inum>": {"ipv4": [16 counts],
 *    "ipv6": [16 counts]}, ...}}
 * and first one line {"load": {...}} with the program's size, the
 * instructions the verifier processed and the load time.
 *
 *   walk_count [--passes N] [--budget N] [--slots N] [--states MASK]
 *              [--tables 1|2|3] [--slack N] [--only INUM] [--local LO[-HI]]... [--remote LO[-HI]]...
 *              [--quiet]   (no per-namespace counts)
 * --tables: 1 ehash, 2 lhash2 (listeners), 3 both (the default).
 *
 * Build: cc -O2 -Icsrc tests/c/walk_count.c csrc/walk_run.c
 *        csrc/walk_prog.c csrc/btf_walk.c csrc/btf.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "btf.h"
#include "walk_run.h"

#define MAX_RANGES 64

/* The scheduler's exact account (getrusage() may be tick-sampled). */
static double
cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
parse_range(const char *s, struct fts_port_range *r)
{
    char *end;
    unsigned long lo = strtoul(s, &end, 10), hi = lo;
    if (*end == '-') {
        hi = strtoul(end + 1, &end, 10);
    }
    if (*end != '\0' || lo > 65535 || hi > 65535 || lo > hi) {
        return -1;
    }
    r->low = (uint16_t)lo;
    r->high = (uint16_t)hi;
    return 0;
}

static void
print_counts(const uint64_t *n)
{
    putchar('[');
    for (int s = 0; s < FTS_NSTATES; s++) {
        printf("%s%llu", s ? ", " : "", (unsigned long long)n[s]);
    }
    putchar(']');
}

static void
print_pass(const struct fts_walker *w, int pass, const struct fts_walk_stats *st,
           double cpu, double wall, int quiet)
{
    printf("{\"pass\": %d, \"cpu_ms\": %.3f, \"wall_ms\": %.3f, "
           "\"longest_run_ms\": %.3f, \"longest_rcu_ms\": %.3f, \"runs\": %llu, \"stats\": {"
           "\"loops\": %llu, \"sockets\": %llu, \"counted\": %llu, "
           "\"filtered\": %llu, \"buckets\": %llu, \"rescans\": %llu, "
           "\"undone\": %llu, "
           "\"giveups\": %llu, \"unreadable\": %llu, \"bad_family\": %llu, "
           "\"bad_state\": %llu, \"bad_ns\": %llu, \"full\": %llu, "
           "\"log_overflow\": %llu, \"anomalies\": %llu}",
           pass, cpu, wall, st->longest_run_ns / 1e6, st->longest_held_ns / 1e6,
           (unsigned long long)st->runs, (unsigned long long)st->loops,
           (unsigned long long)st->sockets, (unsigned long long)st->counted,
           (unsigned long long)st->filtered,
           (unsigned long long)st->buckets, (unsigned long long)st->rescans,
           (unsigned long long)st->undone,
           (unsigned long long)st->giveups,
           (unsigned long long)st->unreadable,
           (unsigned long long)st->bad_family,
           (unsigned long long)st->bad_state,
           (unsigned long long)st->bad_ns, (unsigned long long)st->full,
           (unsigned long long)st->log_overflow,
           (unsigned long long)fts_walk_anomalies(st));
    if (!quiet) {
        printf(", \"ns\": {");
        int first = 1;
        for (uint32_t i = 0; i < w->nslots; i++) {
            const struct fts_walk_slot *s = &w->slots[i];
            if (s->inum == 0) {
                continue;
            }
            printf("%s\"%u\": {\"ipv4\": ", first ? "" : ", ", s->inum);
            print_counts(s->n[FTS_IDX_IPV4]);
            printf(", \"ipv6\": ");
            print_counts(s->n[FTS_IDX_IPV6]);
            putchar('}');
            first = 0;
        }
        putchar('}');
    }
    printf("}\n");
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    int passes = 1, quiet = 0;
    unsigned tables = FTS_WALK_EHASH | FTS_WALK_LHASH2;
    unsigned long budget = 16384, slots = 4096, only = 0;
    long slack = -1;
    struct fts_port_range local[MAX_RANGES], remote[MAX_RANGES];
    struct fts_walk_filter filter = {0, local, 0, remote, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "walk_count: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--passes") == 0) {
            passes = atoi(v);
        }
        else if (strcmp(a, "--budget") == 0) {
            budget = strtoul(v, NULL, 0);
        }
        else if (strcmp(a, "--tables") == 0) {
            tables = (unsigned)strtoul(v, NULL, 0);
        }
        else if (strcmp(a, "--slack") == 0) {
            slack = strtol(v, NULL, 0);
        }
        else if (strcmp(a, "--slots") == 0) {
            slots = strtoul(v, NULL, 0);
        }
        else if (strcmp(a, "--only") == 0) {
            only = strtoul(v, NULL, 0);
        }
        else if (strcmp(a, "--states") == 0) {
            filter.states = (uint32_t)strtoul(v, NULL, 0);
        }
        else if (strcmp(a, "--local") == 0 && filter.nlocal < MAX_RANGES
                 && parse_range(v, &local[filter.nlocal]) == 0) {
            filter.nlocal++;
        }
        else if (strcmp(a, "--remote") == 0 && filter.nremote < MAX_RANGES
                 && parse_range(v, &remote[filter.nremote]) == 0) {
            filter.nremote++;
        }
        else {
            fprintf(stderr, "walk_count: bad argument %s %s\n", a, v);
            return 2;
        }
    }
    struct fts_error err = {0, NULL};
    double t0 = wall_ms(), c0 = cpu_ms();
    struct fts_btf *btf = fts_btf_open_file(NULL, &err);
    struct fts_walk_layout layout;
    if (btf == NULL || fts_walk_layout(btf, &layout, &err) < 0) {
        fprintf(stderr, "walk_count: %s: %s\n", err.what, strerror(err.err));
        fts_btf_close(btf);
        return 1;
    }
    fts_btf_close(btf);
    double t_btf = wall_ms();
    static char log[1 << 20];
    uint32_t verified = 0;
    struct fts_walker w;
    if (fts_walker_open(&w, &layout, &filter, (uint32_t)slots, log,
                        sizeof(log), &verified, &err) < 0) {
        fprintf(stderr, "walk_count: %s: %s\n%s\n", err.what,
                strerror(err.err), log);
        return 1;
    }
    if (slack >= 0) {
        w.slack = (uint32_t)slack;
    }
    printf("{\"load\": {\"insns\": %u, \"verified_insns\": %u, "
           "\"raw_reads\": %d, \"btf_ms\": %.3f, \"load_ms\": %.3f, "
           "\"cpu_ms\": %.3f}}\n", w.insns, verified, w.raw_reads,
           t_btf - t0, wall_ms() - t_btf, cpu_ms() - c0);
    int rc = 0;
    for (int p = 0; p < passes; p++) {
        struct fts_walk_stats st;
        double c1 = cpu_ms(), w1 = wall_ms();
        if (fts_walker_pass(&w, tables, (uint32_t)budget, (uint32_t)only, &st, NULL,
                            NULL, &err) < 0) {
            fprintf(stderr, "walk_count: %s: %s\n", err.what,
                    strerror(err.err));
            rc = 1;
            break;
        }
        print_pass(&w, p, &st, cpu_ms() - c1, wall_ms() - w1, quiet);
    }
    fts_walker_close(&w);
    return rc;
}

/*
 * The C unit tests' one assertion: count, report where it failed, go on.
 * Each test program ends with report(), whose line pytest's wrapper reads.
 */
#ifndef FASTTCPSTAT_TEST_CHECK_H
#define FASTTCPSTAT_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (cond) {                                                       \
            passed++;                                                     \
        }                                                                 \
        else {                                                            \
            failed++;                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                     \
        }                                                                 \
    } while (0)

static int
report(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif /* FASTTCPSTAT_TEST_CHECK_H */

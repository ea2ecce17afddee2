/*
 * Replay fuzz inputs without libFuzzer: links with a harness from fuzz/
 * (which defines LLVMFuzzerTestOneInput) and feeds it every file named on
 * the command line.  tests/test_hardening_fuzz_corpus.py builds it with
 * gcc, ASan and UBSan and replays the kept corpus (fuzz/corpus/<target>/)
 * in every test run, so a regression on any input the fuzzer once found
 * interesting fails the ordinary suite, clang or not.
 *
 * Prints "N passed, 0 failed"; a finding aborts (non-zero exit).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
main(int argc, char **argv)
{
    int passed = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 2;
        }
        if (fseek(f, 0, SEEK_END) != 0) {
            perror(argv[i]);
            return 2;
        }
        long size = ftell(f);
        rewind(f);
        uint8_t *data = malloc(size > 0 ? (size_t)size : 1);
        if (data == NULL || (size > 0 && fread(data, 1, (size_t)size, f)
                                             != (size_t)size)) {
            fprintf(stderr, "%s: cannot read\n", argv[i]);
            return 2;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(data, (size_t)size);
        free(data);
        passed++;
    }
    printf("%d passed, 0 failed\n", passed);
    return 0;
}

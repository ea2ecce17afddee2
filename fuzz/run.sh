#!/usr/bin/env bash
# Build and run fasttcpstat's libFuzzer targets (clang, ASan + UBSan).
#
#   fuzz/run.sh                      every target for 30 s (what CI runs)
#   fuzz/run.sh --time 600           every target for 10 minutes
#   fuzz/run.sh --runs 10000000      every target for 10 million executions
#   fuzz/run.sh --merge              then minimize seeds + findings into
#                                    fuzz/corpus/<target>/ (the kept corpus)
#   fuzz/run.sh --time 60 fuzz_walk  one target
#
# Targets run in parallel, one per core.  New inputs go to
# fuzz/out/corpus/<target>/ (not kept); the repository's corpus is read
# only unless --merge.  A finding (crash, sanitizer report, failed
# invariant, timeout, leak) is saved as fuzz/out/<target>-crash-* and makes
# the script exit non-zero.  Installs clang if it is missing (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

# target -> the core sources it links.
declare -A SOURCES=(
    [fuzz_walk]="csrc/diag_msg.c"
    [fuzz_filter]="csrc/diag_filter.c csrc/diag_msg.c"
    [fuzz_btf]="csrc/btf.c"
    [fuzz_walkprog]="csrc/walk_prog.c csrc/btf_walk.c csrc/btf.c"
)
ORDER=(fuzz_walk fuzz_filter fuzz_btf fuzz_walkprog)

mode=(-max_total_time=30)
# Per input: a slow input is a finding (the BTF reader was once
# exponential, and without this bound the fuzzer just waited on it).
per_input=(-timeout=10)
merge=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) mode=(-max_total_time="$2"); shift 2 ;;
        --runs) mode=(-runs="$2"); shift 2 ;;
        --merge) merge=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ORDER[@]}")

CC="${FUZZ_CC:-clang}"
probe_fuzzer() {
    local dir
    dir=$(mktemp -d)
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$dir/p.c"
    "$CC" -fsanitize=fuzzer,address,undefined "$dir/p.c" -o "$dir/p" >/dev/null 2>&1
    local rc=$?
    rm -rf "$dir"
    return $rc
}
if ! command -v "$CC" >/dev/null || ! probe_fuzzer; then
    echo "fuzz: installing clang (libFuzzer, sanitizers)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang >/dev/null
    if ! probe_fuzzer; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q libclang-rt-dev >/dev/null
    fi
    probe_fuzzer || { echo "fuzz: clang cannot build libFuzzer targets" >&2; exit 1; }
fi

mkdir -p fuzz/out
python3 fuzz/make_seeds.py fuzz/out/seeds >/dev/null

# The code under test gets libFuzzer's coverage instrumentation; the
# harness (and the kernel model it runs) only the sanitizers: their
# branches would not guide the fuzzer anywhere useful and cost speed.
CFLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror
        -fno-sanitize-recover=all -Icsrc -Itests/c)
SAN=address,undefined
for t in "${targets[@]}"; do
    [ -n "${SOURCES[$t]+x}" ] || { echo "fuzz: unknown target $t" >&2; exit 2; }
    objs=()
    for src in ${SOURCES[$t]}; do
        obj="fuzz/out/$t-$(basename "$src" .c).o"
        "$CC" "${CFLAGS[@]}" -fsanitize=fuzzer-no-link,$SAN -c "$src" -o "$obj"
        objs+=("$obj")
    done
    "$CC" "${CFLAGS[@]}" -fsanitize=$SAN -c "fuzz/$t.c" -o "fuzz/out/$t-harness.o"
    "$CC" -fsanitize=fuzzer,$SAN "fuzz/out/$t-harness.o" "${objs[@]}" -o "fuzz/out/$t"
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
pids=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/out/corpus/$t" "fuzz/corpus/$t"
    ( "fuzz/out/$t" "${mode[@]}" "${per_input[@]}" -print_final_stats=1 -rss_limit_mb=1024 \
          -artifact_prefix="fuzz/out/$t-" \
          "fuzz/out/corpus/$t" "fuzz/corpus/$t" "fuzz/out/seeds/$t" \
          >"fuzz/out/$t.log" 2>&1 ) &
    pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
    t=${targets[$i]}
    if wait "${pids[$i]}"; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/out/$t.log" | tail -1)
        secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "fuzz/out/$t.log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "fuzz/out/$t.log" | tail -1)
        echo "fuzz: $t: ${execs:-?} executions in ${secs:-?} s, ${cov:-cov: ?}, no finding"
    else
        failed=1
        echo "fuzz: $t: FINDING (log: fuzz/out/$t.log)" >&2
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "fuzz/out/$t.log" | head -20 >&2 || true
    fi
done
[ "$failed" = 0 ] || exit 1

if [ "$merge" = 1 ]; then
    for t in "${targets[@]}"; do
        rm -rf "fuzz/out/merged-$t"
        mkdir -p "fuzz/out/merged-$t"
        "fuzz/out/$t" -merge=1 "${per_input[@]}" "fuzz/out/merged-$t" "fuzz/corpus/$t" \
            "fuzz/out/corpus/$t" "fuzz/out/seeds/$t" >"fuzz/out/$t-merge.log" 2>&1
        rm -rf "fuzz/corpus/$t"
        mv "fuzz/out/merged-$t" "fuzz/corpus/$t"
        echo "fuzz: $t: corpus minimized to $(ls "fuzz/corpus/$t" | wc -l) inputs," \
             "$(du -sk "fuzz/corpus/$t" | cut -f1) KiB"
    done
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"

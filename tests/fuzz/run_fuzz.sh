#!/usr/bin/env bash
# Builds the libFuzzer harness over the C core (tests/fuzz/fuzz_index_builders.c: index builders,
# index checker, CPU forward) under AddressSanitizer + UndefinedBehaviorSanitizer, then fuzzes it
# for a fixed time budget. Exits non-zero if the fuzzer finds anything (sanitizer report, abort()
# from a harness invariant, leak, timeout, out-of-memory); the reproducer is written to
# tests/fuzz/build/artifacts/.
#
# Usage, from the repository root (any working directory works):
#   tests/fuzz/run_fuzz.sh                 build, then fuzz for FUZZ_SECONDS seconds
#   tests/fuzz/run_fuzz.sh ARTIFACT...     build, then replay the given inputs once and exit
# Environment:
#   FUZZ_SECONDS=60           time budget of the fuzzing run
#   FUZZ_CC=clang             compiler; when it is the default and missing, it is installed with
#                             apt-get (root only), otherwise the script stops with a message
# The corpus (tests/fuzz/build/corpus) is kept between runs; tests/fuzz/build/ is git-ignored.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

cc="${FUZZ_CC:-clang}"
seconds="${FUZZ_SECONDS:-60}"
build_dir="tests/fuzz/build"
corpus_dir="$build_dir/corpus"
artifact_dir="$build_dir/artifacts"
binary="$build_dir/fuzz_index_builders"

die() {
  echo "run_fuzz.sh: error: $*" >&2
  exit 2
}

if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  die "FUZZ_SECONDS must be a positive integer, got '$seconds'"
fi

# True when $cc can build and link a libFuzzer + ASan + UBSan binary.
can_build_fuzzer() {
  command -v "$cc" >/dev/null 2>&1 || return 1
  local probe_dir status
  probe_dir="$(mktemp -d)"
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    >"$probe_dir/probe.c"
  status=0
  "$cc" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" \
    >/dev/null 2>&1 || status=$?
  rm -rf "$probe_dir"
  return "$status"
}

can_apt_install() {
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1
}

if ! can_build_fuzzer; then
  if [ "$cc" != "clang" ]; then
    die "'$cc' (FUZZ_CC) is missing or cannot link -fsanitize=fuzzer,address,undefined"
  fi
  if ! can_apt_install; then
    die "clang with libFuzzer is required (clang -fsanitize=fuzzer failed or clang is missing)," \
      "and it cannot be installed automatically: that needs root and apt-get." \
      "Install clang and its compiler-rt runtime (Debian/Ubuntu: apt-get install clang" \
      "libclang-rt-dev), then rerun."
  fi
  echo "run_fuzz.sh: clang with libFuzzer not usable; installing it with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # The libFuzzer/sanitizer runtime (libclang-rt-N-dev) is only a Recommends of clang on Debian.
  apt-get install -y --install-recommends clang
  if ! can_build_fuzzer; then
    apt-get install -y libclang-rt-dev || true
  fi
  can_build_fuzzer ||
    die "clang was installed but cannot link -fsanitize=fuzzer; install the compiler-rt" \
      "runtime that matches 'clang --version' (Debian: libclang-rt-<major>-dev)"
fi

mkdir -p "$corpus_dir" "$artifact_dir"

echo "run_fuzz.sh: building $binary with $("$cc" --version | head -n 1)" >&2
# The core is compiled without OpenMP: the harness runs the forward on one thread anyway.
"$cc" -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Icsrc/core csrc/core/*.c tests/fuzz/fuzz_index_builders.c -lm \
  -o "$binary"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

if [ "$#" -gt 0 ]; then
  echo "run_fuzz.sh: replaying $# input(s)" >&2
  exec "$binary" "$@"
fi

# Findings of earlier runs would be mistaken for this run's.
rm -f "$artifact_dir"/crash-* "$artifact_dir"/leak-* "$artifact_dir"/timeout-* "$artifact_dir"/oom-*

echo "run_fuzz.sh: fuzzing for $seconds s (corpus $corpus_dir)" >&2
fuzz_status=0
"$binary" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
  -artifact_prefix="$artifact_dir/" "$corpus_dir" 2>&1 | tee "$build_dir/fuzz.log" ||
  fuzz_status=$?

findings="$(find "$artifact_dir" -maxdepth 1 -type f \
  \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)"
if [ "$fuzz_status" -ne 0 ] || [ -n "$findings" ]; then
  echo >&2
  echo "run_fuzz.sh: FAILED: the fuzzer found a problem (exit status $fuzz_status)." >&2
  if [ -n "$findings" ]; then
    echo "run_fuzz.sh: reproducer(s):" >&2
    echo "$findings" | sed 's/^/  /' >&2
    echo "run_fuzz.sh: replay with: tests/fuzz/run_fuzz.sh <reproducer>" >&2
  fi
  exit 1
fi
echo "run_fuzz.sh: OK: nothing found in $seconds s (log: $build_dir/fuzz.log)" >&2

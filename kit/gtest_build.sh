#!/usr/bin/env bash
# Build BVLC Caffe's gtest binary for a list of its test suites in a built
# Caffe tree (Caffe's own Makefile rule with our TEST_SRCS), once per build
# and list: `make gpu-kit` (kit/build.sh, the CUDA tree) and `make cpu-gtest`
# (the CPU tree) both use it. Prints the binary's path.
#
# Usage: kit/gtest_build.sh SRC_TREE BUILD_STAMP LOG_FILE SUITE...
#   SUITE: a file name under src/caffe/test without .cpp (test_net, ...)
# Environment: JOBS (default: all cores).
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 SRC_TREE BUILD_STAMP LOG_FILE SUITE..." >&2; exit 2; }
src=$1 stamp=$2 log=$3
shift 3
JOBS=${JOBS:-$(nproc)}
say() { printf '[gtest-build] %s\n' "$*" >&2; }
die() { printf '[gtest-build] ERROR: %s\n' "$*" >&2; exit 1; }

gtest="$src/.temp_release/test/test_all.testbin"
gtest_stamp="$src/.temp_release/test/gtest-stamp"
gtest_want="$stamp $*"
if [ -x "$gtest" ] && [ "$(cat "$gtest_stamp" 2>/dev/null)" = "$gtest_want" ]; then
  say "gtest binary up to date"
else
  say "building Caffe's gtests ($# suites) with $JOBS jobs"
  t=$(date +%s)
  srcs=$(for s in "$@"; do printf 'src/caffe/test/%s.cpp ' "$s"; done)
  rm -f "$gtest"
  make -C "$src" -j"$JOBS" .temp_release/test/test_all.testbin TEST_SRCS="$srcs" TEST_CU_SRCS= \
       > "$log" 2>&1 \
    || { tail -30 "$log" >&2; die "gtest build failed; log: $log"; }
  [ -x "$gtest" ] || die "gtest build made no $gtest"
  echo "$gtest_want" > "$gtest_stamp"
  say "gtests built in $(( $(date +%s) - t )) s"
fi
echo "$gtest"

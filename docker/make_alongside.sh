#!/usr/bin/env bash
# make_alongside.sh BESIDE MAIN [MAKE ARGS...]: `make MAIN` with `make BESIDE`
# running at the same time; fails if either fails.
#
# Why: CI's test suites are one Python process and keep about one of a
# 2-core machine's cores busy, while a CUDA compile (`cuda-build`) can use
# both. Run one beside the other and a cold `.ci/run` saves most of a
# compile's time (docs/platforms.md). BESIDE's output goes to a log that is
# printed when both are done, so MAIN's output stays readable; if MAIN fails,
# BESIDE is stopped. Used by .ci/run and docker/distro_check.sh; both targets
# must have been installed for (`make install` first), so that they do not
# install the same things at once.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: make_alongside.sh BESIDE MAIN [MAKE ARGS...]" >&2; exit 2; }
beside=$1 main=$2
shift 2
log=$(mktemp "${TMPDIR:-/tmp}/make-${beside}.XXXXXX")
start=$(date +%s)
# its own process group (setsid), so that stopping it stops its compilers too
setsid make "$beside" "$@" > "$log" 2>&1 &
pid=$!
stop_beside() { kill -TERM -- "-$pid" 2>/dev/null || true; }
trap 'stop_beside; rm -f "$log"; exit 130' INT TERM
main_rc=0
make "$main" "$@" || main_rc=$?
if [ "$main_rc" -ne 0 ]; then stop_beside; fi
beside_rc=0
wait "$pid" || beside_rc=$?
echo "[make_alongside] make $beside (beside make $main): exit $beside_rc after $(( $(date +%s) - start )) s; its output:" >&2
cat "$log" >&2
rm -f "$log"
if [ "$main_rc" -ne 0 ]; then exit "$main_rc"; fi
exit "$beside_rc"

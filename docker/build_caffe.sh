#!/usr/bin/env bash
# Build pycaffe (BVLC Caffe at commit 9b89154) with the Python layer and make
# `import caffe` work in one Python environment.
#
# One script for both paths, so that what GPU users run is what CI exercises:
#   make install           -> docker/build_caffe.sh            (CPU, CI, laptops)
#   docker/Dockerfile      -> docker/build_caffe.sh --cuda     (CUDA + NCCL)
# The steps are identical (fetch, patch, configure, build, link, verify); only
# the source archive and the CUDA/NCCL switches of Makefile.config differ.
#
#   CPU : PyPI sdist brocolli-caffe==9.0.2 (BVLC master 9b89154 + extra layers,
#         already adjusted for protobuf >= 3.20; it has no NCCL code).
#   CUDA: BVLC's own archive of commit 9b89154 (has NCCL), with the protobuf
#         >= 3.20 fix applied here.
#
# Environment: PYTHON (interpreter that receives caffe, default python3),
# CAFFE_CACHE (work dir, default ./.cache/caffe), JOBS (default: all cores),
# CUDA_ARCH_BIN (default "80 86 89 90"), CUDA_DIR (default /usr/local/cuda).
set -euo pipefail

CAFFE_COMMIT=9b891540183ddc834a02b2bd81b31afae71b2153
SDIST_NAME=brocolli-caffe
SDIST_VERSION=9.0.2
SDIST_SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
BVLC_URL="https://github.com/BVLC/caffe/archive/${CAFFE_COMMIT}.tar.gz"
# Bump when the build steps change in a way that needs a rebuild.
BUILD_REV=2
REQUIRED_LAYERS="Python Crop Deconvolution Eltwise SoftmaxWithLoss Scale"

DEVICE=cpu
case "${1:-}" in
  --cuda) DEVICE=cuda ;;
  --verify) DEVICE=verify ;;
  ""|--cpu) ;;
  *) echo "usage: $0 [--cpu|--cuda|--verify]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
CACHE=$(mkdir -p "${CAFFE_CACHE:-$PWD/.cache/caffe}" && cd "${CAFFE_CACHE:-$PWD/.cache/caffe}" && pwd)
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH_BIN=${CUDA_ARCH_BIN:-"80 86 89 90"}
CUDA_DIR=${CUDA_DIR:-/usr/local/cuda}

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
  local archive
  if [ "$DEVICE" = cpu ]; then
    archive="$CACHE/${SDIST_NAME}-${SDIST_VERSION}.tar.gz"
    if [ ! -f "$archive" ]; then
      say "downloading ${SDIST_NAME}==${SDIST_VERSION} (source) from PyPI"
      "$PYTHON" -m pip download -q --no-deps --no-binary :all: \
        "${SDIST_NAME}==${SDIST_VERSION}" -d "$CACHE" \
        || die "could not download ${SDIST_NAME}==${SDIST_VERSION} from PyPI"
    fi
    echo "${SDIST_SHA256}  $archive" | sha256sum -c --quiet - \
      || die "$archive: checksum mismatch (expected sha256 ${SDIST_SHA256}); delete it and retry"
  else
    archive="$CACHE/caffe-${CAFFE_COMMIT}.tar.gz"
    if [ ! -f "$archive" ]; then
      say "downloading BVLC Caffe ${CAFFE_COMMIT}"
      curl -fsSL -o "$archive.part" "$BVLC_URL" && mv "$archive.part" "$archive" \
        || die "could not download $BVLC_URL"
    fi
  fi
  echo "$archive"
}

# ---- patch -----------------------------------------------------------------
patch_source() {
  local src=$1
  # Read caffemodels up to 2 GiB: protobuf >= 3.20 dropped the two-argument
  # SetTotalBytesLimit, and the sdist calls it with 536870912 (512 MiB), which
  # rejects VGG16's 553 MB file. Both forms become SetTotalBytesLimit(INT_MAX).
  sed -i -E 's/SetTotalBytesLimit\([^)]*\)/SetTotalBytesLimit(INT_MAX)/' "$src/src/caffe/util/io.cpp"
  grep -q 'SetTotalBytesLimit(INT_MAX)' "$src/src/caffe/util/io.cpp" \
    || die "io.cpp: could not raise protobuf's read limit (SetTotalBytesLimit not found)"
  # The sdist ships a caffe_pb2.py made by an old protoc, newer on disk than
  # caffe.proto, so make would keep it; regenerate it with our protoc.
  rm -f "$src/python/caffe/proto/caffe_pb2.py"
  # caffe.io imports scikit-image at module level only for two image helpers we
  # never call; make it lazy so scikit-image is not a dependency.
  "$PYTHON" - "$src/python/caffe/io.py" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
lazy = "try:\n    import skimage.io\nexcept ImportError:  # only load_image/resize_image need it\n    skimage = None\n"
if "import skimage.io\n" in text and lazy not in text:
    text = text.replace("import skimage.io\n", lazy, 1)
    open(path, "w").write(text)
PY
}

# ---- configure -------------------------------------------------------------
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
      printf 'CUDA_ARCH :='
      for a in $CUDA_ARCH_BIN; do printf ' -gencode arch=compute_%s,code=sm_%s' "$a" "$a"; done
      last=${CUDA_ARCH_BIN##* }
      printf ' -gencode arch=compute_%s,code=compute_%s\n' "$last" "$last"
      echo "USE_NCCL := 1"
      echo "USE_CUDNN := 0"
    fi
    echo "USE_OPENCV := 0"
    echo "USE_LEVELDB := 0"
    echo "USE_LMDB := 0"
    echo "WITH_PYTHON_LAYER := 1"
    echo "BLAS := open"
    echo "PYTHON_LIBRARIES := boost_python${pyver} python${pyver:0:1}.${pyver:1}"
    echo "PYTHON_INCLUDE := $pyinc $numpyinc"
    echo "PYTHON_LIB := $pylib"
    echo "INCLUDE_DIRS := \$(PYTHON_INCLUDE) /usr/local/include /usr/include/hdf5/serial"
    echo "LIBRARY_DIRS := \$(PYTHON_LIB) /usr/local/lib /usr/lib/$multiarch/hdf5/serial"
    echo "BUILD_DIR := build"
    # absolute rpath: _caffe.so finds libcaffe.so wherever python/ is linked from
    echo "LINKFLAGS += -Wl,-rpath,$src/build/lib"
    echo "Q ?= @"
  } > "$src/Makefile.config"
}

# ---- build, link, verify ---------------------------------------------------
archive=$(fetch_source)
src="$CACHE/src-$DEVICE"
stamp="$CACHE/stamp-$DEVICE"

# The build is current when the archive, the generated Makefile.config (which
# names the Python and numpy it compiles against) and BUILD_REV are unchanged.
mkdir -p "$src"
[ -f "$src/Makefile" ] || tar xzf "$archive" -C "$src" --strip-components=1
write_config "$src"
want=$( { sha256sum "$archive" "$src/Makefile.config" | cut -d' ' -f1; echo "rev $BUILD_REV"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -e "$src/python/caffe/_caffe.so" ]; then
  say "up-to-date build found in $src (delete $stamp to force a rebuild)"
else
  say "building pycaffe ($DEVICE) in $src with $JOBS jobs; this takes several minutes"
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

#!/usr/bin/env bash
# `make distro-check`: the project as a new user meets it on today's Debian
# (13, trixie: Python 3.13, numpy 2, Boost 1.83, GCC 14), checked from this
# Debian 12 machine in a chroot. In a minimal root -- debootstrap's minbase plus
# what a user types first (make, git, python3-venv, python3-pip) -- and in a
# fresh clone of this commit, it runs `make install` and the fast suite
# against the CPU build, then compiles the CUDA build (`make cuda-build`, the
# compile step of `make cuda-check`: CUDA 13 wheels, sm_90).
#
# Caches, all outside the clone, under $FCN_CACHE/distro/ (see docs/platforms.md
# for cold and warm times):
#   root-<suite>-<key>/  the debootstrapped root, keyed by suite, mirror and
#                        base package list; `make install` adds the build
#                        packages to it on the first run, so later runs skip apt
#   home-<suite>/        the root user's ~/.cache inside it (pip's cache, the
#                        CPU and CUDA builds, the unpacked CUDA toolkit),
#                        bind-mounted so a new root keeps them
# and the CUDA wheels are this machine's $FCN_CACHE/wheels, bind-mounted.
#
# Needs root (debootstrap, chroot, mount) and debootstrap. The machine's CA
# file (SSL_CERT_FILE/PIP_CERT) and pip configuration (/etc/pip.conf,
# /etc/xdg/pip/) are copied in: without them, pip in the root cannot verify
# the package index here.
#
# Environment: DISTRO_SUITE (default trixie; noble for Ubuntu 24.04), DISTRO_MIRROR (default
# http://deb.debian.org/debian), FCN_CACHE, DISTRO_SKIP_CUDA=1 (CPU part only).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FCN_CACHE=${FCN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fcn-caffe}
SUITE=${DISTRO_SUITE:-trixie}
case "$SUITE" in
  noble)  # Ubuntu 24.04: universe has glog, gflags, HDF5, OpenBLAS. Debian 12's
          # debootstrap has no noble script (gutsy's serves every later Ubuntu)
          # and no Ubuntu keyring, so the Release file is not checked here.
    MIRROR=${DISTRO_MIRROR:-http://archive.ubuntu.com/ubuntu}
    SOURCES="deb $MIRROR noble main universe
deb $MIRROR noble-updates main universe
deb $MIRROR noble-security main universe"
    DEBOOTSTRAP_ARGS=(--components=main,universe)
    [ -e /usr/share/keyrings/ubuntu-archive-keyring.gpg ] || DEBOOTSTRAP_ARGS+=(--no-check-gpg)
    SCRIPT=(/usr/share/debootstrap/scripts/noble)
    [ -e "${SCRIPT[0]}" ] || SCRIPT=(/usr/share/debootstrap/scripts/gutsy) ;;
  *)
    MIRROR=${DISTRO_MIRROR:-http://deb.debian.org/debian}
    DEBOOTSTRAP_ARGS=()
    SOURCES=""
    SCRIPT=() ;;
esac
BASE_PKGS="make,git,python3,python3-venv,python3-pip,ca-certificates"
CA_FILE=${SSL_CERT_FILE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}

say() { printf '[distro_check] %s\n' "$*" >&2; }
die() { printf '[distro_check] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mount); run it as root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[ -f "$CA_FILE" ] || die "CA file $CA_FILE (SSL_CERT_FILE) does not exist"

key=$(printf '%s %s %s' "$SUITE" "$MIRROR" "$BASE_PKGS" | sha256sum | cut -c1-12)
root="$FCN_CACHE/distro/root-$SUITE-$key"
home_cache="$FCN_CACHE/distro/home-$SUITE"
wheels="$FCN_CACHE/wheels"
mkdir -p "$FCN_CACHE/distro" "$home_cache" "$wheels"

# ---- the root, made once ---------------------------------------------------
if [ ! -f "$root/.ready" ]; then
  say "debootstrap --variant=minbase $SUITE into $root (once)"
  start=$(date +%s)
  rm -rf "$root.tmp"
  debootstrap --variant=minbase --include="$BASE_PKGS" "${DEBOOTSTRAP_ARGS[@]}" \
    "$SUITE" "$root.tmp" "$MIRROR" "${SCRIPT[@]}" \
    > "$FCN_CACHE/distro/debootstrap-$SUITE.log" 2>&1 \
    || { tail -20 "$FCN_CACHE/distro/debootstrap-$SUITE.log" >&2; die "debootstrap failed"; }
  rm -rf "$root"
  mv "$root.tmp" "$root"
  touch "$root/.ready"
  say "root made in $(( $(date +%s) - start )) s"
fi

# ---- mounts, undone on every exit ------------------------------------------
mounted=()
unmount_all() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do
    umount -R "${mounted[i]}" 2>/dev/null || umount -R -l "${mounted[i]}" \
      || say "WARNING: could not unmount ${mounted[i]}"
  done
  mounted=()
}
trap unmount_all EXIT
trap 'exit 130' INT TERM
bind() {  # bind SOURCE TARGET [--rbind]
  mkdir -p "$2"
  mount "${3:---bind}" "$1" "$2"
  mount --make-rslave "$2"
  mounted+=("$2")
}
# a run killed without its trap leaves mounts behind: clear them first
while read -r target; do
  umount -R -l "$target" 2>/dev/null || true
done < <(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r)
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev" --rbind
bind "$home_cache" "$root/root/.cache"
bind "$wheels" "$root/root/.cache/fcn-caffe/wheels"

# ---- the machine's CA file and pip configuration ---------------------------
cp "$CA_FILE" "$root/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
if [ -d /etc/xdg/pip ]; then
  rm -rf "$root/etc/xdg/pip" && mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/pip"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# the pockets a user's machine has beside the release (debootstrap writes only the release)
[ -z "$SOURCES" ] || echo "$SOURCES" > "$root/etc/apt/sources.list"

# ---- a fresh clone of this commit ------------------------------------------
sha=$(git -C "$REPO" rev-parse HEAD)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] \
  || say "WARNING: uncommitted changes are not checked; the clone is of $sha"
rm -rf "$root/root/fcn"
git clone -q --no-local "$REPO" "$root/root/fcn"
git -C "$root/root/fcn" checkout -q "$sha"

# ---- inside: what a user runs ------------------------------------------------
cat > "$root/root/distro-check.sh" <<'EOF'
set -euo pipefail
cd /root/fcn
step() { local name=$1 s; shift; s=$(date +%s)
  echo "[distro_check] ($name) $*" >&2
  "$@"
  echo "[distro_check] ($name) done in $(( $(date +%s) - s )) s" >&2; }
. /etc/os-release; echo "[distro_check] $PRETTY_NAME, $(python3 --version), $(gcc --version 2>/dev/null | head -1 || echo 'no gcc yet')" >&2
step install make install BENCH_DEPS=0
echo "[distro_check] $(gcc --version | head -1); $(.venv/bin/python -c 'import numpy, google.protobuf as p; print("numpy", numpy.__version__, "protobuf", p.__version__)'); $(protoc --version)" >&2
step tests make test-fast BENCH_DEPS=0
if [ "${DISTRO_SKIP_CUDA:-0}" != 1 ]; then step cuda make cuda-build; fi
EOF
say "checking $sha in $SUITE ($root)"
start=$(date +%s)
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 TERM=dumb SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
  DISTRO_SKIP_CUDA="${DISTRO_SKIP_CUDA:-0}" CAFFE_CACHE=/root/.cache/fcn-caffe/caffe-cpu \
  JOBS="${JOBS:-$(nproc)}" \
  bash /root/distro-check.sh
say "$SUITE: passed in $(( $(date +%s) - start )) s (root, clone and mounts not counted)"

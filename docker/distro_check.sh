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
# Needs root (debootstrap, chroot, mount); installs debootstrap if missing.
# The machine's CA file (SSL_CERT_FILE/PIP_CERT) and pip configuration
# (/etc/pip.conf, /etc/xdg/pip/) are copied in: without them, pip in the root
# cannot verify the package index here.
#
# Environment: DISTRO_SUITE (default trixie; noble for Ubuntu 24.04),
# DISTRO_MIRROR (default: the suite's archive), FCN_CACHE, JOBS,
# DISTRO_STEPS (the make targets run in the clone, each with BENCH_DEPS=0;
# default "install test-fast+cuda-build", where A+B runs make B beside
# make A; e.g. "install test demo" by hand).
set -euo pipefail

say() { printf '[distro_check] %s\n' "$*" >&2; }
die() { printf '[distro_check] ERROR: %s\n' "$*" >&2; exit 1; }

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
bind() {  # bind SOURCE TARGET [--rbind]: a slave mount, so unmounting it never touches the host's
  mkdir -p "$2"
  mount "${3:---bind}" "$1" "$2"
  mount --make-rslave "$2"
  mounted+=("$2")
}

# The steps run inside the root, in the clone.
inside_script() {
  cat <<'EOF'
set -euo pipefail
cd /root/fcn
. /etc/os-release
echo "[distro_check] $PRETTY_NAME, $(python3 --version)" >&2
# Ubuntu's Chromium is a snap, and a chroot has no snapd: its browser test is left out.
args=(BENCH_DEPS=0)
if [ "$ID" = ubuntu ]; then args+=(BROWSER_TESTS=0); fi
for target in $DISTRO_STEPS; do
  s=$(date +%s)
  echo "[distro_check] make $target ${args[*]}" >&2
  case $target in  # A+B: make B beside make A (docker/make_alongside.sh)
    *+*) bash docker/make_alongside.sh "${target#*+}" "${target%%+*}" "${args[@]}" ;;
    *) make "$target" "${args[@]}" ;;
  esac
  echo "[distro_check] make $target: done in $(( $(date +%s) - s )) s" >&2
  if [ "$target" = install ]; then
    echo "[distro_check] $(gcc --version | head -1); $(protoc --version);" \
      "$(.venv/bin/python -c 'import numpy, google.protobuf as p; print("numpy", numpy.__version__, "protobuf", p.__version__)')" >&2
  fi
done
EOF
}

# All in one function, so bash has read the whole script before it runs any
# of it (a checkout that changes this file during a run cannot derail it).
main() {
  local repo suite mirror sources base_pkgs ca_file key root home_cache wheels start sha
  local -a debootstrap_args=() script=()
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  FCN_CACHE=${FCN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fcn-caffe}
  suite=${DISTRO_SUITE:-trixie}
  sources=""
  case "$suite" in
    noble)  # Ubuntu 24.04: universe has glog, gflags, HDF5, OpenBLAS. Debian 12's
            # debootstrap has no noble script (gutsy's serves every later Ubuntu)
            # and no Ubuntu keyring, so only apt inside the root checks signatures.
      mirror=${DISTRO_MIRROR:-http://archive.ubuntu.com/ubuntu}
      sources=$(printf 'deb %s %s main universe\n' "$mirror" noble "$mirror" noble-updates "$mirror" noble-security)
      debootstrap_args=(--components=main,universe)
      [ -e /usr/share/keyrings/ubuntu-archive-keyring.gpg ] || debootstrap_args+=(--no-check-gpg)
      script=(/usr/share/debootstrap/scripts/noble)
      [ -e "${script[0]}" ] || script=(/usr/share/debootstrap/scripts/gutsy) ;;
    *)
      mirror=${DISTRO_MIRROR:-http://deb.debian.org/debian} ;;
  esac
  base_pkgs="make,git,python3,python3-venv,python3-pip,ca-certificates"
  ca_file=${SSL_CERT_FILE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}

  [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mount); run it as root"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || die "could not apt-get install debootstrap"
  fi
  [ -f "$ca_file" ] || die "CA file $ca_file (SSL_CERT_FILE) does not exist"

  key=$(printf '%s %s %s' "$suite" "$mirror" "$base_pkgs" | sha256sum | cut -c1-12)
  root="$FCN_CACHE/distro/root-$suite-$key"
  home_cache="$FCN_CACHE/distro/home-$suite"
  wheels="$FCN_CACHE/wheels"
  mkdir -p "$FCN_CACHE/distro" "$home_cache" "$wheels"
  # one check per root at a time (a second would delete the first one's clone)
  exec 9> "$FCN_CACHE/distro/$suite.lock"
  flock -n 9 || die "another distro check of $suite is running (lock $FCN_CACHE/distro/$suite.lock)"

  # ---- the root, made once -------------------------------------------------
  if [ ! -f "$root/.ready" ]; then
    say "debootstrap --variant=minbase $suite into $root (once)"
    start=$(date +%s)
    rm -rf "$root.tmp"
    debootstrap --variant=minbase --include="$base_pkgs" "${debootstrap_args[@]}" \
      "$suite" "$root.tmp" "$mirror" "${script[@]}" \
      > "$FCN_CACHE/distro/debootstrap-$suite.log" 2>&1 \
      || { tail -20 "$FCN_CACHE/distro/debootstrap-$suite.log" >&2; die "debootstrap failed"; }
    rm -rf "$root"
    mv "$root.tmp" "$root"
    touch "$root/.ready"
    say "root made in $(( $(date +%s) - start )) s"
  fi

  # ---- mounts ----------------------------------------------------------------
  trap unmount_all EXIT
  trap 'exit 130' INT TERM
  # a run killed without its trap leaves mounts behind: clear them first
  while read -r target; do
    umount -R -l "$target" 2>/dev/null || true
  done < <(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r)
  bind /proc "$root/proc"
  bind /sys "$root/sys"
  bind /dev "$root/dev" --rbind
  bind "$home_cache" "$root/root/.cache"
  bind "$wheels" "$root/root/.cache/fcn-caffe/wheels"

  # ---- the machine's CA file and pip configuration, apt's pockets -----------
  cp "$ca_file" "$root/etc/ssl/certs/ca-certificates.crt"
  if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
  if [ -d /etc/xdg/pip ]; then
    rm -rf "$root/etc/xdg/pip" && mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/pip"
  fi
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  # the pockets a user's machine has beside the release (debootstrap writes only the release)
  if [ -n "$sources" ]; then echo "$sources" > "$root/etc/apt/sources.list"; fi

  # ---- a fresh clone of this commit ----------------------------------------
  sha=$(git -C "$repo" rev-parse HEAD)
  [ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] \
    || say "WARNING: uncommitted changes are not checked; the clone is of $sha"
  rm -rf "$root/root/fcn"
  git clone -q --no-local "$repo" "$root/root/fcn"
  git -C "$root/root/fcn" checkout -q "$sha"

  # ---- inside: what a user runs ----------------------------------------------
  inside_script > "$root/root/distro-check.sh"
  say "checking $sha in $suite ($root)"
  start=$(date +%s)
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISTRO_STEPS="${DISTRO_STEPS:-install test-fast+cuda-build}" \
    CAFFE_CACHE=/root/.cache/fcn-caffe/caffe-cpu JOBS="${JOBS:-$(nproc)}" \
    bash /root/distro-check.sh
  say "$suite: passed in $(( $(date +%s) - start )) s (root, clone and mounts not counted)"
}

# exit on the same line: bash reads a script as it runs it, so a checkout that
# changed this file during a run would otherwise go on reading at the old offset
main "$@"; exit

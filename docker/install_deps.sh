#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that building pycaffe needs (shared by
# `make install` and docker/Dockerfile). Skips apt entirely when all are present.
#
# One package list per supported platform (docs/platforms.md), chosen from
# /etc/os-release: the names of the Python headers and of Boost differ. Any
# other platform is refused before anything is installed; FCN_PLATFORM names
# one of the lists to try it anyway (e.g. FCN_PLATFORM=debian-13 on a
# derivative of Debian 13). FCN_OS_RELEASE reads another os-release file
# (the tests' fake platforms).
set -euo pipefail

# Sets platform (ID-VERSION_ID) and platform_name (PRETTY_NAME) from os-release.
detect_platform() {
  local ID="" VERSION_ID="" PRETTY_NAME="" file=${FCN_OS_RELEASE:-/etc/os-release}
  # shellcheck disable=SC1090  # the machine's own file
  [ -r "$file" ] && . "$file"
  platform="${ID:-unknown}-${VERSION_ID:-unknown}"
  platform_name=${PRETTY_NAME:-"no $file"}
}

# as_root WHAT CMD...: CMD as root, through sudo when not root.
as_root() {
  local what=$1; shift
  if [ "$(id -u)" -eq 0 ]; then "$@"; return; fi
  command -v sudo >/dev/null || { echo "[install_deps] ERROR: need root (or sudo) to $what" >&2; exit 1; }
  sudo "$@"
}

detect_platform
if [ -n "${FCN_PLATFORM:-}" ]; then platform=$FCN_PLATFORM platform_name="FCN_PLATFORM=$FCN_PLATFORM"; fi
case "$platform" in
  debian-12)    python=python3.11 boost=1.74 ;;
  debian-13)    python=python3.13 boost=1.83 ;;
  ubuntu-24.04) python=python3.12 boost=1.83 ;;
  *)
    echo "[install_deps] ERROR: unsupported platform '$platform_name' ($platform); supported: Debian 12, Debian 13, Ubuntu 24.04 (docs/platforms.md); FCN_PLATFORM=debian-13 (or debian-12, ubuntu-24.04) tries that list anyway" >&2
    exit 2 ;;
esac

PKGS="cmake g++ make curl ca-certificates python3-dev ${python}-dev python3-venv
libboost-system${boost}-dev libboost-thread${boost}-dev libboost-filesystem${boost}-dev
libboost-python${boost}-dev libboost-regex${boost}-dev libprotobuf-dev protobuf-compiler
libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev libgtest-dev libdnnl-dev patch"
# --test: instead, what the test suite needs beyond the build (`make test`, `make
# test-fast`): a Chromium, in which tests render report.html headless. Debian
# packages it; Ubuntu 24.04 ships it only as a snap (its chromium-browser deb
# is a wrapper that installs the snap), which containers and chroots lack.
WHAT=build
if [ "${1:-}" = "--test" ]; then
  WHAT=test PKGS="chromium"
  if [ -n "${FCN_CHROMIUM:-}" ]; then
    [ -x "$FCN_CHROMIUM" ] || { echo "[install_deps] ERROR: FCN_CHROMIUM=$FCN_CHROMIUM is not an executable file" >&2; exit 1; }
    echo "[install_deps] all test packages present (Chromium: FCN_CHROMIUM=$FCN_CHROMIUM)"
    exit 0
  fi
  if [ "${platform%%-*}" = ubuntu ]; then
    if found=$(PATH="$PATH:/snap/bin" command -v chromium); then
      echo "[install_deps] all test packages present ($platform: Chromium at $found)"
      exit 0
    fi
    if command -v snap >/dev/null && snap list >/dev/null 2>&1; then
      echo "[install_deps] installing ($platform): the chromium snap"
      as_root "snap install chromium" snap install chromium
      exit 0
    fi
    echo "[install_deps] ERROR: $platform_name ships Chromium only as a snap and snapd is not running here (a container or chroot?); the report.html browser test needs one: set FCN_CHROMIUM=/path/to/chromium (or Chrome), or leave that test out with 'make test BROWSER_TESTS=0'" >&2
    exit 1
  fi
fi
missing=()
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[install_deps] all $WHAT packages present ($platform)"
  exit 0
fi
echo "[install_deps] installing ($platform): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root "apt-get install ${missing[*]}" apt-get update -qq
as_root "apt-get install ${missing[*]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

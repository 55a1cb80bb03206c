#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that building pycaffe needs (shared by
# `make install` and docker/Dockerfile). Skips apt entirely when all are present.
set -euo pipefail
PKGS="cmake g++ make curl ca-certificates python3-dev python3-venv
libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-python-dev
libboost-regex-dev libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev
libhdf5-dev libopenblas-dev libgtest-dev patch"
# --test: instead, what the test suite needs beyond the build (`make test`, `make
# test-fast`): Debian's chromium, in which tests render report.html headless.
WHAT=build
if [ "${1:-}" = "--test" ]; then PKGS="chromium"; WHAT=test; fi
missing=()
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[install_deps] all $WHAT packages present"
  exit 0
fi
echo "[install_deps] installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "[install_deps] ERROR: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

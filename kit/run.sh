#!/usr/bin/env bash
# Every GPU check in one call, from an unpacked GPU kit (docs/gpu-kit.md).
#
#   kit/run.sh OUTDIR [--gpu N] [--parts compare,bench,train,demo,nccl]
#              [--nvidia-site-packages DIR] [--torch-python PY]
#              [--gtest-seconds S] [--selftest [--compare REF.npz]]
#
# Writes at most 8 files into OUTDIR (new or empty): env.txt (host, GPU,
# driver, the CUDA libraries found or missing with their versions, the kit's
# manifest), gtest.txt (Caffe's own gtests: GPU mode on a GPU, else the
# CPU-typed ones), one <part>.txt per bench.gpu_check part, and run.log
# (everything printed). Without a GPU it runs what it can and the parts that
# need one say so in their rows; the exit status is then non-zero.
# --selftest instead runs only the CPU-mode self-test (kit/selftest.py) into
# OUTDIR/selftest.npz, comparing with REF.npz when given (make kit-check).
set -uo pipefail
export PATH="${PATH:-/usr/local/bin:/usr/bin:/bin}"
export LC_ALL=C

usage="usage: kit/run.sh OUTDIR [--gpu N] [--parts P1,P2,...] [--nvidia-site-packages DIR] [--torch-python PY] [--gtest-seconds S] [--selftest [--compare REF.npz]]"
PARTS_KNOWN="compare bench train demo nccl"
err() { echo "kit/run.sh: error: $*" >&2; exit 2; }

out="" gpu=0 parts="compare,bench,train,demo,nccl" nvsite="" torch_python="${TORCH_PYTHON:-}"
gtest_seconds=90 selftest=0 compare=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu|--parts|--nvidia-site-packages|--torch-python|--gtest-seconds|--compare)
      [ $# -ge 2 ] && [ -n "$2" ] || err "$1 needs a value"
      case "$1" in
        --gpu) gpu=$2 ;; --parts) parts=$2 ;; --nvidia-site-packages) nvsite=$2 ;;
        --torch-python) torch_python=$2 ;; --gtest-seconds) gtest_seconds=$2 ;; --compare) compare=$2 ;;
      esac
      shift 2 ;;
    --selftest) selftest=1; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) err "unknown option $1 ($usage)" ;;
    *) [ -z "$out" ] || err "one OUTDIR only (got $out and $1)"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || err "OUTDIR is missing ($usage)"
[[ "$gpu" =~ ^[0-9]+$ ]] || err "--gpu $gpu: expected a GPU index (0, 1, ...)"
[[ "$gtest_seconds" =~ ^[0-9]+$ ]] && [ "$gtest_seconds" -gt 0 ] || err "--gtest-seconds $gtest_seconds: expected a whole number of seconds > 0"
for p in ${parts//,/ }; do
  [[ " $PARTS_KNOWN " == *" $p "* ]] || err "--parts: unknown part '$p' (known: ${PARTS_KNOWN// /,})"
done
[ -z "${parts//,/}" ] && err "--parts is empty (known: ${PARTS_KNOWN// /,})"
[ -z "$nvsite" ] || [ -d "$nvsite/nvidia" ] || err "--nvidia-site-packages $nvsite: no nvidia/ directory there (expected a site-packages with NVIDIA's CUDA wheels)"
[ -z "$compare" ] || [ "$selftest" = 1 ] || err "--compare goes with --selftest"
[ -z "$compare" ] || [ -f "$compare" ] || err "--compare $compare: no such file"
[ -z "$torch_python" ] || [ -x "$torch_python" ] || command -v "$torch_python" >/dev/null || err "--torch-python $torch_python: not an executable"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then err "$out is not empty (give a new or empty directory)"; fi

top=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd -P)
runtime="$top/runtime"
[ -x "$runtime/bin/python" ] || err "$top is not an unpacked GPU kit (no runtime/bin/python; build one with make gpu-kit)"
mkdir -p "$out" || err "cannot create $out"
out=$(cd "$out" && pwd -P)
py="$runtime/bin/python"
caller_ld_path="${LD_LIBRARY_PATH:-}"
exec > >(tee -a "$out/run.log") 2>&1
tee_pid=$!
say() { printf '[kit %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
t_start=$(date +%s)
say "kit $top -> $out"

# ---- the host's CUDA libraries -------------------------------------------------
nvidia_dirs=()
if [ -n "$nvsite" ]; then
  nvidia_dirs=("$(cd "$nvsite/nvidia" && pwd -P)")
elif command -v python3 >/dev/null; then
  # the host's own Python (PyTorch's NVIDIA wheels), outside the kit's environment
  while IFS= read -r d; do [ -d "$d" ] && nvidia_dirs+=("$d"); done < <(
    env -u PYTHONHOME -u PYTHONPATH python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null)
fi
ld_file=$(mktemp)
# at exit: remove the temporary files, and let tee write run.log's last lines
trap 'rm -f "$ld_file" "${torch_wrapper:-}"; exec >&- 2>&-; wait "$tee_pid" 2>/dev/null' EXIT
{
  echo "# kit/run.sh environment, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null), $(uname -sr), $( . /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; memory $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null)"
  if command -v nvidia-smi >/dev/null; then
    echo "GPUs (nvidia-smi):"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv 2>&1 | sed 's/^/  /'
  else
    echo "GPUs: no nvidia-smi on this host"
  fi
  echo "nvidia wheel directories: ${nvidia_dirs[*]:-none found}"
  "$py" -m kit.cuda_libs "${nvidia_dirs[@]/#/--nvidia-dir=}" --ld-path "$caller_ld_path" --export "$ld_file"
  echo "cuda_libs_status: $?"
  echo "kit manifest (runtime/MANIFEST.json):"
  sed 's/^/  /' "$runtime/MANIFEST.json"; echo
} > "$out/env.txt" 2>&1
cat "$out/env.txt"
KIT_CUDA_LIBRARY_PATH=$(cat "$ld_file")
export KIT_CUDA_LIBRARY_PATH
if ! grep -q '^cuda_libs_status: 0' "$out/env.txt"; then
  say "FAIL: required CUDA libraries are missing (see above); pycaffe cannot load without them"
  exit 1
fi

cd "$top" || exit 1
if [ "$selftest" = 1 ]; then
  say "CPU-mode self-test"
  "$py" -m kit.selftest "$out/selftest.npz" ${compare:+--compare "$compare"}
  rc=$?
  say "self-test exit $rc"
  exit $rc
fi

# ---- mode ----------------------------------------------------------------------
n_gpus=0
command -v nvidia-smi >/dev/null && n_gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
status=0
if [ "$n_gpus" -gt 0 ]; then
  [ "$gpu" -lt "$n_gpus" ] || err "--gpu $gpu: this host has $n_gpus GPU(s)"
  say "$n_gpus GPU(s); using GPU $gpu"
  gtest_mode=(--gpu "$gpu")
else
  say "no GPU: GPU-mode gtests and the GPU parts cannot run here; running what the CPU allows (exit status will be non-zero)"
  gtest_mode=(--cpu)
  status=1
fi

# ---- Caffe's gtests --------------------------------------------------------------
say "Caffe gtests (limit ${gtest_seconds} s)"
"$py" -m kit.gtest "$out/gtest.txt" --binary "$runtime/bin/caffe-gtest" "${gtest_mode[@]}" \
  --seconds "$gtest_seconds" || status=1

# ---- bench.gpu_check parts -------------------------------------------------------
torch_args=()
if [ -z "$torch_python" ] && command -v python3 >/dev/null \
   && env -u PYTHONHOME -u PYTHONPATH python3 -c 'import torch' 2>/dev/null; then
  torch_python=$(command -v python3)
fi
if [ -n "$torch_python" ]; then
  # the host's PyTorch interpreter must not see the kit's Python environment
  torch_wrapper=$(mktemp)
  printf '#!/bin/sh\nexec env -u PYTHONHOME -u PYTHONNOUSERSITE LD_LIBRARY_PATH=%q %q "$@"\n' \
    "$caller_ld_path" "$(command -v "$torch_python")" > "$torch_wrapper"
  chmod +x "$torch_wrapper"
  torch_args=(--torch-python "$torch_wrapper")
  say "PyTorch reference interpreter: $torch_python"
fi
say "bench.gpu_check --parts $parts --gpu $gpu"
"$py" -m bench.gpu_check --parts "$parts" --gpu "$gpu" --results "$out" "${torch_args[@]}" || status=1

n_files=$(find "$out" -maxdepth 1 -type f | wc -l)
say "done in $(( $(date +%s) - t_start )) s: $n_files files in $out: $(cd "$out" && ls | tr '\n' ' ')"
[ "$n_files" -le 8 ] || { say "FAIL: more than 8 result files"; status=1; }
say "exit status $status"
exit $status

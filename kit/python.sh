#!/bin/sh
# The kit's Python (installed as runtime/bin/python by kit/assemble.py).
#
# Runs the carried CPython with the carried stdlib and site-packages, the
# kit's own libraries first on the loader's path, then the host's CUDA
# libraries (KIT_CUDA_LIBRARY_PATH, which kit/run.sh fills from
# kit/cuda_libs.py), then whatever LD_LIBRARY_PATH the caller had (an HPC
# `module load cuda`). The project's code (the kit's top directory) is importable.
runtime=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd -P)
top=$(dirname -- "$runtime")
PYTHONHOME="$runtime/python"
PYTHONNOUSERSITE=1
PYTHONPATH="$top"
LD_LIBRARY_PATH="$runtime/lib${KIT_CUDA_LIBRARY_PATH:+:$KIT_CUDA_LIBRARY_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONHOME PYTHONNOUSERSITE PYTHONPATH LD_LIBRARY_PATH
exec "$runtime"/python/bin/python3.* "$@"

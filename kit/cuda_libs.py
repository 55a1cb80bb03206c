"""Find the CUDA libraries the kit leaves to the host, and say which were found.

The kit carries no NVIDIA library (kit/elf.py). A GPU host with PyTorch has
them as NVIDIA's wheels (`nvidia/<part>/lib` under a site-packages: cu13,
cudnn, nccl, ...); an HPC cluster may have them on LD_LIBRARY_PATH from
`module load`. This prints, for every library pycaffe or cuDNN loads, where it
was found and its version (the owning wheel's version, else the file's
versioned name), or that it is missing; and writes the directories to put on
the loader's path.

Usage: python -m kit.cuda_libs [--nvidia-dir DIR]... [--ld-path PATHS] [--export FILE]
Exit status 0 when every required library was found, 1 otherwise.
"""
import argparse
import ctypes
import glob
import os
import re
import sys

# soname, what needs it, required (False: only some cuDNN engines need it)
LIBRARIES = (
    ("libcudart.so.13", "CUDA runtime (pycaffe)", True),
    ("libcublas.so.13", "cuBLAS (pycaffe)", True),
    ("libcublasLt.so.13", "cuBLASLt (cuBLAS)", True),
    ("libcurand.so.10", "cuRAND (pycaffe)", True),
    ("libcudnn.so.9", "cuDNN (pycaffe)", True),
    ("libcudnn_graph.so.9", "cuDNN graph (cuDNN)", True),
    ("libcudnn_ops.so.9", "cuDNN ops (cuDNN, dlopened)", True),
    ("libcudnn_cnn.so.9", "cuDNN convolutions (cuDNN, dlopened)", True),
    ("libcudnn_engines_precompiled.so.9", "cuDNN engines (dlopened)", True),
    ("libcudnn_engines_runtime_compiled.so.9", "cuDNN runtime-compiled engines (dlopened)", False),
    ("libcudnn_heuristic.so.9", "cuDNN heuristics (dlopened)", False),
    ("libnccl.so.2", "NCCL (pycaffe)", True),
    ("libnvrtc.so.13", "NVRTC (cuDNN's runtime-compiled engines, dlopened)", False),
)


def wheel_versions(nvidia_dir):
    """{absolute file path: 'dist version'} from the RECORDs of the NVIDIA
    wheels installed beside `nvidia_dir` (its parent is a site-packages)."""
    site = os.path.dirname(nvidia_dir)
    owners = {}
    for record in glob.glob(os.path.join(site, "nvidia_*.dist-info", "RECORD")):
        m = re.match(r"(nvidia_[\w]+?)-([\w.]+)\.dist-info", os.path.basename(os.path.dirname(record)))
        if not m:
            continue
        with open(record) as f:
            for line in f:
                rel = line.split(",")[0]
                if "/lib/" in rel:
                    owners[os.path.normpath(os.path.join(site, rel))] = f"{m.group(1)} {m.group(2)}"
    return owners


def _int_query(lib, func, n=1):
    vals = [ctypes.c_int(0) for _ in range(n)]
    if getattr(lib, func)(*map(ctypes.byref, vals)) != 0:
        raise OSError(func)
    return [v.value for v in vals]


def _cublas(lib):
    """cuBLAS's MAJOR, MINOR, PATCH (cublasGetProperty's libraryPropertyType 0, 1, 2)."""
    vals = []
    for kind in (0, 1, 2):
        v = ctypes.c_int(0)
        if lib.cublasGetProperty(kind, ctypes.byref(v)) != 0:
            raise OSError("cublasGetProperty")
        vals.append(v.value)
    return vals


# soname prefix -> how the library reports its own version (no GPU needed)
SELF_REPORTS = {
    "libcudart": lambda l: "%d.%d" % divmod(_int_query(l, "cudaRuntimeGetVersion")[0] // 10, 100),
    "libcublas.": lambda l: "%d.%d.%d" % tuple(_cublas(l)),
    "libcurand": lambda l: str(_int_query(l, "curandGetVersion")[0]),
    "libcudnn.": lambda l: "%d.%d.%d" % (lambda v: (v // 10000, v % 10000 // 100, v % 100))(
        ctypes.c_size_t(l.cudnnGetVersion()).value),
    "libnccl": lambda l: "%d.%d.%d" % (lambda v: (v // 10000, v % 10000 // 100, v % 100))(
        _int_query(l, "ncclGetVersion")[0]),
    "libnvrtc": lambda l: "%d.%d" % tuple(_int_query(l, "nvrtcVersion", 2)),
}


def self_reported_version(path):
    """The version the library itself reports (None if it has no such call)."""
    name = os.path.basename(path)
    for prefix, query in SELF_REPORTS.items():
        if name.startswith(prefix):
            try:
                return query(ctypes.CDLL(path))
            except (OSError, AttributeError):
                return None
    return None


def file_version(path):
    real = os.path.basename(os.path.realpath(path))
    return real if real != os.path.basename(path) else None


def driver_version():
    """The driver's CUDA version via libcuda (None when there is no driver)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(v)) != 0:
        return "libcuda.so.1 loads, version query failed"
    return f"{v.value // 1000}.{v.value % 1000 // 10}"


def search_dirs(nvidia_dirs, ld_path):
    dirs = []
    for nv in nvidia_dirs:
        dirs += sorted(glob.glob(os.path.join(nv, "*", "lib")))
    dirs += [d for d in ld_path.split(":") if d]
    return list(dict.fromkeys(os.path.abspath(d) for d in dirs if os.path.isdir(d)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nvidia-dir", action="append", default=[],
                   help="an installed `nvidia` package directory (site-packages/nvidia)")
    p.add_argument("--ld-path", default="", help="extra directories, colon-separated")
    p.add_argument("--export", help="write the directories to use, colon-separated, here")
    a = p.parse_args(argv)
    for d in a.nvidia_dir:
        if not os.path.isdir(d):
            p.error(f"--nvidia-dir {d}: no such directory")

    dirs = search_dirs(a.nvidia_dir, a.ld_path)
    owners = {}
    for nv in a.nvidia_dir:
        owners.update(wheel_versions(nv))
    print("CUDA libraries (not carried by the kit; searched: "
          + (", ".join(dirs) if dirs else "no directories") + ")")
    used, missing = [], []
    for soname, why, required in LIBRARIES:
        hit = next((os.path.join(d, soname) for d in dirs if os.path.exists(os.path.join(d, soname))), None)
        if hit is None:
            print(f"  MISSING  {soname:42s} {why}{'' if required else ' (optional)'}")
            if required:
                missing.append(soname)
            continue
        reported = self_reported_version(hit)
        version = "; ".join(v for v in (owners.get(os.path.normpath(hit)) or file_version(hit),
                                        reported and f"reports {reported}") if v) or "version unknown"
        print(f"  found    {soname:42s} {version:34s} {hit}")
        used.append(os.path.dirname(hit))
    drv = driver_version()
    print(f"  driver   libcuda.so.1: {'CUDA ' + drv if drv and drv[0].isdigit() else drv or 'not found (no NVIDIA driver: CPU mode only)'}")
    path = ":".join(dict.fromkeys(used))
    if a.export:
        with open(a.export, "w") as f:
            f.write(path + "\n")
    if missing:
        print(f"missing required CUDA libraries: {', '.join(missing)} "
              "(give --nvidia-site-packages DIR, a site-packages holding NVIDIA's CUDA 13 wheels, "
              "or put their directories on LD_LIBRARY_PATH)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

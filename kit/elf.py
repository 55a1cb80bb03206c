"""Which shared libraries an ELF file loads, and which of them the kit may
leave to the host.

The kit carries every library its programs load except three groups:
- NVIDIA's CUDA libraries (runtime, cuBLAS, cuRAND, cuDNN, NCCL, NVRTC and
  the driver), found on the host at run time (kit/cuda_libs.py);
- the GNU C library itself (HOST_ALLOWED), which must match the host's
  kernel interface and dynamic loader and cannot be carried;
- GCC's C++ runtime (libstdc++, libgcc_s), which CUDA's own libraries take
  from the host too; libz and everything else is carried.
`kit/build.sh` uses this module to collect the libraries, `kit/ldcheck.py`
to prove that an unpacked kit resolves nothing else outside itself.
"""
import os
import re
import subprocess

# NVIDIA's libraries: never carried, always taken from the host.
CUDA_PATTERN = re.compile(
    r"^lib(cudart|cublas|cublasLt|curand|cudnn(_\w+)?|nccl|nvrtc(-builtins)?|"
    r"nvrtc\.alt|nvJitLink|cuda|nvidia-\w+)\.so(\.|$)")
# The GNU C library's own objects (glibc >= 2.34 keeps the old names as
# stubs), and GCC's C++ runtime: the host's libstdc++/libgcc_s must be at
# least GCC 12's (GLIBCXX_3.4.30, Ubuntu 22.04 and later); Debian 12's copies
# need glibc 2.36, the host's do not, so carrying them would shut out
# Ubuntu 22.04 (glibc 2.35).
HOST_ALLOWED = frozenset({
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6",
    "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
    "libresolv.so.2", "libanl.so.1", "libmvec.so.1",
    "libstdc++.so.6", "libgcc_s.so.1",
})

_LDD_LINE = re.compile(r"^\s*(\S+)\s*(?:=>\s*(\S+|not found))?(?:\s*\(0x[0-9a-f]+\))?\s*$")


def is_elf(path):
    """True for a regular file that starts with the ELF magic."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def is_cuda(name):
    return bool(CUDA_PATTERN.match(os.path.basename(name)))


def is_host_allowed(name):
    return os.path.basename(name) in HOST_ALLOWED


def ldd(path, env):
    """{soname: resolved path, or None when not found} for `path` under `env`
    (ldd asks the dynamic loader itself, so LD_LIBRARY_PATH and each
    object's RUNPATH count exactly as when the program runs).

    A library in a wheel's `<pkg>.libs` directory is found by its siblings
    through the DT_RPATH of the extension module that loads them all
    (auditwheel's layout); ldd on the library alone lacks that RPATH, so its
    own directory is searched too."""
    if os.path.basename(os.path.dirname(path)).endswith(".libs"):
        env = dict(env, LD_LIBRARY_PATH=":".join(
            p for p in (env.get("LD_LIBRARY_PATH"), os.path.dirname(path)) if p))
    out = subprocess.run(["ldd", path], env=env, capture_output=True, text=True)
    if out.returncode != 0 and "not a dynamic executable" in (out.stdout + out.stderr):
        return {}
    deps = {}
    for line in out.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if not m:
            continue
        name, where = m.group(1), m.group(2)
        if where is None:          # "/lib64/ld-linux... (0x...)", or the kernel's vdso
            if name.startswith("/"):
                deps[os.path.basename(name)] = name
        else:
            deps[name] = None if where == "not found" else where
    return deps


def elf_files(root):
    """Every ELF file (not symlink) under `root`, sorted."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if is_elf(p):
                found.append(p)
    return sorted(found)


def versions_needed(path, tag):
    """The `tag`_x.y symbol versions (GLIBC, GLIBCXX) `path` requires."""
    out = subprocess.run(["readelf", "-V", "--wide", path], capture_output=True, text=True)
    return set(re.findall(rf"Name: {tag}_([0-9.]+)", out.stdout))


def version_key(v):
    return tuple(int(x) for x in v.split("."))

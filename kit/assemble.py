"""Stage the GPU kit's tree from a finished CUDA pycaffe build (`make gpu-kit`).

Why each part is there (docs/gpu-kit.md has the whole story):
- runtime/python: the very CPython 3.11 the build venv was made from
  (pycaffe links libpython3.11 and Debian 12's Boost.Python 3.11; the GPU
  hosts have 3.12 + numpy 2, which cannot load it), its stdlib trimmed
  (tests, idlelib, tkinter, ensurepip, lib2to3, static libpython, caches and
  the extension modules for TLS, databases and terminals, which the kit's
  work never uses), plus site-packages with the build venv's numpy,
  protobuf, pillow, six and the part of scipy the data layers import;
- runtime/python/.../site-packages/caffe: pycaffe (CUDA + cuDNN + NCCL);
- runtime/lib: every non-CUDA shared library those load (ldd's answer),
  stripped, each with RUNPATH $ORIGIN; runtime/bin/caffe-gtest: Caffe's own
  gtests for the layers FCN uses (runtime/gtest/: their data files);
- the project's git-tracked files at the top, so `kit/run.sh` is the kit's
  entry point.
The CUDA libraries are left to the host (kit/elf.py says which are which).

Usage: python -m kit.assemble --stage DIR --venv-python PY --caffe-src SRC
       --gtest BIN --cuda-lib DIR --archs "90" --stamp S
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

from kit import elf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# stdlib parts the kit never uses (tests, GUIs, installers, the static lib)
STDLIB_DROP_DIRS = {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo",
                    "ensurepip", "lib2to3", "__pycache__", "site-packages", "dist-packages"}
STDLIB_DROP_PREFIXES = ("config-",)           # config-3.11-x86_64-linux-gnu: libpython.a
# extension modules for TLS, databases, terminals, Tk, the test suite and legacy audio
DYNLOAD_DROP = ("_ssl", "_hashlib", "_sqlite3", "_tkinter", "_curses", "_curses_panel",
                "readline", "_dbm", "_gdbm", "nis", "_crypt", "spwd", "ossaudiodev",
                "_test", "_xxtest", "xxlimited", "_ctypes_test", "_xxsubinterpreters")
# distributions carried into site-packages (protobuf's files live under google/)
DISTS = ("numpy", "scipy", "pillow", "protobuf", "six")
# anywhere in site-packages: tests, caches, C headers and stubs
SITE_DROP_DIRS = {"tests", "test", "__pycache__", "include", "f2py", "distutils"}
SITE_DROP_SUFFIXES = (".pyi", ".pxd", ".h", ".c", ".pyx", ".a")


def say(msg):
    print(f"[kit.assemble] {msg}", file=sys.stderr, flush=True)


def venv_query(python, code, *args):
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])


PY_INFO = r"""
import json, os, sys, sysconfig
print(json.dumps(dict(
    base_prefix=sys.base_prefix, version="%d.%d" % sys.version_info[:2],
    full_version=sys.version.split()[0],
    executable=os.path.realpath(os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])),
    stdlib=sysconfig.get_paths(vars={"base": sys.base_prefix, "installed_base": sys.base_prefix})["stdlib"],
    platstdlib=sysconfig.get_paths(vars={"platbase": sys.base_prefix, "installed_platbase": sys.base_prefix})["platstdlib"],
    site=sysconfig.get_paths()["purelib"], libdir=sysconfig.get_config_var("LIBDIR"))))
"""

# Which dists' files, and which scipy subpackages the project's data code loads:
# scipy is ~140 MB installed; the data layers use scipy.io (.mat labels) and
# data/layouts.py scipy.sparse, pycaffe (caffe.io) scipy.ndimage. The trace runs what they run.
DIST_INFO = r"""
import importlib.metadata as md, json, os, sys, tempfile
dists = {}
for name in sys.argv[1].split(","):
    d = md.distribution(name)
    dists[name] = dict(version=d.version, files=[str(f) for f in d.files or []])
import numpy as np, scipy.io, scipy.sparse
with tempfile.TemporaryDirectory() as tmp:
    p = os.path.join(tmp, "t.mat")
    scipy.io.savemat(p, {"S": np.eye(3), "B": scipy.sparse.csc_matrix(np.eye(3, dtype=bool)),
                         "names": np.array(["x"])})
    scipy.io.loadmat(p, squeeze_me=True, struct_as_record=False)
import caffe, data.layouts, layers.io  # noqa: scipy users: caffe.io (ndimage), the data code
subs = sorted({m.split(".")[1] for m in sys.modules if m.startswith("scipy.")})
maps = open("/proc/self/maps").read()
print(json.dumps(dict(dists=dists, scipy_subpackages=subs,
                      scipy_libs_loaded="scipy.libs" in maps)))
"""


def copy_file(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=True)


def copy_project(stage):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    n = 0
    for rel in files:
        src = os.path.join(ROOT, rel)
        if rel and os.path.isfile(src):
            copy_file(src, os.path.join(stage, rel))
            n += 1
    say(f"project: {n} git-tracked files")


def copy_stdlib(info, pydir):
    ver = info["version"]
    dst_lib = os.path.join(pydir, "lib", f"python{ver}")

    def ignore(dirpath, names):
        drop = {n for n in names if n in STDLIB_DROP_DIRS or n.startswith(STDLIB_DROP_PREFIXES)}
        if os.path.basename(dirpath) == "lib-dynload":
            drop |= {n for n in names if n.split(".")[0] in DYNLOAD_DROP
                     or n.split(".")[0].startswith(("_test", "xxlimited"))}
        return drop

    shutil.copytree(info["stdlib"], dst_lib, ignore=ignore, symlinks=False)
    dynload = os.path.join(info["platstdlib"], "lib-dynload")
    if not os.path.isdir(os.path.join(dst_lib, "lib-dynload")) and os.path.isdir(dynload):
        shutil.copytree(dynload, os.path.join(dst_lib, "lib-dynload"), ignore=ignore)
    copy_file(info["executable"], os.path.join(pydir, "bin", f"python{ver}"))
    say(f"python {info['full_version']} from {info['base_prefix']}")
    return os.path.join(dst_lib, "site-packages")


def keep_site_file(rel, scipy_keep):
    parts = rel.split("/")
    if parts[0].endswith((".dist-info", ".egg-info")) or rel.startswith("..") or parts[0] == "bin":
        return False
    if any(p in SITE_DROP_DIRS for p in parts[:-1]) or rel.endswith(SITE_DROP_SUFFIXES):
        return False
    if parts[0] == "scipy" and len(parts) > 2 and parts[1] not in scipy_keep:
        return False
    return True


def copy_site_packages(venv_python, src_site, dst_site):
    trace = venv_query(venv_python, DIST_INFO, ",".join(DISTS))
    scipy_keep = set(trace["scipy_subpackages"]) | {"_lib"}
    versions = {}
    for name, d in trace["dists"].items():
        versions[name] = d["version"]
        for rel in d["files"]:
            if rel.startswith("scipy.libs/") and not trace["scipy_libs_loaded"]:
                continue
            if keep_site_file(rel, scipy_keep):
                copy_file(os.path.join(src_site, rel), os.path.join(dst_site, rel))
    say(f"site-packages: {versions}; scipy subpackages {sorted(scipy_keep)}"
        f"{'' if trace['scipy_libs_loaded'] else ' (no scipy.libs: nothing loaded needs its BLAS)'}")
    return versions


def copy_pycaffe(caffe_src, dst_site):
    src = os.path.join(caffe_src, "python", "caffe")
    shutil.copytree(src, os.path.join(dst_site, "caffe"), symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "*.cpp"))


def collect_libraries(runtime, env):
    """Copy every non-CUDA, non-glibc library the kit's ELF files load into
    runtime/lib; return the CUDA sonames they need."""
    libdir = os.path.join(runtime, "lib")
    os.makedirs(libdir, exist_ok=True)
    cuda, copied = set(), {}
    for path in elf.elf_files(runtime):
        for name, where in elf.ldd(path, env).items():
            if elf.is_cuda(name):
                cuda.add(name)
            elif elf.is_host_allowed(name):
                continue
            elif where is None:
                raise SystemExit(f"kit.assemble: {path} needs {name}, which is not found")
            elif os.path.realpath(where).startswith(runtime + os.sep):
                continue
            elif name not in copied:
                copy_file(where, os.path.join(libdir, name))
                copied[name] = where
            elif os.path.realpath(where) != os.path.realpath(copied[name]):
                raise SystemExit(f"kit.assemble: {name} resolves to {copied[name]} and, for "
                                 f"{path}, to {where}: one copy only")
    for name, where in sorted(copied.items()):
        say(f"carried {name} <- {where}")
    return sorted(cuda), copied


def prune_libraries(runtime, cuda_lib):
    """Drop carried libraries nothing loads any more once the RUNPATHs point
    into the kit (the first ldd pass saw the build machine's paths)."""
    libdir = os.path.join(runtime, "lib")
    env = dict(os.environ, LD_LIBRARY_PATH=f"{libdir}:{cuda_lib}")
    used = set()
    for path in elf.elf_files(runtime):
        if os.path.dirname(path) != libdir:
            used |= {os.path.realpath(w) for w in elf.ldd(path, env).values() if w}
    for name in sorted(os.listdir(libdir)):
        path = os.path.join(libdir, name)
        if os.path.realpath(path) not in used:
            say(f"dropped {name}: nothing in the kit loads it")
            os.remove(path)


def fix_runpaths(runtime, patchelf, wheel_dirs):
    """Strip our ELF files and point their RUNPATH at runtime/lib through
    $ORIGIN; wheel-built files keep their own $ORIGIN paths untouched."""
    libdir = os.path.join(runtime, "lib")
    for path in elf.elf_files(runtime):
        rpath = subprocess.run([patchelf, "--print-rpath", path], capture_output=True,
                               text=True).stdout.strip()
        from_wheel = any(path.startswith(w + os.sep) for w in wheel_dirs)
        if from_wheel and all(p.startswith("$ORIGIN") for p in rpath.split(":") if p):
            continue
        if not from_wheel:
            subprocess.run(["strip", "--strip-unneeded", path], check=True)
        keep = [p for p in rpath.split(":") if p.startswith("$ORIGIN")]
        rel = os.path.relpath(libdir, os.path.dirname(path))
        mine = "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}"
        new = ":".join(dict.fromkeys([mine] + keep))
        subprocess.run([patchelf, "--set-rpath", new, path], check=True)


def patches_hash():
    h = hashlib.sha256()
    for p in sorted(os.listdir(os.path.join(ROOT, "docker", "patches"))):
        if p.endswith(".patch"):
            with open(os.path.join(ROOT, "docker", "patches", p), "rb") as f:
                h.update(hashlib.sha256(f.read()).hexdigest().encode() + b"  " + p.encode() + b"\n")
    return h.hexdigest()


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True)
    p.add_argument("--venv-python", required=True)
    p.add_argument("--caffe-src", required=True)
    p.add_argument("--gtest", required=True)
    p.add_argument("--cuda-lib", required=True)
    p.add_argument("--archs", required=True)
    p.add_argument("--stamp", required=True)
    p.add_argument("--patchelf", default="patchelf")
    a = p.parse_args(argv)

    stage = os.path.abspath(a.stage)
    if os.path.exists(stage):
        shutil.rmtree(stage)
    runtime = os.path.join(stage, "runtime")
    pydir = os.path.join(runtime, "python")
    copy_project(stage)
    info = venv_query(a.venv_python, PY_INFO)
    dst_site = copy_stdlib(info, pydir)
    versions = copy_site_packages(a.venv_python, info["site"], dst_site)
    copy_pycaffe(a.caffe_src, dst_site)
    copy_file(a.gtest, os.path.join(runtime, "bin", "caffe-gtest"))
    # the solver tests read src/caffe/test/test_data/ relative to their working directory
    shutil.copytree(os.path.join(a.caffe_src, "src", "caffe", "test", "test_data"),
                    os.path.join(runtime, "gtest", "src", "caffe", "test", "test_data"))
    wrapper = os.path.join(runtime, "bin", "python")
    copy_file(os.path.join(ROOT, "kit", "python.sh"), wrapper)
    os.chmod(wrapper, 0o755)

    # the interpreter's own libpython first: pycaffe would otherwise resolve
    # the system's (Debian's 3.11.2, other dependencies) from the default path
    build_lib = os.path.join(a.caffe_src, "build", "lib")
    env = dict(os.environ, LD_LIBRARY_PATH=f"{info['libdir']}:{a.cuda_lib}:{build_lib}")
    cuda, copied = collect_libraries(runtime, env)
    wheel_dirs = [os.path.join(dst_site, d) for d in os.listdir(dst_site)
                  if d not in ("caffe",)]
    fix_runpaths(runtime, a.patchelf, wheel_dirs)
    prune_libraries(runtime, a.cuda_lib)

    glibc, glibcxx = set(), set()
    for path in elf.elf_files(runtime):
        glibc |= elf.versions_needed(path, "GLIBC")
        glibcxx |= elf.versions_needed(path, "GLIBCXX")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    manifest = dict(
        kit="fcn-gpu-kit", commit=git("rev-parse", "HEAD"), worktree_dirty=dirty,
        patches_sha256=patches_hash(), caffe_build_stamp=a.stamp,
        cuda_archs=a.archs.split(), built_with="CUDA 13.0.88, cuDNN 9.13.0.50, NCCL 2.27.7 (docker/cuda_toolkit.sh)",
        python=info["full_version"], packages=versions,
        cuda_libraries_from_host=cuda + ["libnvrtc.so.13 (dlopened by cuDNN)"],
        carried_libraries=sorted(copied), host_needs_glibc=max(glibc, key=elf.version_key),
        host_needs_glibcxx=max(glibcxx, key=elf.version_key),
        gtest_suites=os.environ.get("KIT_GTEST_SUITES", "").split())
    with open(os.path.join(runtime, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    say(f"manifest: commit {manifest['commit'][:12]}{' (dirty)' if dirty else ''}, archs "
        f"{a.archs}, host glibc >= {manifest['host_needs_glibc']}, libstdc++ >= GLIBCXX_"
        f"{manifest['host_needs_glibcxx']}, CUDA from host: {', '.join(cuda)}")


if __name__ == "__main__":
    main()

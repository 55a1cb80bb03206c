"""Prove an unpacked kit is self-contained: every shared object it loads
resolves inside the kit, to the host's CUDA libraries, or to the GNU C
library (kit/elf.py: HOST_ALLOWED).

ldd runs each of the kit's ELF files (python, its extension modules, the
wheels' libraries, pycaffe, the gtest binary, runtime/lib) with only the
loader path the kit's launcher sets (runtime/lib, then the CUDA directories)
and nothing else in the environment.

Usage: python -m kit.ldcheck KIT_DIR --cuda-path DIRS
Exit status 0 when nothing resolves elsewhere or is missing, 1 otherwise.
"""
import argparse
import collections
import os
import sys

from kit import elf


def check(kit, cuda_dirs):
    kit = os.path.realpath(kit)
    runtime = os.path.join(kit, "runtime")
    env = {"LD_LIBRARY_PATH": ":".join([os.path.join(runtime, "lib")] + cuda_dirs),
           "PATH": "/usr/bin:/bin"}
    cuda_real = [os.path.realpath(d) + os.sep for d in cuda_dirs]
    files = elf.elf_files(runtime)
    where = collections.defaultdict(set)     # class -> sonames
    bad = []
    for path in files:
        for name, resolved in elf.ldd(path, env).items():
            rel = os.path.relpath(path, kit)
            if resolved is None:
                bad.append(f"{rel}: {name} not found")
                continue
            real = os.path.realpath(resolved)
            if real.startswith(kit + os.sep):
                where["inside the kit"].add(name)
            elif elf.is_cuda(name) and any(real.startswith(c) for c in cuda_real):
                where["CUDA (host)"].add(name)
            elif elf.is_host_allowed(name):
                where["glibc and GCC runtime (host)"].add(name)
            else:
                bad.append(f"{rel}: {name} -> {resolved} (outside the kit)")
    return files, where, bad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kit", help="an unpacked kit's top directory")
    p.add_argument("--cuda-path", default="", help="the CUDA library directories, colon-separated")
    a = p.parse_args(argv)
    if not os.path.isdir(os.path.join(a.kit, "runtime")):
        p.error(f"{a.kit}: not an unpacked kit (no runtime/ directory)")
    files, where, bad = check(a.kit, [d for d in a.cuda_path.split(":") if d])
    print(f"ldcheck: {len(files)} ELF files in {a.kit}")
    for cls in ("inside the kit", "CUDA (host)", "glibc and GCC runtime (host)"):
        names = sorted(where[cls])
        print(f"  {cls}: {len(names)} libraries" + (f": {' '.join(names)}" if cls != "inside the kit" else ""))
    for line in bad:
        print("  OUTSIDE " + line)
    print(f"ldcheck: {'FAIL' if bad else 'OK'}: {len(bad)} unresolved or outside")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

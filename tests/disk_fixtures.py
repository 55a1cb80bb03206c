"""Small and read-only file systems for the output tests: a real tmpfs where
the tests may mount one (root), else None and the test simulates the
failure in-process (a fake free-space probe, a failing write)."""
import contextlib
import os
import subprocess


@contextlib.contextmanager
def tmpfs(directory, size="2m", read_only=False):
    """Mount a tmpfs of `size` on `directory` for the block; yields the
    directory, or None where mounting is refused."""
    os.makedirs(directory, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                                 capture_output=True).returncode == 0
    except OSError:                 # no mount command
        mounted = False
    try:
        yield str(directory) if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill(directory, leave=64 << 10):
    """Fill the file system of `directory` up to `leave` bytes free."""
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(os.path.join(directory, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))

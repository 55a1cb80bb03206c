"""Atomic file output: a reader never sees a half-written file."""
import contextlib
import os
import tempfile


def current_umask():
    """The process umask, read from /proc where possible (os.umask can only
    read it by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` on success,
    delete it on any error."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    # mkstemp creates 0600; the result should have the mode any new file gets
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path, data):
    """Write `data` (str or bytes) to `path` atomically."""
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            f.write(data)


def write_files(directory, files):
    """Write {name: text} into `directory`, each file atomically."""
    for name, text in files.items():
        atomic_write(os.path.join(directory, name), text)

"""Atomic file output: a reader never sees a half-written file.

A write that fails for want of room or permission (ENOSPC, EROFS, EACCES)
raises common.outputs.OutputError naming the path; the temporary file is
removed and the previous file, if any, is left as it was.
"""
import contextlib
import os
import tempfile

from .outputs import write_error


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
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
        os.close(fd)
        # mkstemp creates 0600; the result should have the mode any new file gets
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        error = write_error(exc, path) if _about_output(exc, path, tmp) else None
        if error is None:
            raise
        raise error from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _about_output(exc, path, tmp):
    """Whether an OSError concerns the output (its file, temporary or a
    directory above it) rather than something the caller read meanwhile."""
    if exc.filename is None or exc.filename == tmp:
        return True
    named = os.path.abspath(os.fsdecode(exc.filename))
    return os.path.abspath(path) == named or os.path.abspath(path).startswith(named + os.sep)


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

"""Atomic file output: a reader never sees a half-written prototxt."""
import os
import tempfile


def atomic_write(path, data):
    """Write `data` (str or bytes) to a temporary file beside `path`, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_files(directory, files):
    """Write {name: text} into `directory`, each file atomically."""
    for name, text in files.items():
        atomic_write(os.path.join(directory, name), text)

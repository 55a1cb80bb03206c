"""Output paths checked before any work, and write failures as one line.

Every CLI that writes calls `check_file` / `check_dir` on its outputs first,
so that a bad --out (an input, a directory where a file is meant, a file
where a directory is meant, a read-only or missing place) is refused in one
line before minutes of work, and never overwrites what the run reads. Writes
then go through common.atomic, which turns a failed write (full disk,
read-only file system, no permission) into `OutputError` naming the path and
leaves the previous file in place. Caffe's own writers (Net::Save, solver
snapshots) abort the process on a failed write (a glog CHECK), so
`check_free_space` is asked before Caffe writes.
"""
import errno
import os
import shutil

from .errors import UserError

# errno values of a write that failed because of where it writes
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                errno.EFBIG, errno.ENOTDIR, errno.EISDIR}
SPACE_MARGIN = 1 << 20          # headroom over an estimated write (file system metadata)


class OutputError(UserError):
    """An output path that cannot be written as asked."""


def free_bytes(directory):
    """Bytes an unprivileged write may still use in `directory` (a module
    attribute so that a test can stand in for a full disk)."""
    return shutil.disk_usage(directory).free


def _existing_ancestor(path):
    """The nearest path at or above `path` that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_place(directory, what):
    """`directory` (created later if absent) can receive new files."""
    base = _existing_ancestor(directory)
    if not os.path.isdir(base):
        raise OutputError(f"{what}: {base} is a file, not a directory")
    read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    if read_only or not os.access(base, os.W_OK | os.X_OK):
        why = "a read-only file system" if read_only else "no write permission"
        raise OutputError(f"{what}: cannot write into {base} ({why})")


def _check_not_input(path, inputs, what):
    if not os.path.exists(path):
        return
    for flag, source in inputs:
        if source and os.path.exists(source) and os.path.samefile(source, path):
            raise OutputError(f"{what} is the {flag} input {source}; refusing to overwrite it "
                              "(choose another output)")


def _check_not_inside(path, data_dirs, what):
    real = os.path.realpath(path)
    for label, directory in data_dirs:
        if directory and os.path.isdir(directory):
            top = os.path.realpath(directory)
            if real.startswith(top + os.sep):
                raise OutputError(f"{what} is inside the {label} {directory}; refusing to write "
                                  "among its files (choose another output)")


def check_file(path, inputs=(), flag="--out", data_dirs=()):
    """`path` may be written as a file: not a directory, not one of `inputs`
    ((flag, path) pairs, compared by inode so symlinks and other spellings
    count), not inside one of `data_dirs` ((label, directory) pairs: a
    dataset, whose split and label files a report must not replace), in a
    directory that exists or can be made, on a writable file system.
    Returns `path`."""
    what = f"{flag} {path}"
    if os.path.isdir(path):
        raise OutputError(f"{what} is a directory; expected a file name")
    if path.endswith(os.sep):
        raise OutputError(f"{what} ends in {os.sep}; expected a file name")
    _check_not_input(path, inputs, what)
    _check_not_inside(path, data_dirs, what)
    _check_place(os.path.dirname(os.path.abspath(path)), what)
    return path


def check_dir(path, inputs=(), flag="--out"):
    """`path` may be used as an output directory: a directory or absent (then
    creatable), writable, not one of `inputs`. Returns `path`."""
    what = f"{flag} {path}"
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{what} is a file; expected a directory")
    _check_not_input(path, inputs, what)
    _check_place(path, what)
    return path


def check_free_space(path, nbytes):
    """Refuse, before a writer that aborts on a full disk (Caffe) starts,
    when the file system of `path` has less than `nbytes` (+ a margin) free."""
    directory = _existing_ancestor(os.path.dirname(os.path.abspath(path)))
    free = free_bytes(directory)
    if free < nbytes + SPACE_MARGIN:
        raise OutputError(f"cannot write {path}: {_mib(free)} free on its file system, about "
                          f"{_mib(nbytes + SPACE_MARGIN)} needed (disk full?)")


def write_error(exc, path):
    """The OutputError for an OSError raised while writing `path`, or None
    when `exc` is not about where the write goes."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return OutputError(f"cannot write {path}: {exc.strerror or os.strerror(exc.errno)}")
    return None


def _mib(n):
    return f"{n / (1 << 20):.1f} MiB"

"""One run at a time per run directory.

Two `solvers.solve` into one directory would interleave metrics.jsonl and
mix snapshots and final weights of both runs. A run holds an exclusive
POSIX lock (fcntl.lockf) on `<run dir>/.lock` from before its staging
until it ends, with its PID written in the file. The kernel drops the lock
when its process dies, however it dies (kill -9, a crash), so a lock file
left by a dead process is recognised as stale and simply taken over; a
live one makes the second run exit 2 naming the first one's PID.
"""
import fcntl
import os
import socket
import time

from .errors import RunError

LOCK_NAME = ".lock"


def _holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode("utf-8", "replace").strip()


class RunLock:
    """The lock of one run directory; `release` (or process exit) ends it."""

    def __init__(self, directory):
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(self.fd)
            os.close(self.fd)
            self.fd = None
            pid = holder.split()[0] if holder else "unknown"
            raise RunError(f"run directory {directory} is in use by another run (PID {pid}"
                           f"{', ' + ' '.join(holder.split()[1:]) if len(holder.split()) > 1 else ''}"
                           f"); wait for it to finish, or train into another --out") from None
        self.previous = _holder(self.fd)
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.write(self.fd, f"{os.getpid()} on {socket.gethostname()} since {started}\n".encode())

    @property
    def stale(self):
        """What a lock file left by a process that died held ('' if none)."""
        return self.previous

    def release(self):
        """Empty the file (a non-empty unlocked one is a dead run's) and unlock."""
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)               # closing drops the lock
            self.fd = None

    def __del__(self):
        self.release()

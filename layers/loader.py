"""Load examples in worker processes and hand them over in shared memory.

pycaffe keeps the GIL through `solver.step()`, so the thread of
`layers.prefetch` can only decode while the solver is back in Python; a
process decodes while Caffe computes. The Caffe process keeps the seeded key
order (`layers.order`) and deals it out: example j goes to worker j % N and
lands in slot j % (N * depth), a ring in which each worker owns its own
slots. Results are taken in the same order, so the sequence is exactly the
one `prefetch.Direct` serves (and `--resume` skips to the same place).

Each slot is an anonymous shared-memory file (`memfd_create`) that its
worker makes the size of the largest example it has put there (rounded up
to a MiB), replacing it with a larger one when needed; the file descriptor
travels to the Caffe process over the worker's pipe. Such memory has no
name in /dev/shm: the kernel frees it when the last process mapping it is
gone, however the processes end, so nothing can leak.

Workers are fresh interpreters (`python -c`, not `multiprocessing`): a
fork of the Caffe process would copy its threads' locks (BLAS pool, CUDA)
and every open pipe, including the other workers' (a worker would then
never see its pipe close), and multiprocessing's spawn and forkserver
re-run the main script in each worker, which the FCN reference's solve.py
scripts (no `if __name__ == "__main__"`) cannot survive. A worker gets its
own session (Ctrl-C at the terminal reaches the Caffe process only, which
decides) and leaves when its pipe closes: on `close()` (which a layer calls
when its net is destroyed, `layers.lifetime`), when the loader is collected,
at interpreter exit, and when the Caffe process dies without cleaning up.
A load that raises in a worker is re-raised, same type and message (naming
the file), by the `next()` that would have returned that example; a worker
that dies raises a `LoaderError` naming the example's files.
"""
import collections
import mmap
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import traceback
import weakref
from multiprocessing import reduction
from multiprocessing.connection import Connection

import numpy as np

ALIGN = 64                      # byte alignment of each array in a slot
GROW = 1 << 20                  # slot sizes are rounded up to a MiB
JOIN_S = 5.0                    # how long close() waits for a busy worker before stopping it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "from layers.loader import worker_main; worker_main(int(sys.argv[2]))")
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


class LoaderError(RuntimeError):
    """A worker process died or could not start."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker (chained as its cause)."""

    def __str__(self):
        return self.args[0]


def _portable(error):
    """`error` if it survives pickling, else a RuntimeError with its text."""
    try:
        copy = pickle.loads(pickle.dumps(error))
        if str(copy) == str(error):
            return error
    except Exception:
        pass
    return RuntimeError(f"{type(error).__name__}: {error}")


def layout(arrays):
    """[(shape, dtype, offset)] of `arrays` packed in one buffer, and its size."""
    out, offset = [], 0
    for a in arrays:
        out.append((a.shape, a.dtype.str, offset))
        offset += -(-a.nbytes // ALIGN) * ALIGN
    return out, offset


def views(buffer, places):
    """The arrays of `layout` as views of `buffer` (no copy)."""
    return tuple(np.ndarray(shape, dtype, buffer=buffer, offset=offset)
                 for shape, dtype, offset in places)


def yield_to_caffe():
    """Never preempt the Caffe process: a worker woken by a request would
    otherwise take the waking core on a busy machine and hold up the step
    (measured: ~4 ms per request on 2 loaded cores, the whole decode).
    SCHED_BATCH drops wakeup preemption (the worker keeps its fair share)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):                # not Linux, or not allowed: run as is
        pass


def worker_main(fd):
    """A worker process: its setup message, then `_serve` until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C: the Caffe process decides
    yield_to_caffe()
    conn = Connection(fd)
    try:
        path, parent_pid, payload = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = path
    try:
        load = pickle.loads(payload)
    except Exception as e:
        conn.send(("fatal", None, f"cannot rebuild the reader in a worker process "
                                  f"({type(e).__name__}: {e})", traceback.format_exc()))
        return
    _serve(load, conn, parent_pid)


def _serve(load, conn, parent_pid):
    """(key, slot) in, the example written to the slot, its layout out."""
    slots = {}
    while True:
        try:
            key, slot = conn.recv()
        except (EOFError, OSError):                  # closed by the loader, or it died
            return
        fd = None
        try:
            arrays = load(key)
            places, size = layout(arrays)
            if slot not in slots or len(slots[slot]) < size:
                fd = os.memfd_create(f"fcn-loader-slot{slot}", os.MFD_CLOEXEC)
                size = -(-size // GROW) * GROW
                os.ftruncate(fd, size)
                slots[slot] = mmap.mmap(fd, size)
            for view, array in zip(views(slots[slot], places), arrays):
                view[...] = array
            reply = ("ok", key, places, None if fd is None else size)
        except Exception as e:
            reply = ("error", key, _portable(e), traceback.format_exc())
        try:
            conn.send(reply)
            if reply[0] == "ok" and fd is not None:
                reduction.send_handle(conn, fd, parent_pid)
        except (EOFError, OSError):
            return
        finally:
            if fd is not None:
                os.close(fd)


def _start_worker(payload, name):
    """A worker process and the Caffe process's end of its pipe."""
    mine, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, ROOT, str(theirs.fileno())],
                                pass_fds=[theirs.fileno()], env=dict(os.environ, **ONE_THREAD),
                                start_new_session=True)
    finally:
        theirs.close()
    conn = Connection(mine.detach())
    conn.send((list(sys.path), os.getpid(), payload))
    return proc, conn


def _stop(procs, conns):
    """Close every pipe (a worker's signal to leave), then reap the workers."""
    for conn in conns:
        conn.close()
    for proc in procs:
        for stop in (None, proc.terminate, proc.kill):
            if stop:
                stop()
            try:
                proc.wait(JOIN_S)
                break
            except subprocess.TimeoutExpired:
                pass


class Loader:
    """Keeps `workers * depth` examples loading or loaded ahead of the consumer.

    `next()` returns (key, arrays) with the arrays viewing shared memory:
    valid until `release()` (or the next `next()`), which hands the slot back
    for the example `workers * depth` places further on."""

    def __init__(self, load, keys, workers, depth, name="loader", files=None):
        if workers < 1 or depth < 1:
            raise ValueError(f"{name}: workers and depth must be >= 1, got {workers}, {depth}")
        self._keys, self._name, self._files = keys, name, files
        self._workers, self._slots = workers, [None] * (workers * depth)
        self._requested = self._served = 0
        self._held = None               # the slot whose arrays next() handed out
        self._asked = collections.deque()   # keys requested and not yet received, in order
        self._broken = None
        self._procs, self._conns = [], []
        self._closer = weakref.finalize(self, _stop, self._procs, self._conns)
        try:
            payload = pickle.dumps(load)
        except Exception as e:
            raise LoaderError(f"{name}: the reader cannot be sent to loader processes "
                              f"({type(e).__name__}: {e}); set workers to 0") from None
        try:
            for _ in range(workers):
                proc, conn = _start_worker(payload, name)
                self._procs.append(proc)
                self._conns.append(conn)
            for _ in self._slots:
                self._request()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self):
        return [p.pid for p in self._procs]

    def _request(self):
        j = self._requested
        key = next(self._keys)
        self._asked.append(key)
        self._requested += 1
        try:
            self._conns[j % self._workers].send((key, j % len(self._slots)))
        except OSError:                 # a dead worker: its receive names it and the key
            pass

    def _receive(self, j):
        """The reply for example j (and the slot's new memory if it grew)."""
        w, slot = j % self._workers, j % len(self._slots)
        conn = self._conns[w]
        select.select([conn], [], [])   # interrupted here (Ctrl-C), the pipe stays in step
        try:
            reply = conn.recv()
            if reply[0] == "ok" and reply[3] is not None:
                fd = reduction.recv_handle(conn)
                try:
                    self._slots[slot] = mmap.mmap(fd, reply[3])   # the old map goes with its last view
                finally:
                    os.close(fd)
        except (EOFError, OSError) as e:
            raise self._died(w) from e
        except BaseException as e:      # interrupted mid-message: the pipe is out of step
            self._broken = LoaderError(f"{self._name}: interrupted while receiving an example "
                                       f"({type(e).__name__}); restart the loader")
            raise
        return slot, reply

    def _died(self, w):
        proc = self._procs[w]
        try:
            code = proc.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        how = (f"was killed by signal {-code} ({signal.Signals(-code).name})" if code and code < 0
               else f"exited with status {code}" if code is not None else "closed its pipe")
        key = self._asked[0]
        files = f" (files: {', '.join(self._files(key))})" if self._files else ""
        self._broken = LoaderError(f"{self._name}: loader worker {w} (pid {proc.pid}) {how} "
                                   f"while loading example {key!r}{files}")
        return self._broken

    def next(self):
        if not self._closer.alive:
            raise RuntimeError(f"{self._name}: next() on a closed Loader")
        if self._broken is not None:
            raise self._broken
        self.release()
        j = self._served
        slot, reply = self._receive(j)
        self._served += 1
        self._asked.popleft()
        status, key = reply[0], reply[1]
        if status == "fatal":
            self._broken = LoaderError(f"{self._name}: loader worker {j % self._workers}: {reply[2]}")
            raise self._broken from RemoteTraceback(reply[3])
        if status == "error":
            self._request()             # the slot is free again: keep the ring full
            error, remote = reply[2], reply[3]
            raise error from RemoteTraceback(remote)
        self._held = slot
        return key, views(self._slots[slot], reply[2])

    def release(self):
        """The arrays of the last next() are no longer needed: refill their slot."""
        if self._held is not None and self._broken is None:
            self._held = None
            self._request()

    def close(self):
        self._closer()
        self._slots = []


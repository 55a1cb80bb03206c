"""How a data layer gets its next example: now, from a thread, or from worker processes.

`stream` picks one from the layer's params: `prefetch` false loads each
example when asked (`Direct`); otherwise `workers` >= 1 starts loader
processes (`layers.loader.Loader`, the default) and `workers` 0 keeps the
single background thread (`Prefetcher`). Every stream serves the same
sequence and has `next()` -> (key, arrays), `release()` (the arrays were
copied; only the loader reuses their memory) and `close()`.

`Direct` and `Prefetcher` serve the same sequence: both take keys from one
iterator, one at a time, in order; the prefetcher merely starts loading key
i+1 when example i is handed out. Its worker is a daemon thread (it never
keeps the process alive) that holds no reference to the Prefetcher, so it
stops when the Prefetcher is collected or `close()`d. A load that fails in
the worker is re-raised, unchanged (message naming the file), by the `next()`
call that would have returned that example.

Note: pycaffe keeps the GIL while a net computes, so the thread mostly runs
while the main thread is in Python or blocked (the solver's Python data
layer, waiting here); the loader's processes do not have that limit
(`python -m bench.data_layers` measures both).
"""
import queue
import threading
import weakref

from .loader import Loader

_STOP = object()


class Direct:
    """Loads each example when it is asked for."""

    def __init__(self, load, keys):
        self._load, self._keys = load, keys

    def next(self):
        key = next(self._keys)
        return key, self._load(key)

    def release(self):
        pass

    def close(self):
        pass


def _work(load, requests, results):
    while True:
        key = requests.get()
        if key is _STOP:
            return
        try:
            results.put((key, load(key), None))
        except BaseException as e:  # re-raised in the consumer's thread
            results.put((key, None, e))


class Prefetcher:
    """Keeps exactly one example loading ahead of the consumer."""

    def __init__(self, load, keys, name="prefetch"):
        self._keys = keys
        self._requests, self._results = queue.Queue(), queue.Queue()
        thread = threading.Thread(target=_work, args=(load, self._requests, self._results),
                                  name=name, daemon=True)
        thread.start()
        self._closer = weakref.finalize(self, self._requests.put, _STOP)
        self._requests.put(next(self._keys))

    def next(self):
        if not self._closer.alive:
            raise RuntimeError("next() on a closed Prefetcher")
        key, example, error = self._results.get()
        self._requests.put(next(self._keys))
        if error is not None:
            raise error
        return key, example

    def release(self):
        pass

    def close(self):
        self._closer()


def stream(reader, keys, name="prefetch"):
    """The stream `reader.params` asks for (prefetch, workers, queue_depth)."""
    p = reader.params
    if not p["prefetch"]:
        return Direct(reader.load, keys)
    if p["workers"] == 0:
        return Prefetcher(reader.load, keys, name)
    return Loader(reader.load, keys, p["workers"], p["queue_depth"], name, files=reader.files)

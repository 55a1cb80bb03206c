"""Close a data layer's stream once its net is gone.

pycaffe never frees a Python layer: the C++ layer holds its Python object
and that object holds the C++ layer, a cycle Python's collector cannot see.
When the net is destroyed only that one reference is left, so a daemon
thread checks every `PERIOD_S` which watched layers are down to it and
closes their streams (a loader's worker processes and shared memory, the
prefetch thread), which would otherwise live as long as the process.
"""
import sys
import threading
import time
import weakref

PERIOD_S = 0.5
_watched = {}                   # id -> (weakref to the layer, name of its close method)
_lock = threading.Lock()
_sweeping = threading.Lock()    # one sweep at a time: two would each see the other's reference
_thread = None


def references(obj):
    """References to `obj` other than this call's own."""
    return sys.getrefcount(obj) - 2


def close_when_orphaned(layer, method="close_stream"):
    """Call `layer.<method>()` once only Caffe's own reference to it remains."""
    global _thread
    with _lock:
        _watched[id(layer)] = (weakref.ref(layer), method)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_watch, name="data-layer-lifetime", daemon=True)
            _thread.start()


def sweep():
    """Close the streams of the watched layers left with only Caffe's reference."""
    with _sweeping:
        with _lock:
            entries = list(_watched.items())
        for key, (ref, method) in entries:
            layer = ref()
            if layer is None or references(layer) <= 2:     # Caffe's, and `layer` here
                with _lock:
                    _watched.pop(key, None)
                if layer is not None:
                    getattr(layer, method)()
            del layer


def _watch():
    while True:
        time.sleep(PERIOD_S)
        sweep()

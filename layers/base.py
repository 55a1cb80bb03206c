"""The one Caffe layer behind every dataset: whole images, batch 1, any size.

A format module only binds its `Reader`; this class parses param_str, orders
the split, prefetches, and reshapes the tops to each image. `reshape` takes
the next example only when the previous one was consumed by `forward`, so
extra reshapes (net construction, `net.reshape()`) never skip an image.
"""
import itertools

import caffe

from . import order
from .lifetime import close_when_orphaned
from .prefetch import stream


class SegDataLayer(caffe.Layer):
    """Python data layer: tops as the reader names them, no bottoms.

    (pycaffe's top vector supports len() and indexing, not iteration.)"""

    reader_class = None             # a layers.reader.Reader subclass

    def setup(self, bottom, top):
        name = type(self).__name__
        self.reader = self.reader_class.from_param_str(self.param_str)
        if len(bottom) != 0:
            raise ValueError(f"{name} takes no bottoms, got {len(bottom)}")
        tops = self.reader.tops
        if len(top) != len(tops):
            raise ValueError(f"{name} needs {len(tops)} tops ({', '.join(tops)}), got {len(top)}")
        self.reader.check_files()
        self.reader.check_label_set()
        self._start(0)
        close_when_orphaned(self)

    def _start(self, skip):
        """(Re)start serving at example `skip` of the seeded sequence."""
        p = self.reader.params
        keys = itertools.islice(order.keys(self.reader.ids, p["randomize"], p["seed"]), skip, None)
        self.close_stream()
        self.stream = stream(self.reader, keys, f"{type(self).__name__}:{p['split']}")
        self.key, self.example = None, None

    def close_stream(self):
        """Stop loading (the loader's processes and memory go); idempotent."""
        old = getattr(self, "stream", None)
        if old is not None:
            old.close()
        self.example = None             # a loader's arrays are views of its memory

    @property
    def ids(self):
        """The split's ids, in split-file order."""
        return self.reader.ids

    def skip(self, n):
        """Continue as if `n` examples had been served (resuming a solver)."""
        self._start(int(n))

    def reshape(self, bottom, top):
        if self.example is None:
            self.key, self.example = self.stream.next()
        for i, array in enumerate(self.example):
            top[i].reshape(1, *array.shape)

    def forward(self, bottom, top):
        if self.example is None:    # forward without reshape: not done by Caffe, but safe
            self.reshape(bottom, top)
        for i, array in enumerate(self.example):
            top[i].data[...] = array
        self.example = None
        self.stream.release()

    def backward(self, top, propagate_down, bottom):
        pass

"""Tiny Python layers for tests that need one inside a real Caffe net."""
import json

import numpy as np

import caffe


class RampData(caffe.Layer):
    """Tops data (1x3xHxW smooth ramp) and label (1x1xHxW: left/right halves)."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str)
        self.h, self.w = params["h"], params["w"]

    def reshape(self, bottom, top):
        top[0].reshape(1, 3, self.h, self.w)
        top[1].reshape(1, 1, self.h, self.w)

    def forward(self, bottom, top):
        xx = np.linspace(-1, 1, self.w, dtype=np.float32)[None, None, :].repeat(self.h, 1)
        top[0].data[...] = np.concatenate([xx, -xx, xx * xx])[None]
        top[1].data[...] = (xx > 0).astype(np.float32)[None]

    def backward(self, top, propagate_down, bottom):
        pass

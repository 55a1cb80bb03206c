"""Classification batches of synthetic scenes, generated on the fly: the
stand-in for ImageNet that pre-trains the demo's narrow VGG16."""
import json

import numpy as np

import caffe

from common.image import caffe_image
from common.seed import SEED
from demo.synthetic import CLASSES, render
from net_specs.datasets import VOC_MEAN


def class_batch(rng, n, size, scale, centred):
    """(N x 3 x size x size BGR-minus-mean images, N labels = object class - 1):
    one object per scene, classes drawn uniformly."""
    data = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.float32)
    for i in range(n):
        cls = int(rng.randint(1, len(CLASSES)))
        image, _ = render(rng, size, size, n_objects=1, classes=[cls], scale=scale, centred=centred)
        data[i] = caffe_image(image, VOC_MEAN)
        labels[i] = cls - 1
    return data, labels


class SyntheticClassLayer(caffe.Layer):
    """Tops: data (N x 3 x S x S, BGR minus mean) and label (N: object class - 1)."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str)
        self.batch, self.size = int(params["batch"]), int(params["size"])
        self.scale = float(params.get("scale", 2.0))
        self.centred = bool(params.get("centred", True))
        self.rng = np.random.RandomState(int(params.get("seed", SEED)))
        if len(top) != 2:
            raise ValueError("SyntheticClassLayer has two tops: data, label")

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 3, self.size, self.size)
        top[1].reshape(self.batch)

    def forward(self, bottom, top):
        top[0].data[...], top[1].data[...] = class_batch(self.rng, self.batch, self.size, self.scale, self.centred)

    def backward(self, top, propagate_down, bottom):
        pass

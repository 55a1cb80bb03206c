"""Fixtures for the scoring and inference tests: nets whose output is known.

`colour_weights` turns a narrow FCN-VGG16 into a colour classifier that can
be reasoned about by hand: every conv/fc layer passes input channels 0, 1, 2
(B, G, R after mean subtraction) through unchanged (centre tap 1, all else
0), so after the ReLUs channel c holds max(0, pixel_c - mean_c) and max
pooling keeps that value for uniform regions; the score layer gives class
`mapping[c]` the value of channel c; upsampling is bilinear. For a uniform
image the predicted class everywhere is mapping[the channel most above the
mean] (e.g. with the VOC mean: red -> mapping[2], green -> mapping[1],
blue -> mapping[0], mid-grey 128 -> mapping[0]).

`ColourSplitLayer` is a Python data layer (param_str as net_specs writes it)
that serves uniform-colour images with hand-made labels, so scoring a whole
split through the real val net gives metrics known in advance.
"""
import json
import os

import numpy as np

import caffe

SIZE = 40
# id -> (RGB colour, label factory for a SIZE x SIZE label map)
COLOUR_IDS = {
    "red_all2": ((255, 0, 0), lambda: np.full((SIZE, SIZE), 2)),
    "green_half1": ((0, 255, 0), lambda: np.hstack([np.full((SIZE, SIZE // 2), 1),
                                                    np.full((SIZE, SIZE // 2), 0)])),
    "blue_void0": ((0, 0, 255), lambda: np.vstack([np.full((SIZE // 2, SIZE), 255),
                                                   np.full((SIZE // 2, SIZE), 0)])),
}


def bilinear_fill(net):
    """Bilinear upsampling weights, as surgery sets them."""
    from surgery.bilinear import interp, upsampling_layers
    interp(net, upsampling_layers(net))


def colour_weights(net, mappings):
    """Set `net`'s weights: identity trunk, score layer `name` maps channel c
    to class mappings[name][c] (mappings: {score layer: {channel: class}})."""
    for name, blobs in net.params.items():
        for blob in blobs:
            blob.data[...] = 0
        w = blobs[0].data
        if name in mappings:
            for channel, cls in mappings[name].items():
                w[cls, channel, 0, 0] = 1
        elif name.startswith(("conv", "fc")):
            k = w.shape[2]
            for c in range(3):
                w[c, c, k // 2, k // 2] = 1
    bilinear_fill(net)


def make_weights(model, path, mappings, dataset=None, width=1 / 16):
    """Build `model`'s deploy net, set colour weights, save a caffemodel."""
    from net_specs import build
    proto = build(model, "deploy", dataset=dataset, width=width, size=(64, 64))
    proto_path = str(path) + ".prototxt"
    with open(proto_path, "w") as f:
        f.write(str(proto))
    net = caffe.Net(proto_path, caffe.TEST)
    colour_weights(net, mappings)
    net.save(str(path))
    return net


class ColourSplitLayer(caffe.Layer):
    """Tops data (1x3xSIZExSIZE, BGR minus mean) and label (1x1xSIZExSIZE)
    for each id of <root>/<split>.txt, in order (ids from COLOUR_IDS)."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str)
        with open(os.path.join(params["root"], params["split"] + ".txt")) as f:
            self.indices = [line.strip() for line in f if line.strip()]
        self.mean = np.array(params["mean"], np.float32)
        self.i = 0
        if len(top) != 2:
            raise ValueError("ColourSplitLayer has two tops: data and label")

    def reshape(self, bottom, top):
        top[0].reshape(1, 3, SIZE, SIZE)
        top[1].reshape(1, 1, SIZE, SIZE)

    def forward(self, bottom, top):
        colour, label = COLOUR_IDS[self.indices[self.i % len(self.indices)]]
        bgr = np.array(colour[::-1], np.float32) - self.mean
        top[0].data[0] = bgr[:, None, None]
        top[1].data[0, 0] = label()
        self.i += 1

    def backward(self, top, propagate_down, bottom):
        pass

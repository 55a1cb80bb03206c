"""Stand-ins for the released caffemodels: the same format as the real files
(a caffemodel saved from the model's *train* net, as the reference snapshots
were, so data/loss layers are present without blobs), random weights under
the real layer names and shapes. Width 1 is the full-size file."""
import os

import numpy as np

import caffe

from common.atomic import atomic_write
from net_specs import build
from net_specs.models import get_model
from surgery.bilinear import interp, upsampling_layers
from netio.nets import save_weights
from surgery.io import load_for_surgery


def write_stand_in(model_name, path, width=1.0, seed=0, scale=0.01):
    """Write a random-weight caffemodel of `model_name`'s train net to `path`;
    upsampling deconvolutions bilinear (as in the released files)."""
    model = get_model(model_name)
    proto = str(path) + ".train.prototxt"
    atomic_write(proto, str(build(model, "train", width=width)))
    net = load_for_surgery(proto, caffe.TRAIN, size=64)
    os.unlink(proto)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape, dtype=np.float32) * scale
    interp(net, upsampling_layers(net))
    save_weights(net, str(path))
    shapes = {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}
    del net
    return shapes

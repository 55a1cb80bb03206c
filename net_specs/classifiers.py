"""ImageNet classifiers (deploy) under their published layer names.

Surgery loads the public ILSVRC caffemodels into these, so no prototxt has
to be fetched; `width` gives the narrow stand-in the demo trains itself.
"""
import caffe
from caffe import layers as L

from common.errors import InputError

from . import trunks

CLASSIFIERS = {
    "vgg16-ilsvrc": "VGG16 (ILSVRC-2014 16-layer) classifier, 224x224 input, fc6-fc8 fully connected",
    "alexnet-ilsvrc": "BVLC AlexNet classifier, 227x227 input, fc6-fc8 fully connected",
}


def _fc_head(n, bottom, fc_dim, n_classes):
    n.fc6 = L.InnerProduct(bottom, num_output=fc_dim, param=trunks.LEARN)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.InnerProduct(n.drop6, num_output=fc_dim, param=trunks.LEARN)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.fc8 = L.InnerProduct(n.drop7, num_output=n_classes, param=trunks.LEARN)
    return n.fc8


def classifier(name: str, width: float = 1.0, n_classes: int = 1000, batch: int = 10,
               size=None, data_layer=None):
    """Deploy NetParameter of an ILSVRC classifier (`prob` output).

    With `data_layer` = (module, layer, param_str) it is a training net
    instead: a Python layer gives (data, label) and the loss is softmax.
    """
    if name not in CLASSIFIERS:
        raise InputError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}")
    n = caffe.NetSpec()
    vgg = name == "vgg16-ilsvrc"
    size = size or ((224, 224) if vgg else (227, 227))
    if data_layer:
        module, layer, param_str = data_layer
        n.data, n.label = L.Python(module=module, layer=layer, ntop=2, param_str=param_str)
    else:
        n.data = L.Input(shape=dict(dim=[batch, 3, size[0], size[1]]))
    if vgg:
        feats = trunks.vgg16(n, n.data, width=width, pad=1, fc=False)
        fc_dim = trunks.scaled(trunks.VGG16_FC, width)
    else:
        feats = trunks.alexnet(n, n.data, width=width, pad=0, fc=False, lrn_first=True)
        fc_dim = trunks.scaled(4096, width)
    scores = _fc_head(n, feats["pool5"], fc_dim, n_classes)
    if data_layer:
        n.loss = L.SoftmaxWithLoss(scores, n.label)
    else:
        n.prob = L.Softmax(scores)
    proto = n.to_proto()
    proto.name = name
    return proto

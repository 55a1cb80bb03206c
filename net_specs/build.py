"""Assemble a model's train / val / deploy NetParameter from the table.

Data flows one way: dataset record -> data layer (or Input) -> trunk ->
head -> loss. The three phases differ only in the first and last steps.
"""
import json

import caffe
from caffe import layers as L, params as P

from common.errors import InputError

from . import trunks
from .datasets import Dataset
from .heads import fcn_head, score_layer, skip_head
from .models import INPUT_CHANNELS, Model
from .netconfig import NetConfig

PHASES = ("train", "val", "deploy")
DEPLOY_SIZE = (500, 500)


def data_param_str(net: NetConfig, phase: str):
    """The JSON param_str of the Python data layer (parsed, never eval'd);
    the record's `workers` / `queue_depth` None leave the layer's defaults
    (layers.reader)."""
    dataset = net.dataset
    source = dataset.train if phase == "train" else dataset.val
    params = dict(root=net.data_root(source), split=source.split, mean=list(dataset.mean),
                  seed=net.seed, randomize=phase == "train", prefetch=net.prefetch)
    params.update((k, v) for k, v in (("workers", net.workers), ("queue_depth", net.queue_depth))
                  if v is not None)
    params.update(source.params)
    params["n_classes"] = dataset.n_classes     # SIFT Flow: the semantic head's 33
    inputs = net.inputs
    if inputs.layer_tops:
        params["tops"] = list(inputs.layer_tops) + [h.label for h in dataset.heads]
    params.update((k, list(v)) for k, v in dataset.extra_means)
    return json.dumps(params, sort_keys=True)


def add_inputs(n, net: NetConfig, phase: str, size=DEPLOY_SIZE):
    """Python data layer (train/val) or Input layers (deploy); returns image tops."""
    dataset = net.dataset
    names = net.inputs.names
    if phase == "deploy":
        for name in names:
            n[name] = L.Input(shape=dict(dim=[1, INPUT_CHANNELS[name], size[0], size[1]]))
        return [n[name] for name in names]
    source = dataset.train if phase == "train" else dataset.val
    label_names = [h.label for h in dataset.heads]
    tops = L.Python(module=source.module, layer=source.layer_class,
                    ntop=len(names) + len(label_names), param_str=data_param_str(net, phase))
    for name, top in zip(list(names) + label_names, tops):
        n[name] = top
    return [n[name] for name in names]


def add_losses(n, dataset: Dataset, normalize: bool):
    for i, head in enumerate(dataset.heads):
        loss_name = "loss" if i == 0 else "loss" + head.suffix
        n[loss_name] = L.SoftmaxWithLoss(n["score" + head.suffix], n[head.label],
                                         loss_param=dict(normalize=normalize, ignore_label=255))


def build(net, phase: str, *, size=DEPLOY_SIZE, **settings) -> caffe.proto.caffe_pb2.NetParameter:
    """The NetParameter of `net` for one phase.

    `net` is a NetConfig (net_specs.netconfig), or a model name or Model
    with the NetConfig fields as `settings` (dataset, root, width, prefetch,
    seed, workers, queue_depth; NetConfig.of); `size` is the deploy input size.
    """
    if phase not in PHASES:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    net = NetConfig.of(net, **settings)
    model, dataset = net.model, net.dataset
    n = caffe.NetSpec()
    trunk = trunks.get_trunk(model.trunk)
    images = add_inputs(n, net, phase, size)

    inputs = net.inputs
    if model.streams:
        build_late_fusion(n, model, dataset, images, net.width)
    else:
        bottom = images[0]
        if inputs.concat:
            n.data = L.Concat(*images)
            bottom = n.data
        extra = {"first_conv": inputs.first_conv} if inputs.first_conv != "conv1_1" else {}
        feats = trunk.build(n, bottom, width=net.width, **extra)
        if model.stride != 32 and not trunk.skips:
            raise InputError(f"{model.name}: the {model.trunk} trunk has no skip layers; "
                             "only stride 32 is defined")
        for head in dataset.heads:
            fcn_head(n, feats, bottom, model.stride, head.n_classes, head.suffix, model.atonce,
                     trunk.upscore32_kernel)

    if phase != "deploy":
        add_losses(n, dataset, model.normalize)
    proto = n.to_proto()
    proto.name = model.name
    return proto


def build_late_fusion(n, model: Model, dataset: Dataset, images, width):
    """Two VGG16 streams (layer names suffixed by modality), scores averaged."""
    if model.stride != 32 or len(dataset.heads) != 1 or len(model.streams) != len(images):
        raise InputError("late fusion is defined for FCN-32s with one head and one stream per input")
    n_out = dataset.n_classes
    scores = []
    for image, modality in zip(images, model.streams):
        feats = trunks.vgg16(n, image, suffix=modality, width=width)
        n["score_fr" + modality] = score_layer(feats["out"], n_out)
        scores.append(n["score_fr" + modality])
    n.score_fused = L.Eltwise(*scores, operation=P.Eltwise.SUM, coeff=[0.5, 0.5])
    skip_head(n, n.score_fused, {}, images[0], 32, n_out)


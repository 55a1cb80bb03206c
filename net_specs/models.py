"""The model table: every FCN of the papers (and a few beyond) as data.

A model is a trunk, an output stride, a dataset and an input variant; its
prototxts come from `build`, its solver settings and initialisation from
the same record, so the table is the single source of truth.
"""
from dataclasses import dataclass, replace
from typing import Optional

from common.errors import InputError

from .datasets import Dataset, Inputs, get_dataset

INPUT_CHANNELS = {"data": 3, "color": 3, "hha": 3, "depth": 1}


@dataclass(frozen=True)
class Solver:
    base_lr: float
    momentum: float = 0.99
    iter_size: int = 1
    max_iter: int = 100000
    weight_decay: float = 0.0005
    lr_policy: str = "fixed"


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    trunk: str                      # vgg16 | alexnet | googlenet
    stride: int                     # 32 | 16 | 8
    dataset: str
    init: tuple                     # models (or ILSVRC classifiers) whose weights start training
    solver: Solver
    inputs: str = "color"           # the dataset's input variant (Dataset.inputs)
    atonce: bool = False
    normalize: bool = False         # SoftmaxWithLoss normalisation
    published: bool = True          # a reference model of the papers
    streams: tuple = ()             # late fusion: one layer-name suffix per input and per init

    def get_dataset(self) -> Dataset:
        return get_dataset(self.dataset)


def _vgg_chain(dataset, desc, lrs, max_iter, published=True):
    """FCN-32s -> 16s -> 8s on VGG16, each initialised from the previous stage."""
    models, init = [], ("vgg16-ilsvrc",)
    for stride, lr in zip((32, 16, 8), lrs):
        name = f"{dataset}-fcn{stride}s"
        models.append(Model(name, f"FCN-{stride}s VGG16, {desc}", "vgg16", stride, dataset,
                            init, Solver(lr, max_iter=max_iter), published=published))
        init = (name,)
    return models


MODEL_LIST = [
    *_vgg_chain("voc", "PASCAL VOC (SBD train, seg11valid)", (1e-10, 1e-12, 1e-14), 100000),
    Model("voc-fcn8s-atonce", "FCN-8s VGG16 trained all at once, skips scaled (pool4 x0.01, pool3 x0.0001)",
          "vgg16", 8, "voc", ("vgg16-ilsvrc",), Solver(1e-10, max_iter=300000), atonce=True),
    Model("voc-fcn-alexnet", "FCN-32s on AlexNet/CaffeNet, normalised loss, PASCAL VOC",
          "alexnet", 32, "voc", ("alexnet-ilsvrc",),
          Solver(1e-4, momentum=0.9, iter_size=20, max_iter=100000), normalize=True),
    Model("voc-fcn-googlenet", "FCN-32s on BVLC GoogLeNet (CVPR Table 1 model, never released), PASCAL VOC",
          "googlenet", 32, "voc", ("googlenet-ilsvrc",), Solver(1e-10, max_iter=100000),
          published=False),
    *[Model(f"nyud-fcn32s-{v}", f"FCN-32s VGG16, NYUDv2 40 classes, {d}", "vgg16", 32, "nyud",
            ("vgg16-ilsvrc",), Solver(1e-10, max_iter=300000), inputs=v)
      for v, d in (("color", "color (BGR) input"), ("hha", "HHA input"),
                   ("color-d", "early fusion: color + log-depth, 4-channel input"))],
    Model("nyud-fcn32s-color-hha", "FCN-32s VGG16, NYUDv2 40 classes, late fusion of color and HHA streams",
          "vgg16", 32, "nyud", ("nyud-fcn32s-color", "nyud-fcn32s-hha"),
          Solver(1e-12, max_iter=300000), inputs="color-hha", streams=("color", "hha")),
    *_vgg_chain("siftflow", "SIFT Flow, semantic + geometric heads", (1e-10, 1e-12, 1e-12), 300000),
    *_vgg_chain("pascalcontext", "PASCAL-Context 59 classes + background", (1e-10, 1e-12, 1e-14), 300000),
    *_vgg_chain("pascalcontext459", "PASCAL-Context all 459 classes + background",
                (1e-10, 1e-12, 1e-14), 300000, published=False),
]


def index_by_name(records, what="model"):
    """{name: record} in table order, refusing two records of one name (a
    dict comprehension would keep the last one silently)."""
    index = {}
    for record in records:
        if record.name in index:
            raise ValueError(f"two {what}s are named {record.name!r}: {index[record.name].description!r} "
                             f"and {record.description!r}")
        index[record.name] = record
    return index


MODELS = index_by_name(MODEL_LIST)

# Generic templates for custom datasets: `emit fcn8s --dataset folder ...`
TEMPLATES = index_by_name([
    Model("fcn32s", "FCN-32s VGG16", "vgg16", 32, "folder", ("vgg16-ilsvrc",), Solver(1e-10)),
    Model("fcn16s", "FCN-16s VGG16", "vgg16", 16, "folder", ("fcn32s",), Solver(1e-12)),
    Model("fcn8s", "FCN-8s VGG16", "vgg16", 8, "folder", ("fcn16s",), Solver(1e-14)),
    Model("fcn8s-atonce", "FCN-8s VGG16 at once", "vgg16", 8, "folder",
          ("vgg16-ilsvrc",), Solver(1e-10), atonce=True),
    Model("fcn-alexnet", "FCN-AlexNet", "alexnet", 32, "folder", ("alexnet-ilsvrc",),
          Solver(1e-4, momentum=0.9, iter_size=20), normalize=True),
    Model("fcn-googlenet", "FCN-GoogLeNet", "googlenet", 32, "folder",
          ("googlenet-ilsvrc",), Solver(1e-10)),
], "template")


def get_model(name: str) -> Model:
    if name in MODELS:
        return MODELS[name]
    if name in TEMPLATES:
        return TEMPLATES[name]
    known = sorted(MODELS) + sorted(TEMPLATES)
    raise InputError(f"unknown model {name!r}; known: {', '.join(known)}")


def input_variant(model: Model, dataset: Optional[Dataset] = None) -> Inputs:
    """The Inputs record `model` reads from `dataset` (default: its own)."""
    return (dataset or model.get_dataset()).input_variant(model.inputs)


def input_tops(model: Model, dataset: Optional[Dataset] = None):
    """(data-layer tops, prototxt names) of the model's image inputs."""
    inputs = input_variant(model, dataset)
    return inputs.layer_tops or inputs.names, inputs.names


def for_dataset(model: Model, dataset: str) -> Model:
    """A template (or model) re-targeted to another dataset."""
    return replace(model, dataset=dataset, name=f"{dataset}-{model.name}")

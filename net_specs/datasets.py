"""Dataset descriptions: the one place that knows class counts, means, splits
and which Python data layer reads each dataset's on-disk format.

Everything downstream (prototxts, solvers, scoring, inference legends) reads
these records, so a new dataset is a new entry here, not new code.
"""
from dataclasses import dataclass, replace
from typing import Optional

from common.cli import check_classes, parse_mean
from common.errors import InputError

VOC_MEAN = (104.00699, 116.66877, 122.67892)
NYUD_COLOR_MEAN = (116.190, 97.203, 92.318)
NYUD_HHA_MEAN = (132.431, 94.076, 118.477)
NYUD_LOGD_MEAN = 7.844                  # mean log-depth, the NYUD layer's default
SIFTFLOW_MEAN = (114.578, 115.294, 108.353)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

CONTEXT59_CLASSES = ("background",) + tuple(
    "aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse "
    "motorbike person pottedplant sheep sofa train tvmonitor bag bed bench book "
    "building cabinet ceiling cloth computer cup door fence floor flower food "
    "grass ground keyboard light mountain mouse curtain platform sign plate road "
    "rock shelves sidewalk sky snow bedclothes track tree truck wall water window "
    "wood".split())

NYUD40_CLASSES = tuple(
    "wall floor cabinet bed chair sofa table door window bookshelf picture "
    "counter blinds desk shelves curtain dresser pillow mirror floor_mat clothes "
    "ceiling books refridgerator television paper towel shower_curtain box "
    "whiteboard person night_stand toilet sink lamp bathtub bag otherstructure "
    "otherfurniture otherprop".split())

SIFTFLOW_SEM_CLASSES = tuple(
    "awning balcony bird boat bridge building bus car cow crosswalk desert door "
    "fence field grass moon mountain person plant pole river road rock sand sea "
    "sidewalk sign sky staircase streetlight sun tree window".split())
SIFTFLOW_GEO_CLASSES = ("sky", "horizontal", "vertical")


@dataclass(frozen=True)
class Source:
    """One configuration of a Python data layer: which reader, where, which split."""
    layer: str                      # "module.Class" under layers/
    root: str                       # default location, relative to the repo root
    split: str
    params: tuple = ()              # extra (key, value) pairs for param_str

    @property
    def module(self):
        return self.layer.rsplit(".", 1)[0]

    @property
    def layer_class(self):
        return self.layer.rsplit(".", 1)[1]


@dataclass(frozen=True)
class Head:
    """One output task: its label top, class count and class names."""
    label: str
    n_classes: int
    class_names: tuple = ()
    suffix: str = ""                # appended to head layer names (SIFT Flow: _sem/_geo)
    present_only: bool = False      # mean IU over classes present in the ground truth only

    def display_names(self):
        """A name for every class: the record's, then "class i" for the rest."""
        names = list(self.class_names)
        return names + [f"class {i}" for i in range(len(names), self.n_classes)]


@dataclass(frozen=True)
class Inputs:
    """One way of feeding a dataset's images to a net (NYUD: colour, HHA,
    colour + depth, colour and HHA). Models pick one by name (Model.inputs)."""
    names: tuple = ("data",)        # the prototxt blobs of the image inputs
    layer_tops: tuple = ()          # data-layer tops to ask for by param_str (): the layer's default
    mean_param: str = "mean"        # the param_str mean a single-image input subtracts
    swap_channels: bool = True      # RGB -> BGR (False: HHA, used in its stored order)
    concat: bool = False            # early fusion: the inputs concatenated into one `data`
    first_conv: str = "conv1_1"     # the first convolution's name (early fusion renames it)


SINGLE_IMAGE = (("color", Inputs()),)
NYUD_INPUTS = (
    ("color", Inputs(("data",), ("color",))),
    ("hha", Inputs(("data",), ("hha",), mean_param="mean_hha", swap_channels=False)),
    ("color-d", Inputs(("color", "depth"), ("color", "depth"), concat=True, first_conv="conv1_1_bgrd")),
    ("color-hha", Inputs(("color", "hha"), ("color", "hha"))),
)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    mean: tuple
    heads: tuple                    # of Head
    train: Source
    val: Source
    fetch_target: str = ""          # the make target that downloads the data
    extra_means: tuple = ()         # further (param_str key, mean) pairs of the data layer
    inputs: tuple = SINGLE_IMAGE    # (name, Inputs) pairs: the input variants it offers
    voc_colours: bool = False       # label maps drawn in the VOC palette
    custom: bool = False            # the user's own data: needs --classes (and --mean)

    @property
    def n_classes(self):
        return self.heads[0].n_classes

    def input_variant(self, name):
        """The Inputs record called `name`, or a ValueError listing the offered ones."""
        variants = dict(self.inputs)
        if name not in variants:
            raise InputError(f"dataset {self.name!r} has no input variant {name!r}; "
                             f"it offers {', '.join(variants)}")
        return variants[name]

    def image_mean(self, variant="color"):
        """The BGR mean a single-image input of `variant` subtracts."""
        key = self.input_variant(variant).mean_param
        return self.mean if key == "mean" else tuple(dict(self.extra_means)[key])

    def with_classes(self, n_classes, class_names=()):
        head = replace(self.heads[0], n_classes=check_classes(n_classes), class_names=tuple(class_names))
        return replace(self, heads=(head,) + self.heads[1:])


def _voc_val(split="seg11valid"):
    return Source("layers.voc.VOCSegDataLayer", "datasets/pascal/VOC2011", split)


DATASETS = {d.name: d for d in (
    Dataset("voc", "PASCAL VOC 2011 segmentation (train: SBD train 8498, val: seg11valid 736)",
            VOC_MEAN, (Head("label", 21, VOC_CLASSES),),
            train=Source("layers.sbdd.SBDDSegDataLayer", "datasets/sbdd/dataset", "train"),
            val=_voc_val(), fetch_target="data-voc", voc_colours=True),
    Dataset("pascalcontext", "PASCAL-Context, 59 classes + background",
            VOC_MEAN, (Head("label", 60, CONTEXT59_CLASSES),),
            train=Source("layers.pascalcontext.PASCALContextSegDataLayer", "datasets/pascal-context",
                         "train", (("voc_root", "datasets/pascal/VOC2010"), ("classes", 59))),
            val=Source("layers.pascalcontext.PASCALContextSegDataLayer", "datasets/pascal-context",
                       "val", (("voc_root", "datasets/pascal/VOC2010"), ("classes", 59))),
            fetch_target="data-pascalcontext", voc_colours=True),
    Dataset("pascalcontext459", "PASCAL-Context, all 459 classes + background",
            VOC_MEAN, (Head("label", 460),),
            train=Source("layers.pascalcontext.PASCALContextSegDataLayer", "datasets/pascal-context",
                         "train", (("voc_root", "datasets/pascal/VOC2010"), ("classes", 459))),
            val=Source("layers.pascalcontext.PASCALContextSegDataLayer", "datasets/pascal-context",
                       "val", (("voc_root", "datasets/pascal/VOC2010"), ("classes", 459))),
            fetch_target="data-pascalcontext"),
    Dataset("siftflow", "SIFT Flow: 33 semantic + 3 geometric classes (two heads)",
            SIFTFLOW_MEAN,
            # the semantic head is scored over classes present in the test set (see solvers.score)
            (Head("sem", 33, SIFTFLOW_SEM_CLASSES, "_sem", present_only=True),
             Head("geo", 3, SIFTFLOW_GEO_CLASSES, "_geo")),
            train=Source("layers.siftflow.SIFTFlowSegDataLayer", "datasets/sift-flow", "trainval"),
            val=Source("layers.siftflow.SIFTFlowSegDataLayer", "datasets/sift-flow", "test"),
            fetch_target="data-siftflow"),
    Dataset("nyud", "NYUDv2, 40 classes (Gupta et al. split)",
            NYUD_COLOR_MEAN, (Head("label", 40, NYUD40_CLASSES),),
            train=Source("layers.nyud.NYUDSegDataLayer", "datasets/nyud", "trainval"),
            val=Source("layers.nyud.NYUDSegDataLayer", "datasets/nyud", "test"),
            fetch_target="data-nyud", inputs=NYUD_INPUTS,
            extra_means=(("mean_hha", NYUD_HHA_MEAN),)),
    Dataset("folder", "custom dataset: images/<id>.{jpg,png}, labels/<id>.png, <split>.txt",
            VOC_MEAN, (Head("label", 21),),
            train=Source("layers.folder.FolderSegDataLayer", "datasets/custom", "train"),
            val=Source("layers.folder.FolderSegDataLayer", "datasets/custom", "val"), custom=True),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def custom_dataset(n_classes: int, mean, root: Optional[str] = None,
                   train_split="train", val_split="val", class_names=()) -> Dataset:
    """The folder dataset with the user's class count, mean and location."""
    mean = parse_mean(mean)
    base = next(d for d in DATASETS.values() if d.custom)
    root = root or base.train.root
    return replace(base.with_classes(n_classes, class_names), mean=mean,
                   train=replace(base.train, root=root, split=train_split),
                   val=replace(base.val, root=root, split=val_split))

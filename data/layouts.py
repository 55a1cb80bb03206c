"""Tiny datasets written in each dataset's true on-disk format (for the
tests and the data-layer benchmark).

Every writer takes the directory to write (`root`, created if needed, and
what the data layer's `root` key then points at), `ids_sizes` (a mapping or
sequence of (id, (height, width)), in split-file order) and a seed, writes
random but deterministic content, appends nothing: the split file lists
exactly `ids_sizes`. Tests read the files back independently (PIL, scipy)
to know what the layers must produce.
"""
import os

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from common.palette import voc_palette

VOID = 255
SIFTFLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
# 59_labels.txt spells three classes differently from labels.txt (see layers.pascalcontext)
CONTEXT59_NAMES = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
    "person pottedplant sheep sofa train tvmonitor bag bed bench book building cabinet ceiling "
    "clothes computer cup door fence floor flower food grass ground keyboard light mountain mouse "
    "curtain platform sign plate road rock shelves sidewalk sky snow bedcloth track tree truck "
    "wall water window wood").split()
CONTEXT_FULL_NAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth",
                      "pottedplant": "potted plant"}   # the last: a space the layer must drop
N_CONTEXT_FULL = 459


def _items(ids_sizes):
    items = list(ids_sizes.items()) if isinstance(ids_sizes, dict) else list(ids_sizes)
    return [(str(i), (int(h), int(w))) for i, (h, w) in items]


def _mkdirs(*paths):
    for p in paths:
        os.makedirs(p, exist_ok=True)


def _write_split(path, items):
    _mkdirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.writelines(i + "\n" for i, _ in items)


def _rng(seed, index):
    return np.random.RandomState(seed * 1000 + index)


def _rgb(rng, size):
    return rng.randint(0, 256, size + (3,)).astype(np.uint8)


def _images(items, seed, folder, ext=".jpg", quality=95):
    """Write each example's random RGB image into `folder` as <id><ext> (a
    JPEG at `quality`, None: PIL's default); yield (id, size, rng), the rng
    past the image, for the example's labels."""
    _mkdirs(folder)
    for k, (i, size) in enumerate(items):
        rng = _rng(seed, k)
        image = Image.fromarray(_rgb(rng, size))
        image.save(os.path.join(folder, i + ext), **({"quality": quality} if quality else {}))
        yield i, size, rng


def _palette_png(path, label):
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def _voc_label(rng, size, n_classes):
    """Random classes with a one-pixel void frame, like VOC's object outlines."""
    label = rng.randint(0, n_classes, size)
    label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = VOID
    return label


def write_voc(root, ids_sizes, n_classes=21, seed=0, split="train"):
    """A VOC20xx dir: JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/<split>.txt."""
    items = _items(ids_sizes)
    _mkdirs(os.path.join(root, "SegmentationClass"))
    for i, size, rng in _images(items, seed, os.path.join(root, "JPEGImages")):
        _palette_png(os.path.join(root, "SegmentationClass", i + ".png"), _voc_label(rng, size, n_classes))
    _write_split(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"), items)
    return root


def write_sbdd(root, ids_sizes, n_classes=21, seed=0, split="train"):
    """An SBD `dataset` dir: img/*.jpg, cls/*.mat (struct GTcls), <split>.txt."""
    items = _items(ids_sizes)
    _mkdirs(os.path.join(root, "cls"))
    for i, size, rng in _images(items, seed, os.path.join(root, "img")):
        seg = rng.randint(0, n_classes, size).astype(np.uint8)
        present = np.unique(seg[seg > 0]).astype(np.uint8)
        boundaries = np.empty((n_classes - 1, 1), dtype=object)
        for c in range(n_classes - 1):
            boundaries[c, 0] = scipy.sparse.csc_matrix(seg == c + 1, dtype=bool)
        gt = {"Boundaries": boundaries, "Segmentation": seg, "CategoriesPresent": present}
        scipy.io.savemat(os.path.join(root, "cls", i + ".mat"), {"GTcls": gt})
    _write_split(os.path.join(root, split + ".txt"), items)
    return root


def write_nyud(root, ids_sizes, n_classes=40, seed=0, split="trainval"):
    """The FCN NYUD layout: data/{images,depth,hha}/img_<id>.png, segmentation/img_<id>.mat.

    Depth is 16-bit (millimetres, > 0); segmentation 0 = void, 1..n_classes."""
    items = _items(ids_sizes)
    for d in ("data/images", "data/depth", "data/hha", "segmentation"):
        _mkdirs(os.path.join(root, d))
    for k, (i, size) in enumerate(items):
        rng = _rng(seed, k)
        name = f"img_{i}"
        Image.fromarray(_rgb(rng, size)).save(os.path.join(root, "data/images", name + ".png"))
        depth = rng.randint(500, 10000, size).astype(np.uint16)
        Image.fromarray(depth).save(os.path.join(root, "data/depth", name + ".png"))
        Image.fromarray(_rgb(rng, size)).save(os.path.join(root, "data/hha", name + ".png"))
        seg = rng.randint(0, n_classes + 1, size).astype(np.uint8)
        scipy.io.savemat(os.path.join(root, "segmentation", name + ".mat"), {"segmentation": seg})
    _write_split(os.path.join(root, split + ".txt"), items)
    return root


def write_siftflow(root, ids_sizes, seed=0, split="trainval"):
    """The SIFT Flow release: Images/, SemanticLabels/, GeoLabels/ (each under
    spatial_envelope_256x256_static_8outdoorcategories/), variable S: semantic
    0 = unlabelled, 1..33; geometric -1 or 0 = unlabelled, 1..3."""
    items = _items(ids_sizes)
    dirs = {kind: os.path.join(root, kind, SIFTFLOW_SUBDIR) for kind in ("Images", "SemanticLabels", "GeoLabels")}
    _mkdirs(*dirs.values())
    for i, size, rng in _images(items, seed, dirs["Images"]):
        sem = rng.randint(0, 34, size).astype(np.float64)          # MATLAB double
        geo = rng.randint(-1, 4, size).astype(np.int16)
        scipy.io.savemat(os.path.join(dirs["SemanticLabels"], i + ".mat"), {"S": sem, "names": np.array(["x"])})
        scipy.io.savemat(os.path.join(dirs["GeoLabels"], i + ".mat"), {"S": geo, "names": np.array(["x"])})
    _write_split(os.path.join(root, split + ".txt"), items)
    return root


def context_label_ids(seed=0):
    """labels.txt id of each of the 59 classes (1..59 order) in the fixture."""
    return 1 + np.random.RandomState(seed).permutation(N_CONTEXT_FULL)[:59]


def write_pascalcontext(root, voc_root, ids_sizes, seed=0, split="train"):
    """PASCAL-Context annotations in `root` (trainval/<id>.mat with LabelMap,
    labels.txt of 459 "<id>: <name>" lines, 59_labels.txt) and their VOC2010
    images in `voc_root` (JPEGImages/, ImageSets/Main/<split>.txt).
    The 59 classes sit at scattered labels.txt ids (`context_label_ids`).
    Returns (root, voc_root)."""
    items = _items(ids_sizes)
    _mkdirs(os.path.join(root, "trainval"))
    ids59 = context_label_ids(seed)
    full = {int(j): f"thing{j}" for j in range(1, N_CONTEXT_FULL + 1)}
    for name, j in zip(CONTEXT59_NAMES, ids59):
        full[int(j)] = CONTEXT_FULL_NAMES.get(name, name)
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.writelines(f"{j}: {full[j]}\n" for j in sorted(full))
    with open(os.path.join(root, "59_labels.txt"), "w") as f:
        f.writelines(f"{c}: {name}\n" for c, name in enumerate(CONTEXT59_NAMES, 1))
    for i, size, rng in _images(items, seed, os.path.join(voc_root, "JPEGImages")):
        pool = np.concatenate([ids59, [0, 1, 2, 3, N_CONTEXT_FULL]])   # mapped, unmapped, unlabelled
        label_map = rng.choice(pool, size).astype(np.uint16)
        scipy.io.savemat(os.path.join(root, "trainval", i + ".mat"), {"LabelMap": label_map})
    _write_split(os.path.join(voc_root, "ImageSets", "Main", split + ".txt"), items)
    return root, voc_root


def write_folder(root, ids_sizes, n_classes=5, seed=0, split="train", ext=".png"):
    """The custom layout: images/<id><ext> (.png or .jpg), labels/<id>.png
    (greyscale class ids, 255 void), <split>.txt."""
    items = _items(ids_sizes)
    _mkdirs(os.path.join(root, "labels"))
    for i, size, rng in _images(items, seed, os.path.join(root, "images"), ext, quality=None):
        Image.fromarray(_voc_label(rng, size, n_classes).astype(np.uint8), mode="L").save(
            os.path.join(root, "labels", i + ".png"))
    _write_split(os.path.join(root, split + ".txt"), items)
    return root

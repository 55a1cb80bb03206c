"""A small synthetic segmentation set in the exact PASCAL VOC on-disk layout.

Each class has its own colour family and texture, so *what* an object is
is quick to learn on a CPU; rings and crosses have strokes a few pixels
wide that a 32-pixel output stride cannot place, so *where* it is needs the
finer strides -- the point of FCN-16s and FCN-8s. The objects of a scene
share one class (ONE_CLASS_PER_SCENE): on 128x128 scenes every FCN-32s
output sees the whole image through fc6's 224-pixel window, so scenes
mixing classes asked FCN-32s to tell objects apart by position alone; with
mixed scenes FCN-8s ended between 0.71 and 0.82 mean IU on two seeds, with
one class per scene at 0.91 on both.
"""
import io
import os

import numpy as np
from PIL import Image

from common.atomic import atomic_write
from common.palette import png_bytes, voc_palette
from common.seed import SEED
from net_specs.datasets import VOC_MEAN

CLASSES = ("background", "disc", "square", "ring", "cross")
VOID = 255
BORDER = 1      # void band around every object, as in VOC's annotations
SCALE = 1.2     # object radius: 17..29% of the image side
THIN = 4.0      # half-width (pixels) of rings' and crosses' strokes, at least
MAX_OBJECTS = 3
CENTRE_JITTER = 0.1  # centred objects: centre within this fraction of the side from the middle
ONE_CLASS_PER_SCENE = True    # see the module docstring
MEAN_RGB = np.array(VOC_MEAN[::-1])


def _texture(rng, kind, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(3.0, 5.0)
    if kind == "stripes_h":
        t = np.sin(2 * np.pi * yy / period)
    elif kind == "stripes_v":
        t = np.sin(2 * np.pi * xx / period)
    elif kind == "checker":
        t = np.sign(np.sin(2 * np.pi * yy / period) * np.sin(2 * np.pi * xx / period))
    else:
        t = rng.randn(h, w) * 0.5
    return t


def _object_mask(rng, cls, h, w, scale=1.0, centred=False):
    """Boolean mask of one object of class `cls` at a random place (near the
    middle when `centred`)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = min(rng.uniform(0.14, 0.24) * scale, 0.45) * min(h, w)
    if centred:
        cy, cx = h / 2 + rng.uniform(-1, 1) * CENTRE_JITTER * h, w / 2 + rng.uniform(-1, 1) * CENTRE_JITTER * w
    else:
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    d = np.hypot(yy - cy, xx - cx)
    if cls == 1:                                    # disc
        return d <= r
    if cls == 2:                                    # square
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    thin = max(THIN, 0.1 * r)
    if cls == 3:                                    # ring: thin annulus
        return np.abs(d - r) <= thin
    return ((np.abs(yy - cy) <= thin) & (np.abs(xx - cx) <= r)) | \
           ((np.abs(xx - cx) <= thin) & (np.abs(yy - cy) <= r))   # cross: thin arms


TEXTURE_OF = {1: "stripes_h", 2: "checker", 3: "noise", 4: "stripes_v"}
COLOUR_OF = {1: (200, 70, 60), 2: (60, 170, 70), 3: (70, 90, 210), 4: (210, 190, 60)}   # RGB
COLOUR_JITTER = 30


def render(rng, h, w, n_objects=None, classes=None, scale=SCALE, one_class=False, centred=False):
    """(RGB uint8 image, label uint8 with VOID borders) of one synthetic scene;
    `one_class`: every object of the scene of one class; `centred`: objects
    near the middle (the classifier's crops, like ImageNet's)."""
    base = rng.uniform(70, 150, size=3)
    lowfreq = rng.randn(3, 4, 4) * 18
    bg = np.stack([np.array(Image.fromarray(c.astype(np.float32)).resize((w, h), Image.BILINEAR))
                   for c in lowfreq], axis=-1)
    image = base + bg + rng.randn(h, w, 3) * 6
    label = np.zeros((h, w), dtype=np.uint8)
    n_objects = n_objects or rng.randint(1, MAX_OBJECTS + 1)
    cls = None
    for _ in range(n_objects):
        if cls is None or not one_class:
            cls = int(rng.choice(classes)) if classes else int(rng.randint(1, len(CLASSES)))
        mask = _object_mask(rng, cls, h, w, scale, centred)
        colour = np.array(COLOUR_OF[cls]) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
        tex = _texture(rng, TEXTURE_OF[cls], h, w)[..., None] * 45
        image[mask] = (colour + tex)[mask]
        grown = _dilate(mask, BORDER)
        label[grown & ~mask] = VOID
        label[mask] = cls
    image = MEAN_RGB + (image - 128.0)          # centred on the mean the data layer subtracts
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def _dilate(mask, k):
    out = mask.copy()
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _jpeg_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_voc_layout(root, n_train=120, n_val=30, size=(96, 96), seed=SEED):
    """Write VOC2011-style JPEGImages/, SegmentationClass/ (palette PNG) and
    ImageSets/Segmentation/{train,val}.txt under `root`; returns root."""
    rng = np.random.RandomState(seed)
    palette = voc_palette().flatten().tolist()
    splits = {"train": [], "val": []}
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            ident = f"{split}_{i:04d}"
            image, label = render(rng, *size, one_class=ONE_CLASS_PER_SCENE)
            atomic_write(os.path.join(root, "JPEGImages", ident + ".jpg"),
                         _jpeg_bytes(Image.fromarray(image)))
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette)
            atomic_write(os.path.join(root, "SegmentationClass", ident + ".png"), png_bytes(png))
            splits[split].append(ident)
    for split, ids in splits.items():
        atomic_write(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"),
                     "\n".join(ids) + "\n")
    return root


def chance_mean_iu(root, split="val"):
    """Mean IU of the best constant prediction (all background): the chance level."""
    path = os.path.join(root, "ImageSets", "Segmentation", split + ".txt")
    with open(path) as f:
        ids = f.read().split()
    n = len(CLASSES)
    hist = np.zeros((n, n))
    for ident in ids:
        label = np.array(Image.open(os.path.join(root, "SegmentationClass", ident + ".png")))
        valid = label != VOID
        hist[:, 0] += np.bincount(label[valid], minlength=n)[:n]
    iu = np.diag(hist) / np.maximum(hist.sum(0) + hist.sum(1) - np.diag(hist), 1)
    present = hist.sum(1) > 0
    return float(iu[present].mean())

"""Full-size fixture datasets for the benchmarks: the datasets' on-disk
layouts (data.layouts) with photograph-like images, which decode like real
ones (pure noise compresses badly and decodes unlike photographs)."""
import os

import numpy as np
from PIL import Image

from data.layouts import write_voc

H, W = 375, 500         # a typical PASCAL VOC image


def smooth_image(k, channels=3, size=(H, W)):
    """A photograph-like image of `size` (H, W): smooth waves plus mild noise."""
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rng = np.random.RandomState(k)
    f = rng.uniform(0.005, 0.05, 6)
    rgb = np.stack([127 + 100 * np.sin(f[c % 3] * xx + f[c % 3 + 3] * yy + k) for c in range(channels)], -1)
    rgb += rng.normal(0, 6, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def voc_fixture(root, ids, split, size=(H, W), n_classes=21, seed=0):
    """A VOC-layout split (JPEGImages, SegmentationClass, ImageSets) of `ids`
    at `size`, the images replaced by smooth JPEGs."""
    write_voc(root, [(i, size) for i in ids], n_classes=n_classes, seed=seed, split=split)
    for k, i in enumerate(ids):
        smooth_image(seed * 1000 + k, size=size).save(os.path.join(root, "JPEGImages", i + ".jpg"),
                                                       quality=90)
    return root

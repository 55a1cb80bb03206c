"""Colour maps for label images.

PASCAL VOC (and PASCAL-Context, which shares its class 0 = background and
first 20 classes) use the standard VOC bitmask palette: class i takes the
bits of i, three at a time, from the most significant bit of each of R, G
and B down (0 black, 1 maroon (128,0,0), 2 green, 15 person (192,128,128),
255 "void" (224,224,192)). Every other class count gets a generated palette
of clearly distinct colours, deterministic so that runs compare.

Label maps are saved as palette ('P') PNGs: the pixel values are the class
indices, the palette only decides how a viewer shows them. A palette PNG
holds at most 256 indices, so models with more classes (PASCAL-Context 459)
are saved as 16-bit greyscale PNGs holding the raw indices.
"""
import colorsys
import io

import numpy as np
from PIL import Image

VOC_CLASS_COUNTS = (21, 60)             # VOC 20 + background, Context 59 + background
MAX_PALETTE = 256


def voc_palette(n=MAX_PALETTE):
    """The VOC bitmask colour map, (n, 3) uint8."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def distinct_palette(n):
    """`n` distinct colours, (n, 3) uint8: hues spread by the golden ratio,
    cycling through saturation/value levels so neighbours differ strongly."""
    colours, seen = [], set()
    saturations, values = (0.85, 0.55, 1.0), (0.95, 0.7, 0.5)
    i = 0
    while len(colours) < n:
        hue = (i * 0.6180339887498949) % 1.0
        s = saturations[i % 3]
        v = values[(i // 3) % 3]
        rgb = tuple(int(round(255 * x)) for x in colorsys.hsv_to_rgb(hue, s, v))
        i += 1
        if rgb in seen:                 # rounding collisions (large n): take the next hue
            continue
        seen.add(rgb)
        colours.append(rgb)
    return np.array(colours, np.uint8).reshape(n, 3)


def is_voc_like(n_classes, voc_colours=None):
    """Whether labels read best in VOC colours: a dataset whose record says
    so (VOC, PASCAL-Context), any other 21-class dataset, and 21 or 60
    classes when the dataset is not known (`voc_colours` None)."""
    if voc_colours:
        return True
    return n_classes == 21 if voc_colours is not None else n_classes in VOC_CLASS_COUNTS


def palette_for(n_classes, voc_colours=None):
    """(max(256, n_classes), 3) uint8 colours for class indices 0..n_classes-1.

    VOC bitmask colours for VOC-like data (see is_voc_like; `voc_colours` is
    the dataset record's flag, None when there is no record); a generated
    distinct palette otherwise, padded to 256 entries with the VOC void
    colour at 255.
    """
    n_classes = int(n_classes)
    if n_classes < 1:
        raise ValueError(f"n_classes must be positive, got {n_classes}")
    if is_voc_like(n_classes, voc_colours):
        return voc_palette(max(MAX_PALETTE, n_classes))
    palette = voc_palette(max(MAX_PALETTE, n_classes))      # padding entries
    palette[:n_classes] = distinct_palette(n_classes)
    return palette


def label_image(labels, palette):
    """A label map as a PIL image: mode 'P' with `palette` when the palette
    has at most 256 entries (labels must then lie in 0..255), else 16-bit
    greyscale ('I;16') of the raw indices."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be H x W, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError("labels must lie in [0, 65535]")
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    if len(palette) <= MAX_PALETTE:
        if labels.size and labels.max() >= len(palette):
            raise ValueError(f"label {labels.max()} has no entry in a {len(palette)}-colour palette")
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette(palette[:MAX_PALETTE].ravel().tolist())
        return image
    return Image.fromarray(labels.astype(np.uint16), mode="I;16")


def png_bytes(image):
    """PNG encoding of a PIL image, for atomic writes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def colorize(labels, palette):
    """H x W class indices -> H x W x 3 uint8 colours."""
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    labels = np.asarray(labels)
    if labels.size and labels.max() >= len(palette):
        raise ValueError(f"label {labels.max()} has no colour in a {len(palette)}-entry palette")
    return palette[labels]

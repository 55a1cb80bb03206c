"""Side-by-side visualisation of a segmentation: image | overlay | legend.

Layout of `side_by_side` (an RGB image):

    +-----------+-----------+---------+
    |   image   |  overlay  | legend  |   legend: one swatch + class name per
    |  (W x H)  |  (W x H)  |         |   class present in the prediction,
    +-----------+-----------+---------+   in class order

The image occupies x in [0, W), the overlay (image blended with the label
colours, `alpha` the colour weight) x in [W, 2W), both from y = 0; the
legend column starts at x = 2W. The canvas is max(H, legend height) tall;
space not covered by the panels is white. Text is drawn with PIL's default
font, no font files needed.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.palette import colorize

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
MARGIN = 4


def overlay(image, labels, palette, alpha=0.5):
    """(1 - alpha) * image + alpha * colour(label), H x W x 3 uint8."""
    image = np.asarray(image, np.float32)
    colours = colorize(labels, palette).astype(np.float32)
    if image.shape != colours.shape:
        raise ValueError(f"image {image.shape} and labels {np.shape(labels)} differ in size")
    return np.clip(np.round((1 - alpha) * image + alpha * colours), 0, 255).astype(np.uint8)


def present_classes(labels):
    """Class indices that occur in `labels`, ascending."""
    return [int(c) for c in np.unique(np.asarray(labels))]


def _font(image_height):
    size = int(min(24, max(10, image_height // 25)))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                      # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def legend(classes, class_names, palette, image_height=0):
    """The legend column as an RGB PIL image: a swatch and a name per class."""
    font = _font(image_height)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [class_names[c] if c < len(class_names) and class_names[c] else f"class {c}"
             for c in classes]
    boxes = [probe.textbbox((0, 0), name, font=font) for name in names]
    ascent = max([b[3] for b in boxes] + [probe.textbbox((0, 0), "Ag", font=font)[3]])
    row = ascent + MARGIN
    swatch = ascent
    text_w = max([b[2] for b in boxes] + [1])
    width = MARGIN + swatch + MARGIN + text_w + MARGIN
    height = MARGIN + row * len(classes) + MARGIN if classes else 0
    panel = Image.new("RGB", (width, max(height, 1)), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    for k, (c, name) in enumerate(zip(classes, names)):
        y = MARGIN + k * row
        draw.rectangle([MARGIN, y, MARGIN + swatch - 1, y + swatch - 1],
                       fill=tuple(int(v) for v in palette[c]), outline=TEXT)
        draw.text((2 * MARGIN + swatch, y), name, fill=TEXT, font=font)
    return panel


def side_by_side(image, labels, palette, class_names=(), alpha=0.5):
    """image | overlay | legend of the classes present, as an RGB PIL image."""
    image = np.asarray(image, np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    h, w = image.shape[:2]
    panel = legend(present_classes(labels), class_names, palette, image_height=h)
    canvas = Image.new("RGB", (2 * w + panel.width, max(h, panel.height)), BACKGROUND)
    canvas.paste(Image.fromarray(image), (0, 0))
    canvas.paste(Image.fromarray(overlay(image, labels, palette, alpha)), (w, 0))
    canvas.paste(panel, (2 * w, 0))
    return canvas

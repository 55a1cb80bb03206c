"""Images into Caffe: the one preprocessing path of training layers,
inference and the demo, so what a net sees cannot drift between them.

    rgb = to_rgb(pil_image)                 # any PIL mode -> H x W x 3 uint8 RGB
    blob = caffe_image(rgb, mean_bgr)       # -> 3 x H x W float32, BGR minus the mean

Grey, palette, RGBA, CMYK... images are converted by PIL. 16-bit images
(modes I;16*, and I or F holding values above 255) are mapped onto 0..255 by
their full 16-bit range (v * 255 / 65535), the same for every image; PIL's
own conversion would clip everything above 255 to white.
"""
import numpy as np
from PIL import Image

WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")
MODE_NAMES = {"L": "grey", "LA": "grey+alpha", "RGBA": "RGBA", "P": "palette", "1": "binary",
              "I": "32-bit grey", "I;16": "16-bit grey", "CMYK": "CMYK"}


def to_rgb(image, name="image", warn=None):
    """A PIL image as H x W x 3 uint8 RGB; `warn(message)`, if given, hears
    of any conversion."""
    if image.mode == "RGB":
        return np.asarray(image, np.uint8)
    if warn is not None:
        warn(f"{name}: {MODE_NAMES.get(image.mode, image.mode)} image (mode {image.mode}) "
             "converted to RGB")
    if image.mode in WIDE_MODES:
        array = np.asarray(image, np.float64)
        if image.mode.startswith("I;16") or (array.size and array.max() > 255):
            array = array * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
    return np.asarray(image.convert("RGB"), np.uint8)


def caffe_image(rgb, mean_bgr, swap_channels=True):
    """H x W x 3 image -> 3 x H x W float32 minus `mean_bgr`, in Caffe's
    layout; RGB is swapped to BGR unless `swap_channels` is False (NYUD's
    HHA images are used in their stored channel order)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {rgb.shape}")
    channels = rgb[:, :, ::-1] if swap_channels else rgb
    out = channels.astype(np.float32) - np.asarray(mean_bgr, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))

"""Reading images, label maps and split files, each failure naming its file.

Datasets are large and hand-assembled, so a bad file must stop training with
its path rather than be skipped or turned into garbage: every helper here
raises `DataError` (bad content) or `FileNotFoundError` (absent file), and
the message starts with the path.
"""
import os

import numpy as np
import scipy.io
from PIL import Image

from common.errors import InputError
from common.image import caffe_image, to_rgb  # noqa: F401  (caffe_image: the layers' preprocessing)

VOID = 255


class DataError(InputError):
    """A dataset file that exists but cannot be used; `path` names it."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __reduce__(self):       # rebuilt from both fields when a loader worker sends it
        return type(self), (self.path, self.problem)


def read_split(path):
    """The ids listed in a split file, one per line, in file order.

    A split file is UTF-8 text (a leading byte-order mark, as some editors
    write, is dropped); binary content and repeated ids are errors naming the
    file, because either would silently change what a run trains or scores on.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if b"\0" in raw:
        raise DataError(path, "binary content (NUL bytes): expected a text file of ids, one per line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text (byte {e.start}): expected a text file of ids, "
                              "one per line") from None
    ids, first_line = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key:
            continue
        if key in first_line:
            raise DataError(path, f"id {key!r} is listed twice (lines {first_line[key]} and {number})")
        first_line[key] = number
        ids.append(key)
    if not ids:
        raise DataError(path, "the split file lists no ids")
    return ids


def _open_image(path):
    """A fully decoded PIL image (decoding is lazy in PIL: force it here)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(path, f"unreadable or truncated image ({e})") from None
    return im


def read_rgb(path):
    """H x W x 3 uint8 RGB (other modes converted as inference converts them:
    common.image.to_rgb, 16-bit images scaled rather than clipped)."""
    return to_rgb(_open_image(path), path)


def read_gray(path):
    """H x W array of a single-channel image (8/16-bit greyscale or palette
    indices, which are the class ids of a VOC-style label PNG)."""
    im = _open_image(path)
    if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise DataError(path, f"expected a single-channel or palette PNG, got mode {im.mode}")
    return np.asarray(im)


def read_mat(path, key):
    """Variable `key` of a MATLAB file (structs as attribute objects)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MATLAB file not found: {path}")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for bad files
        raise DataError(path, f"unreadable MATLAB file ({type(e).__name__}: {e})") from None
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(path, f"no variable {key!r} (found {found})")
    return mat[key]


def read_sbd(path, struct="GTcls"):
    """The Segmentation field of an SBD .mat file (cls/: GTcls, inst/: GTinst) as int64."""
    gt = read_mat(path, struct)
    if not hasattr(gt, "Segmentation"):
        raise DataError(path, f"{struct} has no field Segmentation")
    return integer_map(gt.Segmentation, path)


def integer_map(array, path):
    """A 2-D label array as int64, refusing non-integral values."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise DataError(path, f"expected a 2-D label map, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(path, "label map has non-integer values")
    elif array.dtype.kind not in "iub":
        raise DataError(path, f"label map has non-numeric dtype {array.dtype}")
    return array.astype(np.int64)


def zero_is_void(raw, path):
    """Labels stored as 0 = void, k = class k-1 (NYUD, SIFT Flow) -> classes from 0, VOID."""
    if raw.size and raw.min() < 0:
        raise DataError(path, f"negative label value {raw.min()}")
    if (raw == VOID + 1).any():
        raise DataError(path, f"label value {VOID + 1} would collide with void {VOID}")
    return np.where(raw == 0, VOID, raw - 1)


def check_labels(label, n_classes, path):
    """Every value in [0, n_classes) or VOID; n_classes None checks nothing."""
    if n_classes is None:
        return label
    bad = (label != VOID) & ((label < 0) | (label >= n_classes))
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise DataError(path, f"label values {shown} outside [0, {n_classes}) and void {VOID}")
    return label


def caffe_label(label):
    """H x W integer classes -> 1 x H x W float32, as SoftmaxWithLoss reads it."""
    return np.asarray(label, dtype=np.float32)[np.newaxis]

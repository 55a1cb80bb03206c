"""NYUDv2 in the FCN release's layout (Gupta et al.'s 40-class task).

`root` holds <split>.txt, data/images/img_<id>.png (colour),
data/depth/img_<id>.png (16-bit depth), data/hha/img_<id>.png (HHA) and
segmentation/img_<id>.mat (variable `segmentation`, 0 = void, 1-40 the
classes -> 255 and 0-39). `tops` picks and orders the outputs.

Preprocessing follows the reference layer exactly, because the published
NYUD models were trained on it: colour RGB->BGR minus `mean`; depth
log(depth) - `mean_logd`; HHA minus `mean_hha` in the PNG's channel order
(the reference does not swap HHA channels).
"""
import os

import numpy as np

from net_specs.datasets import NYUD_COLOR_MEAN, NYUD_HHA_MEAN, NYUD_LOGD_MEAN

from . import params as P
from .base import SegDataLayer
from .io import DataError, caffe_image, caffe_label, check_labels, integer_map, read_gray, read_mat, \
    read_rgb, zero_is_void
from .reader import Reader

TOPS = ("color", "depth", "hha", "label")
FILES = {"color": ("data", "images", ".png"), "depth": ("data", "depth", ".png"),
         "hha": ("data", "hha", ".png"), "label": ("segmentation", ".mat")}


class NYUDReader(Reader):

    PARAMS = {
        "tops": P.Param(P.subset_list(TOPS)),
        "mean": P.Param(P.as_floats(3), NYUD_COLOR_MEAN),
        "mean_hha": P.Param(P.as_floats(3), NYUD_HHA_MEAN),
        "mean_logd": P.Param(P.as_float, NYUD_LOGD_MEAN),
    }

    @property
    def tops(self):
        return self.params["tops"]

    def path(self, top, key):
        *dirs, ext = FILES[top]
        return os.path.join(self.root, *dirs, f"img_{key}{ext}")

    def files(self, key):
        return [self.path(top, key) for top in self.tops]

    def load_tops(self, key):
        return [(self.path(top, key), getattr(self, "load_" + top)(self.path(top, key)))
                for top in self.tops]

    def load_color(self, path):
        return caffe_image(read_rgb(path), self.params["mean"])

    def load_depth(self, path):
        depth = read_gray(path).astype(np.float32)
        if (depth <= 0).any():
            raise DataError(path, f"{int((depth <= 0).sum())} depth pixels <= 0 (log undefined)")
        return (np.log(depth) - np.float32(self.params["mean_logd"]))[np.newaxis]

    def load_hha(self, path):
        return caffe_image(read_rgb(path), self.params["mean_hha"], swap_channels=False)

    def load_label(self, path):
        label = zero_is_void(integer_map(read_mat(path, "segmentation"), path), path)
        return caffe_label(check_labels(label, self.params["n_classes"], path))


class NYUDSegDataLayer(SegDataLayer):
    reader_class = NYUDReader

"""SIFT Flow in the LabelMe release's layout: one image, two label maps.

`root` holds <split>.txt and, under the directory
spatial_envelope_256x256_static_8outdoorcategories of each of Images/,
SemanticLabels/ and GeoLabels/, <id>.jpg and <id>.mat (variable `S`).
Stored labels are 0 = unlabelled, k = class k-1; GeoLabels also use -1 for
unlabelled (made 0 first, as the reference does). Tops: data, sem (33
classes), geo (3 classes), void 255; `n_classes` (33) bounds sem.
"""
import os

from .base import SegDataLayer
from .io import caffe_image, caffe_label, check_labels, integer_map, read_mat, read_rgb, zero_is_void
from .reader import Reader

SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
N_GEO = 3


class SIFTFlowReader(Reader):

    TOPS = ("data", "sem", "geo")

    def files(self, key):
        return [os.path.join(self.root, kind, SUBDIR, key + ext)
                for kind, ext in (("Images", ".jpg"), ("SemanticLabels", ".mat"), ("GeoLabels", ".mat"))]

    def load_tops(self, key):
        image, sem, geo = self.files(key)
        return [(image, caffe_image(read_rgb(image), self.params["mean"])),
                (sem, self.label(sem, self.params["n_classes"])),
                (geo, self.label(geo, N_GEO, also_unlabelled=-1))]

    @staticmethod
    def label(path, n_classes, also_unlabelled=None):
        raw = integer_map(read_mat(path, "S"), path)
        if also_unlabelled is not None:
            raw[raw == also_unlabelled] = 0
        return caffe_label(check_labels(zero_is_void(raw, path), n_classes, path))


class SIFTFlowSegDataLayer(SegDataLayer):
    reader_class = SIFTFlowReader

"""PASCAL VOC 20xx: JPEGImages/<id>.jpg + SegmentationClass/<id>.png (palette, 255 void).

`root` is the VOC20xx directory. The split file is
ImageSets/Segmentation/<split>.txt, as in the reference layer; when absent
there, the split files shipped in this repository's data/ (seg11valid) are
used, so the FCN validation set needs no copying into the VOC tree.
"""
import os

from .base import SegDataLayer
from .io import read_gray
from .reader import Reader

SHIPPED_SPLITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


class VOCReader(Reader):

    def split_path(self):
        in_voc = os.path.join(self.root, "ImageSets", "Segmentation", self.split + ".txt")
        shipped = os.path.join(SHIPPED_SPLITS, self.split + ".txt")
        if not os.path.isfile(in_voc) and os.path.isfile(shipped):
            return shipped
        return in_voc

    def files(self, key):
        return [os.path.join(self.root, "JPEGImages", key + ".jpg"),
                os.path.join(self.root, "SegmentationClass", key + ".png")]

    def label_png(self, key):
        return self.files(key)[1]

    def load_tops(self, key):
        image, label = self.files(key)
        return self.image_and_label(image, label, read_gray(label))


class VOCSegDataLayer(SegDataLayer):
    reader_class = VOCReader

"""PASCAL VOC 20xx: JPEGImages/<id>.jpg + SegmentationClass/<id>.png (palette, 255 void).

`root` is the VOC20xx directory. The split file is
ImageSets/Segmentation/<split>.txt, as in the reference layer; when absent
there, the split files shipped in this repository's data/ (seg11valid) are
used, so the FCN validation set needs no copying into the VOC tree.
"""
import os

from .base import SegDataLayer
from .reader import PngLabelReader

SHIPPED_SPLITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


class VOCReader(PngLabelReader):

    def split_path(self):
        in_voc = os.path.join(self.root, "ImageSets", "Segmentation", self.split + ".txt")
        shipped = os.path.join(SHIPPED_SPLITS, self.split + ".txt")
        if not os.path.isfile(in_voc) and os.path.isfile(shipped):
            return shipped
        return in_voc

    def files(self, key):
        return [os.path.join(self.root, "JPEGImages", key + ".jpg"),
                os.path.join(self.root, "SegmentationClass", key + ".png")]


class VOCSegDataLayer(SegDataLayer):
    reader_class = VOCReader

"""SBD (Hariharan et al.): img/<id>.jpg + cls/<id>.mat (struct GTcls, field Segmentation).

`root` is the SBD `dataset` directory, split files <split>.txt in it
(train: the 8498 images FCN trains on). Labels are 0 background, 1-20 the
VOC classes; SBD marks no void pixels.
"""
import os

from .base import SegDataLayer
from .io import read_sbd
from .reader import Reader


class SBDDReader(Reader):

    def files(self, key):
        return [os.path.join(self.root, "img", key + ".jpg"),
                os.path.join(self.root, "cls", key + ".mat")]

    def load_tops(self, key):
        image, label = self.files(key)
        return self.image_and_label(image, label, read_sbd(label))


class SBDDSegDataLayer(SegDataLayer):
    reader_class = SBDDReader

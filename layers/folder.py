"""A custom dataset: images/<id>.{jpg,png}, labels/<id>.png (class ids, 255 void), <split>.txt.

Labels are single-channel or palette PNGs whose pixel values are the class
indices (a colour RGB label image is refused: its colours are not ids).
"""
import os

from .base import SegDataLayer
from .io import read_gray
from .reader import Reader

IMAGE_EXTS = (".jpg", ".png")


class FolderReader(Reader):

    def image_path(self, key):
        for ext in IMAGE_EXTS:
            path = os.path.join(self.root, "images", key + ext)
            if os.path.isfile(path):
                return path
        return os.path.join(self.root, "images", key + ".{jpg,png}")

    def files(self, key):
        return [self.image_path(key), os.path.join(self.root, "labels", key + ".png")]

    def label_png(self, key):
        return self.files(key)[1]

    def load_tops(self, key):
        image, label = self.files(key)
        return self.image_and_label(image, label, read_gray(label))


class FolderSegDataLayer(SegDataLayer):
    reader_class = FolderReader

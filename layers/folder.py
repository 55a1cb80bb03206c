"""A custom dataset: images/<id>.{jpg,png}, labels/<id>.png (class ids, 255 void), <split>.txt.

Labels are single-channel or palette PNGs whose pixel values are the class
indices (a colour RGB label image is refused: its colours are not ids).
"""
import os

from .base import SegDataLayer
from .reader import PngLabelReader

IMAGE_EXTS = (".jpg", ".png")


class FolderReader(PngLabelReader):

    def image_path(self, key):
        for ext in IMAGE_EXTS:
            path = os.path.join(self.root, "images", key + ext)
            if os.path.isfile(path):
                return path
        return os.path.join(self.root, "images", key + ".{jpg,png}")

    def files(self, key):
        return [self.image_path(key), os.path.join(self.root, "labels", key + ".png")]


class FolderSegDataLayer(SegDataLayer):
    reader_class = FolderReader

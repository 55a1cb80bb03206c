"""PASCAL-Context: VOC2010 images, full-scene annotations mapped to 59 classes.

`voc_root` is the VOC2010 directory (JPEGImages/<id>.jpg, split file
ImageSets/Main/<split>.txt as in the reference: train 4998, val 5105);
`root` holds the annotations trainval/<id>.mat (variable `LabelMap`, ids of
labels.txt), labels.txt and 59_labels.txt (lines "<id>: <name>").

classes=59: each of the 59 names (spaces removed, and the three that
59_labels.txt spells differently renamed: diningtable -> table, bedcloth ->
bedclothes, clothes -> cloth) is looked up in labels.txt; its pixels take
the 59-class id, every other label becomes 0 = background, as in the
reference. classes=459: LabelMap as is (0 = unlabelled/background).
"""
import os

import numpy as np

from . import params as P
from .base import SegDataLayer
from .io import DataError, integer_map, read_mat
from .reader import Reader

RENAMED = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
N_FULL = 459


def read_label_names(path):
    """{id: name} from lines "<id>: <name>", spaces removed from names."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PASCAL-Context label list not found: {path}")
    names = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            idx, sep, name = line.partition(":")
            try:
                idx = int(idx)
            except ValueError:
                idx = None
            if not sep or idx is None or not name.strip():
                raise DataError(path, f"line {n} is not '<id>: <name>': {line.strip()!r}")
            names[idx] = name.replace(" ", "").strip()
    return names


def lookup_table(labels_path, task_path):
    """Array mapping full label ids -> 59-class ids (0 for the rest)."""
    full = read_label_names(labels_path)
    by_name = {name: idx for idx, name in full.items()}
    table = np.zeros(max(max(full), N_FULL) + 1, np.int64)
    for task_id, name in sorted(read_label_names(task_path).items()):
        name = RENAMED.get(name, name)
        if task_id == 0:        # a listed background is background already
            continue
        if name not in by_name:
            raise DataError(task_path, f"class {name!r} is not in {labels_path}")
        table[by_name[name]] = task_id
    return table


class PASCALContextReader(Reader):

    PARAMS = {
        "voc_root": P.Param(P.as_str),
        "classes": P.Param(P.one_of(59, 459), 59),
    }

    def __init__(self, params):
        self.voc_root = params["voc_root"]
        super().__init__(params)
        self.classes = params["classes"]
        if self.classes == 59:
            self.table = lookup_table(os.path.join(self.root, "labels.txt"),
                                      os.path.join(self.root, "59_labels.txt"))

    def split_path(self):
        return os.path.join(self.voc_root, "ImageSets", "Main", self.split + ".txt")

    def files(self, key):
        return [os.path.join(self.voc_root, "JPEGImages", key + ".jpg"),
                os.path.join(self.root, "trainval", key + ".mat")]

    def load_tops(self, key):
        image, annotation = self.files(key)
        full = integer_map(read_mat(annotation, "LabelMap"), annotation)
        if full.size and (full.min() < 0 or full.max() > N_FULL):
            raise DataError(annotation, f"LabelMap values outside [0, {N_FULL}]")
        label = self.table[full] if self.classes == 59 else full
        return self.image_and_label(image, annotation, label)


class PASCALContextSegDataLayer(SegDataLayer):
    reader_class = PASCALContextReader

"""What every dataset format shares, without Caffe: params, split, file checks.

A format subclasses `Reader` and only says where its files are (`split_path`,
`files`) and how to turn one id into arrays (`load_tops`). The Caffe layer
(`layers.base`), the tests and the benchmark all go through `load`, which
adds the checks every format needs: all tops of one example the same size.
"""
import os

from common.seed import SEED

from . import params as P
from .io import (VOID, DataError, caffe_image, caffe_label, check_labels, exif_hint, read_gray,
                 read_rgb, read_split)
from .labelcheck import check_split_labels

MAX_WORKERS = 32            # loader processes per layer (0: the prefetch thread)
MAX_QUEUE_DEPTH = 16        # examples each of them keeps ready
COMMON = {
    "root": P.Param(P.as_str),
    "split": P.Param(P.as_str),
    "mean": P.Param(P.as_floats(3)),
    "randomize": P.Param(P.as_bool, True),
    "seed": P.Param(P.as_seed, SEED),
    "prefetch": P.Param(P.as_bool, True),
    "workers": P.Param(P.int_in(0, MAX_WORKERS), 1),
    "queue_depth": P.Param(P.int_in(1, MAX_QUEUE_DEPTH), 4),
    "n_classes": P.Param(P.positive(P.as_int)),
    "background_only": P.Param(P.as_bool, False),
}
MAX_LISTED = 5

class Reader:
    """One dataset on disk: its split ids and how to load one example."""

    PARAMS = {}                     # format-specific keys, merged over COMMON
    TOPS = ("data", "label")

    def __init__(self, params):
        self.params = params
        self.root = params["root"]
        self.split = params["split"]
        self.split_file = self.split_path()
        self.ids = read_split(self.split_file)

    @classmethod
    def spec(cls):
        return {**COMMON, **cls.PARAMS}

    @classmethod
    def from_param_str(cls, param_str):
        return cls(P.parse(param_str, cls.spec(), cls.__name__))

    @property
    def tops(self):
        return self.TOPS

    def split_path(self):
        return os.path.join(self.root, self.split + ".txt")

    def files(self, key):
        """Every file example `key` reads (for the up-front existence check)."""
        raise NotImplementedError

    def load_tops(self, key):
        """[(path, array)] per top, each array C x H x W float32."""
        raise NotImplementedError

    def label_png(self, key):
        """The class-index PNG of example `key`, for formats whose labels are
        PNGs a user may have written (VOC, folder); None for the rest."""
        return None

    def image_and_label(self, image_path, label_path, label):
        """The (data, label) tops of the usual RGB image + class map pair."""
        label = check_labels(label, self.params["n_classes"], label_path)
        return [(image_path, caffe_image(read_rgb(image_path), self.params["mean"])),
                (label_path, caffe_label(label))]

    def check_files(self):
        """Fail at setup, not hours into training, if the split names absent files."""
        missing = [p for key in self.ids for p in self.files(key) if not os.path.isfile(p)]
        if missing:
            shown = ", ".join(missing[:MAX_LISTED]) + (", ..." if len(missing) > MAX_LISTED else "")
            raise FileNotFoundError(f"{len(missing)} file(s) named by split file {self.split_file} "
                                    f"not found: {shown}")

    def check_label_set(self):
        """Read every label PNG of the split once, at setup: values beyond
        n_classes fail here, naming the file, rather than mid-run (where Caffe
        computes a garbage loss or crashes), and a split whose labels are all
        0 or 255 fails too: 0/255 binary masks make every foreground pixel
        void, and training and scoring then report a perfect mean IU.
        param_str "background_only": true accepts such a split. Each label
        is also checked to be a PNG the size of its image, at setup
        (layers.labelcheck, which caches the results across starts)."""
        if not self.ids or self.label_png(self.ids[0]) is None:
            return
        pairs = [(self.label_png(key), self.files(key)[0]) for key in self.ids]
        seen = check_split_labels(pairs, self.split_file, self.root, self.params["n_classes"])
        if seen <= {0, VOID} and not self.params["background_only"]:
            raise DataError(self.split_file, f"the labels of all {len(self.ids)} images hold only "
                            f"class 0 and void {VOID}: nothing to segment. Binary masks stored as "
                            f"0/{VOID} make the foreground void; store it as class 1 (void is "
                            f"{VOID}). If the split really has no foreground, set "
                            f"\"background_only\": true in the data layer's param_str")

    def load(self, key):
        """Tuple of arrays in top order, all with one H x W."""
        tops = self.load_tops(key)
        (path0, first), rest = tops[0], tops[1:]
        for path, array in rest:
            if array.shape[1:] != first.shape[1:]:
                raise DataError(path, f"size {_wxh(array)} differs from {_wxh(first)} of {path0}"
                                      f"{exif_hint(path0, array.shape[:0:-1])}")
        return tuple(array for _, array in tops)


class PngLabelReader(Reader):
    """A format whose example is an RGB image and a class-index PNG,
    `files(key)` = [image, label] (VOC, the custom folder layout)."""

    def label_png(self, key):
        return self.files(key)[1]

    def load_tops(self, key):
        image, label = self.files(key)
        return self.image_and_label(image, label, read_gray(label))


def _wxh(array):
    return f"{array.shape[-1]}x{array.shape[-2]} (WxH)"

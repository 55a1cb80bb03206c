"""The 14 released FCN caffemodels of the reference implementation, as data.

Each record names our model (net_specs.models) whose generated val/deploy
nets the file loads into by layer name, the file on dl.caffe.berkeleyvision.org
(the reference repository's `<model>/caffemodel-url`), the checksum where one
is published, and the score the authors report for it.

Checksums: only fcn8s-heavy-pascal has a published one (sha1
c449ea74dd7d83751d1357d6a8c323fcf4038962, OpenCV opencv_extra
testdata/dnn/download_models.py). The others have none anywhere we found:
they are verified by parsing the whole file as a caffemodel, and their sha1
is printed on download for the record.

Scores: mean IU in percent on the evaluation split. The reference README
states them for the PASCAL VOC models only (seg11valid; FCN-8s also 67.2 on
VOC2012 test). For the NYUDv2, SIFT Flow and PASCAL-Context releases it
states none, and we have not matched the papers' tables to these particular
files, so `paper_mean_iu` is None there and the comparison prints
"not stated".
"""
import os
from dataclasses import dataclass
from typing import Optional

BASE_URL = "http://dl.caffe.berkeleyvision.org/"
DIRECTORY = os.path.join("weights", "published")
SUFFIX = "-published"

# Evaluation split sizes (the papers' / fcn-facts.md).
SPLIT_IMAGES = {"voc": ("seg11valid", 736), "nyud": ("test", 654),
                "siftflow": ("test", 200), "pascalcontext": ("val", 5105)}


@dataclass(frozen=True)
class Released:
    model: str                      # our model name: the nets the file loads into
    stem: str                       # file name on the server, without .caffemodel
    paper_mean_iu: Optional[float]  # percent on the split; None: not stated for this release
    source: str                     # where the score (or its absence) is stated
    sha1: Optional[str] = None      # None: no published checksum (verified by parsing)

    @property
    def name(self):
        """The download name: `python -m surgery download voc-fcn8s-published`."""
        return self.model + SUFFIX

    @property
    def url(self):
        return f"{BASE_URL}{self.stem}.caffemodel"

    @property
    def filename(self):
        return f"{self.stem}.caffemodel"

    def path(self, directory=DIRECTORY):
        return os.path.join(directory, self.filename)

    @property
    def dataset(self):
        from net_specs.models import get_model
        return get_model(self.model).dataset

    @property
    def split(self):
        """(evaluation split, number of images) the paper score is on."""
        return SPLIT_IMAGES[self.dataset]


_README = "reference README (seg11valid)"
_NONE = "reference README states no score for this release"

RELEASED_LIST = [
    Released("voc-fcn32s", "fcn32s-heavy-pascal", 63.6, _README),
    Released("voc-fcn16s", "fcn16s-heavy-pascal", 65.0, _README),
    Released("voc-fcn8s", "fcn8s-heavy-pascal", 65.5, _README,
             sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962"),
    Released("voc-fcn8s-atonce", "fcn8s-atonce-pascal", 65.4, _README),
    Released("voc-fcn-alexnet", "fcn-alexnet-pascal", 48.0, _README),
    Released("nyud-fcn32s-color", "nyud-fcn32s-color-heavy", None, _NONE),
    Released("nyud-fcn32s-hha", "nyud-fcn32s-hha-heavy", None, _NONE),
    Released("nyud-fcn32s-color-hha", "nyud-fcn32s-color-hha-heavy", None, _NONE),
    *[Released(f"siftflow-fcn{s}s", f"siftflow-fcn{s}s-heavy", None, _NONE) for s in (32, 16, 8)],
    *[Released(f"pascalcontext-fcn{s}s", f"pascalcontext-fcn{s}s-heavy", None, _NONE)
      for s in (32, 16, 8)],
]
RELEASED = {r.model: r for r in RELEASED_LIST}


def get_released(name):
    """The record for `voc-fcn8s` or `voc-fcn8s-published`; ValueError lists the known ones."""
    model = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
    if model not in RELEASED:
        raise ValueError(f"no released weights for {name!r}; released: "
                         f"{', '.join(r.name for r in RELEASED_LIST)}")
    return RELEASED[model]


def table():
    """The released models as printable lines (name, file, checksum, paper score)."""
    lines = [f"{'name':<32} {'split':<16} {'paper mIU':>10}  checksum  url"]
    for r in RELEASED_LIST:
        split, n = r.split
        score = f"{r.paper_mean_iu:.1f}" if r.paper_mean_iu is not None else "not stated"
        check = "sha1" if r.sha1 else "parse"
        lines.append(f"{r.name:<32} {f'{split} ({n})':<16} {score:>10}  {check:<8}  {r.url}")
    return lines

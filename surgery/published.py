"""The 14 released FCN caffemodels of the reference implementation, as data.

Each record names our model (net_specs.models) whose generated val/deploy
nets the file loads into by layer name, the file on dl.caffe.berkeleyvision.org
(the reference repository's `<model>/caffemodel-url`), its parameter count,
the checksum where one is published, and the score the authors report.

Checksums: only fcn8s-heavy-pascal has a published one (sha1
c449ea74dd7d83751d1357d6a8c323fcf4038962, OpenCV opencv_extra
testdata/dnn/download_models.py). The others have none anywhere we found:
they are verified by parsing the whole file as a caffemodel, and their sha1
is printed on download for the record.

Sizes: no file could be downloaded here, so the size shown is the one the
parameters imply (count x 4 bytes of float32; a caffemodel adds only a few
kB of layer records). The counts are those of our generated full-width nets,
which `tests/test_published.py` checks against this table: 537.96 MB
(513.0 MiB) for fcn8s-heavy-pascal.

Scores: mean IU in percent on the evaluation split.
- PASCAL VOC: the reference README (seg11valid, 736 images).
- NYUDv2, SIFT Flow, PASCAL-Context: the reference README states none, so
  the papers' tables are quoted for the matching model: CVPR 2015 (arXiv
  v2) Table 4 (NYUDv2 test: FCN-32s RGB 29.2, HHA 24.2, RGB-HHA late fusion
  32.8), Table 5 (SIFT Flow test: FCN-16s 39.5 semantic, geometric pixel
  accuracy 94.3; no 32s or 8s row) and Table 6 (PASCAL-Context val, 59
  classes: FCN-32s 31.8, FCN-16s 34.8, FCN-8s 35.1). The released files are
  the later "heavy" (high-momentum) trainings; the PAMI 2016 version of these
  tables, which may state other figures for them, could not be consulted
  here, so a difference of a few points on these datasets is not by itself
  a failed reproduction.
"""
import os
from dataclasses import dataclass
from typing import Optional

from common.errors import InputError
from common.report import markdown

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
    params: int                     # parameter count of the full-width net (size: x 4 bytes)
    paper_mean_iu: Optional[float]  # percent on the split; None: no paper states one
    source: str                     # where the score (or its absence) is stated
    sha1: Optional[str] = None      # None: no published checksum (verified by parsing)

    @property
    def name(self):
        """The download name: `python -m surgery download voc-fcn8s-published`."""
        return self.model + SUFFIX

    @property
    def score_text(self):
        """The paper score as the tables print it."""
        return "not stated" if self.paper_mean_iu is None else f"{self.paper_mean_iu:.1f}"

    @property
    def size_mb(self):
        """The size the parameters imply, in MB (10^6 bytes): float32 blobs."""
        return self.params * 4 / 1e6

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
_NYUD = "CVPR 2015 Table 4 (NYUDv2 test)"
_SIFT = "CVPR 2015 Table 5 (SIFT Flow test)"
_CONTEXT = "CVPR 2015 Table 6 (PASCAL-Context val, 59 classes)"

RELEASED_LIST = [
    Released("voc-fcn32s", "fcn32s-heavy-pascal", 136152917, 63.6, _README),
    Released("voc-fcn16s", "fcn16s-heavy-pascal", 134815994, 65.0, _README),
    Released("voc-fcn8s", "fcn8s-heavy-pascal", 134489759, 65.5, _README,
             sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962"),
    Released("voc-fcn8s-atonce", "fcn8s-atonce-pascal", 134490527, 65.4, _README),
    Released("voc-fcn-alexnet", "fcn-alexnet-pascal", 58704590, 48.0, _README),
    Released("nyud-fcn32s-color", "nyud-fcn32s-color-heavy", 140978024, 29.2,
             _NYUD + ": FCN-32s RGB"),
    Released("nyud-fcn32s-hha", "nyud-fcn32s-hha-heavy", 140978024, 24.2,
             _NYUD + ": FCN-32s HHA"),
    Released("nyud-fcn32s-color-hha", "nyud-fcn32s-color-hha-heavy", 275402448, 32.8,
             _NYUD + ": FCN-32s RGB-HHA"),
    Released("siftflow-fcn32s", "siftflow-fcn32s-heavy", 138905444, None,
             _SIFT + " reports FCN-16s only"),
    Released("siftflow-fcn16s", "siftflow-fcn16s-heavy", 135568424, 39.5,
             _SIFT + ": FCN-16s semantic (geometric pixel acc. 94.3)"),
    Released("siftflow-fcn8s", "siftflow-fcn8s-heavy", 134751980, None,
             _SIFT + " reports FCN-16s only"),
    Released("pascalcontext-fcn32s", "pascalcontext-fcn32s-heavy", 149251964, 31.8,
             _CONTEXT + ": FCN-32s"),
    Released("pascalcontext-fcn16s", "pascalcontext-fcn16s-heavy", 138281144, 34.8,
             _CONTEXT + ": FCN-16s"),
    Released("pascalcontext-fcn8s", "pascalcontext-fcn8s-heavy", 135589364, 35.1,
             _CONTEXT + ": FCN-8s"),
]
RELEASED = {r.model: r for r in RELEASED_LIST}


def get_released(name):
    """The record for `voc-fcn8s` or `voc-fcn8s-published`; ValueError lists the known ones."""
    model = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
    if model not in RELEASED:
        raise InputError(f"no released weights for {name!r}; released: "
                         f"{', '.join(r.name for r in RELEASED_LIST)}")
    return RELEASED[model]


def rows():
    """One dict per released model: what the table and its Markdown form show."""
    return [dict(name=f"`{r.name}`", file=f"`{r.filename}`", size=r.size_mb,
                 checksum="sha1" if r.sha1 else "none (parsed)",
                 split="{} ({})".format(*r.split),
                 score=r.score_text,
                 source=r.source) for r in RELEASED_LIST]


def markdown_table():
    """The README's table (`python -m surgery published --markdown`)."""
    return markdown(rows(), [("name", "download name", None),
                             ("file", f"file under {BASE_URL}", None),
                             ("size", "size (MB)", "{:.1f}"), ("checksum", "checksum", None),
                             ("split", "split (images)", None), ("score", "paper mean IU", None),
                             ("source", "score's source", None)])


def table():
    """The released models as printable lines (name, split, score, size, checksum, url)."""
    lines = [f"{'name':<32} {'split':<16} {'paper mIU':>10} {'size MB':>8}  checksum  url"]
    for r in RELEASED_LIST:
        split, n = r.split
        check = "sha1" if r.sha1 else "parse"
        lines.append(f"{r.name:<32} {f'{split} ({n})':<16} {r.score_text:>10} {r.size_mb:>8.1f}  "
                     f"{check:<8}  {r.url}")
    lines.append("paper mIU: reference README (VOC) or CVPR 2015 Tables 4-6 (the rest; "
                 "surgery/published.py names each); size: implied by the parameter count")
    return lines

"""Fetch the public ImageNet caffemodels that FCN training starts from, and
the released FCN caffemodels (table and checksum status: surgery.published).

Checksums:
- AlexNet: sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377, the `sha1` field of
  BVLC/caffe models/bvlc_alexnet/readme.md (model zoo); the same value is in
  OpenCV's opencv_extra testdata/dnn/download_models.py.
- VGG16: NOT CONFIRMED. The VGG team's model-zoo gist (ksimonyan/
  211839e770f7b538e2d8) publishes no checksum and no source found states one,
  so the download is checked by parsing it as a complete caffemodel instead,
  and its sha1 is printed for the record.
"""
import os
from dataclasses import dataclass
from typing import Optional

from common.download import FetchError, fetch as fetch_verified

from netio.files import read_caffemodel

from .errors import SurgeryError
from .published import DIRECTORY, RELEASED_LIST, get_released


@dataclass(frozen=True)
class Weights:
    url: str
    filename: str
    sha1: Optional[str]     # None: no published checksum (validated by parsing)


IMAGENET_WEIGHTS = {
    "vgg16": Weights("http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
                     "VGG_ILSVRC_16_layers.caffemodel", "VGG_ILSVRC_16_layers.caffemodel", None),
    "alexnet": Weights("http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                       "bvlc_alexnet.caffemodel", "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
}


def fetch(url, dest, sha1=None, out=None, timeout=60):
    """Download url to dest atomically: verified against `sha1` when one is
    published, else parsed as a complete caffemodel. An already valid dest
    is kept. Errors are SurgeryError (offline: says where to put the file)."""
    try:
        return fetch_verified(url, dest, timeout=timeout, out=out, algorithm="sha1",
                              checksum=sha1, validate=read_caffemodel)
    except FetchError as e:
        raise SurgeryError(str(e)) from None


def download_names():
    """Every name `download` accepts: ImageNet classifiers, then released FCNs."""
    return sorted(IMAGENET_WEIGHTS) + [r.name for r in RELEASED_LIST]


def download(name, directory=None, out=None):
    """Fetch one of IMAGENET_WEIGHTS (into weights/) or a released FCN
    (`voc-fcn8s-published`, into weights/published/); returns the file's path."""
    if name in IMAGENET_WEIGHTS:
        model = IMAGENET_WEIGHTS[name]
        return fetch(model.url, os.path.join(directory or "weights", model.filename),
                     model.sha1, out)
    try:
        released = get_released(name)
    except ValueError:
        raise SurgeryError(f"unknown model {name!r}; known: {', '.join(download_names())}") from None
    return fetch(released.url, released.path(directory or DIRECTORY), released.sha1, out)


def weights_argument(value, model_name):
    """A --weights/WEIGHTS argument: `published` is the released file of
    `model_name`, fetched and verified on first use; anything else a path."""
    if value != "published":
        return value
    return download(get_released(model_name).name)

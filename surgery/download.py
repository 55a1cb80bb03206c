"""Fetch the public ImageNet caffemodels that FCN training starts from.

Checksums:
- AlexNet: sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377, the `sha1` field of
  BVLC/caffe models/bvlc_alexnet/readme.md (model zoo); the same value is in
  OpenCV's opencv_extra testdata/dnn/download_models.py.
- VGG16: NOT CONFIRMED. The VGG team's model-zoo gist (ksimonyan/
  211839e770f7b538e2d8) publishes no checksum and no source found states one,
  so the download is checked by parsing it as a complete caffemodel instead,
  and its sha1 is printed for the record.
"""
import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional

from .errors import SurgeryError
from .io import read_weights

CHUNK = 1 << 20


@dataclass(frozen=True)
class Weights:
    url: str
    filename: str
    sha1: Optional[str]     # None: no published checksum (validated by parsing)


MODELS = {
    "vgg16": Weights("http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
                     "VGG_ILSVRC_16_layers.caffemodel", "VGG_ILSVRC_16_layers.caffemodel", None),
    "alexnet": Weights("http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                       "bvlc_alexnet.caffemodel", "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
}


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path, sha1, digest, label, out):
    """Published checksum when there is one, else a full parse of the file."""
    if sha1 is not None:
        if digest != sha1:
            raise SurgeryError(f"{label}: sha1 {digest} does not match the published {sha1}")
        return
    read_weights(path)
    print(f"{label}: sha1 {digest} (no published checksum; parsed as a complete caffemodel)",
          file=out)


def _progress(label, done, total, out):
    mb = done / 1e6
    if total:
        out.write(f"\r{label}: {mb:.1f} / {total / 1e6:.1f} MB ({100 * done // total}%)")
    else:
        out.write(f"\r{label}: {mb:.1f} MB")
    out.flush()


def _stream(response, tmp, label, out):
    """Copy the response into tmp with a progress line; returns (bytes, sha1)."""
    total = int(response.headers.get("Content-Length") or 0)
    digest, done, shown = hashlib.sha1(), 0, 0.0
    with open(tmp, "wb") as f:
        for chunk in iter(lambda: response.read(CHUNK), b""):
            f.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if time.monotonic() - shown > 0.5:
                _progress(label, done, total, out)
                shown = time.monotonic()
    _progress(label, done, total, out)
    out.write("\n")
    if total and done != total:
        raise SurgeryError(f"{label}: download incomplete, {done} of {total} bytes")
    return digest.hexdigest()


def fetch(url, dest, sha1=None, out=None, timeout=60):
    """Download url to dest atomically, verified; an already valid dest is kept.

    Progress and messages go to `out` (default: the current sys.stderr).
    """
    out = out or sys.stderr
    label = os.path.basename(dest)
    if os.path.isfile(dest):
        try:
            _verify(dest, sha1, sha1_of(dest), label, out)
            print(f"{dest}: already present and verified", file=out)
            return dest
        except SurgeryError as e:
            print(f"{dest}: present but invalid ({e}); downloading again", file=out)
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=label + ".", suffix=".part", dir=directory)
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                digest = _stream(response, tmp, label, out)
        except OSError as e:  # URLError, timeouts, refused connections, disk errors
            hint = ""
            if isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError)):
                hint = f". Offline? Fetch the file by other means and place it at {dest}"
            raise SurgeryError(f"cannot download {url}: {getattr(e, 'reason', e)}{hint}") from None
        _verify(tmp, sha1, digest, label, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def download(name, directory="weights", out=None):
    """Fetch one of MODELS into directory; returns the file's path."""
    if name not in MODELS:
        raise SurgeryError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name]
    return fetch(model.url, os.path.join(directory, model.filename), model.sha1, out)

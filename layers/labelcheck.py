"""The start-up check of a split's label PNGs, by content, fast and cached.

Each label must be a real PNG (a JPEG saved under a .png name decodes, but
its compression noise turns ~9% of the pixels into other class ids), the
size of its image (read from both headers), and hold only class ids below
n_classes or void. Decoding every label of an 8498-image split took 70 s;
values are now counted with np.bincount on two threads (PIL decodes without
the GIL), a progress line goes to stderr on large splits, and what each
file held is cached across starts and `--resume`, keyed by each label's and
image's size and mtime, so a warm start decodes nothing.

The cache lives in a cache directory, not the run directory: the data
layer is built from a prototxt and does not know the run directory, the
same dataset is read by many runs (solve, score, resume, another model),
and a run directory is per run. It is $FCN_CACHE_DIR, else
$XDG_CACHE_HOME/fcn/labels, else ~/.cache/fcn/labels: one JSON file per
split file and root. A cache that cannot be written costs speed, not
correctness: a one-line warning, and the check goes on.
"""
import hashlib
import json
import os
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from common.atomic import atomic_write
from common.errors import UserError

from .io import DataError, exif_hint, read_gray

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
PROGRESS_FROM = 500             # splits with more uncached labels print progress
PROGRESS_EVERY_S = 2.0
THREADS = 2
CACHE_VERSION = 1


def cache_dir():
    explicit = os.environ.get("FCN_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fcn", "labels")


def png_size(path):
    """(width, height) from a PNG's header; DataError for anything else."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != PNG_SIGNATURE:
        what = ("JPEG data" if head.startswith(JPEG_SIGNATURE) else "not PNG data")
        raise DataError(path, f"{what} under a .png name: a label must be a lossless PNG "
                              "(JPEG compression turns pixels into other class ids)")
    if head[12:16] != b"IHDR":
        raise DataError(path, "PNG without an IHDR header: truncated or corrupt")
    return struct.unpack(">II", head[16:24])


def image_size(path):
    """(width, height) of an image from its header (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"unreadable or truncated image ({e})") from None


def stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def label_values(path):
    """The distinct values of a label PNG (np.bincount: no sort)."""
    flat = np.asarray(read_gray(path)).ravel()
    if not flat.size:
        return []
    if flat.min() < 0 or flat.max() > 65535:            # 32-bit labels: rare, sort them
        return np.unique(flat).tolist()
    return np.flatnonzero(np.bincount(flat)).tolist()


def inspect(label_path, image_path):
    """What the cache keeps of one (label, image) pair; DataError if unusable."""
    size = png_size(label_path)
    if image_path is not None:
        seen = image_size(image_path)
        if seen != size:
            raise DataError(label_path, f"size {size[0]}x{size[1]} (WxH) differs from "
                                        f"{seen[0]}x{seen[1]} of its image {image_path}"
                                        f"{exif_hint(image_path, size)}")
    return {"label": stamp(label_path), "image": stamp(image_path) if image_path else None,
            "values": label_values(label_path)}


class LabelCache:
    """{label path: inspect() result} for one split, in one JSON file."""

    def __init__(self, split_file, root):
        key = hashlib.sha1(f"{os.path.abspath(split_file)}\0{os.path.abspath(root)}"
                           .encode()).hexdigest()[:16]
        self.path = os.path.join(cache_dir(), f"{key}.json")
        self.entries = {}
        try:
            with open(self.path) as f:
                data = json.load(f)
            if data.get("version") == CACHE_VERSION:
                self.entries = data["labels"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass                            # absent or unreadable: start afresh

    def get(self, label_path, image_path):
        entry = self.entries.get(label_path)
        try:
            if entry and entry["label"] == stamp(label_path) and \
                    entry["image"] == (stamp(image_path) if image_path else None):
                return entry
        except OSError:
            pass
        return None

    def save(self, entries):
        """Keep `entries` (merged over what the file held) for the next start."""
        entries = {**self.entries, **entries}
        self.entries = entries
        try:
            atomic_write(self.path, json.dumps({"version": CACHE_VERSION, "labels": entries}))
        except (OSError, UserError) as e:
            print(f"warning: label check cache not written ({e}); the next start checks "
                  "every label again", file=sys.stderr)


def check_split_labels(pairs, split_file, root, n_classes, log=None):
    """Check every (label path, image path) pair; returns the set of label
    values seen in the split. Raises DataError naming the first bad file."""
    from .io import check_labels
    cache = LabelCache(split_file, root)
    entries, todo = {}, []
    for label_path, image_path in pairs:
        entry = cache.get(label_path, image_path)
        if entry is None:
            todo.append((label_path, image_path))
        else:
            entries[label_path] = entry
    if todo:
        progress = Progress(len(todo), split_file, log or sys.stderr) if len(todo) >= PROGRESS_FROM else None
        pool = ThreadPoolExecutor(THREADS)
        try:
            for (label_path, _), entry in zip(todo, pool.map(lambda p: inspect(*p), todo)):
                entries[label_path] = entry
                if progress:
                    progress.step()
        finally:
            pool.shutdown(cancel_futures=True)      # a bad file stops the check at once
            cache.save(entries)                     # what was read, even when one file is bad
        if progress:
            progress.done()
    seen = set()
    for label_path, _ in pairs:             # values checked on every start: n_classes may change
        values = np.asarray(entries[label_path]["values"], np.int64)
        check_labels(values, n_classes, label_path)
        seen.update(int(v) for v in values)
    return seen


class Progress:
    """`checking N labels of SPLIT: k/N` every few seconds on stderr."""

    def __init__(self, total, split_file, log):
        self.total, self.split_file, self.log = total, split_file, log
        self.count, self.start = 0, time.monotonic()
        self.last = self.start
        print(f"checking {total} labels of {split_file} (cached for the next start)...",
              file=log, flush=True)

    def step(self):
        self.count += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            print(f"  {self.count}/{self.total} labels checked", file=self.log, flush=True)

    def done(self):
        print(f"  {self.total} labels checked in {time.monotonic() - self.start:.1f} s",
              file=self.log, flush=True)

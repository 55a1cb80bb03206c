"""What scoring keeps of each image for report.html: its own metrics (from
its own confusion matrix), enough to rank it, and the pictures of the K
worst and best images -- drawn only for images that enter those lists, so a
split of thousands of images costs a few small records each."""
import heapq
import math

import numpy as np
from PIL import Image

from common.palette import colorize, palette_for

from .metrics import fast_hist, metrics

GALLERY_SIZE = 4


def image_record(key, hist):
    """What scoring keeps of one image: its id and its own metrics (from its
    confusion matrix: classes in its truth or prediction), enough to rank it."""
    m = metrics(hist)
    return {"id": str(key), "pixel_acc": m["pixel_acc"], "mean_iu": m["mean_iu"],
            "n_pixels": m["n_pixels"]}


def rank_key(record):
    """Worst first: mean IU, then pixel accuracy (an image without counted pixels last)."""
    iu, acc = record["mean_iu"], record["pixel_acc"]
    if iu is None or acc is None or (isinstance(iu, float) and math.isnan(iu)):
        return (math.inf, math.inf)
    return (iu, acc)


class Gallery:
    """The `size` worst and best images seen, with their pictures: offer each
    image once (its index in the run, its record, and a function that draws
    its picture, e.g. with gallery_picture); the picture is drawn only for
    an image that enters the worst or best so far, and only those kept stay
    in memory."""

    def __init__(self, size=GALLERY_SIZE):
        self.size = int(size)
        self._worst, self._best = [], []       # heaps of (sort key, index, item)

    def offer(self, index, record, pictures):
        key = rank_key(record)
        if math.isinf(key[0]) or self.size < 1:
            return
        worst_full = len(self._worst) >= self.size and (-key[0], -key[1], -index) <= self._worst[0][0]
        best_full = len(self._best) >= self.size and (key[0], key[1], -index) <= self._best[0][0]
        if worst_full and best_full:
            return
        item = {"index": index, "record": record, "pictures": pictures()}
        if not worst_full:
            self._push(self._worst, ((-key[0], -key[1], -index), index, item))
        if not best_full:
            self._push(self._best, ((key[0], key[1], -index), index, item))

    def _push(self, heap, entry):
        if len(heap) < self.size:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def worst(self):
        return [e[2] for e in sorted(self._worst, key=lambda e: e[0], reverse=True)]

    def best(self):
        return [e[2] for e in sorted(self._best, key=lambda e: e[0], reverse=True)]


def gallery_picture(image, truth, prediction, palette, class_names):
    """input | truth | prediction | legend of the classes in either, one PIL image."""
    from ..inference.visualize import legend
    image = np.asarray(image, np.uint8)
    h, w = image.shape[:2]
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    shown = sorted(set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist()))
    names = list(class_names) + [f"class {i}" for i in range(len(class_names), 256)]
    if len(class_names) < 256:
        names[255] = "void"                      # the ignore label of every dataset here
    panel = legend([int(c) for c in shown], names, palette, image_height=h)
    canvas = Image.new("RGB", (3 * w + 8 + panel.width, max(h, panel.height)), "white")
    for k, picture in enumerate((image, colorize(truth, palette), colorize(prediction, palette))):
        canvas.paste(Image.fromarray(np.asarray(picture, np.uint8)), (k * w, 0))
    canvas.paste(panel, (3 * w + 8, 0))
    return canvas




def input_picture(net, k=0):
    """Image k of the val net's first input as H x W x 3 uint8 for people:
    the data layer's mean added back and BGR turned into RGB (an HHA input
    as stored); an input without a known mean is stretched to 0..255."""
    layer_name = net._layer_names[0]
    top = net.top_names[layer_name][0]
    blob = np.asarray(net.blobs[top].data[k], np.float64)
    reader = getattr(net.layers[0], "reader", None)
    params = getattr(reader, "params", {}) or {}
    first = (getattr(reader, "tops", None) or [top])[0]
    if blob.shape[0] == 3 and first == "hha" and "mean_hha" in params:
        rgb = blob + np.asarray(params["mean_hha"])[:, None, None]
    elif blob.shape[0] == 3 and params.get("mean") is not None:
        rgb = (blob + np.asarray(params["mean"])[:, None, None])[::-1]
    else:
        grey = blob[:1] if blob.shape[0] != 3 else blob
        low, high = grey.min(), grey.max()
        rgb = np.repeat((grey - low) * (255.0 / max(high - low, 1e-12)), 3 // len(grey), axis=0)
    return np.clip(np.rint(rgb.transpose(1, 2, 0)), 0, 255).astype(np.uint8)


def image_key(net, batch_size):
    """The id of the image the val net's data layer served last (batch 1),
    or None (batches, or a layer that does not say)."""
    key = getattr(net.layers[0], "key", None) if batch_size == 1 else None
    return None if key is None else str(key)


class ImageTally:
    """Per-image records and galleries of a scoring run, by score top.
    `heads`: {score top: (class names, palette)}."""

    def __init__(self, heads, size=GALLERY_SIZE):
        self.heads = dict(heads)
        self.records = {score: [] for score in self.heads}
        self.galleries = {score: Gallery(size) for score in self.heads}

    @classmethod
    def for_dataset(cls, dataset, size=GALLERY_SIZE):
        return cls({"score" + h.suffix: (h.display_names(), palette_for(h.n_classes, dataset.voc_colours))
                    for h in dataset.heads}, size)

    def add(self, net, score, truth, pred, n):
        """Score a batch (truth, pred: N x H x W) image by image; returns the
        batch's confusion matrix (the sum of the images')."""
        total = np.zeros((n, n), np.int64)
        names, palette = self.heads[score]
        for k in range(len(pred)):
            hist = fast_hist(truth[k], pred[k], n)
            total += hist
            records = self.records[score]
            key = image_key(net, len(pred)) or f"image {len(records) + 1}"
            records.append(image_record(key, hist))
            self.galleries[score].offer(
                len(records) - 1, records[-1],
                lambda k=k: gallery_picture(input_picture(net, k), truth[k].astype(np.int64),
                                            pred[k], palette, names))
        return total

"""The inference library: image loading, a deploy net's forward pass, and
the Predictor (a deploy net with its dataset's mean, heads and palettes),
which sends images too large for one pass through stitched tiles.

    predictor = Predictor.from_model("voc-fcn8s", "weights/voc-fcn8s.caffemodel")
    labels, scores = predictor.segment(rgb_array)          # first head
    labels, scores = segment(net, rgb_array, mean)         # any deploy net
"""
import io
import os
import sys

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.atomic import atomic_write
from common.errors import UserError
from common.image import caffe_image, to_rgb
from common.palette import label_image, palette_for, png_bytes
from net_specs import NetConfig, build
from netio import geometry
from netio.nets import Caffemodel, net_from_param

from . import stitching, tta
from .visualize import side_by_side

BUILD_SIZE = (64, 64)

class InferError(UserError):
    """Inference cannot go on (bad model, weights or image); reported as a message."""


class BadImage(InferError):
    """One input image that cannot be read."""

    def __init__(self, path, reason):
        super().__init__(f"bad image {path}: {reason}")
        self.path, self.reason = path, reason


# ---------------------------------------------------------------- images

def image_size(path):
    """(height, width) from the image header, or BadImage."""
    try:
        with Image.open(path) as image:
            w, h = image.size
    except FileNotFoundError:
        raise BadImage(path, "no such file") from None
    except IsADirectoryError:
        raise BadImage(path, "is a directory") from None
    except UnidentifiedImageError:
        reason = "empty file" if os.path.getsize(path) == 0 else "not an image PIL can read"
        raise BadImage(path, reason) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(path, str(exc) or type(exc).__name__) from None
    if w < 1 or h < 1:
        raise BadImage(path, f"zero-size image ({w}x{h})")
    return h, w


def load_image(path, warn=None):
    """The whole image as H x W x 3 uint8 RGB, or BadImage (truncated, corrupt...)."""
    image_size(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image, os.path.basename(path), warn)
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(path, str(exc) or type(exc).__name__) from None


def _as_rgb(image):
    if isinstance(image, (str, os.PathLike)):
        return load_image(os.fspath(image))
    if isinstance(image, Image.Image):
        return to_rgb(image)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]                     # RGBA array: drop alpha
    return image


# ---------------------------------------------------------------- forward

def forward(net, batch, score_blobs=("score",), input_name="data"):
    """Forward an N x 3 x H x W batch; {score blob: N x C x H x W copy}."""
    batch = np.asarray(batch, np.float32)
    if batch.ndim != 4:
        raise ValueError(f"batch must be N x C x H x W, got shape {batch.shape}")
    if input_name not in net.blobs:
        raise ValueError(f"the net has no input blob {input_name!r}")
    net.blobs[input_name].reshape(*batch.shape)
    net.reshape()
    net.blobs[input_name].data[...] = batch
    net.forward()
    out = {}
    for blob in score_blobs:
        scores = net.blobs[blob].data
        if scores.shape[0] != batch.shape[0] or scores.shape[2:] != batch.shape[2:]:
            raise InferError(f"blob {blob!r} has shape {scores.shape}, expected "
                             f"{batch.shape[0]} x C x {batch.shape[2]} x {batch.shape[3]} "
                             "(is it the deploy net's cropped score?)")
        if not np.isfinite(scores).all():
            bad = int(np.size(scores) - np.isfinite(scores).sum())
            raise InferError(f"the net's {blob!r} holds {bad} non-finite value(s) (NaN/inf) of "
                             f"{scores.size}: its argmax would be a meaningless label map; the "
                             "weights are diverged or corrupt")
        out[blob] = scores.copy()
    return out


def segment(net, image, mean, score="score", input_name="data"):
    """Segment one image with a deploy net: (labels H x W int, scores C x H x W).

    `image`: H x W x 3 RGB uint8 array, PIL image or path; `mean`: BGR mean.
    """
    rgb = _as_rgb(image)
    scores = forward(net, caffe_image(rgb, mean)[None], (score,), input_name)[score][0]
    return scores.argmax(axis=0), scores


class Predictor:
    """A deploy net with its dataset's mean, heads, class names and palettes.

    `heads` is a list of (score blob, file suffix, class names, palette),
    e.g. [("score", "", VOC names, VOC palette)]; SIFT Flow has _sem and _geo.
    """

    def __init__(self, net, dataset, mean=None, input_name="data", batch_size=4,
                 swap_channels=True, max_pixels=None, downscale=False, net_param=None,
                 scales=tta.PLAIN, flip=False):
        self.net = net
        # test-time augmentation (tta.py): copies over max_pixels go through tiles
        self.scales, self.flip = tuple(scales), bool(flip)
        if downscale and not tta.is_plain(scales, flip):
            raise InferError("--downscale and test-time augmentation (--scales/--flip) do not "
                             "combine: augmented copies too large for one pass go through tiles")
        # net_param (the deploy NetParameter) given: images over max_pixels, or too large for
        # Caffe in one pass, go through tiles (predict_large) or, with downscale, a smaller pass
        self.max_pixels, self.downscale, self.net_param = max_pixels, downscale, net_param
        self.dataset = dataset
        self.mean = tuple(mean if mean is not None else dataset.mean)
        self.swap_channels = swap_channels
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self.heads = [("score" + head.suffix, head.suffix, head.display_names(),
                       palette_for(head.n_classes, dataset.voc_colours))
                      for head in dataset.heads]

    @classmethod
    def from_model(cls, net, weights, batch_size=4, warn=None,
                   max_pixels=None, downscale=False, scales=tta.PLAIN, flip=False):
        """Build the deploy net of `net` (a NetConfig: model, dataset, width;
        or a model name) and load `weights` safely."""
        net = NetConfig.of(net)
        model, dataset = net.model, net.dataset
        inputs = net.inputs
        if tuple(inputs.names) != ("data",):
            raise InferError(f"{model.name} takes inputs {', '.join(inputs.names)}; inference from "
                             "image files supports single-image (`data`) models only")
        mean = dataset.image_mean(model.inputs)
        caffemodel = Caffemodel(weights)          # before building anything
        # a small initial input: every forward reshapes to its images anyway
        proto = build(net, "deploy", size=BUILD_SIZE)
        deploy_net = net_from_param(proto, weights=caffemodel)
        for name, layer in zip(deploy_net._layer_names, deploy_net.layers):
            if layer.type == "Deconvolution" and layer.blobs and not layer.blobs[0].data.any():
                (warn or print_warning)(f"upsampling layer {name!r} has all-zero weights in {weights} "
                                "(not bilinear-initialised?): predictions will be constant")
        return cls(deploy_net, dataset, mean=mean, batch_size=batch_size,
                   swap_channels=inputs.swap_channels, max_pixels=max_pixels,
                   downscale=downscale, net_param=proto, scales=scales, flip=flip)

    def predict(self, images):
        """Segment a list of equal-size RGB images in one forward.

        Returns one dict per image: {suffix: (labels H x W, scores C x H x W)}
        ("" for single-head models, "_sem"/"_geo" for SIFT Flow).
        """
        rgbs = [_as_rgb(im) for im in images]
        if not rgbs:
            return []
        shapes = {rgb.shape for rgb in rgbs}
        if len(shapes) != 1:
            raise ValueError(f"predict() batches equal-size images, got sizes {sorted(shapes)}")
        if not tta.is_plain(self.scales, self.flip):
            return [self.predict_augmented(rgb) for rgb in rgbs]
        if self.net_param is not None and not self.one_pass_fits(*rgbs[0].shape[:2]):
            return [self.predict_large(rgb) for rgb in rgbs]
        batch = np.stack([self.preprocess(rgb) for rgb in rgbs])
        blobs = [blob for blob, _, _, _ in self.heads]
        scores = forward(self.net, batch, blobs, self.input_name)
        results = []
        for i in range(len(rgbs)):
            results.append({suffix: (scores[blob][i].argmax(axis=0), scores[blob][i])
                            for blob, suffix, _, _ in self.heads})
        return results

    def one_pass_fits(self, height, width):
        """Whether an H x W image may go through the net in one pass: within
        max_pixels and within Caffe's INT_MAX per buffer."""
        if self.max_pixels and height * width > self.max_pixels:
            return False
        return geometry.largest_buffer(self.net_param, height, width) <= geometry.INT_MAX

    def predict_large(self, rgb):
        """`predict` for one H x W x 3 image over max_pixels: {suffix: (labels,
        scores)} at full resolution, through stitched tiles or, with
        `downscale`, one smaller pass whose scores are resized back."""
        blobs = [head[0] for head in self.heads]

        def run(batch):
            return forward(self.net, batch, blobs, self.input_name)
        height, width = rgb.shape[:2]
        budget = self.max_pixels or height * width
        while (geometry.largest_buffer(self.net_param, *stitching.downscaled_size(height, width, budget))
               > geometry.INT_MAX):
            budget //= 2                            # --max-pixels too large for Caffe
        if self.downscale:
            small = run(self.preprocess(stitching.downscale(rgb, budget))[None])
            scores = {blob: stitching.upscale_scores(s[0], height, width) for blob, s in small.items()}
        else:
            align, exact_margin = stitching.tile_geometry(self.net_param)
            side, margin = stitching.tile_plan(budget, align, exact_margin)
            scores = stitching.stitched(run, self.preprocess(rgb), side, margin, align)
        return {head[1]: (scores[head[0]].argmax(axis=0), scores[head[0]]) for head in self.heads}

    def predict_augmented(self, rgb):
        """`predict` of one image with test-time augmentation: the scores are
        the averaged class probabilities."""
        run = tta.deploy_runner(self.net, self.net_param, [self.input_name],
                                [head[0] for head in self.heads], self.max_pixels)
        scores = tta.augmented_scores(run, {self.input_name: self.preprocess(rgb)}, self.scales, self.flip)
        return {suffix: (scores[blob].argmax(axis=0), scores[blob]) for blob, suffix, _, _ in self.heads}

    def preprocess(self, rgb):
        """One image as the net's input blob, exactly as its data layer trains on it."""
        return caffe_image(rgb, self.mean, self.swap_channels)

    def segment(self, image):
        """(labels, scores) of the first head for one image."""
        return self.predict([image])[0][self.heads[0][1]]

    def save(self, out, stem, rgb, result, save_scores=False):
        """Write one image's outputs into directory `out`, each atomically;
        returns the paths written."""
        paths = []
        for name, data in self.outputs(stem, rgb, result, save_scores).items():
            paths.append(os.path.join(out, name))
            atomic_write(paths[-1], data)
        return paths

    def output_names(self, stem, save_scores=False):
        """{head suffix: (label map, visualisation, scores or None)} file names of one image."""
        return {suffix: (f"{stem}{suffix}.png", f"{stem}{suffix}_viz.png",
                         f"{stem}{suffix}_scores.npy" if save_scores else None)
                for _, suffix, _, _ in self.heads}

    def outputs(self, stem, rgb, result, save_scores=False):
        """{filename: bytes} for one image's result (label PNGs, viz, scores)."""
        files = {}
        names_of = self.output_names(stem, save_scores)
        for _, suffix, names, palette in self.heads:
            labels, scores = result[suffix]
            label_name, viz_name, scores_name = names_of[suffix]
            files[label_name] = png_bytes(label_image(labels, palette))
            files[viz_name] = png_bytes(side_by_side(rgb, labels, palette, names))
            if scores_name:
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(scores, np.float32))
                files[scores_name] = buf.getvalue()
        return files


def print_warning(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)

"""Segment images with a trained FCN and save label maps and visualisations.

    python -m solvers.infer MODEL WEIGHTS IMAGE_OR_DIR... [--out DIR]
        [--cpu | --gpu N] [--save-scores] [--keep-going] [--batch N] [--width W]
        [--max-pixels N] [--downscale]

Outputs and exit statuses: EPILOG below.

As a library:

    predictor = Predictor.from_model("voc-fcn8s", "weights/voc-fcn8s.caffemodel")
    labels, scores = predictor.segment(rgb_array)          # first head
    labels, scores = segment(net, rgb_array, mean)         # any deploy net
"""
import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.atomic import atomic_write
from common.cli import add_device_args, add_model_args, int_at_least, run_cli, set_device
from common.errors import UserError
from common.image import caffe_image, to_rgb
from common.palette import label_image, palette_for, png_bytes
from net_specs import build, get_model
from net_specs.resolve import resolve_args
from surgery.io import read_weights

from . import tiles
from .visualize import side_by_side
from .weights import load_weights

DESCRIPTION = "Segment images with a trained FCN and save label maps and visualisations."
EPILOG = """For each image (a directory stands for its .jpg/.jpeg/.png files, sorted):

    OUT/<stem>.png          label map, a palette PNG whose pixel values are the
                            class indices (VOC colours for VOC-like data)
    OUT/<stem>_viz.png      image | overlay | legend of the classes present
    OUT/<stem>_scores.npy   with --save-scores: the C x H x W float32 scores

Two-head models (SIFT Flow) write each file per head, suffixed _sem / _geo
(`<stem>_sem.png`, `<stem>_geo_viz.png`, ...). Every file is written
atomically. Grey, 16-bit (scaled by the 16-bit range), palette and RGBA
images are converted to RGB (with a
warning); images of equal size share one forward pass (batches of up to
--batch). Images over --max-pixels, or too large for Caffe in one pass, are
segmented in overlapping tiles (solvers/tiles.py), or with --downscale in one
smaller pass. Exit status: 0 all images segmented; 2 a bad flag, model, weights file or
(without --keep-going) image, one line on stderr; 3 finished with
--keep-going but some images failed (listed at the end)."""
EXIT_SOME_FAILED = 3
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
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
                 swap_channels=True, max_pixels=None, downscale=False, net_param=None):
        self.net = net
        # net_param (the deploy NetParameter) given: images over max_pixels, or too large for
        # Caffe in one pass, go through tiles (solvers.tiles) or, with downscale, a smaller pass
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
    def from_model(cls, model, weights, dataset=None, width=1.0, batch_size=4, warn=None,
                   max_pixels=None, downscale=False):
        """Build `model`'s deploy net (net_specs) and load `weights` safely."""
        import caffe
        model = get_model(model) if isinstance(model, str) else model
        dataset = dataset or model.get_dataset()
        inputs = dataset.input_variant(model.inputs)
        if tuple(inputs.names) != ("data",):
            raise InferError(f"{model.name} takes inputs {', '.join(inputs.names)}; inference from "
                             "image files supports single-image (`data`) models only")
        mean = dataset.image_mean(model.inputs)
        read_weights(weights)                     # before building anything
        # a small initial input: every forward reshapes to its images anyway
        proto = build(model, "deploy", dataset=dataset, width=width, size=BUILD_SIZE)
        with tempfile.TemporaryDirectory(prefix="fcn-infer-") as tmp:
            path = os.path.join(tmp, "deploy.prototxt")
            atomic_write(path, str(proto))
            net = caffe.Net(path, caffe.TEST)
        load_weights(net, weights)
        for name, layer in zip(net._layer_names, net.layers):
            if layer.type == "Deconvolution" and layer.blobs and not layer.blobs[0].data.any():
                (warn or _warn)(f"upsampling layer {name!r} has all-zero weights in {weights} "
                                "(not bilinear-initialised?): predictions will be constant")
        return cls(net, dataset, mean=mean, batch_size=batch_size,
                   swap_channels=inputs.swap_channels, max_pixels=max_pixels,
                   downscale=downscale, net_param=proto)

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
        if self.net_param is not None and not tiles.one_pass_fits(self, *rgbs[0].shape[:2]):
            return [tiles.predict_large(self, rgb) for rgb in rgbs]
        batch = np.stack([self.preprocess(rgb) for rgb in rgbs])
        blobs = [blob for blob, _, _, _ in self.heads]
        scores = forward(self.net, batch, blobs, self.input_name)
        results = []
        for i in range(len(rgbs)):
            results.append({suffix: (scores[blob][i].argmax(axis=0), scores[blob][i])
                            for blob, suffix, _, _ in self.heads})
        return results

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

    def outputs(self, stem, rgb, result, save_scores=False):
        """{filename: bytes} for one image's result (label PNGs, viz, scores)."""
        files = {}
        for _, suffix, names, palette in self.heads:
            labels, scores = result[suffix]
            files[f"{stem}{suffix}.png"] = png_bytes(label_image(labels, palette))
            files[f"{stem}{suffix}_viz.png"] = png_bytes(side_by_side(rgb, labels, palette, names))
            if save_scores:
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(scores, np.float32))
                files[f"{stem}{suffix}_scores.npy"] = buf.getvalue()
        return files


# ---------------------------------------------------------------- batch runs

def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def collect_images(paths):
    """Expand directories into their .jpg/.jpeg/.png files (sorted); files stay.

    Returns (image paths, [(path, reason)] for inputs that do not exist).
    """
    images, missing = [], []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(path, f)))
            if not found:
                _warn(f"{path}: no .jpg/.jpeg/.png images in this directory")
            images.extend(found)
        elif os.path.exists(path):
            images.append(path)
        else:
            missing.append((path, "no such file or directory"))
    return images, missing


def output_stems(paths):
    """A distinct output stem per path: the file stem, or stem_ext where stems collide."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    stems_used = {}
    for s in stems:
        stems_used[s] = stems_used.get(s, 0) + 1
    out, taken = [], set()
    for path, stem in zip(paths, stems):
        if stems_used[stem] > 1:
            stem = os.path.basename(path).replace(".", "_")
        base, k = stem, 1
        while stem in taken:
            k += 1
            stem = f"{base}_{k}"
        taken.add(stem)
        out.append(stem)
    return out


def run(predictor, paths, out, save_scores=False, keep_going=False, log=None):
    """Segment every image of `paths` (files or directories) into `out`.

    Equal-size images share forwards (up to predictor.batch_size). Returns
    (number of images segmented, [(path, reason)] failures). Without
    `keep_going` the first bad image raises BadImage before anything more
    is written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    images, failures = collect_images(paths)
    if failures and not keep_going:
        raise BadImage(*failures[0])
    if not images and not failures:
        raise InferError("no images given (directories hold no .jpg/.jpeg/.png files)")
    for path, reason in failures:
        log(f"skipped {path}: {reason}")

    groups = {}                                  # (h, w) -> paths, in input order
    for path in images:
        try:
            size = image_size(path)
        except BadImage as exc:
            if not keep_going:
                raise
            failures.append((exc.path, exc.reason))
            log(f"skipped {exc}")
            continue
        groups.setdefault(size, []).append(path)
    stems = dict(zip(images, output_stems(images)))
    total = sum(len(g) for g in groups.values())
    done, start = 0, time.time()
    os.makedirs(out, exist_ok=True)
    for (h, w), group in groups.items():
        for i in range(0, len(group), predictor.batch_size):
            chunk, rgbs = [], []
            for path in group[i:i + predictor.batch_size]:
                try:
                    rgbs.append(load_image(path, warn=_warn))
                    chunk.append(path)
                except BadImage as exc:
                    if not keep_going:
                        raise
                    failures.append((exc.path, exc.reason))
                    total -= 1
                    log(f"skipped {exc}")
            if not chunk:
                continue
            try:
                results = predictor.predict(rgbs)
            except (InferError, ValueError, MemoryError) as exc:
                if not keep_going:
                    raise InferError(f"{', '.join(chunk)}: {exc}") from None
                failures.extend((path, f"{type(exc).__name__}: {exc}") for path in chunk)
                total -= len(chunk)
                log(f"skipped {', '.join(chunk)}: {exc}")
                continue
            for path, rgb, result in zip(chunk, rgbs, results):
                predictor.save(out, stems[path], rgb, result, save_scores)
            done += len(chunk)
            rate = done / max(time.time() - start, 1e-9)
            names = ", ".join(os.path.basename(p) for p in chunk)
            log(f"[{done}/{total}] {w}x{h} batch of {len(chunk)}: {names} ({rate:.2f} img/s)")
    return done, failures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solvers.infer", description=DESCRIPTION,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name (`python -m net_specs list`) or template")
    parser.add_argument("weights", help="trained .caffemodel, or `published`: the authors' "
                        "released weights (fetched into weights/published/ on first use)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or directories")
    parser.add_argument("--out", default="predictions", help="output directory (default predictions)")
    add_device_args(parser)
    parser.add_argument("--save-scores", action="store_true", help="also save <stem>_scores.npy")
    parser.add_argument("--keep-going", action="store_true",
                        help="skip bad images (exit status 3 if any failed)")
    parser.add_argument("--batch", type=int_at_least("--batch", 1), default=4, metavar="N",
                        help="at most N equal-size images per forward (default 4)")
    add_model_args(parser, root=False)
    parser.add_argument("--max-pixels", type=int_at_least("--max-pixels", 1),
                        default=tiles.DEFAULT_MAX_PIXELS, metavar="N",
                        help="larger images are segmented in overlapping tiles of at most N "
                             f"pixels (default {tiles.DEFAULT_MAX_PIXELS}: 500x500, ~4.5 GB at width 1)")
    parser.add_argument("--downscale", action="store_true",
                        help="segment images over --max-pixels downscaled to fit instead of in tiles")
    return run_cli("solvers.infer", infer_cli, parser.parse_args(argv), quiet_caffe=True)


def check_out_is_not_an_input(inputs, out):
    """--out must not be an input directory, nor hold an input PNG: the
    outputs (<stem>.png, <stem>_viz.png, ...) would overwrite the inputs."""
    target = os.path.realpath(out)
    for path in inputs:
        if os.path.isdir(path) and os.path.realpath(path) == target:
            raise InferError(f"--out {out} is the input directory {path}: the label maps would "
                             "overwrite or mix with its images; choose another --out")
        if (os.path.isfile(path) and path.lower().endswith(".png")
                and os.path.realpath(os.path.dirname(os.path.abspath(path))) == target):
            raise InferError(f"--out {out} holds the input image {path}, which the outputs "
                             "(<stem>.png, <stem>_viz.png) could overwrite; choose another --out")


def infer_cli(args):
    check_out_is_not_an_input(args.inputs, args.out)
    model, dataset = resolve_args(args)
    set_device(args.gpu)
    from surgery.download import weights_argument
    args.weights = weights_argument(args.weights, args.model)
    predictor = Predictor.from_model(model, args.weights, dataset=dataset,
                                     width=args.width, batch_size=args.batch,
                                     max_pixels=args.max_pixels, downscale=args.downscale)
    done, failures = run(predictor, args.inputs, args.out, args.save_scores, args.keep_going)
    print(f"segmented {done} image(s) into {args.out}/")
    if failures:
        print(f"solvers.infer: {len(failures)} image(s) failed:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())

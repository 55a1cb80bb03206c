"""The demo's prediction images, made by the library `python -m
solvers.infer` runs (Predictor and its batch loop, on the final stage's
NetConfig), plus a grid of image | truth | prediction, and the final
model's report.html (solvers.scoring.report_html)."""
import io
import os

import numpy as np
from PIL import Image

from common.atomic import atomic_write
from solvers.inference.batch import run as segment_images
from solvers.inference.predictor import Predictor
from solvers.scoring.cli import to_json, write_scores
from solvers.scoring.evaluate import score_model
from solvers.scoring.per_image import GALLERY_SIZE
from common.palette import colorize, voc_palette

N_SHOWN = 6


def save_predictions(out, net, weights, log, n=N_SHOWN):
    """Segment the first `n` val images with the FCN-8s weights (`net`: its
    NetConfig); returns the grid path."""
    root = net.dataset.val.root
    with open(os.path.join(root, "ImageSets", "Segmentation", net.dataset.val.split + ".txt")) as f:
        ids = f.read().split()[:n]
    images = [os.path.join(root, "JPEGImages", i + ".jpg") for i in ids]
    pred_dir = os.path.join(out, "predictions")
    log(f"[demo] segmenting {len(images)} val images into {pred_dir}/ (as solvers.infer does)")
    segment_images(Predictor.from_model(net, weights), images, pred_dir)
    palette = voc_palette()
    rows = []
    for ident, path in zip(ids, images):
        rgb = np.array(Image.open(path).convert("RGB"))
        truth = np.array(Image.open(os.path.join(root, "SegmentationClass", ident + ".png")))
        pred = np.array(Image.open(os.path.join(pred_dir, ident + ".png")))
        rows.append(np.concatenate([rgb, colorize(truth, palette), colorize(pred, palette)], axis=1))
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    buf = io.BytesIO()
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(buf, format="PNG")
    path = os.path.join(out, "predictions.png")
    atomic_write(path, buf.getvalue())
    log(f"[demo] image | ground truth | FCN-8s prediction for {len(ids)} val images: {path}")
    return path


def save_report(out, net, weights, curves, log):
    """Score the final FCN-8s (`net`: its NetConfig) on val once more, keeping
    each image's result, and write report/scores.json and report/report.html
    (with the FCN-8s stage's curves); returns the page's path."""
    results = score_model(net, weights, gallery=GALLERY_SIZE)
    path = os.path.join(out, "report", "scores.json")
    write_scores(path, to_json(results, net, weights, results["split"]), results["galleries"],
                 curves)
    page = os.path.join(out, "report", "report.html")
    log(f"[demo] evaluation report (metrics, per-class IU, confusion, curves, worst/best images): {page}")
    return page

"""solvers.scoring.report_html: every number on the page is the one in scores.json,
the gallery holds the true worst and best images, and the page renders in
headless Chromium (network off) with every picture loaded."""
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common.palette import palette_for
from solvers.scoring.metrics import fast_hist, metrics
from solvers.scoring.per_image import Gallery, gallery_picture, image_record
from solvers.scoring.report_html import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["background", "disc", "square", "ring", "cross"]


def scored_run(n_images=9, seed=0, size=(24, 32)):
    """A scoring run's JSON (as solvers.score writes it, with per-image
    records) and a gallery, from random truths and predictions that are
    right with a probability that differs per image."""
    rng = np.random.default_rng(seed)
    n = len(NAMES)
    total = np.zeros((n, n), np.int64)
    records, gallery, pictures = [], Gallery(3), {}
    palette = palette_for(n)
    for i in range(n_images):
        truth = rng.integers(0, n, size)
        truth[0, :4] = 255                                      # void pixels
        right = rng.random(size) < (i + 1) / (n_images + 1)
        pred = np.where(right, np.where(truth == 255, 0, truth), rng.integers(0, n, size))
        hist = fast_hist(truth, pred, n)
        total += hist
        record = image_record(f"img{i}", hist)
        records.append(record)
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        pictures[i] = (image, truth, pred)
        gallery.offer(i, record, lambda: gallery_picture(image, truth, pred, palette, NAMES))
    head = metrics(total)
    head.update(hist=total.tolist(), class_names=NAMES, images=records)
    scores = {"model": "fcn8s", "dataset": "demo", "split": "val", "weights": "/w/final.caffemodel",
              "n_images": n_images, "loss": 0.4321, "losses": {"loss": 0.4321}, "heads": {"label": head}}
    return json.loads(json.dumps(scores)), gallery, pictures


class Numbers(html.parser.HTMLParser):
    """The page's tagged numbers and every table cell's text."""

    def __init__(self):
        super().__init__()
        self.numbers, self.cells, self.images, self._span, self._cell = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and attrs.get("class") == "num":
            self._span = [attrs["data-key"], attrs["data-value"], ""]
        if tag == "td":
            self._cell = ["", 0]
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "span" and self._span:
            self.numbers.append(tuple(self._span))
            if self._cell is not None:
                self._cell[1] += 1
            self._span = None
        if tag == "td" and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._span:
            self._span[2] += data
        if self._cell is not None:
            self._cell[0] += data


def lookup(doc, key):
    for part in key.split("/"):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def test_every_number_on_the_page_is_the_one_in_scores_json(tmp_path):
    scores, gallery, _ = scored_run()
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    page = write_report(str(tmp_path / "report"), scores, galleries={"label": gallery})
    parser = Numbers()
    parser.feed(open(page).read())
    keys = {k for k, _, _ in parser.numbers}
    stored = json.loads((tmp_path / "scores.json").read_text())
    for key, exact, text in parser.numbers:
        value = lookup(stored, key)
        assert json.loads(exact) == value, key
        if value is None:
            assert text == "n/a"
        elif key.split("/")[-1] in ("n_pixels", "n_images", "loss"):
            assert text == str(value)
        else:
            assert text == f"{100 * value:.2f}", key
    # the four metrics, every class's IU and accuracy, the gallery's per-image figures
    for m in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert f"heads/label/{m}" in keys
    assert {f"heads/label/per_class_iu/{i}" for i in range(5)} <= keys
    assert {f"heads/label/per_class_acc/{i}" for i in range(5)} <= keys
    assert sum(k.startswith("heads/label/images/") for k in keys) == 2 * 6     # 3 worst + 3 best
    # no number in a table cell that is not one of those
    for text, tagged in parser.cells:
        if re.search(r"\d", text):
            assert tagged, text
    # pictures: local files that exist and decode; nothing fetched from a network
    page_text = open(page).read()
    assert "http:" not in page_text and "https:" not in page_text and "<script" not in page_text
    for src in parser.images:
        with Image.open(tmp_path / "report" / src) as im:
            assert im.size[0] > 10 and im.size[1] > 10


def test_the_gallery_holds_the_worst_and_best_images():
    scores, gallery, _ = scored_run(n_images=12, seed=3)
    records = scores["heads"]["label"]["images"]
    order = sorted(range(len(records)), key=lambda i: (records[i]["mean_iu"], records[i]["pixel_acc"]))
    assert [item["index"] for item in gallery.worst()] == order[:3]
    assert [item["index"] for item in gallery.best()] == order[::-1][:3]


def test_gallery_pictures_are_drawn_only_for_images_that_enter_it():
    drawn = []
    gallery = Gallery(2)
    for i, iu in enumerate([0.5, 0.4, 0.6, 0.45, 0.5, 0.55, 0.7, 0.1]):
        gallery.offer(i, {"id": str(i), "mean_iu": iu, "pixel_acc": iu},
                      lambda i=i: drawn.append(i) or f"picture {i}")
    assert [item["index"] for item in gallery.worst()] == [7, 1]
    assert [item["index"] for item in gallery.best()] == [6, 2]
    assert 4 not in drawn and 5 in drawn      # 4 (0.5) beat neither list; 5 (0.55) entered best


def test_gallery_picture_shows_input_truth_prediction_and_legend():
    image = np.full((10, 12, 3), 7, np.uint8)
    truth, pred = np.zeros((10, 12), int), np.ones((10, 12), int)
    truth[0, 0] = 255
    palette = palette_for(5)
    picture = np.asarray(gallery_picture(image, truth, pred, palette, NAMES))
    assert (picture[:10, :12] == 7).all()
    assert (picture[1:10, 12:24] == palette[0]).all() and (picture[0, 12] == palette[255]).all()
    assert (picture[:10, 24:36] == palette[1]).all()
    assert picture.shape[1] > 36 + 8                       # the legend column


def test_cli_writes_the_report_with_curves(tmp_path):
    scores, _, _ = scored_run()
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": it, "loss": 1.0 / it, "mean_iu": it / 100.0}) + "\n" for it in (10, 20, 30)))
    r = subprocess.run([sys.executable, "-m", "solvers.scoring.report_html", str(tmp_path / "scores.json"),
                        "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "metrics.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["curves.png", "label-confusion.png", "label-iu.png",
                                                    "report.html"]
    r = subprocess.run([sys.executable, "-m", "solvers.scoring.report_html", str(tmp_path / "nope.json"),
                        "--out", str(tmp_path / "o2")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and "not found" in r.stderr and not (tmp_path / "o2").exists()


def test_cli_checks_out_before_reading_or_writing(tmp_path):
    """--out naming a regular file (here the scores file itself, or another
    file) is refused in one line, exit 2, before anything is written."""
    scores, _, _ = scored_run()
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(scores))
    other = tmp_path / "notes.txt"
    other.write_text("keep me\n")
    for out in (path, other):
        r = subprocess.run([sys.executable, "-m", "solvers.scoring.report_html", str(path), "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 2, r.stderr
        assert r.stderr == f"solvers.scoring.report_html: error: --out {out} is a file; expected a directory\n"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "scores.json"] and other.read_text() == "keep me\n"


# ------------------------------------------------------------------ in a browser

def chromium_executable():
    """FCN_CHROMIUM, else `chromium` on PATH (Debian's package, or Ubuntu's
    snap under /snap/bin): the one docker/install_deps.sh --test provides."""
    exe = os.environ.get("FCN_CHROMIUM") or shutil.which(
        "chromium", path=os.environ.get("PATH", "") + os.pathsep + "/snap/bin")
    assert exe, ("chromium is not installed: `make test-deps` (docker/install_deps.sh --test) installs it, "
                 "FCN_CHROMIUM names another; BROWSER_TESTS=0 leaves this test out")
    return exe


def chromium(*args, profile):
    """Headless Chromium with the network off (its own network namespace
    where unshare works, and no name resolution in any case)."""
    exe = chromium_executable()
    offline = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"],
                                                  capture_output=True).returncode == 0 else []
    cmd = offline + [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                     "--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


CHECK = ("<script>window.addEventListener('load', () => { document.body.setAttribute('data-widths', "
         "Array.from(document.images).map(i => i.naturalWidth).join(',')); });</script></body>")


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_every_image_loaded(tmp_path):
    scores, gallery, _ = scored_run()
    out = tmp_path / "report"
    page = write_report(str(out), scores, galleries={"label": gallery},
                        curves=[{"iteration": 10, "loss": 0.9, "mean_iu": 0.2}])
    shot = tmp_path / "shot.png"
    r = chromium(f"--screenshot={shot}", "--window-size=1200,1600", f"file://{page}",
                 profile=tmp_path / "p1")
    assert shot.exists(), r.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200) and (pixels < 200).mean() > 0.01    # not a blank page
    # a copy of the page with a script that records each image's natural width
    checked = out / "checked.html"
    checked.write_text(open(page).read().replace("</body>", CHECK))
    r = chromium("--dump-dom", f"file://{checked}", profile=tmp_path / "p2")
    widths = re.search(r'data-widths="([^"]*)"', r.stdout)
    assert widths, r.stdout[-2000:] + r.stderr[-2000:]
    widths = [int(w) for w in widths.group(1).split(",")]
    n_images = open(page).read().count("<img ")
    assert len(widths) == n_images == 3 + 6 and all(w > 0 for w in widths)

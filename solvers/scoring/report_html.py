"""report.html: a scoring run as a static page people look at rather than a
JSON file -- the four metrics, a per-class IU bar chart, the normalised
confusion matrix, the training curves when the run has them, and the worst
and best images (input | truth | prediction | legend).

    python -m solvers.scoring.report_html scores.json --out DIR [--metrics metrics.jsonl]

Static files only (report.html + PNGs beside it, relative links, no script,
no network): it reads offline and can be zipped or served as is. Charts are
drawn with Pillow, as the learning curves already are: the page needs three
simple charts, which do not earn matplotlib a place among the dependencies.

Every number on the page is printed from scores.json by `number()`, which
tags it with its JSON path and exact value (`data-key`, `data-value`), so a
test can check the page against the file. The gallery's pictures are made
while scoring (solvers.scoring.per_image keeps the K worst and best images by their
own mean IU); a report written from scores.json alone has no gallery.
"""
import argparse
import html
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.atomic import atomic_write
from common.cli import run_cli
from common.outputs import check_dir
from common.errors import UserError
from common.palette import png_bytes

from .metrics import METRIC_KEYS, METRIC_NAMES

BAR = (31, 119, 180)
TEXT, GRID, MISSING = (0, 0, 0), (210, 210, 210), (150, 150, 150)


def font(size=13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                      # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


# ------------------------------------------------------------------ charts

def iu_chart(names, ious):
    """Horizontal bars of per-class IU (0..100%), n/a for classes without one."""
    f = font()
    row, label_w, bar_w = 18, 8 + max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=f)
                                      for n in names), 400
    width, height = int(label_w) + bar_w + 70, row * len(names) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x0 = int(label_w)
    for pct in range(0, 101, 25):
        x = x0 + bar_w * pct // 100
        draw.line([(x, 0), (x, height - 24)], fill=GRID)
        draw.text((x - 8, height - 20), f"{pct}%", fill=TEXT, font=f)
    for k, (name, iu) in enumerate(zip(names, ious)):
        y = k * row + 2
        draw.text((4, y), name, fill=TEXT, font=f)
        if iu is None or (isinstance(iu, float) and math.isnan(iu)):
            draw.text((x0 + 4, y), "n/a", fill=MISSING, font=f)
            continue
        draw.rectangle([x0, y, x0 + max(1, round(bar_w * iu)), y + row - 5], fill=BAR)
        draw.text((x0 + round(bar_w * iu) + 4, y), f"{100 * iu:.1f}", fill=TEXT, font=f)
    return image


def heat_colour(value):
    """0 -> white, 1 -> dark blue."""
    v = min(max(float(value), 0.0), 1.0)
    return (round(255 - 247 * v), round(255 - 207 * v), round(255 - 148 * v))


def confusion_chart(hist, names):
    """The confusion matrix normalised per truth row, rows truth, columns
    prediction; rows labelled 'i name', columns by index."""
    hist = np.asarray(hist, np.float64)
    n = len(hist)
    rows = hist.sum(1, keepdims=True)
    share = np.divide(hist, rows, out=np.zeros_like(hist), where=rows > 0)
    f = font(11)
    cell = int(min(28, max(8, 640 // max(n, 1))))
    labels = [f"{i} {name}" for i, name in enumerate(names)]
    label_w = int(8 + max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=f) for t in labels))
    top = 40
    title = "prediction (columns) for each true class (rows), share of the row"
    title_w = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=f)
    width, height = int(max(label_w + n * cell + 90, label_w + title_w + 8)), top + n * cell + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((label_w, 2), title, fill=TEXT, font=f)
    for i in range(n):
        y = top + i * cell
        if cell >= 11 or i % 5 == 0:
            draw.text((4, y + (cell - 11) // 2), labels[i], fill=TEXT if rows[i, 0] else MISSING, font=f)
            draw.text((label_w + i * cell + 1, top - 14), str(i), fill=TEXT, font=f)
        for j in range(n):
            x = label_w + j * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=heat_colour(share[i, j]))
        draw.rectangle([label_w + i * cell, y, label_w + i * cell + cell - 1, y + cell - 1],
                       outline=(214, 39, 40))
    # the colour scale
    sx = label_w + n * cell + 20
    for k in range(n * cell):
        draw.line([(sx, top + k), (sx + 14, top + k)], fill=heat_colour(1 - k / max(n * cell - 1, 1)))
    draw.text((sx + 18, top - 4), "1", fill=TEXT, font=f)
    draw.text((sx + 18, top + n * cell - 10), "0", fill=TEXT, font=f)
    return image


# ------------------------------------------------------------------ the page

def number(value, key, percent=True):
    """A number of scores.json on the page: shown as a percent with two
    decimals (or as is), tagged with its JSON path and exact value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        text, exact = "n/a", "null"
    else:
        text, exact = (f"{100 * value:.2f}" if percent else str(value)), json.dumps(value)
    return f'<span class="num" data-key="{html.escape(key)}" data-value="{exact}">{text}</span>'


def heads_of(scores):
    heads = scores.get("heads")
    if not isinstance(heads, dict) or not heads:
        raise UserError("scores: no 'heads' (expected the JSON that solvers.score --out writes)")
    return heads


def safe_name(label):
    return "".join(c if c.isalnum() else "-" for c in str(label)) or "head"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#111}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{padding:2px 10px;text-align:right}
th{border-bottom:1px solid #888}td:first-child,th:first-child{text-align:left}
figure{margin:0.5em 0 1.5em}img{max-width:100%;border:1px solid #ddd}.meta{color:#555}
.gallery figcaption{font-size:90%}"""


def head_section(label, head, gallery, files):
    """HTML of one head; its charts and gallery pictures go into `files`
    ({file name: picture})."""
    name = safe_name(label)
    key = f"heads/{label}"
    names = head.get("class_names") or [f"class {i}" for i in range(len(head["per_class_iu"]))]
    parts = [f"<h2>{html.escape(str(label))}</h2>",
             f'<p class="meta">{number(head.get("n_pixels"), key + "/n_pixels", False)} pixels scored'
             + ("; class means over classes present in the ground truth only" if head.get("present_only")
                else "") + "</p>",
             "<table><tr><th>metric</th><th>%</th></tr>"]
    for m in METRIC_KEYS:
        parts.append(f"<tr><td>{METRIC_NAMES[m]}</td><td>{number(head.get(m), f'{key}/{m}')}</td></tr>")
    parts.append("</table>")
    files[f"{name}-iu.png"] = iu_chart(names, head["per_class_iu"])
    parts.append(f'<figure><img src="{name}-iu.png" alt="per-class IU of {html.escape(str(label))}">'
                 "<figcaption>IU per class (%)</figcaption></figure>")
    if head.get("hist") is not None:
        files[f"{name}-confusion.png"] = confusion_chart(head["hist"], names)
        parts.append(f'<figure><img src="{name}-confusion.png" alt="confusion matrix">'
                     "<figcaption>confusion matrix, each true class's row normalised to 1"
                     "</figcaption></figure>")
    parts.append("<table><tr><th>class</th><th>IU %</th><th>accuracy %</th></tr>")
    for i, n in enumerate(names):
        parts.append(f"<tr><td>{html.escape(n)}</td>"
                     f"<td>{number(head['per_class_iu'][i], f'{key}/per_class_iu/{i}')}</td>"
                     f"<td>{number(head['per_class_acc'][i], f'{key}/per_class_acc/{i}')}</td></tr>")
    parts.append("</table>")
    if gallery is not None:
        for kind, items in (("worst", gallery.worst()), ("best", gallery.best())):
            if not items:
                continue
            parts.append(f"<h3>{kind} images (by their own mean IU)</h3><div class=\"gallery\">")
            for rank, item in enumerate(items, 1):
                index, record = item["index"], item["record"]
                file = f"{name}-{kind}-{rank}.png"
                files[file] = item["pictures"]
                ikey = f"{key}/images/{index}"
                parts.append(f'<figure><img src="{file}" alt="{html.escape(record["id"])}">'
                             f"<figcaption>{html.escape(record['id'])}: mean IU "
                             f"{number(record['mean_iu'], ikey + '/mean_iu')}%, pixel accuracy "
                             f"{number(record['pixel_acc'], ikey + '/pixel_acc')}% "
                             "(input | truth | prediction | legend)</figcaption></figure>")
            parts.append("</div>")
    return "\n".join(parts)


def write_report(out_dir, scores, curves=(), galleries=None, title=None):
    """Write report.html and its PNGs into out_dir; returns the page's path.

    `scores`: solvers.score's JSON document; `curves`: metrics.jsonl entries
    (training loss and val mean IU by iteration); `galleries`: {head label:
    Gallery} whose pictures are PIL images or arrays."""
    from ..training.curves import plot_curves
    heads = heads_of(scores)
    galleries = galleries or {}
    files = {}
    title = title or " ".join(str(scores.get(k, "")) for k in ("model", "dataset", "split")).strip()
    body = [f"<h1>{html.escape(title or 'scores')}</h1>",
            f'<p class="meta">{number(scores.get("n_images"), "n_images", False)} images'
            + (f"; weights {html.escape(str(scores['weights']))}" if scores.get("weights") else "")
            + (f"; mean loss {number(scores['loss'], 'loss', False)}" if scores.get("loss") is not None
               else "")
            + (f"; test-time augmentation: scales {html.escape(', '.join(map(str, scores['tta']['scales'])))}"
               + (", flipped" if scores["tta"].get("flip") else "") if scores.get("tta") else "") + "</p>"]
    for label, head in heads.items():
        body.append(head_section(label, head, galleries.get(label), files))
    entries = [e for e in curves if isinstance(e, dict) and "iteration" in e]
    if entries:
        losses = [(e["iteration"], e["loss"]) for e in entries if e.get("loss") is not None]
        plot_curves(losses, entries, os.path.join(out_dir, "curves.png"), title=str(scores.get("model", "")))
        body.append('<h2>training</h2><figure><img src="curves.png" alt="training curves">'
                    "<figcaption>training loss (mean of the last 20 iterations) and val mean IU at "
                    "each scoring</figcaption></figure>")
    for file, picture in files.items():
        if not isinstance(picture, Image.Image):
            picture = Image.fromarray(np.asarray(picture, np.uint8))
        atomic_write(os.path.join(out_dir, file), png_bytes(picture))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title or 'scores')}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = os.path.join(out_dir, "report.html")
    atomic_write(path, page)
    return path


def read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path):
    entries = []
    try:
        with open(path) as f:
            for number_, line in enumerate(f, 1):
                if line.strip():
                    try:
                        entries.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}: line {number_} is not JSON ({e})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"metrics file not found: {path}") from None
    return entries


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m solvers.scoring.report_html", description=__doc__.split("\n\n")[0])
    p.add_argument("scores", help="scores.json as solvers.score --out writes it")
    p.add_argument("--out", required=True, help="folder for report.html and its pictures")
    p.add_argument("--metrics", help="a run's metrics.jsonl, for the training curves")
    args = p.parse_args(argv)

    def body(a):
        check_dir(a.out, [("scores", a.scores), ("--metrics", a.metrics)])     # before reading
        scores = read_json(a.scores, "scores file")
        if not isinstance(scores, dict):
            raise UserError(f"{a.scores}: expected a JSON object (solvers.score --out)")
        curves = read_jsonl(a.metrics) if a.metrics else ()
        print(f"wrote {write_report(a.out, scores, curves)}")
        return 0
    return run_cli("solvers.scoring.report_html", body, args)


if __name__ == "__main__":
    sys.exit(main())

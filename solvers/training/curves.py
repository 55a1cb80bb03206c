"""Learning curves as a PNG, drawn with Pillow (no plotting dependency)."""
import io
import math

from PIL import Image, ImageDraw

from common.atomic import atomic_write

SIZE = (720, 360)
MARGIN = 48


def _polyline(draw, points, box, ranges, colour):
    (x0, y0, x1, y1), ((xmin, xmax), (ymin, ymax)) = box, ranges
    sx = (x1 - x0) / max(xmax - xmin, 1e-12)
    sy = (y1 - y0) / max(ymax - ymin, 1e-12)
    pts = [(x0 + (x - xmin) * sx, y1 - (y - ymin) * sy) for x, y in points]
    if len(pts) == 1:
        x, y = pts[0]
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    elif pts:
        draw.line(pts, fill=colour, width=2)


def plot_curves(losses, metrics, path, title=""):
    """Training loss (left panel) and validation mean IU (right panel)."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    half = SIZE[0] // 2
    panels = [
        ("training loss", [(i, l) for i, l in losses if math.isfinite(l)], (31, 119, 180)),
        ("val mean IU", [(m["iteration"], m["mean_iu"]) for m in metrics
                         if m.get("mean_iu") is not None and math.isfinite(m["mean_iu"])], (214, 39, 40)),
    ]
    for k, (name, points, colour) in enumerate(panels):
        box = (k * half + MARGIN, MARGIN, (k + 1) * half - 16, SIZE[1] - MARGIN)
        draw.rectangle(box, outline="black")
        draw.text((box[0], 16), f"{title} {name}".strip(), fill="black")
        if not points:
            draw.text((box[0] + 8, box[1] + 8), "no data yet", fill="grey")
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ranges = ((min(xs), max(xs)), (min(ys), max(ys)))
        _polyline(draw, points, box, ranges, colour)
        draw.text((box[0] - MARGIN + 4, box[1]), f"{ranges[1][1]:.3g}", fill="black")
        draw.text((box[0] - MARGIN + 4, box[3] - 10), f"{ranges[1][0]:.3g}", fill="black")
        draw.text((box[0], box[3] + 4), f"iter {ranges[0][0]}", fill="black")
        draw.text((box[2] - 60, box[3] + 4), f"iter {ranges[0][1]}", fill="black")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())

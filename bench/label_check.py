"""Start-up label check of a large split, cold and warm (layers.labelcheck).

    python -m bench.label_check [--ids 8498] [--size 500x375] [--dir DIR]

Writes a folder-layout split of `--ids` ids (SBD train's size by default):
palette label PNGs of VOC-like blobs (16 distinct maps, each written to its
own file), and images that are hard links to one 500x375 JPEG (start-up
reads only image headers). Then, each in a fresh child process, times the
data layer's start-up checks (`check_files` + `check_label_set`) with an
empty label cache ("cold": every label decoded) and again with the cache the
first run left ("warm": a restart or --resume). Target: <= 10 s cold and
<= 2 s warm on 2 cores. Figures only; the load average is printed with them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from common.palette import voc_palette

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from layers.folder import FolderReader
reader = FolderReader.from_param_str(sys.argv[1])
t1 = time.perf_counter()
reader.check_files()
reader.check_label_set()
t2 = time.perf_counter()
print(json.dumps(dict(imports=t1 - t0, check=t2 - t1)))
"""


def label_map(rng, w, h, n_classes=21):
    """A VOC-like label: a few class blobs on background, a void border."""
    label = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(rng.integers(1, 4)):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(30, 150)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        label[inside] = rng.integers(1, n_classes)
        ring = inside & ((yy - cy) ** 2 + (xx - cx) ** 2 > (r - 3) ** 2)
        label[ring] = 255
    return label


def write_split(root, n, w, h):
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    rng = np.random.default_rng(0)
    photo = os.path.join(root, "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photo, quality=90)
    maps = []
    for _ in range(16):
        im = Image.fromarray(label_map(rng, w, h), mode="P")
        im.putpalette(voc_palette().ravel().tolist())
        path = os.path.join(root, f"map{len(maps)}.png")
        im.save(path)
        maps.append(open(path, "rb").read())
    ids = [f"2008_{k:06d}" for k in range(n)]
    for k, i in enumerate(ids):
        with open(os.path.join(root, "labels", i + ".png"), "wb") as f:
            f.write(maps[k % len(maps)])
        os.link(photo, os.path.join(root, "images", i + ".jpg"))
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


def start(root, cache):
    params = json.dumps(dict(root=root, split="train", mean=[104.0, 117.0, 123.0], n_classes=21))
    env = dict(os.environ, PYTHONPATH=ROOT, FCN_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, params], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.label_check", description=__doc__)
    parser.add_argument("--ids", type=int, default=8498)
    parser.add_argument("--size", default="500x375", help="WxH of every label")
    parser.add_argument("--dir", help="where to write the split (default: a temporary dir)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root, cache = os.path.join(tmp, "split"), os.path.join(tmp, "cache")
        t0 = time.perf_counter()
        write_split(root, args.ids, w, h)
        print(f"wrote {args.ids} labels {w}x{h} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        load = os.getloadavg()[0]
        cold = start(root, cache)
        warm = start(root, cache)
        load = max(load, os.getloadavg()[0])
    print(f"| split | cold start-up check | warm (cached) | per label, cold | load average |")
    print(f"|---|---|---|---|---|")
    print(f"| {args.ids} labels {w}x{h} | {cold['check']:.1f} s | {warm['check']:.2f} s | "
          f"{1000 * cold['check'] / args.ids:.2f} ms | {load:.1f} on {os.cpu_count()} cores |")


if __name__ == "__main__":
    sys.exit(main())

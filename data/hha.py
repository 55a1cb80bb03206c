"""HHA images from raw depth, so the NYUD HHA and color-HHA models can run on
any RGB-D camera's data.

    python -m data.hha DEPTH.png [MORE.png | FOLDER ...] --out DIR [--intrinsics fx,fy,cx,cy]
    python -m data.hha --nyud datasets/nyud --split test      # -> datasets/nyud/data/hha/

HHA (Gupta, Girshick, Arbelaez, Malik, ECCV 2014) encodes depth as three
8-bit channels, stored in this order as the PNG's R, G, B (the order the
released NYUDv2 HHA images and our NYUD data layer use):

1. horizontal disparity: 31000 / max(depth in cm, 100), so 255 up to 1.216 m;
2. height above the ground in cm (the lowest point seen is the ground, or the
   camera is taken to be 130 cm above it if nothing is more than 90 cm below
   the camera);
3. the angle in degrees between the local surface normal and gravity, plus 38
   (normals point away from the camera: floor 38, walls 128, ceiling 218).

Gravity is estimated from the surface normals as in the paper: starting from
the camera's down axis, it is re-estimated 5 times with a 45-degree and then
5 times with a 15-degree threshold as the direction most parallel to the
normals within the threshold of it (floors, tables, ceilings) and most
perpendicular to those within the threshold of perpendicular (walls): the
eigenvector of the smallest eigenvalue of sum(w w^T) - sum(f f^T).

Normals are least-squares planes fitted to the valid depth in a square window
around each pixel (7x7 for the angle channel, 21x21 for gravity). Missing
depth (0 in a PNG, 0 or NaN in a .mat) is left out of every fit; for the
disparity and height channels each missing pixel takes the depth of the
nearest valid pixel, and a pixel whose window has too few valid points for a
plane takes the nearest fitted normal. See docs/hha.md for how this differs
from the MATLAB code.
"""
import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

from common.atomic import atomic_write
from common.cli import run_cli
from common.outputs import check_dir
from common.errors import InputError, UserError
from common.palette import png_bytes
from layers.io import DataError, read_gray, read_mat, read_split

# NYU Depth V2 toolbox camera_params: the RGB camera at 640x480, to which the
# labeled set's depth is registered.
NYUD_INTRINSICS = (518.85790117450188, 519.46961112127485, 325.58244941119034, 253.73616633400465)

DISPARITY_SCALE_CM = 31000.0     # channel 1 = 31000 / depth in cm
MIN_DEPTH_CM = 100.0             # depths nearer than 1 m are clamped (disparity saturates anyway)
ANGLE_OFFSET_DEG = 128 - 90      # channel 3 = angle + 38, so 0..180 degrees fit in a byte
DEFAULT_GROUND_CM = -130.0       # camera height assumed when the lowest point is above -90 cm
GROUND_SEEN_CM = -90.0
ANGLE_RADIUS, GRAVITY_RADIUS = 3, 10
GRAVITY_SCHEDULE = ((45.0, 5), (15.0, 5))   # (threshold in degrees, iterations)
CAMERA_DOWN = np.array([0.0, 1.0, 0.0])     # image y grows downwards


def parse_intrinsics(text):
    """'fx,fy,cx,cy' -> four finite floats, fx and fy > 0."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)) or min(values[:2]) <= 0:
        raise argparse.ArgumentTypeError(
            f"--intrinsics must be four numbers fx,fy,cx,cy in pixels (fx, fy > 0), got {text!r}")
    return values


# ------------------------------------------------------------------ geometry

def rays(shape, intrinsics):
    """Per-pixel (u, v) = ((x - cx) / fx, (y - cy) / fy): a point at depth Z is Z * (u, v, 1)."""
    fx, fy, cx, cy = intrinsics
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return (xs - cx) / fx, (ys - cy) / fy


def point_cloud(depth, intrinsics):
    """H x W x 3 camera coordinates (x right, y down, z forward) in depth's unit."""
    u, v = rays(depth.shape, intrinsics)
    return np.stack([u * depth, v * depth, depth], axis=-1)


def window_sum(array, radius):
    """Sum over the (2r+1)^2 window around each pixel, zero outside the image."""
    size = 2 * radius + 1
    return ndimage.uniform_filter(array, size=size, mode="constant", cval=0.0) * size * size


def surface_normals(depth, valid, intrinsics, radius):
    """Unit normals (H x W x 3) of the plane fitted to the valid points within
    `radius` pixels, pointing away from the camera; NaN where fewer than three
    valid points span a plane.

    A plane n.P + d = 0 seen along P = Z (u, v, 1) satisfies 1/Z = a u + b v + c
    with (a, b, c) = -n / d, so the fit is linear least squares in 1/Z."""
    u, v = rays(depth.shape, intrinsics)
    w = valid.astype(np.float64)
    inv = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    terms = {"uu": u * u * w, "uv": u * v * w, "u": u * w, "vv": v * v * w, "v": v * w, "1": w,
             "ui": u * inv, "vi": v * inv, "i": inv}
    s = {k: window_sum(t, radius) for k, t in terms.items()}
    m = np.stack([np.stack([s["uu"], s["uv"], s["u"]], -1),
                  np.stack([s["uv"], s["vv"], s["v"]], -1),
                  np.stack([s["u"], s["v"], s["1"]], -1)], -2)
    r = np.stack([s["ui"], s["vi"], s["i"]], -1)
    # a plane needs three valid points that are not collinear: the window's
    # (u, v) covariance must not be degenerate (relative to one pixel's step)
    count = np.maximum(s["1"], 1.0)
    mu, mv = s["u"] / count, s["v"] / count
    spread = ((s["uu"] / count - mu * mu) * (s["vv"] / count - mv * mv)
              - (s["uv"] / count - mu * mv) ** 2)
    step = (1.0 / intrinsics[0]) * (1.0 / intrinsics[1])
    good = (s["1"] >= 2.5) & (spread > 1e-3 * step * step)
    eye = np.broadcast_to(np.eye(3), m.shape)
    n = np.linalg.solve(np.where(good[..., None, None], m, eye), r[..., None])[..., 0]
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-300)
    points = point_cloud(np.where(valid, depth, 1.0), intrinsics)
    facing = np.sign(np.sum(n * points, axis=-1))
    n *= np.where(facing == 0, 1.0, facing)[..., None]
    n[~good] = np.nan
    return n


def gravity_direction(normals, start=CAMERA_DOWN, schedule=GRAVITY_SCHEDULE):
    """The unit 'down' vector in camera coordinates estimated from normals
    (H x W x 3, NaN ignored) by the paper's iterative alignment."""
    n = normals.reshape(-1, 3)
    n = n[np.isfinite(n).all(axis=1)]
    down = np.asarray(start, np.float64) / np.linalg.norm(start)
    for threshold, iterations in schedule:
        t = np.deg2rad(threshold)
        for _ in range(iterations):
            cos = n @ down
            parallel, perpendicular = n[np.abs(cos) > np.cos(t)], n[np.abs(cos) < np.sin(t)]
            if not len(parallel) and not len(perpendicular):
                break
            a = perpendicular.T @ perpendicular - parallel.T @ parallel
            _, vectors = np.linalg.eigh(a)
            new = vectors[:, 0]
            down = new * (1.0 if new @ down >= 0 else -1.0)
    return down


def rotation_onto(a, b):
    """The rotation matrix taking unit vector a to unit vector b (Rodrigues)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        raise InputError("gravity estimate points straight up the image: cannot orient the scene")
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def fill_nearest(values, valid):
    """`values` with every invalid pixel (or N-vector) replaced by the nearest valid one's."""
    if valid.all():
        return values
    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return values[iy, ix]


# ------------------------------------------------------------------ HHA

def hha_channels(depth_m, intrinsics=NYUD_INTRINSICS):
    """Float channels of a metric depth map: {'disparity', 'height' (cm above
    the ground), 'angle' (degrees between normal and gravity), 'gravity'
    (the unit down vector in camera coordinates), 'filled' (missing mask)}."""
    depth_m = np.asarray(depth_m, np.float64)
    if depth_m.ndim != 2:
        raise InputError(f"depth must be a 2-D map, got shape {depth_m.shape}")
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if valid.sum() < 3:
        raise InputError("depth map has fewer than 3 valid (positive) pixels")
    depth_cm = fill_nearest(np.where(valid, depth_m, 0.0), valid) * 100.0
    down = gravity_direction(surface_normals(depth_cm, valid, intrinsics, GRAVITY_RADIUS))
    normals = surface_normals(depth_cm, valid, intrinsics, ANGLE_RADIUS)
    fitted = np.isfinite(normals).all(axis=-1)
    if not fitted.any():
        raise InputError("no window of the depth map holds enough valid points to fit a plane")
    normals = fill_nearest(normals, fitted)
    angle = np.degrees(np.arccos(np.clip(normals @ down, -1.0, 1.0)))
    # in gravity-aligned coordinates (down = +y) height is -y
    aligned = point_cloud(depth_cm, intrinsics) @ rotation_onto(CAMERA_DOWN, down)
    up = -aligned[..., 1]
    ground = up[valid].min()
    if ground > GROUND_SEEN_CM:
        ground = DEFAULT_GROUND_CM
    disparity = DISPARITY_SCALE_CM / np.maximum(depth_cm, MIN_DEPTH_CM)
    return dict(disparity=disparity, height=up - ground, angle=angle, gravity=down, filled=~valid)


def to_byte(values):
    """Round half up and saturate to 0..255, as MATLAB's uint8() does for
    non-negative values; values within 1e-6 of a half count as the half, so
    floating-point noise (31000 / 400.00000000000006) cannot decide a tie."""
    return np.clip(np.floor(np.round(np.asarray(values, np.float64), 6) + 0.5), 0, 255).astype(np.uint8)


def hha(depth_m, intrinsics=NYUD_INTRINSICS):
    """H x W x 3 uint8 HHA of a metric depth map: disparity, height, angle + 38."""
    c = hha_channels(depth_m, intrinsics)
    return np.stack([to_byte(c["disparity"]), to_byte(c["height"]),
                     to_byte(c["angle"] + ANGLE_OFFSET_DEG)], axis=-1)


# ------------------------------------------------------------------ files

def read_depths(path, mat_var=None, png_unit=0.001):
    """[(name, depth in metres)] from a 16-bit PNG (in `png_unit` metres, mm by
    default) or a .mat variable in metres (H x W, or H x W x N: N maps)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if path.lower().endswith(".mat"):
        if not mat_var:
            raise UserError(f"{path}: name the depth variable with --mat-var (e.g. depths, rawDepths)")
        try:
            array = np.asarray(read_mat(path, mat_var), np.float64)
        except DataError as e:
            if "v7.3" in str(e) or "HDF" in str(e):
                raise DataError(path, "a MATLAB v7.3 (HDF5) file, which scipy cannot read: re-save "
                                      "the variable with save(..., '-v7')") from None
            raise
        if array.ndim == 2:
            return [(stem, array)]
        if array.ndim == 3:
            return [(f"{stem}_{i + 1:04d}", array[:, :, i]) for i in range(array.shape[2])]
        raise DataError(path, f"variable {mat_var!r} has shape {array.shape}: expected H x W or H x W x N")
    image = read_gray(path)
    if image.dtype == np.uint8:
        raise DataError(path, "an 8-bit image: expected a 16-bit depth PNG (millimetres by default)")
    return [(stem, image.astype(np.float64) / (1.0 / png_unit))]   # mm / 1000, as MATLAB divides


def depth_inputs(inputs):
    """Expand folders into their .png / .mat files (sorted); files pass through."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(p for p in glob.glob(os.path.join(item, "*"))
                           if p.lower().endswith((".png", ".mat")))
            if not found:
                raise UserError(f"{item}: no .png or .mat depth files in this folder")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"depth input not found: {item}")
    return paths


def nyud_jobs(root, split):
    """(depth PNG, HHA PNG) pairs for a NYUD split in the FCN release's layout."""
    split_file = os.path.join(root, f"{split}.txt")
    return [(os.path.join(root, "data", "depth", f"img_{key}.png"),
             os.path.join(root, "data", "hha", f"img_{key}.png")) for key in read_split(split_file)]


def write_hha(path, image):
    atomic_write(path, png_bytes(Image.fromarray(image, "RGB")))


def main_body(args):
    if args.nyud and args.inputs:
        raise UserError("give depth files/folders or --nyud ROOT --split NAME, not both")
    if not args.nyud and not (args.inputs and args.out):
        raise UserError("give depth files or folders and --out DIR (or --nyud ROOT --split NAME)")
    # before any depth is read: an HHA PNG must never replace a depth input of the same name
    inputs = [("depth", path) for path in args.inputs]
    if args.nyud:
        inputs.append(("--nyud", os.path.join(args.nyud, "data", "depth")))
    check_dir(args.out or os.path.join(args.nyud, "data", "hha"), inputs)
    if args.nyud:
        jobs = [(src, os.path.join(args.out, os.path.basename(dst)) if args.out else dst)
                for src, dst in nyud_jobs(args.nyud, args.split)]
        for src, dst in jobs:
            for _, depth in read_depths(src, png_unit=args.png_unit):
                write_hha(dst, hha(depth, args.intrinsics))
        print(f"wrote {len(jobs)} HHA images for {args.nyud} {args.split}", file=sys.stderr)
        return 0
    paths = depth_inputs(args.inputs)
    stems = {}
    for path in paths:                  # a.png and a.mat (or a_0001.png) would write one file
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UserError(f"{stems[stem]} and {path} would both write {stem}.png: convert them "
                            "into separate --out folders")
        stems[stem] = path
    written = set()
    for path in paths:
        for name, depth in read_depths(path, args.mat_var, args.png_unit):
            if name in written:
                raise UserError(f"{path}: {name}.png was already written from another input")
            write_hha(os.path.join(args.out, name + ".png"), hha(depth, args.intrinsics))
            written.add(name)
    print(f"wrote {len(written)} HHA images to {args.out}", file=sys.stderr)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="python -m data.hha", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="depth PNGs / .mat files, or folders of them")
    p.add_argument("--out", help="output folder (HHA PNGs named after the inputs)")
    p.add_argument("--intrinsics", type=parse_intrinsics, default=NYUD_INTRINSICS,
                   help="camera fx,fy,cx,cy in pixels (default: NYUDv2's Kinect RGB camera, "
                        "518.858,519.470,325.582,253.736)")
    p.add_argument("--png-unit", type=float, default=0.001,
                   help="metres per depth PNG unit (default 0.001: millimetres)")
    p.add_argument("--mat-var", help="the depth variable of .mat inputs, in metres")
    p.add_argument("--nyud", metavar="ROOT", help="a NYUD root in the FCN layout: "
                   "data/depth/img_<id>.png -> data/hha/img_<id>.png (or --out)")
    p.add_argument("--split", default="test", help="with --nyud: the split file <ROOT>/<split>.txt")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("python -m data.hha", main_body, args)


if __name__ == "__main__":
    sys.exit(main())

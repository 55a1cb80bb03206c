"""data.hha on synthetic rooms whose geometry is known exactly: a camera at a
known height, pitch and roll ray-cast against a floor, walls at known yaws,
a 30-degree ramp and a ceiling, with Kinect-like noise and holes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy import ndimage

from common.errors import InputError
from data import hha as H
from layers.nyud import NYUDReader
from net_specs.datasets import NYUD_HHA_MEAN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (480, 640)


def rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def room(height=1.3, pitch=20.0, roll=4.0, shape=SHAPE, intrinsics=H.NYUD_INTRINSICS):
    """Ray-cast a convex room (world: Y up, floor at Y = 0) from a camera at
    (0, height, 0) pitched down by `pitch` and rolled by `roll` degrees.
    Returns depth (m), true height (cm), true angle to gravity (deg), the
    plane id of each pixel and the true 'down' vector in camera coordinates."""
    slope = np.deg2rad(30)
    yaw = np.deg2rad(60)
    planes = [  # outward normal n, offset c (the room is n.X <= c), angle of n to gravity
        ((0, -1, 0), 0.0, 0.0),                                   # floor
        ((0, 1, 0), 2.6, 180.0),                                  # ceiling
        ((0, 0, 1), 4.0, 90.0),                                   # back wall
        ((-1, 0, 0), 1.8, 90.0),                                  # left wall
        ((np.sin(yaw), 0, np.cos(yaw)), 2.6, 90.0),               # right wall, 60 degrees of yaw
        ((0, -np.cos(slope), np.sin(slope)), np.sin(slope) * 2.5, 30.0),   # ramp rising from Z = 2.5 m
    ]
    u, v = H.rays(shape, intrinsics)
    camera_to_world = rot_x(np.deg2rad(pitch)) @ np.diag([1.0, -1.0, 1.0]) @ rot_z(np.deg2rad(roll))
    direction = np.stack([u, v, np.ones_like(u)], -1) @ camera_to_world.T
    centre = np.array([0.0, height, 0.0])
    depth, plane = np.full(shape, np.inf), np.full(shape, -1)
    for i, (n, c, _) in enumerate(planes):
        n = np.asarray(n, float) / np.linalg.norm(n)
        towards = direction @ n
        t = np.where(towards > 1e-9, (c - centre @ n) / np.where(towards > 1e-9, towards, 1.0), np.inf)
        nearer = (t > 0) & (t < depth)
        depth[nearer], plane[nearer] = t[nearer], i     # t is the camera z-depth: direction has z_cam = 1
    points = centre + depth[..., None] * direction
    angle = np.array([p[2] for p in planes])[plane]
    down = camera_to_world.T @ np.array([0.0, -1.0, 0.0])
    return depth, points[..., 1] * 100.0, angle, plane, down


def interior(plane, radius):
    """Pixels at least `radius` pixels inside their plane's region."""
    keep = np.zeros(plane.shape, bool)
    for i in np.unique(plane):
        keep |= ndimage.binary_erosion(plane == i, np.ones((2 * radius + 1,) * 2), border_value=1)
    return keep


def degrees_between(a, b):
    return np.degrees(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))


def noisy(depth, seed=0):
    """Millimetre depth with Kinect-like noise (sigma 1.5 mm x Z^2, Z in m),
    3% dropped pixels and two missing blocks (0 = missing)."""
    rng = np.random.default_rng(seed)
    mm = np.round(depth * 1000 + rng.normal(0, 1, depth.shape) * 1.5 * depth ** 2)
    mm[rng.random(depth.shape) < 0.03] = 0
    mm[100:140, 300:360] = 0
    mm[400:480, 0:30] = 0
    return mm


def test_the_scene_shows_every_surface_kind():
    _, _, angle, plane, _ = room()
    assert set(np.unique(angle)) == {0.0, 30.0, 90.0}     # floor, ramp, walls (ceiling out of view)
    assert (plane >= 0).all()


def test_exact_depth_gives_gravity_height_and_angle_within_tight_tolerances():
    depth, height, angle, plane, down = room()
    c = H.hha_channels(np.round(depth * 1000) / 1000)
    inside = interior(plane, 4)          # the 7x7 normal windows lie on one plane
    assert degrees_between(c["gravity"], down) < 0.5
    assert np.abs(c["height"] - height)[inside].max() < 1.0                  # cm
    assert np.percentile(np.abs(c["angle"] - angle)[inside], 99) < 1.5     # degrees
    assert not c["filled"].any()


def test_noise_and_holes_stay_within_the_stated_tolerances():
    depth, height, angle, plane, down = room()
    mm = noisy(depth)
    c = H.hha_channels(mm / 1000)
    valid = mm > 0
    inside = interior(plane, 4) & valid
    assert degrees_between(c["gravity"], down) < 1.0
    height_error = np.abs(c["height"] - height)[inside]
    assert np.percentile(height_error, 95) < 4.0 and np.median(height_error) < 3.0
    angle_error = np.abs(c["angle"] - angle)[inside]
    assert np.median(angle_error) < 6.0 and np.percentile(angle_error, 90) < 15.0
    # holes inside one surface: filled from the nearest valid depth and normal
    holes = ~valid & interior(plane, 12)
    assert holes.sum() > 2000 and (c["filled"] == ~valid).all()
    assert np.percentile(np.abs(c["height"] - height)[holes], 95) < 5.0
    assert np.median(np.abs(c["angle"] - angle)[holes]) < 8.0
    image = H.hha(mm / 1000)
    assert image.dtype == np.uint8 and image.shape == SHAPE + (3,)


@pytest.mark.parametrize("pitch,roll", [(10.0, 0.0), (35.0, -8.0)])
def test_other_camera_poses(pitch, roll):
    depth, height, angle, plane, down = room(height=1.0, pitch=pitch, roll=roll)
    c = H.hha_channels(np.round(depth * 1000) / 1000)
    inside = interior(plane, 4)
    assert degrees_between(c["gravity"], down) < 0.5
    assert np.abs(c["height"] - height)[inside].max() < 1.0
    assert np.percentile(np.abs(c["angle"] - angle)[inside], 99) < 1.5


def test_encoding_channels_and_disparity_are_exact():
    depth, height, angle, plane, _ = room()
    mm = np.round(depth * 1000)
    mm[0, :] = np.arange(640) * 13 + 500           # a row of depths from 0.5 m to 8.8 m
    image = H.hha(mm / 1000)
    # disparity: 31000 / max(depth in cm, 100), rounded half up, in integers
    z = np.maximum(mm.astype(np.int64), 1000)
    expected = np.minimum((2 * 310000 + z) // (2 * z), 255)
    assert (image[..., 0] == expected).all()
    c = H.hha_channels(mm / 1000)
    assert (image[..., 1] == H.to_byte(c["height"])).all()
    assert (image[..., 2] == H.to_byte(c["angle"] + 38)).all()
    inside = interior(plane, 4)
    floor, wall = inside & (angle == 0), inside & (angle == 90)
    assert np.median(image[..., 2][floor]) == 38 and np.median(image[..., 2][wall]) == 128


def test_ties_round_up_as_matlab_uint8():
    assert list(H.to_byte([77.5, 77.49999999999999, 0.4, -3, 300.2])) == [78, 78, 0, 0, 255]


def test_ground_defaults_to_130_cm_below_the_camera_when_no_floor_is_seen():
    # a level camera facing a wall 1.5 m away sees nothing lower than 73 cm below it
    depth = np.full(SHAPE, 1.5)
    c = H.hha_channels(depth)
    row = int(round(H.NYUD_INTRINSICS[3]))
    assert np.allclose(c["height"][row], 130.0 - (row - H.NYUD_INTRINSICS[3]) / H.NYUD_INTRINSICS[1] * 150,
                       atol=1e-6)
    assert degrees_between(c["gravity"], H.CAMERA_DOWN) < 1e-6
    assert np.allclose(c["angle"], 90.0)


def test_intrinsics_and_bad_inputs():
    assert H.parse_intrinsics("500,501,320,240") == (500.0, 501.0, 320.0, 240.0)
    for bad in ("500,501,320", "a,b,c,d", "0,1,2,3", "500,501,320,nan"):
        with pytest.raises(Exception, match="--intrinsics"):
            H.parse_intrinsics(bad)
    with pytest.raises(InputError, match="fewer than 3 valid"):
        H.hha_channels(np.zeros((20, 20)))


def write_png16(path, mm):
    Image.fromarray(mm.astype(np.uint16)).save(path)


def run(*args):
    return subprocess.run([sys.executable, "-m", "data.hha", *args], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT))


def test_cli_png_folder_and_mat_stack(tmp_path):
    depth, *_ = room(shape=(120, 160), intrinsics=(130.0, 130.0, 80.0, 60.0))
    mm = noisy(depth)[:120, :160]
    (tmp_path / "in").mkdir()
    write_png16(tmp_path / "in" / "a.png", mm)
    scipy.io.savemat(tmp_path / "in" / "b.mat", {"depths": np.stack([mm / 1000, mm / 1000], -1)})
    r = run(str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--intrinsics", "130,130,80,60",
            "--mat-var", "depths")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b_0001.png", "b_0002.png"]
    a = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert a.shape == (120, 160, 3) and a.dtype == np.uint8
    assert (a == H.hha(mm / 1000, (130.0, 130.0, 80.0, 60.0))).all()
    assert (np.asarray(Image.open(tmp_path / "out" / "b_0002.png")) == a).all()


def test_cli_nyud_split_feeds_the_nyud_layer(tmp_path):
    root = tmp_path / "nyud"
    (root / "data" / "depth").mkdir(parents=True)
    (root / "test.txt").write_text("5001\n5002\n")
    depth, *_ = room(shape=(96, 128), intrinsics=(104.0, 104.0, 64.0, 48.0))
    for key in ("5001", "5002"):
        write_png16(root / "data" / "depth" / f"img_{key}.png", np.round(depth * 1000))
    r = run("--nyud", str(root), "--split", "test", "--intrinsics", "104,104,64,48")
    assert r.returncode == 0, r.stderr
    stored = np.asarray(Image.open(root / "data" / "hha" / "img_5001.png"))
    reader = NYUDReader.from_param_str(json.dumps(dict(root=str(root), split="test", tops=["hha"],
                                                       n_classes=40)))
    blob = reader.load_hha(reader.path("hha", "5001"))
    # the layer reads the PNG's channels in stored order: disparity, height, angle
    mean = np.asarray(NYUD_HHA_MEAN, np.float32)[:, None, None]
    assert np.array_equal(blob + mean, stored.transpose(2, 0, 1).astype(np.float32))
    assert (stored == H.hha(np.round(depth * 1000) / 1000, (104.0, 104.0, 64.0, 48.0))).all()


def test_cli_errors_are_one_line(tmp_path):
    r = run(str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not found" in r.stderr and r.stderr.count("\n") == 1
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "eight.png")
    r = run(str(tmp_path / "eight.png"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "16-bit" in r.stderr
    r = run(str(tmp_path / "eight.png"), "--out", str(tmp_path / "o"), "--intrinsics", "1,2")
    assert r.returncode == 2 and "--intrinsics" in r.stderr
    scipy.io.savemat(tmp_path / "d.mat", {"depths": np.ones((8, 8))})
    r = run(str(tmp_path / "d.mat"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--mat-var" in r.stderr
    write_png16(tmp_path / "holes.png", np.zeros((8, 8)))
    r = run(str(tmp_path / "holes.png"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "fewer than 3 valid" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")
    (tmp_path / "both").mkdir()
    write_png16(tmp_path / "both" / "d.png", np.full((8, 8), 1500))
    scipy.io.savemat(tmp_path / "both" / "d.mat", {"depths": np.ones((8, 8))})
    r = run(str(tmp_path / "both"), "--out", str(tmp_path / "o"), "--mat-var", "depths")
    assert r.returncode == 2 and "would both write d.png" in r.stderr


def test_cli_checks_out_before_reading_any_depth(tmp_path):
    """--out naming a regular file, or the folder of the depth PNGs (whose
    HHA PNGs of the same names would replace them), is refused in one line,
    exit 2, with nothing written."""
    depth, *_ = room(shape=(24, 32), intrinsics=(26.0, 26.0, 16.0, 12.0))
    (tmp_path / "in").mkdir()
    write_png16(tmp_path / "in" / "a.png", np.round(depth * 1000))
    before = (tmp_path / "in" / "a.png").read_bytes()
    (tmp_path / "file").write_text("x")
    for out, words in ((tmp_path / "file", "is a file; expected a directory"),
                       (tmp_path / "in", f"is the depth input {tmp_path / 'in'}; refusing to overwrite")):
        r = run(str(tmp_path / "in"), "--out", str(out))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"python -m data.hha: error: --out {out} ") and words in r.stderr
    root = tmp_path / "nyud"
    (root / "data" / "depth").mkdir(parents=True)
    (root / "test.txt").write_text("1\n")
    write_png16(root / "data" / "depth" / "img_1.png", np.round(depth * 1000))
    r = run("--nyud", str(root), "--out", str(root / "data" / "depth"))
    depth_dir = root / "data" / "depth"
    assert r.returncode == 2 and f"is the --nyud input {depth_dir};" in r.stderr and r.stderr.count("\n") == 1
    assert os.listdir(tmp_path / "in") == ["a.png"] and (tmp_path / "in" / "a.png").read_bytes() == before
    assert os.listdir(root / "data") == ["depth"] and (tmp_path / "file").read_text() == "x"

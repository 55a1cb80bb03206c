"""Test-time augmentation in solvers.infer on the narrow colour FCN of
test_infer (red -> person, blue -> aeroplane)."""
import numpy as np
import pytest
from PIL import Image

from net_specs import NetConfig
from solvers.inference import predictor as infer, tta
from tests.test_infer import AEROPLANE, PERSON, run_cli, uniform, voc_weights  # noqa: F401


def two_colours(h, w):
    image = uniform(h, w, (255, 0, 0))
    image[:, w // 2:] = (0, 0, 255)
    return image


def test_plain_flags_are_the_plain_predictor_bit_for_bit(voc_weights):  # noqa: F811
    plain = infer.Predictor.from_model(NetConfig.of("voc-fcn32s", width=1 / 16), voc_weights)
    flagged = infer.Predictor.from_model(NetConfig.of("voc-fcn32s", width=1 / 16), voc_weights, scales=(1.0,), flip=False)
    image = two_colours(70, 90)
    (a,), (b,) = plain.predict([image]), flagged.predict([image])
    assert np.array_equal(a[""][0], b[""][0]) and np.array_equal(a[""][1], b[""][1])


def test_augmented_prediction_at_the_input_size_and_mirror_consistent(voc_weights):  # noqa: F811
    predictor = infer.Predictor.from_model(NetConfig.of("voc-fcn32s", width=1 / 16), voc_weights,
                                           scales=(0.5, 0.75, 1.0, 1.25, 1.5), flip=True)
    image = two_colours(70, 90)
    labels, probs = predictor.segment(image)
    assert labels.shape == (70, 90) and probs.shape == (21, 70, 90)
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert (labels[:, :16] == PERSON).all() and (labels[:, -16:] == AEROPLANE).all()
    mirrored_labels, mirrored_probs = predictor.segment(np.ascontiguousarray(image[:, ::-1]))
    assert np.allclose(mirrored_probs, probs[:, :, ::-1], atol=1e-5)


def test_scaled_copies_over_max_pixels_go_through_tiles(voc_weights, monkeypatch):  # noqa: F811
    predictor = infer.Predictor.from_model(NetConfig.of("voc-fcn32s", width=1 / 16), voc_weights, max_pixels=96 * 96,
                                           scales=(1.0, 1.5), flip=False)
    stitched = []
    real = infer.stitching.stitched
    monkeypatch.setattr(infer.stitching, "stitched", lambda *a, **k: stitched.append(1) or real(*a, **k))
    labels, probs = predictor.segment(two_colours(80, 96))      # 1.5x: 120 x 144 > 96 x 96
    assert stitched == [1] and labels.shape == (80, 96)
    assert (labels[:, :16] == PERSON).all() and (labels[:, -16:] == AEROPLANE).all()


def test_cli_flags(voc_weights, tmp_path):  # noqa: F811
    Image.fromarray(two_colours(40, 60)).save(tmp_path / "x.png")
    proc = run_cli("voc-fcn32s", voc_weights, tmp_path / "x.png", "--out", tmp_path / "out", "--width", "1/16",
                   "--scales", "0.75,1,1.25", "--flip", "--save-scores")
    assert proc.returncode == 0, proc.stderr
    scores = np.load(tmp_path / "out" / "x_scores.npy")
    assert scores.shape == (21, 40, 60) and np.allclose(scores.sum(axis=0), 1, atol=1e-5)
    proc = run_cli("voc-fcn32s", voc_weights, tmp_path / "x.png", "--out", tmp_path / "o2", "--width", "1/16",
                   "--flip", "--downscale")
    assert proc.returncode == 2 and "--downscale" in proc.stderr
    proc = run_cli("voc-fcn32s", voc_weights, tmp_path / "x.png", "--out", tmp_path / "o3", "--width", "1/16",
                   "--scales", "0,1")
    assert proc.returncode == 2 and "--scales" in proc.stderr


def test_is_plain_default_of_the_flags():
    assert tta.is_plain(tta.PLAIN, False)
    with pytest.raises(ValueError):
        tta.parse_scales("1,x")

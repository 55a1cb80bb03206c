"""solvers.score's report.html and test-time augmentation on a real Caffe FCN
with known outputs (the colour fixtures of test_score: each image one
colour, the net predicts the class its colour maps to)."""
import json
import os

import numpy as np
import pytest

from PIL import Image

from solvers.scoring import cli as score
from tests.test_eval_published import _run, voc_setup  # noqa: F401  (the fixture)
from tests.test_report_html import Numbers, lookup
from net_specs import NetConfig
from tests.test_score import COLOUR_HIST, cli_net, colour_setup  # noqa: F401  (the fixture)

# red_all2: all right (IU 1); green_half1: class 1 right, class 0 predicted 1 (IUs 0 and 0.5);
# blue_void0: the unvoided half right (IU 1)
PER_IMAGE_MEAN_IU = [1.0, 0.25, 1.0]


def test_score_cli_writes_report_html_beside_scores_json(colour_setup, monkeypatch, tmp_path):  # noqa: F811
    model, dataset, weights, root = colour_setup
    monkeypatch.setattr(score, "resolve_args", cli_net(model, dataset))
    curves = tmp_path / "metrics.jsonl"
    curves.write_text(json.dumps({"iteration": 5, "loss": 0.7, "mean_iu": 0.5}) + "\n")
    out = tmp_path / "m" / "scores.json"
    rc = score.main([model.name, weights, "--root", root, "--width", "0.0625", "--out", str(out),
                     "--curves", str(curves)])
    assert rc == 0
    doc = json.loads(out.read_text())
    images = doc["heads"]["label"]["images"]
    assert [r["mean_iu"] for r in images] == PER_IMAGE_MEAN_IU
    assert [r["n_pixels"] for r in images] == [1600, 1600, 800]
    files = sorted(os.listdir(out.parent))
    assert "report.html" in files and "curves.png" in files and "label-confusion.png" in files
    assert "label-worst-1.png" in files and "label-best-1.png" in files
    parser = Numbers()
    parser.feed((out.parent / "report.html").read_text())
    assert parser.numbers
    for key, exact, _ in parser.numbers:
        assert json.loads(exact) == lookup(doc, key)
    # the worst image is green_half1, the second of the split
    assert "heads/label/images/1/mean_iu" in {k for k, _, _ in parser.numbers}


def test_score_cli_curves_file_is_checked_before_scoring(colour_setup, monkeypatch, tmp_path, capsys):  # noqa: F811
    model, dataset, weights, root = colour_setup
    monkeypatch.setattr(score, "resolve_args", cli_net(model, dataset))
    rc = score.main([model.name, weights, "--root", root, "--width", "0.0625",
                     "--out", str(tmp_path / "s.json"), "--curves", str(tmp_path / "none.jsonl")])
    assert rc == 2 and "none.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("scales,flip,max_pixels", [
    ((1.0,), True, None), ((0.5, 1.0, 1.5), True, None), ((3.0,), False, 96 * 96)])
def test_tta_scoring_through_the_deploy_net(colour_setup, scales, flip, max_pixels):  # noqa: F811
    """Single-colour images: every copy predicts the same class everywhere, so
    the confusion matrix is the plain one -- through the deploy net, mirrored
    copies, rescaled copies, and (120 x 120 copies over a 96 x 96 budget) tiles."""
    model, dataset, weights, root = colour_setup
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    result = score.score_model(NetConfig(model, dataset, width=1 / 16), weights, scales=scales, flip=flip, **kwargs)
    np.testing.assert_array_equal(result["heads"]["score"]["hist"], COLOUR_HIST)
    assert result["loss"] is None and result["losses"] == {}


def test_no_tta_is_the_plain_scoring(colour_setup):  # noqa: F811
    model, dataset, weights, root = colour_setup
    plain = score.score_model(NetConfig(model, dataset, width=1 / 16), weights)
    same = score.score_model(NetConfig(model, dataset, width=1 / 16), weights, scales=(1.0,), flip=False)
    assert json.dumps(plain, sort_keys=True) == json.dumps(same, sort_keys=True) and plain["loss"] > 1


def test_eval_published_writes_each_models_report_with_tta(voc_setup, tmp_path):  # noqa: F811
    root, weights_dir, released = voc_setup
    out = tmp_path / "published" / "rows.json"
    proc = _run("solvers.eval_published", "voc-fcn16s", "--root", root, "--weights-dir", weights_dir,
                "--width", "1/16", "--out", str(out), "--scales", "0.75,1", "--flip")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())
    folder = tmp_path / "published" / "voc-fcn16s"
    doc = json.loads((folder / "scores.json").read_text())
    assert row["mean_iu"]["label"] == pytest.approx(100 * doc["heads"]["label"]["mean_iu"])
    assert [r["id"] for r in doc["heads"]["label"]["images"]] == ["2011_000001", "2011_000002", "2011_000003"]
    assert (folder / "report.html").exists() and (folder / "label-worst-1.png").exists()
    assert doc["tta"] == {"scales": [0.75, 1.0], "flip": True}
    assert "test-time augmentation: scales 0.75,1, flip" in proc.stdout
    # the gallery shows the VOC image itself: the mean added back, RGB
    picture = np.asarray(Image.open(folder / "label-best-1.png").convert("RGB"))
    best = doc["heads"]["label"]["images"].index(max(doc["heads"]["label"]["images"],
                                                     key=lambda r: (r["mean_iu"], r["pixel_acc"])))
    voc = np.asarray(Image.open(os.path.join(root, "JPEGImages", f"2011_00000{best + 1}.jpg")).convert("RGB"))
    h, w = voc.shape[:2]
    assert np.abs(picture[:h, :w].astype(int) - voc).max() <= 1

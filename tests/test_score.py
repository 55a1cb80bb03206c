"""solvers.score: confusion matrices and metrics by hand, score_net on real
Caffe nets with known outputs, the whole-split scorer and its CLI."""
import json
import math
import os
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2

from net_specs import MODELS, NetConfig, custom_dataset, get_dataset
from net_specs.datasets import VOC_MEAN, Source
from net_specs.models import TEMPLATES, for_dataset
from solvers.scoring import cli as score
from solvers.scoring.cli import ScoreError, fast_hist, metrics, score_net
from netio.errors import WeightsError
from tests import seg_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
nan = float("nan")


def assert_metric(value, expected):
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------ fast_hist

def test_fast_hist_by_hand():
    label = np.array([0, 0, 1, 1, 2, 255, 3, -1, 1])
    pred = np.array([0, 1, 1, 1, 0, 2, 0, 2, 2])
    # counted pairs (truth, pred): (0,0) (0,1) (1,1) (1,1) (2,0) (1,2); 255, 3 and -1 ignored
    expected = np.array([[1, 1, 0],
                         [0, 2, 1],
                         [1, 0, 0]])
    hist = fast_hist(label, pred, 3)
    np.testing.assert_array_equal(hist, expected)
    assert hist.dtype == np.int64


def test_fast_hist_float_blobs_any_shape():
    """Caffe label blobs are float N x 1 x H x W; predictions N x H x W."""
    label = np.array([[[[0., 255.], [1., 1.]]]], np.float32)
    pred = np.array([[[0, 0], [1, 0]]])
    np.testing.assert_array_equal(fast_hist(label.reshape(pred.shape), pred, 2),
                                  [[1, 0], [1, 1]])


def test_fast_hist_everything_ignored():
    np.testing.assert_array_equal(fast_hist(np.full(5, 255), np.zeros(5, int), 4),
                                  np.zeros((4, 4)))


def test_fast_hist_rejects_bad_input():
    with pytest.raises(ValueError, match="predictions"):
        fast_hist(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="size"):
        fast_hist(np.array([0, 1]), np.array([0]), 3)


# -------------------------------------------------------------------- metrics

def test_metrics_by_hand_with_absent_class():
    # class 3 is absent from truth and prediction: nan, out of every mean
    hist = np.array([[3, 1, 0, 0],
                     [0, 2, 0, 0],
                     [1, 0, 1, 0],
                     [0, 0, 0, 0]])
    m = metrics(hist)
    assert_metric(m["pixel_acc"], 6 / 8)
    assert_metric(m["mean_acc"], (3 / 4 + 2 / 2 + 1 / 2) / 3)
    ius = [3 / (4 + 4 - 3), 2 / (2 + 3 - 2), 1 / (2 + 1 - 1)]
    assert_metric(m["mean_iu"], sum(ius) / 3)
    assert_metric(m["fw_iu"], 4 / 8 * ius[0] + 2 / 8 * ius[1] + 2 / 8 * ius[2])
    for got, want in zip(m["per_class_iu"], ius + [nan]):
        assert_metric(got, want)
    for got, want in zip(m["per_class_acc"], [3 / 4, 1.0, 1 / 2, nan]):
        assert_metric(got, want)
    assert m["n_pixels"] == 8 and m["n_classes_counted"] == 3


def test_metrics_match_reference_formulas():
    """The reference's nanmean formulas, on a random matrix with empty classes."""
    rng = np.random.RandomState(0)
    hist = rng.randint(0, 50, (6, 6)).astype(float)
    hist[4, :] = 0
    hist[:, 4] = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        mean_acc = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        mean_iu = np.nanmean(iu)
        freq = hist.sum(1) / hist.sum()
        fw = (freq[freq > 0] * iu[freq > 0]).sum()
    m = metrics(hist)
    for key, want in (("pixel_acc", acc), ("mean_acc", mean_acc), ("mean_iu", mean_iu), ("fw_iu", fw)):
        assert m[key] == pytest.approx(want)


def test_predicted_but_absent_class_and_present_only():
    # class 1 never occurs in the truth but is predicted once: IU 0
    hist = np.array([[2, 1, 0],
                     [0, 0, 0],
                     [0, 0, 1]])
    every = metrics(hist)
    present = metrics(hist, present_only=True)
    assert every["per_class_iu"] == present["per_class_iu"] == [2 / 3, 0.0, 1.0]
    assert_metric(every["mean_iu"], (2 / 3 + 0 + 1) / 3)          # reference: counts class 1
    assert_metric(present["mean_iu"], (2 / 3 + 1) / 2)            # only classes in the truth
    assert_metric(every["mean_acc"], (2 / 3 + 1) / 2)
    assert_metric(present["mean_acc"], every["mean_acc"])
    assert every["n_classes_counted"] == 3 and present["n_classes_counted"] == 2
    assert present["present_only"] and not every["present_only"]
    assert_metric(present["fw_iu"], every["fw_iu"])


def test_metrics_warning_free_even_when_empty():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            m = metrics(np.zeros((3, 3)))
            metrics(np.array([[0, 0], [0, 5]]), present_only=True)
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert math.isnan(m[key])
    assert all(math.isnan(x) for x in m["per_class_iu"])
    assert m["n_pixels"] == 0


def test_metrics_rejects_non_square():
    with pytest.raises(ValueError):
        metrics(np.zeros((2, 3)))


# ---------------------------------------------- score_net on a real Caffe net

# Two iterations of fixed blobs: labels, predictions (argmax of the scores)
# and a loss value per iteration. 7 is out of range for 3 classes.
FIXED = [
    dict(label=[[0, 1, 255], [2, 2, 7]], pred=[[0, 2, 1], [2, 1, 0]], loss=0.5,
         geo_label=[[0, 0, 1], [1, 255, 1]], geo_pred=[[0, 1, 1], [1, 0, 0]]),
    dict(label=[[1, 1, 0], [0, 255, 2]], pred=[[1, 0, 0], [0, 2, 2]], loss=1.5,
         geo_label=[[1, 1, 1], [0, 0, 0]], geo_pred=[[1, 1, 1], [0, 0, 1]]),
]
# Counted (truth, pred) pairs, iteration 0: (0,0) (1,2) (2,2) (2,1);
# iteration 1: (1,1) (1,0) (0,0) (0,0) (2,2)
FIXED_HIST = np.array([[3, 0, 0],
                       [1, 1, 1],
                       [0, 1, 2]])
# geo (2 classes): it 0: (0,0) (0,1) (1,1) (1,1) (1,0); it 1: (1,1)x3 (0,0)x2 (0,1)
FIXED_GEO_HIST = np.array([[3, 2],
                           [1, 5]])


def one_hot_scores(pred, n):
    pred = np.asarray(pred)
    scores = np.zeros((n,) + pred.shape, np.float32)
    for c in range(n):
        scores[c] = (pred == c) * (1.0 + c) - 0.25 * c      # argmax == pred, not just 0/1
    return scores


class FixedBlobsLayer(caffe.Layer):
    """Tops score, label, loss[, score_geo, label_geo]: FIXED[i] at forward i,
    batched `batch` copies (param_str JSON: {"batch": N, "drop": [labels made 255]})."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str or "{}")
        self.batch = params.get("batch", 1)
        self.drop = params.get("drop", [])
        self.nan_at = params.get("nan_at")     # the forward whose scores are NaN
        self.i = 0

    def reshape(self, bottom, top):
        n = self.batch
        shapes = [(n, 3, 2, 3), (n, 1, 2, 3), (1,), (n, 2, 2, 3), (n, 1, 2, 3)]
        for k in range(len(top)):
            top[k].reshape(*shapes[k])

    def forward(self, bottom, top):
        case = FIXED[self.i % len(FIXED)]
        top[0].data[...] = one_hot_scores(case["pred"], 3)[None]
        if self.i == self.nan_at:
            top[0].data[0, 0, 0, 0] = np.nan
        label = np.array(case["label"], np.float32)
        label[np.isin(label, self.drop)] = 255
        top[1].data[...] = label[None, None]
        top[2].data[...] = case["loss"]
        if len(top) > 3:
            top[3].data[...] = one_hot_scores(case["geo_pred"], 2)[None]
            top[4].data[...] = np.array(case["geo_label"], np.float32)[None, None]
        self.i += 1

    def backward(self, top, propagate_down, bottom):
        pass


def fixed_net(tmp_path, geo=False, batch=1, drop=(), nan_at=None):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="data", type="Python")
    layer.top.extend(["score", "label", "loss"] + (["score_geo", "label_geo"] if geo else []))
    layer.python_param.module = "tests.test_score"
    layer.python_param.layer = "FixedBlobsLayer"
    layer.python_param.param_str = json.dumps({"batch": batch, "drop": list(drop), "nan_at": nan_at})
    path = tmp_path / "fixed.prototxt"
    path.write_text(str(net))
    return caffe.Net(str(path), caffe.TEST)


def test_score_net_one_head(tmp_path):
    net = fixed_net(tmp_path)
    calls = []
    result = score_net(net, 2, [("score", "label", 3)], progress=lambda i, n: calls.append((i, n)))
    head = result["heads"]["score"]
    np.testing.assert_array_equal(head["hist"], FIXED_HIST)
    expected = metrics(FIXED_HIST)
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert head[key] == pytest.approx(expected[key])
    assert head["pixel_acc"] == pytest.approx(6 / 9)
    assert head["mean_iu"] == pytest.approx((3 / 4 + 1 / 4 + 2 / 4) / 3)
    assert result["loss"] == pytest.approx(1.0)             # (0.5 + 1.5) / 2
    assert result["losses"] == {"loss": pytest.approx(1.0)}
    assert result["n_iter"] == 2 and calls == [(1, 2), (2, 2)]


def test_score_net_two_heads_present_only_per_head(tmp_path):
    # semantic truth 2 -> 255 (class 2 predicted, never true); 4 iterations
    # cycle FIXED twice: every count doubles, the metrics do not change
    net = fixed_net(tmp_path, geo=True, drop=[2])
    result = score_net(net, 4, [("score", "label", 3, True), ("score_geo", "label_geo", 2)],
                       present_only=False)
    sem, geo = result["heads"]["score"], result["heads"]["score_geo"]
    np.testing.assert_array_equal(sem["hist"], 2 * np.array([[3, 0, 0], [1, 1, 1], [0, 0, 0]]))
    assert sem["present_only"] and sem["n_classes_counted"] == 2
    assert sem["per_class_iu"][2] == 0.0
    assert sem["mean_iu"] == pytest.approx((3 / 4 + 1 / 3) / 2)
    np.testing.assert_array_equal(geo["hist"], 2 * FIXED_GEO_HIST)
    assert not geo["present_only"]
    assert geo["pixel_acc"] == pytest.approx(8 / 11)
    assert geo["mean_iu"] == pytest.approx((3 / 6 + 5 / 8) / 2)


def test_score_net_present_only_drops_predicted_absent_class(tmp_path):
    # truth 2 -> 255: class 2 is still predicted but never in the ground truth
    net = fixed_net(tmp_path, drop=[2])
    hist = np.array([[3, 0, 0],
                     [1, 1, 1],
                     [0, 0, 0]])
    every = score_net(net, 2, [("score", "label", 3)])["heads"]["score"]
    present = score_net(net, 2, [("score", "label", 3)], present_only=True)["heads"]["score"]
    np.testing.assert_array_equal(every["hist"], hist)
    np.testing.assert_array_equal(present["hist"], hist)
    assert every["per_class_iu"] == pytest.approx([3 / 4, 1 / 3, 0.0])
    assert every["mean_iu"] == pytest.approx((3 / 4 + 1 / 3 + 0) / 3)
    assert present["mean_iu"] == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert every["mean_acc"] == present["mean_acc"] == pytest.approx((1 + 1 / 3) / 2)


def test_score_net_batches(tmp_path):
    net = fixed_net(tmp_path, batch=2)
    head = score_net(net, 2, [("score", "label", 3)])["heads"]["score"]
    np.testing.assert_array_equal(head["hist"], 2 * FIXED_HIST)


def test_score_net_errors(tmp_path):
    net = fixed_net(tmp_path)
    with pytest.raises(ValueError, match="no blob 'nope'"):
        score_net(net, 1, [("nope", "label", 3)])
    with pytest.raises(ValueError, match="expected N x 5"):
        score_net(net, 1, [("score", "label", 5)])
    with pytest.raises(ValueError, match="n_iter"):
        score_net(net, 0, [("score", "label", 3)])


# ------------------------------------------- the whole-split scorer and CLI

COLOUR_MAPPING = {"score_fr": {0: 0, 1: 1, 2: 2}}      # blue -> 0, green -> 1, red -> 2
# red_all2: 1600 px (2,2); green_half1: 800 (1,1) + 800 (0,1); blue_void0: 800 (0,0), 800 void
COLOUR_HIST = np.array([[800, 800, 0, 0],
                        [0, 800, 0, 0],
                        [0, 0, 1600, 0],
                        [0, 0, 0, 0]])


@pytest.fixture()
def colour_setup(tmp_path):
    """A 4-class custom dataset served by ColourSplitLayer, and colour weights."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "val.txt").write_text("red_all2\ngreen_half1\nblue_void0\n")
    (root / "small.txt").write_text("red_all2\n")
    dataset = custom_dataset(4, VOC_MEAN, root=str(root), class_names=("b", "g", "r", "unused"))
    dataset = replace(dataset, val=Source("tests.seg_fixtures.ColourSplitLayer", str(root), "val"))
    model = for_dataset(TEMPLATES["fcn32s"], dataset.name)
    weights = tmp_path / "colour.caffemodel"
    seg_fixtures.make_weights(model, weights, COLOUR_MAPPING, dataset=dataset)
    return model, dataset, str(weights), str(root)


def cli_net(model, dataset):
    """A stand-in for the CLI's resolve_args: the fixture's model and dataset
    with the command line's --width and --root."""
    return lambda args, *_: NetConfig(model, dataset, width=args.width, root=args.root)


def test_score_model_whole_split(colour_setup):
    model, dataset, weights, root = colour_setup
    progress = []
    result = score.score_model(NetConfig(model, dataset, width=1 / 16), weights,
                               progress=lambda i, n: progress.append(i))
    assert result["n_iter"] == 3 and progress == [1, 2, 3]      # from the layer's indices
    head = result["heads"]["score"]
    np.testing.assert_array_equal(head["hist"], COLOUR_HIST)
    assert head["pixel_acc"] == pytest.approx(3200 / 4000)
    assert head["mean_acc"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert head["mean_iu"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert head["fw_iu"] == pytest.approx(0.4 * 0.5 + 0.2 * 0.5 + 0.4 * 1)
    assert math.isnan(head["per_class_iu"][3])
    assert set(result["losses"]) == {"loss"} and result["loss"] > 1     # green_half1 is half wrong


def test_score_model_reports_loss(colour_setup):
    model, dataset, weights, root = colour_setup
    result = score.score_model(NetConfig(model, dataset, width=1 / 16).with_val_split("small"), weights)
    assert result["n_iter"] == 1 and result["split"] == "small"
    assert set(result["losses"]) == {"loss"}
    assert result["loss"] == pytest.approx(0, abs=1e-3)        # red_all2 is scored right by far
    np.testing.assert_array_equal(np.diag(result["heads"]["score"]["hist"]), [0, 0, 1600, 0])


def test_cli_table_and_json(colour_setup, monkeypatch, capsys, tmp_path):
    model, dataset, weights, root = colour_setup
    monkeypatch.setattr(score, "resolve_args", cli_net(model, dataset))
    out = tmp_path / "m" / "metrics.json"
    rc = score.main([model.name, weights, "--root", root, "--width", "0.0625",
                     "--out", str(out), "--every", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "scored 1/3" in captured.err and "scored 3/3" in captured.err
    assert "mean IU" in captured.out and "66.67" in captured.out
    assert "unused" in captured.out and "n/a" in captured.out    # absent class named, no IU
    doc = json.loads(out.read_text())
    head = doc["heads"]["label"]
    assert doc["n_images"] == 3 and doc["split"] == "val"
    assert head["mean_iu"] == pytest.approx(2 / 3)
    assert head["per_class_iu"][3] is None                       # nan -> null
    assert head["class_names"] == ["b", "g", "r", "unused"]
    assert not [p for p in os.listdir(out.parent) if p.endswith(".tmp")]


def test_score_net_refuses_non_finite_scores(tmp_path):
    with pytest.raises(score.ScoreError, match="non-finite values .NaN/inf. at image 2 of 2"):
        score_net(fixed_net(tmp_path, nan_at=1), 2, [("score", "label", 3)])


def test_cli_checks_out_before_scoring(colour_setup, monkeypatch, capsys, tmp_path):
    """--out naming the weights or a file of the dataset is refused before any image is scored."""
    model, dataset, weights, root = colour_setup
    monkeypatch.setattr(score, "resolve_args", cli_net(model, dataset))
    split = os.path.join(root, "val.txt")
    before = {p: open(p, "rb").read() for p in (weights, split)}
    for out, words in ((weights, "is the --weights input"),
                       (split, f"is inside the dataset directory {root}"),
                       (tmp_path, "is a directory; expected a file name")):
        rc = score.main([model.name, weights, "--root", root, "--width", "0.0625",
                         "--out", str(out), "--every", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and words in err, err
        assert "scored" not in err
    assert {p: open(p, "rb").read() for p in before} == before


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "solvers.score", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_missing_and_corrupt_weights(tmp_path):
    missing = tmp_path / "nowhere.caffemodel"
    proc = run_cli("voc-fcn32s", str(missing))
    assert proc.returncode == 2
    assert "nowhere.caffemodel" in proc.stderr and "not found" in proc.stderr
    corrupt = tmp_path / "corrupt.caffemodel"
    corrupt.write_bytes(b"\xff\xfe this is not a protobuf \x00\x01" * 10)
    proc = run_cli("voc-fcn32s", str(corrupt))
    assert proc.returncode == 2 and "corrupt.caffemodel" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("no-such-model", str(corrupt))
    assert proc.returncode == 2 and "unknown model" in proc.stderr


def test_weights_shape_mismatch_is_an_error_not_an_abort(colour_setup, tmp_path):
    model, dataset, weights, root = colour_setup
    wide = replace(dataset, heads=(replace(dataset.heads[0], n_classes=5),))
    other = tmp_path / "other.caffemodel"
    seg_fixtures.make_weights(model, other, {"score_fr": {0: 0}}, dataset=wide)
    with pytest.raises(WeightsError, match="score_fr.*shape"):
        score.score_model(NetConfig(model, dataset, width=1 / 16), str(other))


def test_missing_dataset_directory(colour_setup, tmp_path):
    model, dataset, weights, root = colour_setup
    with pytest.raises(ScoreError, match="dataset directory not found"):
        score.score_model(NetConfig(model, dataset, width=1 / 16, root=str(tmp_path / "absent")), weights)


# ------------------------------------------- SIFT Flow: present-only wiring

@pytest.fixture()
def siftflow_setup(tmp_path):
    """SIFT Flow fixture whose semantic truth holds classes 1 and 2 only,
    and weights of siftflow-fcn32s (width 1/16) that predict class 0
    everywhere: class 0 is in prediction but never in the ground truth."""
    from data.layouts import write_siftflow
    import scipy.io
    root = str(tmp_path / "siftflow")
    write_siftflow(root, [("a", (24, 24)), ("b", (24, 20))], split="test")
    sem_dir = os.path.join(root, "SemanticLabels", "spatial_envelope_256x256_static_8outdoorcategories")
    for k, name in enumerate(sorted(os.listdir(sem_dir))):
        sem = np.random.RandomState(k).randint(2, 4, (24, 24 if k == 0 else 20)).astype(np.float64)
        scipy.io.savemat(os.path.join(sem_dir, name), {"S": sem, "names": np.array(["x"])})
    model = MODELS["siftflow-fcn32s"]
    dataset = model.get_dataset()
    weights = tmp_path / "siftflow.caffemodel"
    seg_fixtures.make_weights(model, weights, {}, dataset=dataset)
    return model, dataset, str(weights), root


def test_siftflow_records_say_semantic_head_present_only():
    heads = {h.suffix: h.present_only for h in get_dataset("siftflow").heads}
    assert heads == {"_sem": True, "_geo": False}
    assert not any(h.present_only for name in ("voc", "nyud", "pascalcontext")
                   for h in get_dataset(name).heads)


def test_score_model_siftflow_present_only_wiring(siftflow_setup):
    model, dataset, weights, root = siftflow_setup
    default = score.score_model(NetConfig(model, dataset, width=1 / 16, root=root), weights)
    sem, geo = default["heads"]["score_sem"], default["heads"]["score_geo"]
    assert sem["present_only"] and not geo["present_only"]
    assert sem["n_classes_counted"] == 2                    # classes 1, 2: the ground truth's
    assert sem["mean_iu"] == pytest.approx(0.0)
    every = score.score_model(NetConfig(model, dataset, width=1 / 16, root=root), weights, present_only=False)
    sem_all = every["heads"]["score_sem"]
    assert not sem_all["present_only"] and sem_all["n_classes_counted"] == 3   # + predicted class 0
    np.testing.assert_array_equal(sem_all["hist"], sem["hist"])
    assert geo["mean_iu"] == pytest.approx(every["heads"]["score_geo"]["mean_iu"], nan_ok=True)


def test_cli_all_classes_flag_reaches_the_scorer(siftflow_setup, tmp_path):
    model, dataset, weights, root = siftflow_setup
    docs = {}
    for flag in ([], ["--all-classes"]):
        out = tmp_path / f"m{len(flag)}.json"
        rc = score.main(["siftflow-fcn32s", weights, "--root", root, "--width", "1/16",
                         "--out", str(out), *flag])
        assert rc == 0
        docs[bool(flag)] = json.loads(out.read_text())["heads"]
    assert docs[False]["sem"]["present_only"] and docs[False]["sem"]["n_classes_counted"] == 2
    assert not docs[True]["sem"]["present_only"] and docs[True]["sem"]["n_classes_counted"] == 3
    assert not docs[False]["geo"]["present_only"] and not docs[True]["geo"]["present_only"]


def test_run_scores_siftflow_semantic_head_present_only(tmp_path):
    from solvers.training.run import Run
    run = Run("siftflow-fcn32s", out_dir=str(tmp_path / "run"))       # nothing built or written
    assert run.heads() == [("score_sem", "sem", 33, True), ("score_geo", "geo", 3, False)]
    assert not (tmp_path / "run").exists()
    voc = Run("voc-fcn32s", out_dir=str(tmp_path / "voc"))
    assert voc.heads() == [("score", "label", 21, False)]

"""`solvers.eval_published` end to end, offline: fixture VOC data in the real
on-disk layout, a stand-in of the released file already in the weights
directory (verified by parsing, not downloaded), our scorer's numbers beside
the paper's."""
import json
import os
import subprocess
import sys

import pytest

from data.layouts import write_voc
from solvers.scoring.eval_published import format_rows
from surgery.published import get_released
from tests.published_fixtures import write_stand_in

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2", OPENBLAS_NUM_THREADS="1",
           http_proxy="http://127.0.0.1:9")


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def voc_setup(tmp_path):
    root = str(tmp_path / "VOC2011")
    write_voc(root, [("2011_000001", (40, 48)), ("2011_000002", (36, 30)),
                     ("2011_000003", (50, 42))], split="seg11valid")
    released = get_released("voc-fcn16s")       # no published checksum: parsed
    weights_dir = tmp_path / "published"
    weights_dir.mkdir()
    write_stand_in(released.model, released.path(str(weights_dir)), width=1 / 16, scale=0.3)
    return root, str(weights_dir), released


def test_eval_published_prints_paper_ours_difference(voc_setup, tmp_path):
    root, weights_dir, released = voc_setup
    out = tmp_path / "rows.json"
    proc = _run("solvers.eval_published", "voc-fcn16s", "--root", root, "--weights-dir",
                weights_dir, "--width", "1/16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "already present and verified" in proc.stderr         # no download was attempted
    (row,) = json.loads(out.read_text())
    assert (row["split"], row["images"], row["paper_images"]) == ("seg11valid", 3, 736)
    assert row["paper_mean_iu"] == 65.0
    # the same numbers as the scoring CLI on the same weights and data
    score_json = tmp_path / "score.json"
    ref = _run("solvers.score", "voc-fcn16s", released.path(weights_dir), "--root", root,
               "--split", "seg11valid", "--width", "1/16", "--out", str(score_json))
    assert ref.returncode == 0, ref.stderr
    expected = 100 * json.loads(score_json.read_text())["heads"]["label"]["mean_iu"]
    assert row["mean_iu"]["label"] == pytest.approx(expected)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("voc-fcn16s "))
    assert line.split() == ["voc-fcn16s", "seg11valid", "3", "of", "736", "label", "65.0",
                            f"{expected:.2f}", f"{expected - 65.0:+.2f}"]
    assert "not a reproduction check" in proc.stdout             # 3 of 736 images


def test_format_rows_two_heads_and_unstated_scores():
    row = {"model": "siftflow-fcn16s", "split": "test", "images": 200, "paper_images": 200,
           "paper_mean_iu": None, "mean_iu": {"sem": 39.25, "geo": None}}
    lines = format_rows([row])
    assert lines[1].split() == ["siftflow-fcn16s", "test", "200", "of", "200", "sem",
                                "not", "stated", "39.25"]
    assert lines[2].split()[-3:] == ["not", "stated", "n/a"]
    assert not any("reproduction" in l for l in lines)


def test_eval_published_user_errors_are_one_line(voc_setup, tmp_path):
    root, weights_dir, _ = voc_setup
    fcn8s = get_released("voc-fcn8s")
    write_stand_in(fcn8s.model, fcn8s.path(weights_dir), width=1 / 16)
    cases = [
        (["voc-fcn-googlenet"], "no released weights for 'voc-fcn-googlenet'"),
        (["voc-fcn8s", "nyud-fcn32s-color", "--root", root], "--root names one dataset"),
        (["voc-fcn16s", "--root", str(tmp_path / "absent"), "--weights-dir", weights_dir,
          "--width", "1/16"], "dataset directory not found"),
        (["voc-fcn32s", "--root", root, "--weights-dir", weights_dir],
         "cannot download http://dl.caffe.berkeleyvision.org/fcn32s-heavy-pascal.caffemodel"),
        # FCN-8s has a published sha1: a file that does not match it is not used
        (["voc-fcn8s", "--root", root, "--weights-dir", weights_dir],
         "cannot download http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel"),
    ]
    for args, message in cases:
        proc = _run("solvers.eval_published", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("solvers.eval_published: error:") and message in last, last
        if args[:2] == ["voc-fcn8s", "--root"]:
            assert "does not match the published c449ea74" in proc.stderr

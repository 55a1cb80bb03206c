"""The demo's quality floor (demo.check) and robustness grid (demo.robustness)."""
import json
import os
import subprocess
import sys

import pytest

from demo import check, robustness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_results(path, ius):
    stages = {s: dict(pixel_acc=0.9, mean_acc=0.8, mean_iu=v, fw_iu=0.85) for s, v in ius.items()}
    path.write_text(json.dumps(dict(chance_mean_iu=0.15, stages=stages,
                                    seconds=dict(classifier=90, fcn32s=80, fcn16s=50, fcn8s=50,
                                                 total=300))))
    return str(path)


@pytest.mark.parametrize("ius, code, words", [
    (dict(fcn32s=0.40, fcn16s=0.55, fcn8s=0.65), 0, "ok: FCN-8s mean IU 0.650"),
    (dict(fcn32s=0.30, fcn16s=0.50, fcn8s=0.54), 1, "FCN-8s mean IU 0.540 < 0.55"),
    (dict(fcn32s=0.50, fcn16s=0.55, fcn8s=0.58), 1, "by +0.080 < 0.10"),
])
def test_check_floor(tmp_path, capsys, ius, code, words):
    assert check.main([write_results(tmp_path / "r.json", ius)]) == code
    out = capsys.readouterr()
    assert words in (out.out if code == 0 else out.err)


def test_check_thresholds_are_flags(tmp_path):
    path = write_results(tmp_path / "r.json", dict(fcn32s=0.40, fcn16s=0.5, fcn8s=0.65))
    assert check.main([path, "--min-mean-iu", "0.70"]) == 1
    assert check.main([path, "--min-gain", "0.30"]) == 1


def test_check_bad_input_is_one_line(tmp_path, capsys):
    assert check.main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(stages=dict(fcn32s=dict(mean_iu=0.3)))))
    assert check.main([str(bad)]) == 2
    assert "stages.fcn8s.mean_iu" in capsys.readouterr().err
    bad.write_text("{not json")
    assert check.main([str(bad)]) == 2


def rows(values):
    return [dict(threads=t, seed=s, fcn32s=a, fcn16s=b, fcn8s=c, gain=c - a, seconds=300)
            for (t, s), (a, b, c) in zip([(1, 1), (1, 2), (2, 1), (2, 2)], values)]


def test_summary_ranges_and_targets():
    good = rows([(0.40, 0.60, 0.70), (0.42, 0.62, 0.72), (0.41, 0.61, 0.71), (0.43, 0.63, 0.74)])
    summary, checks = robustness.summarise(good)
    assert summary["fcn8s"] == pytest.approx(dict(min=0.70, max=0.74, spread=0.04))
    assert summary["gain"] == pytest.approx(dict(min=0.30, max=0.31, spread=0.01))
    assert all(checks.values())
    spread = rows([(0.40, 0.60, 0.70), (0.42, 0.62, 0.78)])
    _, checks = robustness.summarise(spread)
    assert [ok for name, ok in checks.items() if "spread" in name] == [False]
    low = rows([(0.50, 0.55, 0.59), (0.52, 0.56, 0.61)])
    _, checks = robustness.summarise(low)
    assert list(checks.values()) == [False, False, True]


def test_report_and_readme_section(tmp_path):
    grid = rows([(0.40, 0.60, 0.70), (0.42, 0.62, 0.72)])
    summary, checks = robustness.summarise(grid)
    machine = dict(date="2026-01-01T00:00:00", cpu="Test CPU", cores=2, loadavg=(1.0, 2.0, 3.0))
    md = robustness.report(grid, summary, checks, machine, "python -m demo.robustness")
    assert "2026-01-01" in md and "Test CPU (2 cores" in md
    assert "| 1 | 2 | 0.420 | 0.620 | 0.720 | +0.300 | 300 |" in md
    assert "| range | | 0.400–0.420 | 0.600–0.620 | 0.700–0.720 | +0.300–+0.300 | |" in md
    assert "- met: FCN-8s mean IU >= 0.60 in every run" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{robustness.README_BEGIN}\nold numbers\n{robustness.README_END}\nrest\n")
    path = write_results(tmp_path / "r.json", dict(fcn32s=0.40, fcn16s=0.6, fcn8s=0.7))
    section = robustness.reference_section(json.load(open(path)), md, summary)
    assert section.startswith("Over the grid below, mean IU ranges over FCN-32s 0.40–0.42, "
                              "FCN-16s 0.60–0.62, FCN-8s 0.70–0.72; FCN-8s beats FCN-32s by 0.30–0.30.")
    robustness.update_readme(str(readme), section)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{robustness.README_END}\nrest\n")
    assert "old numbers" not in text and "| FCN-8s | 0.900 | 0.800 | 0.700 | 0.850 | 50 |" in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        robustness.update_readme(str(readme), section)


def test_robustness_rejects_bad_lists(capsys):
    with pytest.raises(SystemExit) as exc:
        robustness.main(["--threads", "0,x"])
    assert exc.value.code == 2
    assert "--threads: expected comma-separated positive integers" in capsys.readouterr().err


@pytest.mark.slow
def test_robustness_grid_of_quick_demos(tmp_path):
    """Two real (quick) demo runs in children with pinned BLAS threads, and the table."""
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, "-m", "demo.robustness", "--quick", "--threads", "1",
                           "--seeds", "5,6", "--out", str(out)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    for seed in (5, 6):
        results = json.load(open(out / f"threads1-seed{seed}" / "results.json"))
        assert results["seed"] == seed and results["blas_threads"] == "1"
        assert 0.0 <= results["classifier_accuracy"] <= 1.0
    # Different seeds: different synthetic data.
    a, b = (json.load(open(out / f"threads1-seed{s}" / "results.json"))["chance_mean_iu"] for s in (5, 6))
    assert a != b
    table = (out / "robustness.md").read_text()
    assert table.count("\n| 1 | ") == 2 and "| spread |" in table
    assert json.load(open(out / "robustness.json"))["runs"][1]["seed"] == 6


def test_finished_only_reports_what_finished_and_names_the_rest(tmp_path, capsys):
    """A grid cut short by time: the finished runs make the table, the
    missing ones are named, and the targets cannot read as met."""
    out = tmp_path / "grid"
    for (threads, seed), ius in {(1, 5): (0.40, 0.60, 0.90), (1, 6): (0.41, 0.61, 0.91),
                                 (2, 5): (0.42, 0.62, 0.92)}.items():
        (out / f"threads{threads}-seed{seed}").mkdir(parents=True)
        write_results(out / f"threads{threads}-seed{seed}" / "results.json",
                      dict(zip(robustness.STAGES, ius)))
    args = ["--threads", "1,2", "--seeds", "5,6", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        robustness.main(args + ["--finished-only"])
    assert exc.value.code == 2 and "needs --reuse" in capsys.readouterr().err
    assert robustness.main(args + ["--reuse", "--finished-only"]) == 1
    table = (out / "robustness.md").read_text()
    assert table.count("\n| ") == 1 + 3 + 2                # header, 3 runs, range, spread
    assert "| 2 | 5 | 0.420 | 0.620 | 0.920 | +0.500 | 300 |" in table
    assert "- MISSED: the full grid (1 of 4 runs not finished: threads 2 seed 6)" in table
    assert "- met: FCN-8s mean IU >= 0.60 in every run" in table
    assert not (out / "threads2-seed6").exists()            # nothing was run


def test_classifier_accuracy_counts_held_out_hits(tmp_path):
    """A classifier that always answers one class scores that class's share
    of the held-out scenes: the batching, reshaping and argmax are right."""
    import caffe
    import numpy as np

    from demo import __main__ as demo_main
    from demo.layers import class_batch
    from net_specs import classifier

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(classifier("vgg16-ilsvrc", width=demo_main.WIDTH, n_classes=4, batch=1)))
    net = caffe.Net(str(deploy), caffe.TEST)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = 0
    net.params["fc8"][1].data[2] = 5.0          # every scene is class 2 (a ring)
    weights = tmp_path / "always-ring.caffemodel"
    net.save(str(weights))
    n, seed = 40, 7
    _, labels = class_batch(np.random.RandomState([seed, 1]), n, **demo_main.CLASSIFIER_CROPS)
    expected = float(np.mean(labels == 2))
    assert 0 < expected < 1
    assert demo_main.classifier_accuracy(str(deploy), str(weights), seed, n=n, batch=16) == expected


def test_classifier_crops_are_centred_and_segmentation_scenes_are_not():
    """The stand-in classifier sees its object near the middle (what fc6
    learns in the FCN: the class at a window's centre); the segmentation
    scenes put objects anywhere."""
    import numpy as np

    from demo import synthetic

    def centres(centred):
        rng, out = np.random.RandomState(3), []
        for _ in range(30):
            _, label = synthetic.render(rng, 224, 224, n_objects=1, classes=[1], scale=1.0, centred=centred)
            yy, xx = np.nonzero(label == 1)
            out.append(max(abs(yy.mean() - 111.5), abs(xx.mean() - 111.5)))
        return np.array(out)

    limit = synthetic.CENTRE_JITTER * 224 + 1
    assert centres(True).max() <= limit
    assert (centres(False) > limit).mean() > 0.5

"""common.outputs: output paths checked before work, failed writes as one line."""
import errno
import os
import subprocess
import sys

import caffe
import numpy as np
import pytest
from caffe import layers as L

from common import atomic, outputs
from common.atomic import atomic_write
from common.outputs import OutputError, check_dir, check_file, check_free_space
from netio.nets import save_weights
from tests.disk_fixtures import fill, tmpfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Check failed" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr


def test_check_file_refuses_what_cannot_be_a_new_file(tmp_path):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"weights")
    link = tmp_path / "link.caffemodel"
    link.symlink_to(weights)
    with pytest.raises(OutputError, match="is a directory; expected a file"):
        check_file(str(tmp_path))
    with pytest.raises(OutputError, match=f"{weights} is a file, not a directory"):
        check_file(str(weights / "sub" / "out.json"))
    with pytest.raises(OutputError, match="is the weights input"):
        check_file(str(link), [("weights", str(weights))])
    with pytest.raises(OutputError, match="is the weights input"):
        check_file(str(tmp_path / "." / "w.caffemodel"), [("weights", str(link))])
    assert check_file(str(tmp_path / "new" / "deeper" / "out.json"), [("weights", str(weights))])
    assert weights.read_bytes() == b"weights"


def test_check_dir_refuses_a_file_and_accepts_a_new_directory(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file; expected a directory"):
        check_dir(str(f))
    with pytest.raises(OutputError, match=f"{f} is a file, not a directory"):
        check_dir(str(f / "sub"))
    assert check_dir(str(tmp_path / "a" / "b"))


def test_read_only_file_system_is_refused_up_front(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        if ro is None:                              # cannot mount: the probe says no
            ro = str(tmp_path)
            monkeypatch.setattr(outputs.os, "access", lambda *a, **k: False)
        with pytest.raises(OutputError, match="cannot write into .*(read-only|permission)"):
            check_file(os.path.join(ro, "out.json"))
        with pytest.raises(OutputError, match="cannot write into"):
            check_dir(os.path.join(ro, "run"))


def test_full_disk_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "small") as small:
        target = os.path.join(small or str(tmp_path), "metrics.json")
        with open(target, "w") as f:
            f.write("previous good")
        if small is None:                           # cannot mount: the rename fails as ENOSPC would
            small = str(tmp_path)

            def full(*a):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(atomic.os, "replace", full)
        else:
            fill(small)
        with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
            atomic_write(target, "x" * (1 << 20))
        assert open(target).read() == "previous good"
        assert not [n for n in os.listdir(small) if n.endswith(".tmp")]


def big_net(tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1024]))
    n.fc = L.InnerProduct(n.data, num_output=1024)          # 4 MiB of weights
    path = tmp_path / "big.prototxt"
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TEST)


def test_caffe_save_on_a_full_disk_is_refused_before_caffe_aborts(tmp_path, monkeypatch):
    net = big_net(tmp_path)
    with tmpfs(tmp_path / "small") as small:
        if small is None:                           # cannot mount: a fake free-space probe
            small = str(tmp_path / "small")
            monkeypatch.setattr(outputs, "free_bytes", lambda d: 2 << 20)
        target = os.path.join(small, "final.caffemodel")
        with open(target, "wb") as f:
            f.write(b"previous")
        with pytest.raises(OutputError, match=f"cannot write {target}: .* MiB free"):
            save_weights(net, target)           # without the check Caffe's CHECK kills pytest
        assert open(target, "rb").read() == b"previous"
        assert sorted(os.listdir(small)) == ["final.caffemodel"]
    check_free_space(str(tmp_path / "x"), 1 << 20)          # plenty of room: no error


def test_net_specs_emit_refuses_a_file_as_out_directory(tmp_path):
    f = tmp_path / "models"
    f.write_text("not a directory")
    assert_one_line(run("net_specs", "emit", "voc-fcn32s", "--width", "1/16", "--out", f),
                    f"--out {f} is a file; expected a directory")
    assert_one_line(run("net_specs", "emit", "voc-fcn32s", "--width", "1/16", "--out", f / "sub"),
                    f"{f} is a file, not a directory")
    assert f.read_text() == "not a directory"


def test_export_onnx_refuses_its_weights_file_as_out(tmp_path):
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"\x0a\x03abc")
    r = run("surgery", "export-onnx", "voc-fcn32s", weights, "--width", "1/16", "--out", weights)
    assert_one_line(r, f"--out {weights} is the --weights input")
    assert weights.read_bytes() == b"\x0a\x03abc"


def test_surgery_convert_into_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    from tests.test_surgery import fcn32_spec, vgg_net, randomize, write
    src_proto = write(tmp_path / "vgg.prototxt", vgg_net())
    net = caffe.Net(src_proto, caffe.TEST)
    randomize(net)
    src_weights = str(tmp_path / "vgg.caffemodel")
    net.save(src_weights)
    dst_proto = write(tmp_path / "train.prototxt", fcn32_spec())
    with tmpfs(tmp_path / "small", "1m") as small:
        args = ["convert", "--src-proto", src_proto, "--src-weights", src_weights,
                "--dst-proto", dst_proto]
        if small is None:                           # cannot mount: in-process, a fake probe
            from surgery.__main__ import main
            out = str(tmp_path / "fcn.caffemodel")
            monkeypatch.setattr(outputs, "free_bytes", lambda d: 4 << 10)
            assert main(args + ["--out", out]) == 2
            assert f"cannot write {out}" in capsys.readouterr().err
            assert not os.path.exists(out)
            return
        fill(small, leave=4 << 10)
        out = os.path.join(small, "fcn.caffemodel")
        assert_one_line(run("surgery", *args, "--out", out), f"cannot write {out}")
        assert sorted(os.listdir(small)) == ["filler"]


def test_data_tools_check_their_output_directories(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line(run("data.sbdd_to_png", tmp_path, "--out", f),
                    f"--out {f} is a file; expected a directory")
    assert_one_line(run("data.fetch", "nyud", "--dir", f / "sub"), f"{f} is a file, not a directory")
    assert_one_line(run("data.fetch", "nyud", "--dir", tmp_path, "--extract", f),
                    f"--extract {f} is a file; expected a directory")
    assert f.read_text() == "x"

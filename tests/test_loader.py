"""The loader's worker processes inside real Caffe nets: same sequence as
loading in the layer, errors naming files, and no process or shared memory
left behind however the Caffe process ends."""
import gc
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data import layouts as F
from layers import lifetime
from layers.io import DataError
from layers.loader import Loader, LoaderError, RemoteTraceback, _portable
from solvers.training.run import data_layer
from tests.test_layers import MEAN, ROOT, base_params, make_net, serve

# sizes that differ in every example; the last two need a larger slot (> 1 MiB)
SIZES = [("a", (37, 53)), ("b", (41, 29)), ("c", (23, 31)), ("d", (300, 400)), ("e", (375, 500))]
LOADER = dict(workers=2, queue_depth=2)


def memfd_maps(pid="self"):
    """The loader's shared-memory mappings in process `pid`."""
    with open(f"/proc/{pid}/maps") as f:
        return [line for line in f if "memfd:fcn-loader" in line]


def shm_entries():
    return set(os.listdir("/dev/shm"))


def alive(pid):
    """Running (a zombie has exited: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids, timeout=15):
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


# ---- every format: the loader serves exactly what the layer would load -----------
def voc(tmp):
    return "voc", "VOCSegDataLayer", base_params(F.write_voc(str(tmp / "VOC"), SIZES)), ["data", "label"]


def sbdd(tmp):
    return "sbdd", "SBDDSegDataLayer", base_params(F.write_sbdd(str(tmp / "SBD"), SIZES)), ["data", "label"]


def folder(tmp):
    return ("folder", "FolderSegDataLayer", base_params(F.write_folder(str(tmp / "f"), SIZES), n_classes=5),
            ["data", "label"])


def nyud(tmp):
    tops = ["color", "hha", "label"]
    return ("nyud", "NYUDSegDataLayer",
            base_params(F.write_nyud(str(tmp / "nyud"), SIZES), "trainval", tops=tops, n_classes=40), tops)


def siftflow(tmp):
    root = F.write_siftflow(str(tmp / "sift"), SIZES)
    return "siftflow", "SIFTFlowSegDataLayer", base_params(root, "trainval", n_classes=33), ["data", "sem", "geo"]


def pascalcontext(tmp):
    root, voc_root = F.write_pascalcontext(str(tmp / "context"), str(tmp / "VOC2010"), SIZES)
    return ("pascalcontext", "PASCALContextSegDataLayer",
            base_params(root, voc_root=voc_root, n_classes=60), ["data", "label"])


@pytest.mark.parametrize("dataset", [voc, sbdd, folder, nyud, siftflow, pascalcontext])
def test_loader_serves_the_sequence_the_layer_loads(tmp_path, dataset):
    module, layer, params, tops = dataset(tmp_path)
    params.update(randomize=True, seed=7)
    direct = make_net(tmp_path, module, layer, dict(params, prefetch=False), tops)
    loaded = make_net(tmp_path, module, layer, dict(params, **LOADER), tops)
    expected, got = serve(direct, 12, tops), serve(loaded, 12, tops)
    assert [k for k, _ in got] == [k for k, _ in expected]
    assert sorted(k for k, _ in got[:5]) == [k for k, _ in SIZES]
    for (_, want), (_, have) in zip(expected, got):
        for top in tops:
            assert have[top].shape == want[top].shape
            np.testing.assert_array_equal(have[top], want[top])
    # the two large examples grew some slots beyond the first MiB
    assert max(int(l.split()[0].split("-")[1], 16) - int(l.split()[0].split("-")[0], 16)
               for l in memfd_maps()) >= 2 << 20
    loaded.layers[0].close_stream()


def test_skip_restarts_the_loader_where_the_sequence_is(tmp_path):
    _, _, params, tops = voc(tmp_path)
    params.update(randomize=True, seed=3)
    direct = make_net(tmp_path, "voc", "VOCSegDataLayer", dict(params, prefetch=False), tops)
    loaded = make_net(tmp_path, "voc", "VOCSegDataLayer", dict(params, **LOADER), tops)
    first = loaded.layers[0].stream.pids
    serve(loaded, 3, tops)
    loaded.layers[0].skip(7)
    assert wait_gone(first) == []
    keys = [k for k, _ in serve(direct, 16, tops)]
    assert [k for k, _ in serve(loaded, 9, tops)] == keys[7:16]
    loaded.layers[0].close_stream()


# ---- errors -------------------------------------------------------------------
def test_error_in_a_worker_names_the_file_and_the_stream_goes_on(tmp_path):
    root = F.write_voc(str(tmp_path / "VOC"), SIZES[:3])
    jpg = os.path.join(root, "JPEGImages", "b.jpg")
    data = open(jpg, "rb").read()
    open(jpg, "wb").write(data[: len(data) // 2])
    net = make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, **LOADER), ["data", "label"])
    net.forward()
    with pytest.raises(DataError, match="truncated") as e:
        net.forward()
    assert str(e.value).startswith(jpg) and e.value.path == jpg
    assert isinstance(e.value.__cause__, RemoteTraceback) and "read_rgb" in str(e.value.__cause__)
    net.forward()
    assert net.layers[0].key == "c"
    net.layers[0].close_stream()


def test_a_dead_worker_is_reported_with_the_files_it_was_loading(tmp_path):
    root = F.write_voc(str(tmp_path / "VOC"), SIZES[:3])
    net = make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, workers=1, queue_depth=1),
                   ["data", "label"])
    net.forward()                                   # a; b is loading or loaded
    (pid,) = net.layers[0].stream.pids
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(LoaderError, match=r"killed by signal 9 \(SIGKILL\)") as e:
        for _ in range(3):
            net.forward()
    key = net.layers[0].stream._asked[0]
    assert f"while loading example {key!r}" in str(e.value)
    assert os.path.join(root, "JPEGImages", key + ".jpg") in str(e.value)
    with pytest.raises(LoaderError):                # it stays failed rather than skipping
        net.forward()
    net.layers[0].close_stream()
    assert wait_gone([pid]) == []


def test_an_unpicklable_error_still_reaches_the_caffe_process_as_text():
    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}: {b}")

    same = DataError("/x/y.png", "bad")
    assert _portable(same) is same
    converted = _portable(Odd("/x/z.jpg", "odd"))
    assert type(converted) is RuntimeError and str(converted) == "Odd: /x/z.jpg: odd"


def _refuse():
    raise RuntimeError("this reader cannot be rebuilt here")


class Unbuildable:
    """Pickles in the Caffe process, fails to unpickle in a worker."""

    def __reduce__(self):
        return _refuse, ()


def test_a_reader_that_cannot_be_rebuilt_in_a_worker_fails_clearly():
    loader = Loader(Unbuildable(), iter(range(10)), workers=1, depth=2, name="TestLayer:train")
    with pytest.raises(LoaderError, match="TestLayer:train: loader worker 0: cannot rebuild the reader "
                                          "in a worker process .RuntimeError: this reader cannot"):
        loader.next()
    with pytest.raises(LoaderError):
        loader.next()
    pids = loader.pids
    loader.close()
    assert wait_gone(pids, timeout=0) == []


@pytest.mark.parametrize("key, value", [("workers", -1), ("workers", 33), ("workers", "2"),
                                        ("workers", True), ("queue_depth", 0), ("queue_depth", 17)])
def test_bad_loader_params_name_the_key(tmp_path, key, value):
    root = F.write_voc(str(tmp_path / "VOC"), SIZES[:1])
    with pytest.raises(ValueError, match=f"param_str key '{key}': expected an integer"):
        make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, **{key: value}), ["data", "label"])


# ---- nothing left behind --------------------------------------------------------
def test_close_and_a_destroyed_net_leave_no_process_or_memory(tmp_path):
    root = F.write_voc(str(tmp_path / "VOC"), SIZES)
    before = shm_entries()
    net = make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, **LOADER), ["data", "label"])
    other = make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, **LOADER), ["data", "label"])
    serve(net, 6, ["data"])
    serve(other, 2, ["data"])
    pids, other_pids = net.layers[0].stream.pids, other.layers[0].stream.pids
    assert len(pids) == 2 and all(alive(p) for p in pids + other_pids) and memfd_maps()
    net.layers[0].close_stream()
    net.layers[0].close_stream()                    # idempotent
    assert wait_gone(pids, timeout=0) == []         # close() reaps before returning
    del other                                       # pycaffe keeps the layer; the sweep closes it
    gc.collect()
    lifetime.sweep()
    assert wait_gone(other_pids, timeout=0) == []
    gc.collect()
    assert memfd_maps() == [] and shm_entries() <= before


CHILD = """
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)   # as from a terminal, even if started in the background
sys.path.insert(0, {root!r})
os.environ["GLOG_minloglevel"] = "2"
import caffe
from caffe import layers as L
caffe.set_mode_cpu()
n = caffe.NetSpec()
n.data, n.label = L.Python(module="layers.voc", layer="VOCSegDataLayer", ntop=2,
                           param_str={params!r})
open({proto!r}, "w").write(str(n.to_proto()))
net = caffe.Net({proto!r}, caffe.TRAIN)
net.forward()
print(json.dumps(dict(pid=os.getpid(), workers=net.layers[0].stream.pids)), flush=True)
how = {how!r}
if how == "hard_exit":
    os._exit(3)
while how != "exit":
    net.forward()
"""


@pytest.mark.parametrize("how, status", [("exit", 0), ("hard_exit", 3), ("ctrl_c", -signal.SIGINT), ("sigkill", -signal.SIGKILL),
                                         ("bad_file", 1)])
def test_no_orphan_or_shared_memory_however_the_process_ends(tmp_path, how, status):
    """A training process in its own session, as in a terminal: Ctrl-C goes to
    its process group; the workers have their own sessions and must leave on
    their own when it exits, is killed, or leaves without cleaning up."""
    root = F.write_voc(str(tmp_path / "VOC"), SIZES[:3])
    bad = os.path.join(root, "JPEGImages", "c.jpg")
    if how == "bad_file":
        open(bad, "wb").write(open(bad, "rb").read()[:100])
    params = json.dumps(base_params(root, **LOADER))
    code = CHILD.format(root=ROOT, params=params, proto=str(tmp_path / "net.prototxt"), how=how)
    before = shm_entries()
    # files, not pipes: the workers inherit them, and waiting for a pipe's
    # end would wait for the workers (which must go by themselves)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as o, open(err, "w") as e:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=o, stderr=e, text=True,
                                 start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not out.read_text() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text(), err.read_text()[-2000:]
    workers = json.loads(out.read_text().splitlines()[0])["workers"]
    assert len(workers) == 2
    if how == "ctrl_c":
        time.sleep(0.5)
        os.killpg(child.pid, signal.SIGINT)
    elif how == "sigkill":
        os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == status, err.read_text()[-2000:]
    if how == "ctrl_c":
        assert "KeyboardInterrupt" in err.read_text()
    if how == "bad_file":
        assert f"layers.io.DataError: {bad}: unreadable or truncated image" in err.read_text()
    assert wait_gone(workers, timeout=10) == []
    assert shm_entries() <= before


# ---- the settings reach the layers ---------------------------------------------
@pytest.mark.parametrize("flag, value, words", [("--workers", "33", "at most 32"), ("--workers", "-1", "at least 0"),
                                                ("--queue-depth", "0", "at least 1"),
                                                ("--queue-depth", "x", "must be an integer")])
def test_solve_refuses_bad_loader_flags_with_one_line(flag, value, words):
    from tests.test_cli import assert_usage_error, run_module
    assert_usage_error(run_module("solvers.solve", "voc-fcn32s", flag, value), flag, words)


def test_run_writes_the_loader_settings_into_both_data_layers(tmp_path):
    from tests.test_solve import make_run
    root = str(tmp_path / "data")
    F.write_voc(root, [("a", (20, 24)), ("b", (18, 16))], n_classes=4, split="train")
    F.write_voc(root, [("a", (20, 24))], n_classes=4, split="val")
    run = make_run(root, tmp_path / "run", workers=2)
    run.commit()
    for phase in ("train", "val"):
        text = (tmp_path / "run" / f"{phase}.prototxt").read_text()
        assert '\\"workers\\": 2' in text and "queue_depth" not in text    # the layer's default depth
    assert len(data_layer(run.solver.net).stream.pids) == 2
    assert len(data_layer(run.solver.test_nets[0]).stream.pids) == 2
    default = make_run(root, tmp_path / "default")
    default.commit()
    assert "workers" not in (tmp_path / "default" / "train.prototxt").read_text()
    assert len(data_layer(default.solver.net).stream.pids) == 1

"""What makes the GPU figures right, checked without a GPU: the device is
chosen before GPU mode, a timed pass is only the GPU's work (no copy back
to the host), memory is read inside the measuring child while its net is
alive, and `make docker-run` gives NCCL and the loader shared memory."""
import os
import subprocess
import sys
import types

import pytest

from bench import common, fcn_speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_set_device_comes_before_set_mode_gpu(monkeypatch):
    """set_mode_gpu first would make a context on GPU 0 before moving to GPU 1."""
    calls = []
    fake = types.SimpleNamespace(set_mode_cpu=lambda: calls.append("cpu"),
                                 set_mode_gpu=lambda: calls.append("gpu"),
                                 set_device=lambda d: calls.append(f"device {d}"))
    monkeypatch.setitem(sys.modules, "caffe", fake)
    common.set_mode(1)
    assert calls == ["device 1", "gpu"]
    calls.clear()
    common.set_mode(None)
    assert calls == ["cpu"]


class RecordingNet:
    """Stands in for a caffe.Net: records which entry points a pass calls."""

    def __init__(self):
        self.layers, self.calls = [object()] * 5, []

    def _forward(self, start, end):
        self.calls.append(("forward", start, end))

    def _backward(self, start, end):
        self.calls.append(("backward", start, end))

    def forward(self):                     # pycaffe's: copies the outputs to the host
        raise AssertionError("net.forward() reads the outputs back to the host")

    backward = forward


def test_a_timed_pass_runs_caffe_and_synchronizes_without_a_copy_back(monkeypatch):
    synced = []
    monkeypatch.setattr(common, "synchronize", synced.append)
    net = RecordingNet()
    common.pass_fn(net, 0, backward=True)()
    assert net.calls == [("forward", 0, 4), ("backward", 4, 0)] and synced == [0]
    net.calls.clear()
    common.pass_fn(net, None)()
    assert net.calls == [("forward", 0, 4)] and synced == [0, None]


def test_gpu_memory_is_read_in_the_child_while_its_net_is_alive(monkeypatch):
    """bench rows take GPU memory from cudaMemGetInfo in the measuring child,
    before the net is built and after the timed passes (the net still held);
    here on the CPU with the probe and the device faked."""
    readings = iter([1000.0, 1800.0])
    monkeypatch.setattr(common, "gpu_memory_used_mb", lambda: next(readings))
    monkeypatch.setattr(common, "set_mode", lambda gpu: None)          # stays on the CPU
    monkeypatch.setattr(common, "synchronize", lambda gpu: None)
    row = fcn_speed.measure("voc-fcn-alexnet", "32x32", "fwd", 1, gpu=0)
    assert row["gpu_used_mb"] == 1800.0 and row["gpu_net_mb"] == 800.0
    assert "gpu_used_mb" not in fcn_speed.measure("voc-fcn-alexnet", "32x32", "fwd", 1)


def test_no_gpu_memory_on_the_cpu_build():
    assert common.gpu_memory_used_mb() is None


def test_docker_run_gives_nccl_shared_memory():
    out = subprocess.run(["make", "-n", "docker-run"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--ipc=host" in out.stdout or "--shm-size" in out.stdout

"""The foundation: real pycaffe with the layers FCN needs, the shared build
script's patches and caching, and the Docker image definition.

The same tests run against the CPU build (`make test`) and against the CUDA
build in CPU mode (`make cuda-check`, which exports CAFFE_BUILD_FLAGS=--cuda
and the CUDA build's CAFFE_CACHE, CUDA_DIR and CUDA_ARCH_BIN)."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P
from caffe.coord_map import crop
from google.protobuf import text_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("Python", "Crop", "Deconvolution", "Eltwise", "SoftmaxWithLoss", "Scale")
BUILD_FLAGS = os.environ.get("CAFFE_BUILD_FLAGS", "").split()
CUDA_BUILD = "--cuda" in BUILD_FLAGS
CAFFE_CACHE = os.environ.get("CAFFE_CACHE", os.path.join(ROOT, ".cache", "caffe"))
PATCHES = sorted(glob.glob(os.path.join(ROOT, "docker", "patches", "*.patch")))


def test_caffe_has_the_layers_fcn_needs():
    have = set(caffe.layer_type_list())
    assert set(REQUIRED) <= have


def toy_fcn():
    """Python data layer -> strided conv -> Deconvolution -> Crop (coord_map) -> loss."""
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module="tests.toy_layers", layer="RampData", ntop=2,
                               param_str=json.dumps(dict(h=21, w=27)))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, stride=2, pad=10,
                           weight_filler=dict(type="gaussian", std=0.1))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.score_fr = L.Convolution(n.relu, num_output=2, kernel_size=1,
                               weight_filler=dict(type="gaussian", std=0.1))
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(
        num_output=2, kernel_size=3, stride=2, bias_term=False,
        weight_filler=dict(type="gaussian", std=0.1)))
    n.score = crop(n.upscore, n.data)
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def toy_solver(tmp_path, base_lr):
    """A solver prototxt in tmp_path that trains toy_fcn() with SGD."""
    net_path = tmp_path / "toy.prototxt"
    net_path.write_text(str(toy_fcn()))
    solver = caffe.proto.caffe_pb2.SolverParameter(
        train_net=str(net_path), base_lr=base_lr, momentum=0.9, lr_policy="fixed",
        max_iter=100, display=0, snapshot_prefix=str(tmp_path / "s"), random_seed=1)
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(text_format.MessageToString(solver))
    return solver_path


def test_sgd_step_with_python_layer_crop_and_deconvolution(tmp_path):
    sgd = caffe.SGDSolver(str(toy_solver(tmp_path, base_lr=0.5)))
    crop_layer = [l for l in toy_fcn().layer if l.name == "score"][0]
    assert list(crop_layer.crop_param.offset) == [10]       # from coord_map, not hand-set
    sgd.step(1)
    first = float(sgd.net.blobs["loss"].data)
    assert sgd.net.blobs["score"].data.shape == (1, 2, 21, 27)
    sgd.step(20)
    last = float(sgd.net.blobs["loss"].data)
    assert np.isfinite(first) and np.isfinite(last)
    assert last < first - 1e-3


def test_build_script_reuses_the_cached_build():
    """The build this interpreter runs on is the one the script would make now."""
    env = dict(os.environ, PYTHON=sys.executable, CAFFE_CACHE=CAFFE_CACHE)
    out = subprocess.run(["bash", os.path.join(ROOT, "docker", "build_caffe.sh"), *BUILD_FLAGS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "up-to-date build found" in out.stderr
    assert "building pycaffe" not in out.stderr


def pristine_archive():
    archives = glob.glob(os.path.join(CAFFE_CACHE, "brocolli-caffe-9.0.2.tar.gz"))
    assert archives, f"no source archive in {CAFFE_CACHE} (the build fetched it)"
    return archives[0]


def test_patches_apply_in_order_to_the_pinned_source(tmp_path):
    subprocess.run(["tar", "xzf", pristine_archive(), "-C", str(tmp_path),
                    "--strip-components=1"], check=True)
    assert [os.path.basename(p)[:4] for p in PATCHES] == [f"{i:04d}" for i in range(1, 14)]
    for path in PATCHES:
        with open(path) as f:
            out = subprocess.run(["patch", "-p1", "--batch", "--forward"], cwd=tmp_path, stdin=f,
                                 capture_output=True, text=True)
        assert out.returncode == 0, f"{os.path.basename(path)}: {out.stdout}{out.stderr}"
        assert "offset" not in out.stdout and "fuzz" not in out.stdout, out.stdout
    io_cpp = (tmp_path / "src/caffe/util/io.cpp").read_text()
    assert "SetTotalBytesLimit(INT_MAX)" in io_cpp and "536870912" not in io_cpp
    assert "cudnnGetConvolutionForwardAlgorithm_v7" in \
        (tmp_path / "src/caffe/layers/cudnn_conv_layer.cpp").read_text()
    assert "prop.clockRate" not in (tmp_path / "src/caffe/common.cpp").read_text()
    # 0007-0009: the shared workspace, the Crop fix, OpenMP (C++ only, not nvcc)
    assert "conv_workspace_cpu" in (tmp_path / "src/caffe/layers/base_conv_layer.cpp").read_text()
    assert "one copy of the whole row" in (tmp_path / "src/caffe/layers/crop_layer.cpp").read_text()
    assert "CXXFLAGS += -fopenmp" in (tmp_path / "Makefile").read_text()
    assert "-fopenmp" not in "".join(l for l in (tmp_path / "Makefile").read_text().splitlines()
                                     if l.startswith("NVCCFLAGS"))
    # 0011: Python layers under one process per GPU; 0012: cuDNN algorithms per shape
    assert "!Caffe::multiprocess()" in \
        (tmp_path / "include/caffe/layers/python_layer.hpp").read_text()
    cudnn_conv = (tmp_path / "src/caffe/layers/cudnn_conv_layer.cpp").read_text()
    assert "if (shapes == algo_shapes_) { return; }" in cudnn_conv
    assert cudnn_conv.index("cudnnDestroy(handle_[g])") < cudnn_conv.index("cudaStreamDestroy(stream_[g])")
    # 0013: oneDNN convolutions (Makefile switch, both oneDNN APIs, the layers' calls)
    assert "LIBRARIES += dnnl" in (tmp_path / "Makefile").read_text()
    assert "#if DNNL_VERSION_MAJOR >= 3" in (tmp_path / "src/caffe/util/onednn_conv.cpp").read_text()
    assert "onednn_backward_data(bottom_data, top_data)" in \
        (tmp_path / "src/caffe/layers/deconv_layer.cpp").read_text()


def test_cache_key_changes_with_a_patch(tmp_path):
    """A changed patch file means a rebuild: the key hashes every patch."""
    def key(docker_dir, cache):
        os.makedirs(cache, exist_ok=True)
        archive = pristine_archive()
        link = os.path.join(cache, os.path.basename(archive))
        if not os.path.exists(link):
            os.symlink(archive, link)
        env = dict(os.environ, PYTHON=sys.executable, CAFFE_CACHE=cache)
        out = subprocess.run(["bash", os.path.join(docker_dir, "build_caffe.sh"), "--stamp"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    docker = tmp_path / "docker"
    shutil.copytree(os.path.join(ROOT, "docker"), docker)
    before = key(str(docker), str(tmp_path / "cache"))
    assert before == key(str(docker), str(tmp_path / "cache"))          # stable
    patch = sorted(docker.glob("patches/*.patch"))[-1]
    patch.write_text("(one more line of description)\n" + patch.read_text())
    assert key(str(docker), str(tmp_path / "cache")) != before


def test_pycaffe_is_the_build_it_claims_to_be():
    """CPU build: no CUDA, cuDNN or NCCL. CUDA build: all three, linked from
    the CUDA directory it was built with, and caffe.NCCL for multi-GPU."""
    lib = os.path.join(os.path.dirname(caffe.__file__), "_caffe.so")
    ldd = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    gpu_libs = ("libcudart.so", "libcublas.so", "libcurand.so", "libcudnn.so", "libnccl.so")
    for name in gpu_libs:
        assert (name in ldd) == CUDA_BUILD, f"{name} in ldd of {lib}: {ldd}"
    assert "not found" not in ldd, ldd
    # oneDNN (patch 0013) wherever install_deps.sh installed libdnnl-dev
    lib_dir = os.path.realpath(os.path.join(os.path.dirname(caffe.__file__), "..", "..", "build", "lib"))
    libcaffe = glob.glob(os.path.join(lib_dir, "libcaffe.so*"))
    assert libcaffe, f"no libcaffe.so in {lib_dir}"
    has_dnnl = "libdnnl.so" in subprocess.run(["ldd", libcaffe[0]], capture_output=True,
                                              text=True).stdout
    assert has_dnnl == os.path.exists("/usr/include/oneapi/dnnl/dnnl.hpp"), libcaffe[0]
    assert hasattr(caffe, "NCCL") == CUDA_BUILD
    if CUDA_BUILD:   # no GPU needed for a communicator id (own process: NCCL starts threads)
        code = ("import caffe\n"
                "a, b = caffe.NCCL.new_uid(), caffe.NCCL.new_uid()\n"
                "assert len(a) == 256 and set(a) <= set('0123456789abcdef') and a != b\n"
                "try:\n    caffe.NCCL(None, a[:-2])\nexcept ValueError as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert "uid must be the str returned by caffe.NCCL.new_uid()" in out.stdout
    # the NCCL patch's process-per-GPU settings exist in both builds
    assert caffe.solver_rank() == 0 and caffe.solver_count() == 1
    assert caffe.proto.caffe_pb2.SolverParameter().layer_wise_reduce is True
    # caffe.io no longer imports scikit-image (not installed here) at import time
    assert "skimage" not in sys.modules


def test_dockerfile_is_lint_clean():
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    out = subprocess.run([hadolint, "--config", os.path.join(ROOT, ".hadolint.yaml"),
                          os.path.join(ROOT, "docker", "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_uses_the_shared_build_script():
    text = open(os.path.join(ROOT, "docker", "Dockerfile")).read()
    assert "docker/build_caffe.sh --cuda" in text
    assert "COPY docker/patches docker/patches" in text
    assert text.count("FROM nvidia/cuda:13.0.") == 1 and "-cudnn-devel-" in text
    assert 'CUDA_ARCH_BIN="80 86 89 90"' in text
    script = open(os.path.join(ROOT, "docker", "build_caffe.sh")).read()
    assert "9b891540183ddc834a02b2bd81b31afae71b2153" in script
    assert "USE_NCCL := 1" in script and "WITH_PYTHON_LAYER := 1" in script
    assert 'echo "USE_CUDNN := $USE_CUDNN"' in script

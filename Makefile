# FCN (Long, Shelhamer, Darrell) on BVLC Caffe. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(CURDIR)/$(VENV)/bin/python
# Python data layers are named `layers.<dataset>` in prototxts: the repo root
# must be importable whenever Caffe runs.
export PYTHONPATH := $(CURDIR)
export PYTHONUNBUFFERED := 1
# BLAS threads (and library, if another beat the system default) as measured by
# bench/blas.py (bench/results/blas-choice.json); written by `make install`.
-include .cache/blas.mk
# `make install CUDA=1` is remembered here (CUDA ?= 1) by later make commands,
# which all depend on install; CUDA=0 switches back to the CPU build.
-include .cache/device.mk

.PHONY: help install deps test-deps venv caffe test test-fast demo demo-robustness prototxts docker-build docker-run bench clean-caffe \
        cuda-check cuda-build gpu-check gpu-kit kit-check distro-check cpu-gtest

help:
	@echo "make install     Debian build deps, .venv with pinned deps, CPU pycaffe (cached)"
	@echo "make install CUDA=1   the same with CUDA 13 + cuDNN 9 + NCCL pycaffe (toolkit from PyPI wheels)"
	@echo "make cuda-check  CI's GPU-less check: CUDA pycaffe (sm_90) in .venv-cuda, fast tests in CPU mode"
	@echo "make gpu-check   on a GPU machine: GPU vs CPU outputs, GPU benchmark, demo on the GPU"
	@echo "make gpu-kit     the relocatable GPU kit (.cache/kit/fcn-gpu-kit.tar.xz, <= 56 MiB; docs/gpu-kit.md)"
	@echo "make kit-check   CI's GPU-less proof that the kit is self-contained (builds it, cached)"
	@echo "make distro-check   CI's Debian 13 check: install, fast tests, CUDA compile in a debootstrapped root (root)"
	@echo "make test        install, then the whole test suite (what CI runs)"
	@echo "make cpu-gtest   BVLC Caffe's gtests of the layers our patches touch, on the CPU build"
	@echo "make demo        install, then the embedded end-to-end demo (synthetic data, CPU)"
	@echo "make demo-robustness   the demo over BLAS threads 1,2 x 3 seeds (~35 min); rewrites docs/demo.md's demo results"
	@echo "make prototxts   emit every model's train/val/deploy prototxt into models/"
	@echo "make docker-build / docker-run   the CUDA image (needs a Docker engine + NVIDIA runtime)"
	@echo "make bench       benchmarks (prints figures)"
	@echo "make eval-published[-MODEL]   score the released caffemodels, paper vs ours"

install: deps venv caffe

deps:
	@bash docker/install_deps.sh

test-deps:
	@bash docker/install_deps.sh --test

# BENCH_DEPS=1 (default) also installs requirements-bench.txt (torch, CPU build)
# for the Caffe/PyTorch equivalence test and benchmark; the Docker image sets 0.
BENCH_DEPS ?= 1
REQS := requirements.txt $(if $(filter 1,$(BENCH_DEPS)),requirements-bench.txt)

$(VENV)/.requirements: $(REQS)
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(addprefix -r ,$(REQS))
	@cat $(REQS) > $@

venv: $(VENV)/.requirements

# CUDA=1: CUDA 13 toolchain, cuBLAS, cuRAND, NCCL and cuDNN 9 from NVIDIA's PyPI
# wheels (docker/cuda_toolkit.sh), Caffe built for CUDA_ARCH_BIN; wheels, toolkit
# and builds are cached under FCN_CACHE, shared by every clone of this user.
# Without CUDA=1, CAFFE_BUILD_FLAGS=--cuda uses the system CUDA (Docker image).
CUDA          ?=
CUDA_ARCH_BIN ?= 80 86 89 90
FCN_CACHE     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fcn-caffe
# $(call cuda_build,PYTHON,ARCHS,CACHE NAME): assemble the toolkit, build, link
define cuda_build
cuda_dir=$$(PYTHON=$(1) FCN_CACHE=$(FCN_CACHE) bash docker/cuda_toolkit.sh) && \
  export CUDA_DIR=$$cuda_dir CUDA_ARCH_BIN="$(2)" CAFFE_CACHE=$(FCN_CACHE)/$(3) \
    CAFFE_BUILD_FLAGS=--cuda PYTHON=$(1) && \
  bash docker/build_caffe.sh --cuda
endef

caffe: venv
ifeq ($(CUDA),1)
	@$(call cuda_build,$(PY),$(CUDA_ARCH_BIN),caffe-cuda)
else
	@PYTHON=$(PY) bash docker/build_caffe.sh $(CAFFE_BUILD_FLAGS)
endif
	@mkdir -p .cache && echo "CUDA ?= $(if $(filter 1,$(CUDA)),1,0)" > .cache/device.mk
	@mkdir -p .cache && $(PY) -m bench.blas --apply --format make > .cache/blas.mk.tmp && mv .cache/blas.mk.tmp .cache/blas.mk

# Where the bench extras (torch, onnx) are not installed -- the Docker image,
# .venv-cuda -- their tests are left out: the torch test by path, the onnx
# tests by marker. TEST_ARGS: more pytest arguments.
NO_EXTRAS_ARGS := --ignore=tests/test_torch_equivalence.py
# BROWSER_TESTS=0 leaves out the report.html test in a headless Chromium (and
# test-deps, which installs one): for Ubuntu containers, where Chromium is a snap.
BROWSER_TESTS ?= 1
empty :=
space := $(empty) $(empty)
LEFT_OUT = $(if $(filter 0,$(BENCH_DEPS)),not_onnx) $(if $(filter 0,$(BROWSER_TESTS)),not_browser)
MARK_TERMS = $(strip $(subst $(space),_,$(1)) $(LEFT_OUT))
MARKS = $(if $(call MARK_TERMS,$(1)),-m '$(subst _, ,$(subst $(space), and ,$(call MARK_TERMS,$(1))))')
TEST_DEPS = install $(if $(filter 0,$(BROWSER_TESTS)),,test-deps)
test: $(TEST_DEPS)
	$(PY) -m pytest -q tests $(call MARKS,) $(if $(filter 0,$(BENCH_DEPS)),$(NO_EXTRAS_ARGS)) $(TEST_ARGS)

test-fast: $(TEST_DEPS)
	$(PY) -m pytest -q tests $(call MARKS,not slow) $(if $(filter 0,$(BENCH_DEPS)),$(NO_EXTRAS_ARGS)) $(TEST_ARGS)

demo: install
	$(PY) -m demo --out runs/demo

demo-robustness: install
	$(PY) -m demo.robustness --readme

prototxts: install
	$(PY) -m net_specs emit --all --out models

bench: install
	@$(MAKE) --no-print-directory install-bench
	$(PY) -m bench $(BENCH_ARGS)

# CI's check of the GPU build on a machine without a GPU: the same toolkit, patched
# source and flags as `make install CUDA=1` (sm_90 only, to save time), built into
# its own .venv-cuda (requirements.txt: no torch or onnx, so their tests are left
# out), then the fast suite against that pycaffe in CPU mode. The build
# script test inside the suite re-runs this very build and must find it cached.
CUDA_VENV := .venv-cuda
CHECK_ARCHS := 90
define cuda_venv
test -x $(CUDA_VENV)/bin/python || $(PYTHON_SYS) -m venv $(CUDA_VENV) && \
  $(CUDA_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
endef
# cuda-check's build (sm_90), for every target that needs it; what follows it with
# && runs in the same shell, with the build's CUDA_DIR, CAFFE_CACHE and flags set.
check_build = $(call cuda_build,$(CURDIR)/$(CUDA_VENV)/bin/python,$(CHECK_ARCHS),caffe-cuda-check)
# The suite runs in the build's own shell: its tests read CAFFE_BUILD_FLAGS,
# CUDA_DIR, CUDA_ARCH_BIN and CAFFE_CACHE (which build they are checking).
cuda-check: deps
	@$(cuda_venv)
	@$(check_build) && \
	  $(CUDA_VENV)/bin/python -m pytest -q tests -m 'not slow and not onnx' $(NO_EXTRAS_ARGS)

# cuda-check's compile alone (what `make distro-check` runs in its Debian 13 root).
cuda-build: deps
	@$(cuda_venv)
	@$(check_build)

# The relocatable GPU kit (docs/gpu-kit.md): the cuda-check build (same toolkit,
# patched source and flags as `make install CUDA=1`, sm_90), Caffe's gtests, a
# Python 3.11 runtime and the project's code in one archive under .cache/kit/.
# kit-check unpacks it elsewhere and proves it self-contained against the CPU
# build (.venv) as reference. Both are cached: a second run takes seconds.
gpu-kit: deps
	@$(cuda_venv)
	@$(check_build) && \
	  bash kit/build.sh

kit-check: install deps
	@$(cuda_venv)
	@$(check_build) && \
	  bash kit/build.sh >/dev/null && PY=$(PY) bash kit/check.sh

# BVLC Caffe's own gtests for every layer our patches touch, on the CPU build
# (the oneDNN convolutions included; gradient checks too), 2 OpenMP threads.
# The binary is built once per Caffe build (kit/gtest_build.sh, as the GPU
# kit's); kit/gtest.py runs it and writes the counts to .cache/cpu-gtest.txt.
CPU_GTEST_SUITES := test_convolution_layer test_deconvolution_layer test_im2col_layer \
  test_pooling_layer test_neuron_layer test_lrn_layer test_softmax_layer \
  test_softmax_with_loss_layer test_crop_layer test_eltwise_layer test_concat_layer \
  test_split_layer test_scale_layer test_inner_product_layer test_net \
  test_gradient_based_solver test_upgrade_proto
CPU_GTEST_SECONDS ?= 900
ifeq ($(CUDA),1)
cpu-gtest:
	@echo "cpu-gtest: the CPU build's tests (run it with CUDA=0)" >&2; exit 2
else
cpu-gtest: install
	@src=$(CURDIR)/.cache/caffe/src-cpu && \
	  bin=$$(bash kit/gtest_build.sh $$src "$$(cat .cache/caffe/stamp-cpu)" .cache/cpu-gtest-build.log \
	    $(CPU_GTEST_SUITES)) && \
	  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 $(PY) -m kit.gtest .cache/cpu-gtest.txt --binary $$bin \
	    --cpu --data-dir $$src --seconds $(CPU_GTEST_SECONDS)
endif

# CI's check of today's Debian (docs/platforms.md): in a debootstrapped Debian 13
# root (cached under FCN_CACHE/distro), a fresh clone of this commit runs
# `make install`, the fast suite and `make cuda-build`. Needs root and debootstrap.
distro-check:
	@bash docker/distro_check.sh

# On a machine with a GPU (after `make install CUDA=1`, or in the Docker image).
gpu-check: install
	$(PY) -m bench.gpu_check $(GPU_CHECK_ARGS)

# Benchmark-only Python deps (torch for bench/torch_ref.py and its test).
.PHONY: install-bench
install-bench: venv
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt

DOCKER_IMAGE ?= fcn-caffe:cuda
docker-build:
	docker build -f docker/Dockerfile -t $(DOCKER_IMAGE) .

# --ipc=host: NCCL and the data loader's processes use /dev/shm, and Docker's
# default 64 MB of it is known to crash NCCL's initialisation.
docker-run:
	docker run --rm -it --gpus all --ipc=host -v $(CURDIR)/datasets:/fcn/datasets -v $(CURDIR)/weights:/fcn/weights -v $(CURDIR)/runs:/fcn/runs $(DOCKER_IMAGE) $(CMD)

clean-caffe:
	rm -rf .cache/caffe

# ---------------------------------------------------------------------------
# The papers' pipelines: data -> ImageNet weights -> surgery -> 32s -> 16s -> 8s
# -> score. `make fcn8s-voc` runs the whole chain; `make -n fcn8s-voc` shows it.
# GPU=N picks a GPU (the Docker image sets GPU=0), CPU=1 forces the CPU,
# ITERS=N shortens every stage.
DEVICE     = $(if $(CPU),--cpu,$(if $(GPU),--gpu $(GPU),--cpu))
ITERS_FLAG = $(if $(ITERS),--iters $(ITERS))
DL         := datasets/downloads
UNPACK     := datasets/_unpacked
VGG16      := weights/VGG_ILSVRC_16_layers.caffemodel
ALEXNET    := weights/bvlc_alexnet.caffemodel

.PHONY: data-voc data-nyud data-siftflow data-pascalcontext weights-vgg16 weights-alexnet

# -- data (each unpacks once, then leaves a .ready marker) --------------------
datasets/pascal/VOC2011/.ready:
	$(PY) -m data.fetch voc2011 --dir $(DL) --extract $(UNPACK)
	mkdir -p datasets/pascal && rm -rf datasets/pascal/VOC2011 && mv $(UNPACK)/VOCdevkit/VOC2011 datasets/pascal/VOC2011
	touch $@
datasets/pascal/VOC2010/.ready:
	$(PY) -m data.fetch voc2010 --dir $(DL) --extract $(UNPACK)
	mkdir -p datasets/pascal && rm -rf datasets/pascal/VOC2010 && mv $(UNPACK)/VOCdevkit/VOC2010 datasets/pascal/VOC2010
	touch $@
datasets/sbdd/dataset/.ready:
	$(PY) -m data.fetch sbd --dir $(DL) --extract $(UNPACK)
	mkdir -p datasets/sbdd && rm -rf datasets/sbdd/dataset && mv $(UNPACK)/benchmark_RELEASE/dataset datasets/sbdd/dataset
	touch $@
datasets/nyud/.ready:
	$(PY) -m data.fetch nyud --dir $(DL) --extract $(UNPACK)
	rm -rf datasets/nyud && mv $(UNPACK)/nyud datasets/nyud
	touch $@
datasets/sift-flow/.ready:
	$(PY) -m data.fetch siftflow --dir $(DL) --extract $(UNPACK)
	rm -rf datasets/sift-flow && mv $(UNPACK)/SiftFlowDataset datasets/sift-flow
	touch $@
datasets/pascal-context/.ready: datasets/pascal/VOC2010/.ready
	$(PY) -m data.fetch pascalcontext pascalcontext-59 --dir $(DL) --extract $(UNPACK)
	mkdir -p datasets/pascal-context && cp -r $(UNPACK)/trainval datasets/pascal-context/ \
	  && cp $(UNPACK)/labels.txt $(DL)/59_labels.txt datasets/pascal-context/
	touch $@

data-voc: install datasets/pascal/VOC2011/.ready datasets/sbdd/dataset/.ready
data-nyud: install datasets/nyud/.ready
data-siftflow: install datasets/sift-flow/.ready
data-pascalcontext: install datasets/pascal-context/.ready

# -- ImageNet weights and surgery ---------------------------------------------
$(VGG16):
	$(PY) -m surgery download vgg16 --dir weights
$(ALEXNET):
	$(PY) -m surgery download alexnet --dir weights
weights-vgg16: install $(VGG16)
weights-alexnet: install $(ALEXNET)
.PHONY: vgg16-fcn
vgg16-fcn: weights/voc-fcn32s-init.caffemodel    # VGG16 convolutionised into FCN-32s

models/%/train.prototxt:
	$(PY) -m net_specs emit $* --out models/$*

# weights/<model>-init.caffemodel: the ILSVRC classifier convolutionised into
# <model> (fc6/fc7 coerced to convolutions, upsampling set to bilinear).
weights/%-init.caffemodel: models/%/train.prototxt models/vgg16-ilsvrc/deploy.prototxt | weights-vgg16
	$(PY) -m surgery convert --src-proto models/vgg16-ilsvrc/deploy.prototxt --src-weights $(VGG16) \
	  --dst-proto models/$*/train.prototxt --out $@
weights/voc-fcn-alexnet-init.caffemodel: models/voc-fcn-alexnet/train.prototxt models/alexnet-ilsvrc/deploy.prototxt | weights-alexnet
	$(PY) -m surgery convert --src-proto models/alexnet-ilsvrc/deploy.prototxt --src-weights $(ALEXNET) \
	  --dst-proto models/voc-fcn-alexnet/train.prototxt --out $@
models/%/deploy.prototxt:
	$(PY) -m net_specs emit $* --out models/$*
.PRECIOUS: models/%/train.prototxt models/%/deploy.prototxt weights/%-init.caffemodel

# -- training stages: runs/<model>/final.caffemodel ---------------------------
# $(call stage,MODEL,INITIAL WEIGHTS,DATA TARGET)
define stage
runs/$(1)/final.caffemodel: $(2) | $(3)
	$$(PY) -m solvers.solve $(1) --weights $(2) $$(DEVICE) $$(ITERS_FLAG)
endef
$(eval $(call stage,voc-fcn32s,weights/voc-fcn32s-init.caffemodel,data-voc))
$(eval $(call stage,voc-fcn16s,runs/voc-fcn32s/final.caffemodel,data-voc))
$(eval $(call stage,voc-fcn8s,runs/voc-fcn16s/final.caffemodel,data-voc))
$(eval $(call stage,voc-fcn8s-atonce,weights/voc-fcn8s-atonce-init.caffemodel,data-voc))
$(eval $(call stage,voc-fcn-alexnet,weights/voc-fcn-alexnet-init.caffemodel,data-voc))
$(eval $(call stage,nyud-fcn32s-color,weights/nyud-fcn32s-color-init.caffemodel,data-nyud))
$(eval $(call stage,nyud-fcn32s-hha,weights/nyud-fcn32s-hha-init.caffemodel,data-nyud))
$(eval $(call stage,nyud-fcn32s-color-d,weights/nyud-fcn32s-color-d-init.caffemodel,data-nyud))
$(eval $(call stage,nyud-fcn32s-color-hha,runs/nyud-fcn32s-color/final.caffemodel runs/nyud-fcn32s-hha/final.caffemodel,data-nyud))
$(eval $(call stage,siftflow-fcn32s,weights/siftflow-fcn32s-init.caffemodel,data-siftflow))
$(eval $(call stage,siftflow-fcn16s,runs/siftflow-fcn32s/final.caffemodel,data-siftflow))
$(eval $(call stage,siftflow-fcn8s,runs/siftflow-fcn16s/final.caffemodel,data-siftflow))
$(eval $(call stage,pascalcontext-fcn32s,weights/pascalcontext-fcn32s-init.caffemodel,data-pascalcontext))
$(eval $(call stage,pascalcontext-fcn16s,runs/pascalcontext-fcn32s/final.caffemodel,data-pascalcontext))
$(eval $(call stage,pascalcontext-fcn8s,runs/pascalcontext-fcn16s/final.caffemodel,data-pascalcontext))

# -- user-facing targets: train the chain, then score on the val split --------
# $(call trained,TARGET,MODEL)
define trained
.PHONY: $(1)
$(1): runs/$(2)/final.caffemodel
	$$(PY) -m solvers.score $(2) $$< $$(DEVICE) --out runs/$(2)/scores.json
endef
$(eval $(call trained,fcn32s-voc,voc-fcn32s))
$(eval $(call trained,fcn16s-voc,voc-fcn16s))
$(eval $(call trained,fcn8s-voc,voc-fcn8s))
$(eval $(call trained,fcn8s-atonce-voc,voc-fcn8s-atonce))
$(eval $(call trained,fcn-alexnet-voc,voc-fcn-alexnet))
$(eval $(call trained,fcn32s-nyud-color,nyud-fcn32s-color))
$(eval $(call trained,fcn32s-nyud-hha,nyud-fcn32s-hha))
$(eval $(call trained,fcn32s-nyud-color-d,nyud-fcn32s-color-d))
$(eval $(call trained,fcn32s-nyud-color-hha,nyud-fcn32s-color-hha))
$(eval $(call trained,fcn32s-siftflow,siftflow-fcn32s))
$(eval $(call trained,fcn16s-siftflow,siftflow-fcn16s))
$(eval $(call trained,fcn8s-siftflow,siftflow-fcn8s))
$(eval $(call trained,fcn32s-pascalcontext,pascalcontext-fcn32s))
$(eval $(call trained,fcn16s-pascalcontext,pascalcontext-fcn16s))
$(eval $(call trained,fcn8s-pascalcontext,pascalcontext-fcn8s))

# -- the released models, scored with our nets and metrics ---------------------
# `make eval-published` scores all 14 (needs every dataset); per model:
# `make eval-published-voc-fcn8s`. Weights are fetched into weights/published/.
# $(call published,MODEL,DATA TARGET)
define published
.PHONY: eval-published-$(1)
eval-published-$(1): $(2)
	$$(PY) -m solvers.eval_published $(1) $$(DEVICE) --out runs/published/$(1).json
endef
PUBLISHED_VOC := voc-fcn32s voc-fcn16s voc-fcn8s voc-fcn8s-atonce voc-fcn-alexnet
PUBLISHED_NYUD := nyud-fcn32s-color nyud-fcn32s-hha nyud-fcn32s-color-hha
PUBLISHED_SIFTFLOW := siftflow-fcn32s siftflow-fcn16s siftflow-fcn8s
PUBLISHED_CONTEXT := pascalcontext-fcn32s pascalcontext-fcn16s pascalcontext-fcn8s
$(foreach m,$(PUBLISHED_VOC),$(eval $(call published,$(m),data-voc)))
$(foreach m,$(PUBLISHED_NYUD),$(eval $(call published,$(m),data-nyud)))
$(foreach m,$(PUBLISHED_SIFTFLOW),$(eval $(call published,$(m),data-siftflow)))
$(foreach m,$(PUBLISHED_CONTEXT),$(eval $(call published,$(m),data-pascalcontext)))
.PHONY: eval-published
eval-published: data-voc data-nyud data-siftflow data-pascalcontext
	$(PY) -m solvers.eval_published $(DEVICE) --out runs/published/all.json

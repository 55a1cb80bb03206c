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

.PHONY: help install deps venv caffe test test-fast demo prototxts docker-build docker-run bench clean-caffe

help:
	@echo "make install     Debian build deps, .venv with pinned deps, CPU pycaffe (cached)"
	@echo "make test        install, then the whole test suite (what CI runs)"
	@echo "make demo        install, then the embedded end-to-end demo (synthetic data, CPU)"
	@echo "make prototxts   emit every model's train/val/deploy prototxt into models/"
	@echo "make docker-build / docker-run   the CUDA image (needs a Docker engine + NVIDIA runtime)"
	@echo "make bench       benchmarks (prints figures)"

install: deps venv caffe

deps:
	@bash docker/install_deps.sh

$(VENV)/.requirements: requirements.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@cp requirements.txt $@

venv: $(VENV)/.requirements

caffe: venv
	@PYTHON=$(PY) bash docker/build_caffe.sh $(CAFFE_BUILD_FLAGS)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m 'not slow' tests

demo: install
	@echo "make demo: not yet implemented (see the solvers issue)" >&2; exit 1

prototxts: install
	$(PY) -m net_specs emit --all --out models

bench: install
	$(PY) -m bench

DOCKER_IMAGE ?= fcn-caffe:cuda
docker-build:
	docker build -f docker/Dockerfile -t $(DOCKER_IMAGE) .

docker-run:
	docker run --rm -it --gpus all -v $(CURDIR)/datasets:/fcn/datasets -v $(CURDIR)/weights:/fcn/weights -v $(CURDIR)/runs:/fcn/runs $(DOCKER_IMAGE) $(CMD)

clean-caffe:
	rm -rf .cache/caffe

"""solvers.inference.tta on small real Caffe nets: no augmentation is bit for bit the
plain forward, mirroring is undone exactly, every scale comes back at the
input's size."""
import os
import tempfile

import numpy as np
import pytest

import caffe

from solvers.inference import tta

TOY = """name: "toy"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {h} dim: {w} }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 6 kernel_size: 5 pad: 2 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "score" type: "Convolution" bottom: "conv" top: "score"
        convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}
"""


def toy_net(symmetric, seed=0, h=16, w=16):
    """A two-convolution net with random weights; `symmetric`: every kernel
    mirror-symmetric left-right, so the net commutes with mirroring."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "toy.prototxt")
        with open(path, "w") as f:
            f.write(TOY.format(h=h, w=w))
        net = caffe.Net(path, caffe.TEST)
    rng = np.random.default_rng(seed)
    for name in ("conv", "score"):
        weights = rng.normal(0, 0.3, net.params[name][0].data.shape).astype(np.float32)
        if symmetric:
            weights = (weights + weights[..., ::-1]) / 2
        net.params[name][0].data[...] = weights
        net.params[name][1].data[...] = rng.normal(0, 0.1, net.params[name][1].data.shape)
    return net


def runner(net, seen=None):
    def run(inputs):
        x = inputs["data"]
        if seen is not None:
            seen.append(x.shape[1:])
        net.blobs["data"].reshape(1, *x.shape)
        net.reshape()
        net.blobs["data"].data[...] = x
        net.forward()
        return {"score": net.blobs["score"].data[0].copy()}
    return run


def image(h=23, w=37, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (3, h, w)).astype(np.float32)


def test_no_augmentation_is_the_plain_forward_bit_for_bit():
    net, x = toy_net(False), image()
    plain = runner(net)({"data": x})["score"]
    out = tta.augmented_scores(runner(net), {"data": x}, scales=(1,), flip=False)["score"]
    assert out.dtype == plain.dtype and np.array_equal(out, plain)


def test_the_toy_symmetric_net_commutes_with_mirroring():
    net, x = toy_net(True), image()
    run = runner(net)
    assert np.allclose(run({"data": tta.mirror(x)})["score"], tta.mirror(run({"data": x})["score"]),
                       atol=1e-5)


@pytest.mark.parametrize("scales", [(1.0,), (0.5, 1.0, 1.5)])
def test_flipped_input_of_a_mirror_symmetric_net_gives_the_flipped_score(scales):
    net, x = toy_net(True), image()
    run = runner(net)
    direct = tta.augmented_scores(run, {"data": x}, scales, flip=True)["score"]
    flipped = tta.augmented_scores(run, {"data": tta.mirror(x)}, scales, flip=True)["score"]
    assert np.allclose(flipped, tta.mirror(direct), atol=1e-5)
    # for such a net each mirrored copy, mirrored back, is its direct copy: flipping changes nothing
    no_flip = tta.augmented_scores(run, {"data": x}, scales, flip=False)["score"]
    if tta.is_plain(scales, False):
        no_flip = tta.softmax(no_flip)          # the plain path returns raw scores
    assert np.allclose(direct, no_flip, atol=1e-5)


def test_mirroring_is_undone_for_any_net():
    net, x = toy_net(False, seed=4), image()
    run = runner(net)
    plain_probs = tta.softmax(run({"data": x})["score"])
    mirrored_probs = tta.mirror(tta.softmax(run({"data": tta.mirror(x)})["score"]))
    flip = tta.augmented_scores(run, {"data": x}, (1.0,), flip=True)["score"]
    assert np.allclose(flip, (plain_probs + mirrored_probs) / 2, atol=1e-6)
    assert not np.allclose(plain_probs, mirrored_probs, atol=1e-3)       # the net is not symmetric


@pytest.mark.parametrize("h,w", [(23, 37), (16, 16), (9, 50)])
def test_every_scale_comes_back_at_the_input_size(h, w):
    net, x = toy_net(False), image(h, w)
    seen = []
    scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    out = tta.augmented_scores(runner(net, seen), {"data": x}, scales, flip=True)["score"]
    assert out.shape == (4, h, w) and out.dtype == np.float32
    assert seen == [s for scale in scales for s in [tta.scaled_size(h, w, scale)] * 2]
    assert seen[0] == (int(round(h * 0.5)), int(round(w * 0.5))) and seen[4] == (h, w)
    assert np.allclose(out.sum(axis=0), 1.0, atol=1e-5)                  # averaged probabilities


def test_scale_one_is_used_without_a_resize():
    net, x = toy_net(False), image()
    run = runner(net)
    out = tta.augmented_scores(run, {"data": x}, (1.0, 2.0), flip=False)["score"]
    at_two = tta.resize(run({"data": tta.resize(x, 46, 74)})["score"], 23, 37)
    expected = (tta.softmax(run({"data": x})["score"]) + tta.softmax(at_two)) / 2
    assert np.allclose(out, expected, atol=1e-6)


def test_parse_scales():
    assert tta.parse_scales("0.5,0.75,1,1.25,1.5") == (0.5, 0.75, 1.0, 1.25, 1.5)
    for bad in ("", "1,,2", "0", "-1", "a", "1,1", "nan"):
        with pytest.raises(ValueError, match="--scales"):
            tta.parse_scales(bad)
    assert tta.is_plain((1,), False) and not tta.is_plain((1,), True) and not tta.is_plain((1, 2), False)

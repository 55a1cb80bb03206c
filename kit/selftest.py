"""The kit's CPU-mode self-test: does the carried stack compute what the CPU build computes?

Runs in any interpreter with pycaffe: the kit's (`kit/run.sh OUT --selftest`,
`make kit-check`) and the CPU build's .venv (the reference). It imports
caffe, builds a narrow FCN-8s (voc-fcn8s, width 1/16, 96x96 input, the real
net spec: pad 100, skips, Crop, Deconvolution), fills every parameter and the
input from a fixed seed, runs forward and backward on the CPU with one BLAS
thread, and saves the score, the input gradient and every parameter
gradient to an .npz. It also round-trips a PNG through PIL and a .mat file
through scipy (what the data layers read), so that a trimmed package fails
here rather than on the GPU host.

Usage: python -m kit.selftest OUT.npz [--compare REF.npz] [--rtol 1e-5]
Exit status 0 on success (and, with --compare, every array equal within
rtol of its largest magnitude), 1 otherwise.
"""
import argparse
import io
import os
import sys
import tempfile

os.environ.setdefault("GLOG_minloglevel", "2")
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"          # one summation order in every build

import numpy as np  # noqa: E402

WIDTH = 1 / 16
SIZE = (96, 96)


def net_arrays():
    """{name: array} of score, input gradient and every parameter gradient."""
    import caffe
    from net_specs.build import build

    caffe.set_mode_cpu()
    proto = build("voc-fcn8s", "deploy", width=WIDTH, size=SIZE)
    proto.force_backward = True
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(str(proto))
    try:
        net = caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)
    rng = np.random.RandomState(0)
    for name, params in net.params.items():
        for i, p in enumerate(params):
            fan_in = max(1, int(np.prod(p.data.shape[1:])))
            p.data[...] = rng.randn(*p.data.shape).astype(np.float32) / np.sqrt(fan_in)
    net.blobs["data"].data[...] = rng.rand(*net.blobs["data"].data.shape).astype(np.float32) * 255
    out_name = net.outputs[0]
    net.forward()
    net.blobs[out_name].diff[...] = rng.randn(*net.blobs[out_name].data.shape).astype(np.float32)
    net.backward()
    arrays = {"score": net.blobs[out_name].data.copy(), "data_grad": net.blobs["data"].diff.copy()}
    for name, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"{name}.{i}.grad"] = p.diff.copy()
    return arrays


def data_libraries_round_trip():
    """PNG through PIL and a sparse .mat through scipy, as the data layers read them."""
    import scipy.io
    import scipy.sparse
    from PIL import Image

    label = (np.arange(35 * 47) % 21).astype(np.uint8).reshape(35, 47)
    buf = io.BytesIO()
    Image.fromarray(label, mode="L").save(buf, format="PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), label)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cls.mat")
        scipy.io.savemat(path, {"S": label, "B": scipy.sparse.csc_matrix(label == 3)})
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    assert np.array_equal(mat["S"], label) and mat["B"].nnz == int((label == 3).sum())


def compare(arrays, ref_path, rtol):
    ref = np.load(ref_path)
    worst, bad = 0.0, []
    if set(ref.files) != set(arrays):
        bad.append(f"arrays differ: {sorted(set(ref.files) ^ set(arrays))}")
    for name in sorted(set(ref.files) & set(arrays)):
        a, b = arrays[name], ref[name]
        if a.shape != b.shape:
            bad.append(f"{name}: shape {a.shape} vs {b.shape}")
            continue
        scale = max(float(np.abs(b).max()), 1e-30)
        rel = float(np.abs(a - b).max()) / scale
        worst = max(worst, rel)
        if not rel <= rtol:
            bad.append(f"{name}: max |diff| / max |ref| = {rel:.3g} > {rtol:g}")
    return worst, bad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="where to save the arrays (.npz)")
    p.add_argument("--compare", help="a reference .npz from another build")
    p.add_argument("--rtol", type=float, default=1e-5)
    a = p.parse_args(argv)
    if a.compare and not os.path.isfile(a.compare):
        p.error(f"--compare {a.compare}: no such file")

    import caffe
    data_libraries_round_trip()
    arrays = net_arrays()
    np.savez(a.out, **arrays)
    n = sum(v.size for v in arrays.values())
    print(f"selftest: caffe from {os.path.dirname(caffe.__file__)}, numpy {np.__version__}; "
          f"narrow FCN-8s {SIZE[0]}x{SIZE[1]} forward+backward on the CPU: {len(arrays)} arrays, "
          f"{n} values, score sum {float(arrays['score'].sum()):.6g}; PIL and scipy round trips OK")
    if a.compare:
        worst, bad = compare(arrays, a.compare, a.rtol)
        for line in bad:
            print("selftest: MISMATCH " + line)
        print(f"selftest: against {a.compare}: largest relative difference {worst:.3g} "
              f"(tolerance {a.rtol:g}): {'FAIL' if bad else 'equal'}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""netio on its own: the one reader of Caffe's spatial fields, one parse of
a caffemodel serving checks and loading, a solverstate read with its errors."""
import numpy as np
import pytest
from caffe.proto import caffe_pb2

from netio import geometry
from netio.errors import NetIOError, WeightsError
from netio.files import read_solverstate
from netio.nets import Caffemodel, load_weights, net_from_param, save_weights


def test_spatial_reads_every_form_caffe_accepts():
    conv = caffe_pb2.ConvolutionParameter(kernel_size=[3], stride=[2, 1], pad=[1])
    assert geometry.spatial(conv, "kernel_size", 1) == [3, 3]
    assert geometry.spatial(conv, "stride", 1) == [2, 1]
    assert geometry.spatial(conv, "dilation", 1) == [1, 1]
    rect = caffe_pb2.ConvolutionParameter(kernel_h=5, kernel_w=3)
    assert geometry.spatial(rect, "kernel_size", 1) == [5, 3] and geometry.kernel(rect) == 5
    pool = caffe_pb2.PoolingParameter(kernel_size=2, stride=2)
    assert geometry.spatial(pool, "kernel_size", 0) == [2, 2]
    assert geometry.spatial(pool, "pad", 0) == [0, 0] and geometry.stride(pool) == 2
    assert geometry.dilation(pool) == 1


def tiny_net():
    param = caffe_pb2.NetParameter(name="tiny")
    data = param.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 2, 8, 8])
    for name, bottom in (("a", "data"), ("b", "a")):
        conv = param.layer.add(name=name, type="Convolution", bottom=[bottom], top=[name])
        conv.convolution_param.num_output = 2
        conv.convolution_param.kernel_size.append(3)
        conv.convolution_param.weight_filler.type = "gaussian"
    return param


def test_one_parse_checks_reports_and_loads(tmp_path):
    param = tiny_net()
    source = net_from_param(param)
    path = str(tmp_path / "w.caffemodel")
    save_weights(source, path)
    caffemodel = Caffemodel(path)
    assert caffemodel.stored == {"a", "b"} and caffemodel.params["a"][0].data.shape == (2, 2, 3, 3)
    target = net_from_param(param)
    assert load_weights(target, caffemodel) == []
    np.testing.assert_array_equal(target.params["b"][0].data, source.params["b"][0].data)
    # a net with a layer the file lacks: reported, warned, kept
    param.layer.add(name="c", type="Convolution", bottom=["b"], top=["c"]).convolution_param.MergeFrom(
        caffe_pb2.ConvolutionParameter(num_output=1, kernel_size=[1]))
    wider = net_from_param(param)
    assert caffemodel.missing_for(wider) == ["c"]
    with pytest.raises(WeightsError, match="no parameters for layer.*c.*truncated"):
        load_weights(wider, caffemodel, complete=True)
    assert load_weights(wider, caffemodel, warn=False) == ["c"]


def test_a_weights_file_that_does_not_fit_names_itself(tmp_path):
    path = str(tmp_path / "w.caffemodel")
    save_weights(net_from_param(tiny_net()), path)
    other = tiny_net()
    other.layer[1].convolution_param.num_output = 3
    other.layer[2].convolution_param.num_output = 3
    with pytest.raises(WeightsError, match=r"w.caffemodel: layer 'a' blob 0 .*another model or width"):
        load_weights(net_from_param(other), path)


def test_solverstate_errors_name_the_file(tmp_path):
    with pytest.raises(NetIOError, match="no solver state at"):
        read_solverstate(str(tmp_path / "absent.solverstate"))
    junk = tmp_path / "junk.solverstate"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(NetIOError, match="junk.solverstate .* not a readable"):
        read_solverstate(str(junk))
    empty = tmp_path / "empty.solverstate"
    empty.write_bytes(caffe_pb2.SolverState(iter=3).SerializeToString())
    with pytest.raises(NetIOError, match="names no weights"):
        read_solverstate(str(empty))
    good = tmp_path / "good.solverstate"
    good.write_bytes(caffe_pb2.SolverState(iter=3, learned_net="w.caffemodel").SerializeToString())
    assert read_solverstate(str(good)).iter == 3

"""What netio raises: one user error naming the file and what was expected,
never a Caffe abort."""
from common.errors import UserError


class NetIOError(UserError):
    """A prototxt, caffemodel, solverstate or net that cannot be read, built
    or loaded as asked."""


class WeightsError(NetIOError):
    """A caffemodel that parses but cannot serve this net."""

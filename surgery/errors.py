"""The one exception surgery raises for bad inputs, so callers (and the CLI)
can report it as a message instead of a traceback.

It is a netio.errors.NetIOError: surgery fails when a weight file and a net
do not fit each other (shapes, missing layers, layers ONNX cannot express),
the same family as netio's WeightsError, so one `except NetIOError` serves
every "these weights cannot serve this net", whichever package found it.
Still a UserError: one line, exit 2 (common.cli.run_cli)."""
from netio.errors import NetIOError


class SurgeryError(NetIOError):
    """A net, weight file or layer that surgery cannot use as asked."""

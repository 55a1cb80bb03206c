"""The one exception class for a user's mistake (a bad flag, file or model).

Every package raises a subclass of it (SurgeryError, ScoreError, InferError,
...) so that the CLIs report any of them the same way: one line, exit 2
(common.cli.run_cli) -- never a traceback, never a Caffe abort.
"""


class UserError(Exception):
    """Input that cannot be used as given; the message says which and why."""


class InputError(UserError, ValueError):
    """A value given by the user that does not fit: a flag, a model, dataset
    or trunk name, a record field, a data file's contents. A ValueError too,
    so code that catches ValueError around a parse keeps working; a plain
    ValueError is a bug and keeps its traceback (common.cli.USER_ERRORS)."""

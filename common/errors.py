"""The one exception class for a user's mistake (a bad flag, file or model).

Every package raises a subclass of it (SurgeryError, ScoreError, InferError,
...) so that the CLIs report any of them the same way: one line, exit 2
(common.cli.run_cli) -- never a traceback, never a Caffe abort.
"""


class UserError(Exception):
    """Input that cannot be used as given; the message says which and why."""

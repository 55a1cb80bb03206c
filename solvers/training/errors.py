"""How a training run fails: a user error naming what was kept, a diverged
loss, and the exit that a diverged (possibly heap-corrupt) process needs."""
import os
import sys

from common.errors import UserError


class RunError(UserError):
    """A run that cannot start or go on as asked (a bad .solverstate, a
    failure mid-run); the message says what was kept and where."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite.

    After a NaN step the process dies with "double free or corruption" at
    exit (observed on the CPU build; likely cause: max pooling keeps a mask
    index of -1 for all-NaN windows and backward writes through it), so the
    heap may already be corrupt when this is raised: callers should report
    it and leave with `hard_exit`.
    """


def hard_exit(code):
    """Flush and leave without running Caffe's destructors (see TrainingDiverged)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

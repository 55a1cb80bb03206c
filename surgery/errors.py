"""The one exception surgery raises for bad inputs, so callers (and the CLI)
can report it as a message instead of a traceback."""
from common.errors import UserError


class SurgeryError(UserError):
    """A net, weight file or layer that surgery cannot use as asked."""

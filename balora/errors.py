"""The one exception type a user is meant to read.

Anything raised as `BaloraError` is a problem with the user's input or setup; the CLI prints
its message on one line and exits non-zero, without a traceback.
"""


class BaloraError(Exception):
    """A user-facing error whose message names the problem and the fix."""

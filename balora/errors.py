"""The one exception type a user is meant to read, and reading a user's file so that it raises only that.

Anything raised as `BaloraError` is a problem with the user's input or setup; the CLI prints
its message on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BaloraError(Exception):
    """A user-facing error whose message names the problem and the fix."""


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a user's file, or a BaloraError naming the file and why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BaloraError(f"{what} '{path}' is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise BaloraError(f"cannot read {what} '{path}': {err.strerror or err}; check the path and its permissions") from None

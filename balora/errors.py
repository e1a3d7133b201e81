"""The one exception type a user is meant to read, and the user's paths (a file to read, a folder to write,
a path that is not there) checked so that they raise only that.

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


def output_folder(path: str | Path, what: str, empty: bool = False) -> Path:
    """`path` as a folder to write into, checked before any work: a BaloraError if it, or the nearest of its
    parents that exists, is a file (creating it would fail only when the results are saved), or, with `empty`,
    if it already holds files (writing into it would mix them with the new ones)."""
    path = Path(path)
    fix = "give a new or empty folder" if empty else "give a folder"
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise BaloraError(f"{what} {path} is a file; {fix}" if existing == path
                          else f"{what} {path} is inside {existing}, a file; {fix}")
    if empty and path.is_dir() and any(path.iterdir()):
        raise BaloraError(f"{what} {path} already holds files; {fix}")
    return path


def missing_local_path(name: str) -> bool:
    """Whether `name` is written as a local path (absolute, ./ or ../, which no hub name can be) that does not
    exist: a typo to name as such, not a name to look up on the Hugging Face hub."""
    return (Path(name).is_absolute() or name.startswith(("./", "../"))) and not Path(name).exists()

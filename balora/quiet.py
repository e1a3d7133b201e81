"""Only balora speaks on the terminal.

Libraries announce things a balora user cannot act on: bitsandbytes looks for optional kernels on import
(and `kernels` says it skips a trust check offline), Transformers reports how it loaded a checkpoint, torch
warns about deprecations. `silence()`, called first by the CLI and by every sweep worker, keeps all of it
off stderr:

- optional back-ends (bitsandbytes) are not imported until the option that needs them asks (`allow`):
  PEFT imports bitsandbytes whenever it is installed, so it is hidden from PEFT until then;
- Python warnings and other libraries' log records go to an in-memory log instead of stderr, and each run
  folder keeps what its run produced as `library.log` (`write_library_log`).

The Python API does not call `silence()`: a user's own program keeps its terminal and its libraries as they are.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

# Imported only by the options that need them (`--quant-backend bitsandbytes`), never by PEFT on our behalf.
OPTIONAL_BACKENDS = ("bitsandbytes",)
LIBRARY_LOG = "library.log"
_KEPT_LINES = 2000  # a command that never writes a run folder keeps at most this many lines in memory


class _Captured(logging.Handler):
    """Keeps formatted records in memory until a run folder takes them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < _KEPT_LINES:
            self.lines.append(self.format(record))


_captured = _Captured()
_hidden: set[str] = set()  # the optional back-ends silence() hid (a None in sys.modules set by anyone else stays)


def silence() -> None:
    """Keep third-party output off the terminal for the rest of this process (idempotent)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in OPTIONAL_BACKENDS:
        if name not in sys.modules:  # then `import` raises ImportError and find_spec gives None: PEFT skips it
            sys.modules[name] = None
            _hidden.add(name)
    logging.captureWarnings(True)  # warnings become records of the `py.warnings` logger
    if _captured not in logging.root.handlers:
        logging.root.addHandler(_captured)
    importlib.import_module("huggingface_hub")  # imported now so that its stderr handler exists to be rerouted
    importlib.import_module("transformers").logging.disable_progress_bar()
    _reroute_library_loggers()


def _reroute_library_loggers() -> None:
    """Hugging Face libraries give their root logger a handler of its own that writes to stderr; send those
    records to the captured log instead. `datasets`, imported later and only by some runs, is told by its
    environment variable, which it reads when it first configures its logger."""
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.split(".")[0] == "balora":
            continue
        streams = [h for h in logger.handlers if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout)]
        for handler in streams:
            logger.removeHandler(handler)
        if streams:
            logger.propagate = True


def allow(name: str) -> ModuleType:
    """Import an optional back-end that `silence()` hid, for the option that needs it (ImportError if missing)."""
    if name in _hidden:
        _hidden.discard(name)
        del sys.modules[name]
        peft_imports = sys.modules.get("peft.import_utils")
        if peft_imports is not None:  # PEFT remembers what it found missing
            for check in ("is_bnb_available", "is_bnb_4bit_available"):
                getattr(peft_imports, check).cache_clear()
    module = importlib.import_module(name)
    _reroute_library_loggers()
    return module


def write_library_log(folder: Path) -> None:
    """Move what libraries said since the last run into `folder/library.log` (nothing when they said nothing)."""
    if not _captured.lines:
        return
    with open(folder / LIBRARY_LOG, "a", encoding="utf-8") as log:
        log.write("\n".join(_captured.lines) + "\n")
    _captured.lines.clear()

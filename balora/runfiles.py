"""Results as text: one JSON file per finished run, `DIR/<key>.json`, the form results are committed in.

A run file is the run's `result.json` (see `balora.run`: config, environment, metrics, curves,
allocation, timings) plus `sweep` (the sweep that ran it) and `format`, less the local adapter path.
Files are written atomically (a temporary file in the same folder, flushed, then renamed), so a
reader or an interrupted sweep never sees half a file; a file's presence means the run is complete.

    write_run("results/paper", result, sweep="paper")   # → results/paper/<key>.json
    read_runs("results/paper")                          # every run, in key order
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from balora.errors import BaloraError

FORMAT = "balora-run/1"
REQUIRED = ("key", "config", "metrics", "params", "budget")
LOCAL_ONLY = ("adapter",)  # a path on the machine that ran it: meaningless in a repository


def run_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / f"{key}.json"


def jsonable(value: Any) -> Any:
    """numpy/torch scalars and arrays (`tolist`) and paths, which results may carry (json's `default`)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_run(folder: str | Path, result: dict[str, Any], sweep: str = "") -> Path:
    """Write one finished run to `folder/<key>.json` atomically; returns the path."""
    record = {k: v for k, v in result.items() if k not in LOCAL_ONLY}
    record.update(format=FORMAT, sweep=sweep or str(result.get("sweep") or ""))
    path = run_path(folder, str(result["key"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, sort_keys=True, default=jsonable) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.json: never read as a run
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


def read_run(path: str | Path) -> dict[str, Any]:
    """One run file, checked: valid JSON, the required fields, and a key that matches its name."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise BaloraError(f"cannot read run file {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise BaloraError(f"run file {path} is not valid JSON ({error}); restore it from git or delete it "
                          "and rerun the sweep") from None
    if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
        missing = REQUIRED if not isinstance(record, dict) else [k for k in REQUIRED if k not in record]
        raise BaloraError(f"run file {path} is not a balora run (missing {', '.join(missing)}); "
                          "restore it from git or delete it and rerun the sweep")
    if record["key"] != path.stem:
        raise BaloraError(f"run file {path} holds run {record['key']}; rename it to {record['key']}.json")
    return record


def read_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run file in `folder`, in key order (an empty list for an empty folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BaloraError(f"no run folder at {folder}; give the folder a sweep's --results-dir wrote to")
    return [read_run(path) for path in sorted(folder.glob("*.json"))]


def run_keys(folder: str | Path) -> set[str]:
    """Keys of the runs stored in `folder` (none when it does not exist yet)."""
    return {path.stem for path in Path(folder).glob("*.json")}

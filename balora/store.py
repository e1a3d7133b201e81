"""The results database: one SQLite file (default `results/balora.db`), one row per run.

A row is keyed by the run's config hash and moves `running` → `done` | `failed`. Sweeps call
`claim` before a run and skip it when it returns False, which is what makes them resumable.

Crash safety: every change is one transaction in WAL mode with `synchronous=FULL`, so a process
killed with SIGKILL loses at most its uncommitted transaction; a row is never half written.

Stale claims: a claim records the claimer's hostname, pid and process start time. A `running`
row whose process is gone (or whose pid was reused by another process) is claimable again, so a
re-run retries it without any flag. A row owned by another host cannot be checked and counts as
live, as does one of this very process (a sweep should `fail` a run it abandons, even on Ctrl-C);
`release` forgets such claims by hand.

Sweeps: `sweep` on a row is the sweep that ran it; `sweep_runs` records every sweep that asked for
a key, so `runs(sweep)` and `results(sweep)` include runs another sweep already did.

Concurrency: claims take the write lock up front (`BEGIN IMMEDIATE`), so the read-check-write is
atomic across processes and two sweeps never run the same key; writers wait up to 60 s for it.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from balora.errors import BaloraError
from balora.runfiles import jsonable

STATUSES = ("running", "done", "failed")
QUERY_COLUMNS = ("method", "model", "dataset", "budget_rank", "budget", "shots", "train_size", "seed")
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, sweep TEXT NOT NULL DEFAULT '', status TEXT NOT NULL, error TEXT,
    method TEXT, model TEXT, dataset TEXT, budget_rank REAL, budget INTEGER, shots INTEGER,
    train_size INTEGER, seed INTEGER, accuracy REAL, f1 REAL,
    config TEXT NOT NULL DEFAULT '{}', metrics TEXT, timings TEXT, memory TEXT, allocation TEXT, result TEXT,
    result_path TEXT, adapter_path TEXT, created TEXT NOT NULL, started TEXT, finished TEXT,
    host TEXT, pid INTEGER, pid_started REAL, attempts INTEGER NOT NULL DEFAULT 0);
-- A run belongs to every sweep that asked for it, not only the one that ran it first.
CREATE TABLE IF NOT EXISTS sweep_runs (sweep TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (sweep, key));
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
"""
JSON_COLUMNS = ("config", "metrics", "timings", "memory", "allocation", "result")
CSV_METRICS = ("accuracy", "f1", "precision", "recall", "loss", "majority_rate")
CSV_PARAMS = ("lora", "lora_final", "head", "total_trainable")


@dataclass
class RunRecord:
    """One row; JSON columns are decoded (None until the run has them)."""

    key: str
    sweep: str
    status: str
    error: str | None
    method: str | None
    model: str | None
    dataset: str | None
    budget_rank: float | None
    budget: int | None
    shots: int | None
    train_size: int | None
    seed: int | None
    accuracy: float | None
    f1: float | None
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    timings: dict[str, Any] | None
    memory: dict[str, Any] | None
    allocation: list[dict[str, Any]] | None
    result: dict[str, Any] | None
    result_path: str | None
    adapter_path: str | None
    created: str
    started: str | None
    finished: str | None
    host: str | None
    pid: int | None
    pid_started: float | None
    attempts: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=jsonable)


def _scalar(value: Any) -> Any:
    """A query column's value; sqlite3 would store a numpy scalar as an opaque blob."""
    return value.item() if hasattr(value, "item") else value


def _this_process() -> tuple[str, int, float]:
    return socket.gethostname(), os.getpid(), psutil.Process().create_time()


def _owner_alive(host: str | None, pid: int | None, pid_started: float | None) -> bool:
    if host != socket.gethostname():
        return host is not None  # another machine's processes cannot be seen: assume live
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed but not yet reaped by its parent
            return False
        # A different start time means the pid was reused after the claimer died.
        return pid_started is None or abs(process.create_time() - pid_started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise BaloraError(f"results database {path} is a directory; give a file path such as {path / 'balora.db'}")
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise BaloraError(f"{path} is not a SQLite database; give another --db path or move the file away")


class ResultsStore:
    """The results database; one instance may be shared by threads (calls are serialised)."""

    def __init__(self, path: str | Path = "results/balora.db", timeout: float = 60.0, create: bool = True) -> None:
        """Open the database at `path`; `create=False` for commands that only read it, where a mistyped path
        would otherwise create an empty database (and its folders) and report nothing."""
        self.path = Path(path)
        _check_path(self.path)
        if not create and not self.path.is_file():
            raise BaloraError(f"no results database at {self.path}; run a sweep first or give --db PATH")
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit, so a claim's check and write share one lock.
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise BaloraError(f"cannot open results database {self.path}: {error}; check the path") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._wal(timeout)
            self._db.execute("PRAGMA synchronous = FULL")  # a finished run survives even a power cut
            with self._transaction() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise BaloraError(f"{self.path} was written by a newer balora; upgrade balora to read it")
                for statement in SCHEMA.split(";"):  # executescript would commit mid-transaction
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise BaloraError(f"{self.path} is not a usable SQLite database ({error}); give another path") from None

    def _wal(self, timeout: float) -> None:
        """Switch to WAL (readers never block the writer). The switch needs a moment alone with the file and
        SQLite answers 'locked' at once, without its busy timeout, while another process opens it: retry."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its first statement."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise BaloraError(f"results database {self.path} stayed locked by another process ({error}); "
                                  "retry when the other sweep has finished writing") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def claim(self, key: str, config: dict[str, Any], sweep: str, rerun_failed: bool = False) -> bool:
        """Mark `key` running for this process; False when it is done, failed (without `rerun_failed`)
        or running in a live process. Also records that `sweep` includes the run."""
        host, pid, pid_started = _this_process()
        now = _now()
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO sweep_runs (sweep, key) VALUES (?, ?)", (sweep, key))
            row = db.execute("SELECT status, host, pid, pid_started FROM runs WHERE key = ?", (key,)).fetchone()
            if row is not None and (row["status"] == "done"
                                    or (row["status"] == "failed" and not rerun_failed)
                                    or (row["status"] == "running"
                                        and _owner_alive(row["host"], row["pid"], row["pid_started"]))):
                return False
            query = {c: _scalar(config.get(c)) for c in QUERY_COLUMNS}
            db.execute(
                f"""INSERT INTO runs (key, sweep, status, config, created, started, host, pid, pid_started, attempts,
                        {", ".join(QUERY_COLUMNS)})
                    VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, 1, {", ".join("?" * len(QUERY_COLUMNS))})
                    ON CONFLICT (key) DO UPDATE SET sweep = excluded.sweep, status = 'running', error = NULL,
                        config = excluded.config, started = excluded.started, finished = NULL, host = excluded.host,
                        pid = excluded.pid, pid_started = excluded.pid_started, attempts = attempts + 1,
                        {", ".join(f"{c} = excluded.{c}" for c in QUERY_COLUMNS)}""",
                (key, sweep, _dumps(config), now, now, host, pid, pid_started, *query.values()))
            return True

    def finish(self, key: str, result: dict[str, Any], result_path: str | None = None,
               adapter_path: str | None = None) -> None:
        """Store a finished run's result (the `result.json` dict) and mark it done."""
        self._upsert(key, str(result.get("sweep", "")), _done(result, result_path, adapter_path))

    def add(self, result: dict[str, Any], sweep: str = "", result_path: str | None = None) -> None:
        """Store a run finished elsewhere (a run file, say) as done, as a member of `sweep`, in one
        transaction; a run already stored under its key is replaced."""
        values = _done(result, result_path, None)  # serialised before the transaction: a bad value changes nothing
        with self._transaction() as db:
            if sweep:
                db.execute("INSERT OR IGNORE INTO sweep_runs (sweep, key) VALUES (?, ?)", (sweep, result["key"]))
            self._upsert(result["key"], sweep, values, db)

    def fail(self, key: str, error: str) -> None:
        """Mark `key` failed with `error` (retried only with `rerun_failed`)."""
        self._upsert(key, "", {"status": "failed", "error": error, "finished": _now()})

    def _upsert(self, key: str, sweep: str, values: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        """Insert or update one row, in `db`'s open transaction or in a new one."""
        if db is None:
            with self._transaction() as db:
                return self._upsert(key, sweep, values, db)
        columns = ", ".join(values)
        db.execute(
            f"""INSERT INTO runs (key, sweep, created, {columns}) VALUES (?, ?, ?, {", ".join("?" * len(values))})
                ON CONFLICT (key) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in values)}""",
            (key, sweep, _now(), *values.values()))

    def release(self, sweep: str | None = None) -> list[str]:
        """Forget `running` claims (those of another host that died, say) so that they can be claimed again."""
        with self._transaction() as db:
            where, args = self._where(sweep, "running")
            keys = [row["key"] for row in db.execute(f"SELECT key FROM runs {where}", args)]
            db.executemany("DELETE FROM runs WHERE key = ?", [(k,) for k in keys])
        return keys

    def unclaim(self, keys: list[str]) -> None:
        """Drop this process's `running` claims on `keys` (runs it claimed but never started or
        finished, e.g. after Ctrl-C), so that the same process can claim them again."""
        with self._transaction() as db:
            db.executemany("DELETE FROM runs WHERE key = ? AND status = 'running' AND pid = ? AND host = ?",
                           [(k, os.getpid(), socket.gethostname()) for k in keys])

    def status(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["status"]

    def get(self, key: str) -> RunRecord | None:
        records = self._select("WHERE key = ?", (key,))
        return records[0] if records else None

    def runs(self, sweep: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs in creation order; `sweep` selects every run the sweep asked for, whoever ran it."""
        return self._select(*self._where(sweep, status))

    def results(self, sweep: str | None = None) -> list[dict[str, Any]]:
        """Result dicts of done runs, with `sweep` (the one asked for, else the one that ran it) and `key`."""
        return [dict(r.result or {}, sweep=sweep if sweep is not None else r.sweep, key=r.key)
                for r in self.runs(sweep, "done")]

    def export(self, fmt: str, out_path: str | Path, sweep: str | None = None) -> Path:
        """Write the runs as `csv` (one flat row per run) or `json` (full records); returns the path."""
        if fmt not in ("csv", "json"):
            raise BaloraError(f"unknown export format {fmt!r}; use 'csv' or 'json'")
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        records = self.runs(sweep)
        tmp = out.with_name(out.name + ".tmp")  # write then rename: a reader never sees half a file
        with tmp.open("w", newline="") as handle:
            if fmt == "json":
                json.dump([asdict(r) for r in records], handle, indent=2, default=jsonable)
            else:
                rows = [_flat(r) for r in records]
                writer = csv.DictWriter(handle, fieldnames=list(_flat_columns(rows)))
                writer.writeheader()
                writer.writerows(rows)
        tmp.replace(out)
        return out

    def _where(self, sweep: str | None, status: str | None) -> tuple[str, tuple[Any, ...]]:
        if status is not None and status not in STATUSES:
            raise BaloraError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}")
        clauses, args = [], []
        if sweep is not None:
            clauses.append("key IN (SELECT key FROM sweep_runs WHERE sweep = ?)")
            args.append(sweep)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args)

    def _select(self, where: str, args: tuple[Any, ...]) -> list[RunRecord]:
        names = [f.name for f in fields(RunRecord)]
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(names)} FROM runs {where} ORDER BY created, rowid",
                                    args).fetchall()
        return [RunRecord(**{n: json.loads(row[n]) if n in JSON_COLUMNS and row[n] is not None else row[n]
                             for n in names}) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _done(result: dict[str, Any], result_path: str | None, adapter_path: str | None) -> dict[str, Any]:
    """The columns of a done row for `result`."""
    config = result.get("config") or {}
    metrics = result.get("metrics") or {}
    return {
        "status": "done", "error": None, "config": _dumps(config),
        **{c: _scalar(config.get(c)) for c in QUERY_COLUMNS},
        "accuracy": _scalar(metrics.get("accuracy")), "f1": _scalar(metrics.get("f1")),
        "metrics": _dumps(result.get("metrics")), "timings": _dumps(result.get("timings")),
        "memory": _dumps(result.get("memory")), "allocation": _dumps(result.get("allocation")),
        "result": _dumps(result),
        "result_path": None if result_path is None else str(result_path),
        "adapter_path": str(adapter_path) if adapter_path is not None else result.get("adapter"),
        "finished": _now(),
    }


def _flat(record: RunRecord) -> dict[str, Any]:
    """One CSV row: identity and query columns, every metric, parameter counts, total time, peak memory."""
    row: dict[str, Any] = {n: getattr(record, n) for n in ("key", "sweep", "status", *QUERY_COLUMNS)}
    row.update((record.metrics or {}).items())
    params = (record.result or {}).get("params") or {}
    row.update({f"params_{p}": params.get(p) for p in CSV_PARAMS})
    row["time_total"] = (record.timings or {}).get("total")
    rss = (record.memory or {}).get("peak_rss_mib") or {}
    row["peak_rss_mib"] = max(rss.values(), default=None) if isinstance(rss, dict) else rss
    row.update({n: getattr(record, n) for n in ("error", "created", "started", "finished", "result_path",
                                                 "adapter_path")})
    return row


def _flat_columns(rows: list[dict[str, Any]]) -> dict[str, None]:
    """Every row's columns in a stable order: the usual metrics first, then any others a method added."""
    columns = dict.fromkeys(("key", "sweep", "status", *QUERY_COLUMNS, *CSV_METRICS))
    for row in rows:
        columns.update(dict.fromkeys(row))
    return columns

"""Sweeps: a YAML grid of runs, executed resumably into the results store.

A spec has shared settings (`base`), per-method `overrides`, and one or more `grids`; each grid
maps RunConfig fields to lists of values and expands to their cross product. Identical configs
across grids run once (same config hash). The driver process owns the database: it claims a run,
hands it to an executor (in-process, a local process pool, or Ray), and records the outcome.
A failing run is recorded as failed with its error and the sweep goes on.
"""

from __future__ import annotations

import itertools
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from balora.config import RunConfig, check_field, protocol, protocol_key
from balora.errors import BaloraError, read_text
from balora.store import ResultsStore

# A preset is a spec file shipped in balora/presets/: adding the file is all it takes.
PRESETS = tuple(sorted(f.name.removesuffix(".yaml") for f in resources.files("balora.presets").iterdir()
                       if f.name.endswith(".yaml")))
SPEC_KEYS = {"name", "description", "base", "overrides", "grids"}


@dataclass
class Planned:
    config: RunConfig
    grid: str


@dataclass
class Spec:
    name: str
    description: str
    runs: list[Planned]


def _lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line, so errors can name the line."""
    found = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found.update(_lines(value, path + (key.value,)))
            found[path + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.update(_lines(item, path + (i,)))
    return found


def _read(source: str) -> tuple[str, str]:
    if source in PRESETS:
        return f"preset '{source}'", resources.files("balora.presets").joinpath(f"{source}.yaml").read_text()
    path = Path(source)
    if not path.is_file():
        raise BaloraError(f"no sweep spec '{source}': not a file and not a preset ({', '.join(PRESETS)})")
    return str(path), read_text(path, "sweep spec")


def _parse_only(only: list[str]) -> dict[str, str]:
    pairs = {}
    for item in only:
        if "=" not in item:
            raise BaloraError(f"--only takes KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        pairs[key] = value
    return pairs


def load_spec(source: str, only: list[str] | None = None) -> Spec:
    """Read and validate a spec (file path or preset name) and expand its grids."""
    where, text = _read(source)
    try:
        document = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BaloraError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BaloraError(f"{where}: a sweep spec is a mapping with keys {', '.join(sorted(SPEC_KEYS))}")
    lines = _lines(document)

    def at(*path: Any) -> str:
        return f"{where}, line {lines.get(path, lines[()])}"

    unknown = set(data) - SPEC_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise BaloraError(f"{at(key)}: unknown key '{key}'; a spec has {', '.join(sorted(SPEC_KEYS))}")
    base, overrides, grids = data.get("base") or {}, data.get("overrides") or {}, data.get("grids") or []
    if not isinstance(grids, list) or not grids:
        raise BaloraError(f"{at('grids')}: 'grids' must be a non-empty list of grids")
    from balora.methods import METHODS

    def check_method(method: Any, *path: Any) -> None:
        if method not in METHODS:
            raise BaloraError(f"{at(*path)}: unknown method '{method}'; choose from {', '.join(METHODS)}")

    # Check every value where it is written, so that the error names its line.
    for key, value in base.items():
        check_field(key, value, at("base", key))
    for method, values in overrides.items():
        check_method(method, "overrides", method)
        for key, value in (values or {}).items():
            check_field(key, value, at("overrides", method, key))
    filters = _parse_only(only or [])
    planned: dict[str, Planned] = {}
    for index, grid in enumerate(grids):
        if not isinstance(grid, dict):
            raise BaloraError(f"{at('grids', index)}: each grid is a mapping of field: [values]")
        grid = dict(grid)
        label = str(grid.pop("name", f"grid{index}"))
        axes = {k: _axis(k, v) for k, v in grid.items()}
        for key, values in axes.items():
            for value in values:
                check_field(key, value, at("grids", index, key))
                if key == "method":
                    check_method(value, "grids", index, key)
        if "method" not in axes:
            check_method(base.get("method", RunConfig.method), "base", "method")
        for point in itertools.product(*axes.values()):
            values = dict(zip(axes, point))
            method = values.get("method", base.get("method", RunConfig.method))
            config = RunConfig.from_dict({**base, **values, **(overrides.get(method) or {})}, where=at("grids", index))
            if all(str(getattr(config, k, None)) == v for k, v in filters.items()):
                planned.setdefault(config.key(), Planned(config, label))
    for key in filters:
        if key not in RunConfig.__dataclass_fields__:
            raise BaloraError(f"--only {key}=...: '{key}' is not a run setting")
    return Spec(str(data.get("name", source)), str(data.get("description", "")), list(planned.values()))


def _axis(key: str, value: Any) -> list:
    """A grid entry's values: a list is an axis, anything else one value. `target_modules` is itself
    a list, so only a list of lists is an axis over it."""
    if key == "target_modules":
        return value if isinstance(value, list) and all(isinstance(v, list) for v in value) else [value]
    return value if isinstance(value, list) else [value]


def seed003_preset(args: Any) -> str | None:
    """Seed 003's runner flags, mapped onto presets."""
    if getattr(args, "run_qa_lora", False):
        raise BaloraError("QA-LoRA is not available yet; run --run-adalora or --run-all")
    if getattr(args, "run_all", False):
        return "paper"
    if getattr(args, "run_adalora", False):
        return "adalora"
    return None


def execute(config_dict: dict[str, Any], out_dir: str, threads: int | None = None) -> dict[str, Any]:
    """Run one config in this process and return its result (the worker side of every backend)."""
    import torch

    from balora.models import quiet_libraries
    from balora.run import run_experiment

    if threads:
        torch.set_num_threads(threads)
    quiet_libraries()
    return run_experiment(RunConfig(**config_dict), out_dir, progress=False).result


def _estimate_seconds(store: ResultsStore, planned: list[Planned]) -> float:
    """Seconds for the runs not yet done, from the time per training step of runs already done
    (0.5 s per step and 30 s of overhead when there are none yet)."""
    done = [r for r in store.results() if r.get("steps")]
    per_step = sum(r["timings"]["total"] for r in done) / max(1, sum(r["steps"] for r in done)) if done else 0.5
    overhead = 0.0 if done else 30.0
    total = 0.0
    for p in planned:
        c = p.config
        examples = c.shots * 2 if c.shots else (c.train_size or 9880)  # 2 classes, the embedded pool size
        total += per_step * -(-examples // c.batch_size) * c.train_epochs + overhead
    return total


def _describe(config: RunConfig) -> str:
    data = f"{config.shots}-shot" if config.shots else f"n={config.train_size or 'all'}"
    budget = f"r≈{config.budget_rank}" if config.budget_rank else f"{config.budget or config.rank} params/rank"
    return f"{config.method:<22} {budget:<14} {data:<10} seed {config.seed}"


def run_sweep(spec: Spec, db: str = "results/balora.db", runs_dir: str = "runs", dry_run: bool = False,
              workers: int = 1, backend: str = "local", ray_address: str | None = None,
              rerun_failed: bool = False) -> dict[str, int]:
    """Run every planned run not yet done; return counts of done, failed and skipped runs."""
    if workers < 1:
        raise BaloraError(f"--workers must be at least 1, got {workers}")
    with ResultsStore(db) as store:
        status = {p.config.key(): store.status(p.config.key()) for p in spec.runs}
        todo = [p for p in spec.runs if status[p.config.key()] != "done"
                and (status[p.config.key()] != "failed" or rerun_failed)]
        counts = {"planned": len(todo), "done": 0, "failed": 0, "skipped": len(spec.runs) - len(todo)}
        if dry_run:
            for p in spec.runs:
                print(f"{p.config.key()}  {status[p.config.key()] or 'planned':<8} {p.grid:<12} {_describe(p.config)}")
            minutes = _estimate_seconds(store, todo) / 60 / (workers if backend == "local" else 1)
            print(f"{len(spec.runs)} runs in sweep '{spec.name}': {len(spec.runs) - len(todo)} done or failed, "
                  f"{len(todo)} to run, about {minutes:.0f} min")
            return counts
        started, inside_runs = time.perf_counter(), [0.0]
        bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="run", dynamic_ncols=True)

        def record(planned: Planned, outcome: dict | BaseException, folder: Path) -> None:
            """Write one outcome to the store (only this, the driver process, writes it)."""
            key = planned.config.key()
            if isinstance(outcome, BaseException):
                message = str(outcome) if isinstance(outcome, BaloraError) else "".join(
                    traceback.format_exception_only(type(outcome), outcome)).strip()
                store.fail(key, message)
                counts["failed"] += 1
                tqdm.write(f"failed: {_describe(planned.config)}: {message}")
            else:
                store.finish(key, outcome, str(folder / "result.json"), str(folder / "adapter"))
                counts["done"] += 1
                inside_runs[0] += outcome["timings"]["total"]
            bar.update(1)

        executor = _executor(backend, workers, ray_address)
        in_flight: dict[Any, Planned] = {}
        queue = iter(todo)
        try:
            while True:
                # Claim only as capacity frees up, so an interrupted sweep holds at most the runs in flight.
                while len(in_flight) < executor.capacity and (planned := next(queue, None)) is not None:
                    if store.claim(planned.config.key(), planned.config.to_dict(), spec.name, rerun_failed):
                        in_flight[executor.submit(planned, runs_dir)] = planned
                    else:  # another sweep got there first
                        counts["skipped"] += 1
                        bar.total -= 1
                if not in_flight:
                    break
                handle, outcome = executor.next_done(list(in_flight))
                planned = in_flight.pop(handle)
                record(planned, outcome, out_dir(runs_dir, planned))
        finally:
            store.unclaim([p.config.key() for p in in_flight.values()])
            executor.close()
            bar.close()
    wall = time.perf_counter() - started
    # Bookkeeping: what the sweep spent outside the runs' own phases (database, spawning, config,
    # imports); meaningful for in-process execution, where run time and wall time add up.
    counts["wall_seconds"] = round(wall, 1)
    counts["bookkeeping_share"] = max(0.0, wall - inside_runs[0]) / wall if counts["done"] and workers == 1 else None
    share = "" if counts["bookkeeping_share"] is None else f", bookkeeping {100 * counts['bookkeeping_share']:.1f}% of wall time"
    print(f"sweep '{spec.name}': {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {wall / 60:.1f} min{share}")
    return counts


@dataclass(eq=False)  # hashed by identity: a handle in the in-flight table
class _Finished:
    outcome: dict | BaseException


class _Inline:
    """Runs each run in this process as it is submitted."""

    capacity = 1

    def submit(self, planned: Planned, runs_dir: str) -> _Finished:
        try:
            return _Finished(execute(planned.config.to_dict(), str(out_dir(runs_dir, planned))))
        except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
            return _Finished(err)

    def next_done(self, handles: list[_Finished]) -> tuple[_Finished, dict | BaseException]:
        return handles[0], handles[0].outcome

    def close(self) -> None:
        pass


class _Processes:
    """A pool of spawned worker processes on this machine, threads split evenly among them."""

    def __init__(self, workers: int) -> None:
        self.capacity = workers
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))

    def submit(self, planned: Planned, runs_dir: str) -> Future:
        return self.pool.submit(execute, planned.config.to_dict(), str(out_dir(runs_dir, planned)), self.threads)

    def next_done(self, handles: list[Future]) -> tuple[Future, dict | BaseException]:
        future = next(iter(wait(handles, return_when=FIRST_COMPLETED).done))
        error = future.exception()
        return future, error if error is not None else future.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class _Ray:
    """Runs on a Ray cluster (`ray.init(address=...)`); results come back to this process's store."""

    def __init__(self, address: str | None, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise BaloraError("--backend ray needs Ray: pip install 'balora[ray]'") from None
        self.ray = ray
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        self.capacity = workers if workers > 1 else max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.remote = ray.remote(num_cpus=1)(execute)

    def submit(self, planned: Planned, runs_dir: str) -> Any:
        return self.remote.remote(planned.config.to_dict(), str(out_dir(runs_dir, planned)), 1)

    def next_done(self, handles: list[Any]) -> tuple[Any, dict | BaseException]:
        (ref,), _ = self.ray.wait(handles, num_returns=1)
        try:
            return ref, self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:
            return ref, err.cause or err

    def close(self) -> None:
        pass


def out_dir(runs_dir: str, planned: Planned) -> Path:
    """Where a run writes `result.json` and `adapter/`: one folder per config hash."""
    return Path(runs_dir).resolve() / planned.config.key()


def _executor(backend: str, workers: int, ray_address: str | None) -> _Inline | _Processes | _Ray:
    if backend == "ray":
        return _Ray(ray_address, workers)
    return _Processes(workers) if workers > 1 else _Inline()


def runs_table(db: str, sweep: str | None = None, status: str | None = None) -> str:
    with ResultsStore(db) as store:
        records = store.runs(sweep, status)
    if not records:
        return "no runs recorded"
    lines = [f"{'key':<16}  {'status':<7}  {'sweep':<10}  {'method':<22}  {'budget':<8}  {'data':<10}  {'seed':>4}  "
             f"{'accuracy':>8}"]
    for r in records:
        data = f"{r.shots}-shot" if r.shots else f"n={r.train_size or 'all'}"
        accuracy = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        lines.append(f"{r.key:<16}  {r.status:<7}  {r.sweep or '-':<10}  {r.method:<22}  {str(r.budget_rank or r.budget):<8}  "
                     f"{data:<10}  {r.seed:>4}  {accuracy:>8}")
    return "\n".join(lines)


# What `results_table` shows as its own columns; any other field in which its rows differ goes in a column too.
TABLE_FIELDS = ("method", "budget_rank", "shots", "train_size")


def results_table(db: str, sweep: str | None = None) -> str:
    """Mean ± std test accuracy over seeds, one row per protocol (everything but the seed), with parameter
    counts. Rows that differ in a field other than method, budget and data show it in a last column."""
    import statistics

    with ResultsStore(db) as store:
        results = store.results(sweep)
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(protocol_key(r["config"]), []).append(r)
    protocols = {key: protocol(rows[0]["config"]) for key, rows in groups.items()}
    names = sorted({n for p in protocols.values() for n in p} - set(TABLE_FIELDS))
    differing = [n for n in names if len({repr(p.get(n)) for p in protocols.values()}) > 1]
    lines = [f"{'method':<22} {'budget':>6} {'data':>10} {'n':>2} {'accuracy':>15} {'LoRA trained':>12} {'LoRA final':>10} "
             f"{'head':>6} {'majority':>8} {'time s':>7}" + ("  protocol" if differing else "")]
    for key, rows in sorted(groups.items(), key=lambda kv: tuple(str(protocols[kv[0]][f]) for f in TABLE_FIELDS) + (kv[0],)):
        p = protocols[key]
        acc = [r["metrics"]["accuracy"] for r in rows]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        data = f"{p['shots']}-shot" if p["shots"] else f"n={p['train_size'] or 'all'}"
        lines.append(f"{p['method']:<22} {str(p['budget_rank']):>6} {data:>10} {len(rows):>2} "
                     f"{statistics.mean(acc):>8.4f} ± {spread:.3f} "
                     f"{rows[0]['params']['lora']:>12,} {rows[0]['params']['lora_final']:>10,} {rows[0]['params']['head']:>6,} "
                     f"{rows[0]['metrics']['majority_rate']:>8.3f} "
                     f"{statistics.mean(r['timings']['total'] for r in rows):>7.1f}"
                     + ("  " + ", ".join(f"{n}={p.get(n)}" for n in differing) if differing else ""))
    return "\n".join(lines)

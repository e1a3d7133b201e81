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
import traceback
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from balora.config import RunConfig
from balora.errors import BaloraError
from balora.store import ResultsStore

PRESETS = ("quick", "paper", "adalora")
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
    return str(path), path.read_text()


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

    for method in overrides:
        if method not in METHODS:
            raise BaloraError(f"{at('overrides', method)}: unknown method '{method}'; choose from {', '.join(METHODS)}")
    filters = _parse_only(only or [])
    planned: dict[str, Planned] = {}
    for index, grid in enumerate(grids):
        if not isinstance(grid, dict):
            raise BaloraError(f"{at('grids', index)}: each grid is a mapping of field: [values]")
        grid = dict(grid)
        label = str(grid.pop("name", f"grid{index}"))
        axes = {k: v if isinstance(v, list) else [v] for k, v in grid.items()}
        for point in itertools.product(*axes.values()):
            values = dict(zip(axes, point))
            method = values.get("method", base.get("method"))
            if method not in METHODS:
                line = at("grids", index, "method") if "method" in grid else at("base", "method")
                raise BaloraError(f"{line}: unknown method '{method}'; choose from {', '.join(METHODS)}")
            merged = {**base, **values, **(overrides.get(method) or {})}
            source = next((("grids", index, k) for k in values if k not in RunConfig.__dataclass_fields__), None)
            config = RunConfig.from_dict(merged, where=at(*source) if source else at("grids", index))
            if all(str(getattr(config, k, None)) == v for k, v in filters.items()):
                planned.setdefault(config.key(), Planned(config, label))
    for key in filters:
        if key not in RunConfig.__dataclass_fields__:
            raise BaloraError(f"--only {key}=...: '{key}' is not a run setting")
    return Spec(str(data.get("name", source)), str(data.get("description", "")), list(planned.values()))


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

    from balora.cli import _quiet_libraries
    from balora.run import run_experiment

    if threads:
        torch.set_num_threads(threads)
    _quiet_libraries()
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
        if dry_run:
            for p in spec.runs:
                print(f"{p.config.key()}  {status[p.config.key()] or 'planned':<8} {p.grid:<12} {_describe(p.config)}")
            minutes = _estimate_seconds(store, todo) / 60 / (workers if backend == "local" else 1)
            print(f"{len(spec.runs)} runs in sweep '{spec.name}': {len(spec.runs) - len(todo)} done or failed, "
                  f"{len(todo)} to run, about {minutes:.0f} min")
            return {"planned": len(todo), "done": 0, "failed": 0, "skipped": len(spec.runs) - len(todo)}
        counts = {"planned": len(todo), "done": 0, "failed": 0, "skipped": len(spec.runs) - len(todo)}
        bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="run", dynamic_ncols=True)

        def record(planned: Planned, outcome: dict | BaseException, out_dir: Path) -> None:
            key = planned.config.key()
            if isinstance(outcome, BaseException):
                message = str(outcome) if isinstance(outcome, BaloraError) else "".join(
                    traceback.format_exception_only(type(outcome), outcome)).strip()
                store.fail(key, message)
                counts["failed"] += 1
                tqdm.write(f"failed: {_describe(planned.config)}: {message}")
            else:
                store.finish(key, outcome, str(out_dir / "result.json"), str(out_dir / "adapter"))
                counts["done"] += 1
            bar.update(1)

        pending = [p for p in todo if store.claim(p.config.key(), p.config.to_dict(), spec.name, rerun_failed)]
        counts["skipped"] += len(todo) - len(pending)
        bar.total = len(pending)
        _dispatch(pending, Path(runs_dir), workers, backend, ray_address, record)
        bar.close()
    print(f"sweep '{spec.name}': {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped")
    return counts


def _dispatch(pending: list[Planned], runs_dir: Path, workers: int, backend: str, ray_address: str | None,
              record: Any) -> None:
    """Send claimed runs to the chosen executor; `record` is called once per run in this process."""
    out = {p.config.key(): runs_dir / p.config.key() for p in pending}
    if backend == "ray":
        try:
            import ray
        except ImportError:
            raise BaloraError("--backend ray needs Ray: pip install 'balora[ray]'") from None
        ray.init(address=ray_address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(execute)
        refs = {remote.remote(p.config.to_dict(), str(out[p.config.key()])): p for p in pending}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            planned = refs.pop(ready[0])
            try:
                record(planned, ray.get(ready[0]), out[planned.config.key()])
            except ray.exceptions.RayTaskError as err:
                record(planned, err.cause or err, out[planned.config.key()])
        return
    if workers == 1:
        for p in pending:
            try:
                outcome: dict | BaseException = execute(p.config.to_dict(), str(out[p.config.key()]))
            except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
                outcome = err
            record(p, outcome, out[p.config.key()])
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures: dict[Future, Planned] = {pool.submit(execute, p.config.to_dict(), str(out[p.config.key()]), threads): p
                                          for p in pending}
        for future in as_completed(futures):
            planned = futures[future]
            error = future.exception()
            record(planned, error if error is not None else future.result(), out[planned.config.key()])


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


def results_table(db: str, sweep: str | None = None) -> str:
    """Mean ± std test accuracy per method and setting over seeds, with parameter counts."""
    import statistics

    with ResultsStore(db) as store:
        results = store.results(sweep)
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["config"]
        groups.setdefault((c["method"], c.get("budget_rank"), c.get("shots"), c.get("train_size")), []).append(r)
    lines = [f"{'method':<22} {'budget':>6} {'data':>10} {'n':>2} {'accuracy':>15} {'LoRA params':>11} {'head':>6} "
             f"{'majority':>8} {'time s':>7}"]
    for (method, budget, shots, size), rows in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        acc = [r["metrics"]["accuracy"] for r in rows]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        data = f"{shots}-shot" if shots else f"n={size or 'all'}"
        lines.append(f"{method:<22} {str(budget):>6} {data:>10} {len(rows):>2} {statistics.mean(acc):>8.4f} ± {spread:.3f} "
                     f"{rows[0]['params']['lora_final']:>11,} {rows[0]['params']['head']:>6,} "
                     f"{rows[0]['metrics']['majority_rate']:>8.3f} "
                     f"{statistics.mean(r['timings']['total'] for r in rows):>7.1f}")
    return "\n".join(lines)

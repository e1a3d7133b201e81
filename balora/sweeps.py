"""Sweeps: a spec's runs (`balora.specs`), executed resumably into the results store.

A spec with a `tune:` block runs in two phases: tuning runs (every cell × candidate × tuning seed,
and, with `extend`, the candidates of every grid that grew past an end until none grows), then, per
cell, the evaluation runs at the candidate `balora.tuning` selects from the stored tuning runs.
Selection is recomputed from the store each time, so an interrupted sweep resumes in either phase.
A spec with a `confirm:` block has a third phase: the confirmation seeds of every arm whose screening
runs beat the reference's on validation (`confirmations`), decided from the store in the same way.

The driver process owns the database: it claims a run,
hands it to an executor (in-process, a local process pool, or Ray), and records the outcome.
A failing run is recorded as failed with its error and the sweep goes on.

With a results folder (`results_dir:` in the spec, or `--results-dir`) every finished run is also
written there as `<key>.json` (`balora.runfiles`), before the database records it. The folder is
what gets committed; the database is a working copy: a sweep first imports every run file the
database lacks (so runs whose file exists are skipped, whatever the database says) and writes the
file of every planned run the database has done but the folder lacks, whichever sweep stored it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from balora import tasks
from balora.config import DEFAULTS, RunConfig, method_settings, protocol, protocol_key
from balora.errors import BaloraError, output_folder
from balora.quiet import silence
from balora.runfiles import read_run, run_keys, run_path, write_run
from balora.specs import Planned, Spec
from balora.store import ResultsStore
from balora.training import bf16_emulation, native_bf16
from balora.tuning import (
    Tune,
    anytime_value,
    cell_fields,
    choose,
    final_validation,
    matched_horizon,
    primary_metric,
    score,
    validation_curve,
    with_candidate,
)


def execute(config_dict: dict[str, Any], out_dir: str, threads: int | None = None) -> dict[str, Any]:
    """Run one config in this process and return its result (the worker side of every backend)."""
    silence()  # a Ray worker's first call; a local worker's initializer already did it, before any import
    import torch

    from balora.run import run_experiment

    if threads:
        torch.set_num_threads(threads)
    return run_experiment(RunConfig(**config_dict), out_dir, progress=False).result


def _describe(config: RunConfig) -> str:
    data = f"{config.shots}-shot" if config.shots else f"n={config.train_size or 'all'}"
    budget = f"r≈{config.budget_rank}" if config.budget_rank else f"{config.budget or config.rank} params/rank"
    tuned = " ".join(f"{name}={getattr(config, name)}" for name in config.tuned or [])
    return f"{config.method:<22} {budget:<14} {data:<10} seed {config.seed}" + (f"  {tuned}" if tuned else "")


@dataclass
class Selection:
    """What the stored tuning runs of one cell decided; `chosen` is None while any of them is not done."""

    planned: Planned  # the cell's first evaluation run, with placeholder values
    chosen: dict[str, Any] | None
    summary: str
    reads: list[str]  # the keys of the runs the selection reads under the grid as grown (`cell_keys`)


def tuned_cells(spec: Spec) -> dict[str, list[Planned]]:
    """The evaluation runs of each tuned cell, by cell key."""
    cells: dict[str, list[Planned]] = {}
    for p in spec.runs:
        if p.tune is not None:
            cells.setdefault(p.cell, []).append(p)
    return cells


def cell_keys(cell: list[Planned], tune: Tune) -> tuple[list[str], list[str]]:
    """The keys of what a cell's selection reads: its tuning runs under `tune`, and its evaluation runs at
    any of its candidates (which count only if they ended at chance, `balora.tuning.at_chance`)."""
    return ([config.key() for config in cell[0].tuning_configs(tune)],
            [with_candidate(p.config, candidate).key() for p in cell for candidate in tune.candidates()])


def cell_results(cell: list[Planned], tune: Tune, store: ResultsStore) -> list[dict[str, Any]] | None:
    """The results of a cell's runs that its selection reads (`cell_keys`) and are done; None while any of
    the tuning runs is not done."""
    tuning, evaluations = ([store.get(key) for key in keys] for keys in cell_keys(cell, tune))
    if any(r is None or r.status != "done" for r in tuning):
        return None
    return [r.result for r in tuning] + [r.result for r in evaluations if r is not None and r.status == "done"]


def write_missing(store: ResultsStore, folder: str | Path, keys: list[str]) -> None:
    """Write the run file of each run among `keys` that the store has done and `folder` lacks, whichever sweep
    stored it: a run another preset shares (the `dynamic` preset's static arms are the `paper`'s runs) belongs
    in this sweep's folder too, or a report built from the folder compares or selects without it."""
    on_disk = run_keys(folder)
    for key in keys:
        if key not in on_disk and (record := store.get(key)) is not None and record.status == "done":
            write_run(folder, dict(record.result or {}, key=key), record.sweep)


def grown_tune(cell: list[Planned], store: ResultsStore) -> tuple[Tune, list[dict[str, Any]] | None]:
    """The grid of a cell as grown so far (`Tune.grown`, from its stored runs: the same answer however often
    a sweep is interrupted), and the cell's results (`cell_results`); None for those while any of its
    tuning runs is not done."""
    tune = cell[0].tune
    while True:
        results = cell_results(cell, tune, store)
        if results is None:
            return tune, None
        selected = dict(zip(cell_fields(results), choose(score(results)).candidate))
        bigger = tune.grown(selected, cell[0].tune, cell[0].config.train_epochs)
        if bigger is None:
            return tune, results
        tune = bigger


def grown_tunes(spec: Spec, store: ResultsStore) -> dict[str, Tune]:
    """Every cell whose grid may grow, with its grid as grown so far (for `Spec.tuning_runs`)."""
    return {key: grown_tune(cell, store)[0] for key, cell in tuned_cells(spec).items()
            if cell[0].tune.extend or cell[0].tune.lengthen}


def select(spec: Spec, store: ResultsStore) -> dict[str, Selection]:
    """Each tuned cell's selection, recomputed from the stored runs (see `balora.tuning`)."""
    selections: dict[str, Selection] = {}
    for key, cell in tuned_cells(spec).items():
        p = cell[0]
        tune, results = grown_tune(cell, store)
        tuning, evaluations = cell_keys(cell, tune)
        if results is None:
            waiting = sum(store.status(key) != "done" for key in tuning)
            selections[key] = Selection(p, None, f"{waiting} of {len(tuning)} tuning runs not done",
                                        tuning + evaluations)
            continue
        scores = score(results)
        best = choose(scores)
        measure = "loss" if best.by_loss else "accuracy"
        listed = ", ".join(f"{'/'.join(map(str, s.candidate))}: {s.mean_loss if s.by_loss else s.mean:.4f}"
                           + ("" if s.admissible else f" (at chance: seed {', '.join(map(str, s.at_chance))})")
                           for s in scores)
        selections[key] = Selection(p, dict(zip(cell_fields(results), best.candidate)),
                                    f"mean final validation {measure} over seeds {tune.seeds}: {listed}",
                                    tuning + evaluations)
    return selections


def seed_major(planned: list[Planned]) -> list[Planned]:
    """`planned` seed by seed, in the order the seeds first appear (and in planned order within a seed): a
    sweep stopped part-way has every arm at its first seeds, a table of paired runs for each, rather than some
    arms at every seed and others at none."""
    order = {seed: index for index, seed in reversed(list(enumerate(p.config.seed for p in planned)))}
    return sorted(planned, key=lambda p: order[p.config.seed])


def evaluation_runs(spec: Spec, selections: dict[str, Selection]) -> tuple[list[Planned], list[Planned]]:
    """(runs ready to run, runs awaiting their cell's selection) of the evaluation phase."""
    ready, awaiting = [], []
    for p in spec.runs:
        chosen = selections[p.cell].chosen if p.tune else {}
        if chosen is None:
            awaiting.append(p)
        else:
            ready.append(Planned(with_candidate(p.config, chosen), p.grid, confirm=p.confirm))
    return ready, awaiting


# What makes an arm besides its setting: a confirmation stage compares the arms of one setting (`setting_key`)
ARM_OPTIONS = ("scaling_rule", "loraplus_ratio", "warmstart_init", "max_rank")
ARM_FIELDS = frozenset({"method", "seed", "tuned", "tuning", "method_options", *ARM_OPTIONS})


def setting_key(config: RunConfig) -> str:
    """Everything but the arm (ARM_FIELDS) and the values selected on validation, a tuned cell's epochs among
    them (it may lengthen, `tuning.cell_key`): the runs a confirmation stage compares with one reference."""
    arm = ARM_FIELDS | set(method_settings()) | set(config.tuned or []) | ({"epochs"} if config.tuned else set())
    return json.dumps({k: v for k, v in config.to_dict().items() if k not in arm}, sort_keys=True, default=str)


@dataclass
class Decision:
    """A confirmation decision for one arm: the runs it adds (the arm's and the reference's, on the
    confirmation seeds; none unless it qualified) and why."""

    planned: Planned  # one of the arm's screening runs
    runs: list[Planned]
    summary: str


def _reference(arms: dict[str, list[Planned]], method: str) -> str | None:
    """The reference arm among `arms`: `method` with the fewest arm options away from their defaults."""
    candidates = [a for a, runs in arms.items() if runs[0].config.method == method]
    return min(candidates, key=lambda a: sum(getattr(arms[a][0].config, o) != DEFAULTS[o] for o in ARM_OPTIONS),
               default=None)


def _screening(runs: list[Planned], store: ResultsStore) -> list[dict[str, Any]] | None:
    """The stored results of an arm's screening runs, None until all are done."""
    records = [store.get(p.config.key()) for p in runs]
    return None if any(r is None or r.status != "done" for r in records) else [r.result for r in records]


def _means(results: list[dict[str, Any]], horizon: int | None) -> tuple[float, float]:
    """Mean final validation value and mean anytime value over the first `horizon` steps (NaN without curves)
    over an arm's screening runs."""
    metric = primary_metric(results[0])
    finals = [final_validation(r)[metric] for r in results]
    areas = [anytime_value(validation_curve(r), r.get("steps"), horizon) for r in results]
    return statistics.fmean(finals), statistics.fmean(areas) if all(math.isfinite(a) for a in areas) else math.nan


def _arms_by_setting(planned: list[Planned]) -> dict[str, dict[str, list[Planned]]]:
    """The runs of `confirm:` grids by setting (`setting_key`), then by arm (the config but its seed)."""
    by_setting: dict[str, dict[str, list[Planned]]] = {}
    for p in planned:
        if p.confirm is not None:
            by_setting.setdefault(setting_key(p.config), {}).setdefault(replace(p.config, seed=0).key(), []).append(p)
    return by_setting


def confirmations(ready: list[Planned], store: ResultsStore) -> list[Decision]:
    """For every arm of a `confirm:` grid (but the reference), whether it earns the confirmation seeds: its mean
    final validation value or its mean anytime value over its screening seeds beats the reference arm's, in
    the same setting, by at least the gain (for a loss, by being that much lower). Arms waiting for screening
    runs get a decision without runs."""
    decisions = []
    for arms in _arms_by_setting(ready).values():
        confirm = next(iter(arms.values()))[0].confirm
        reference = _reference(arms, confirm.reference)
        base = _screening(arms[reference], store) if reference else None
        for arm, runs in arms.items():
            if arm == reference:
                continue
            first = runs[0]
            if reference is None:
                decisions.append(Decision(first, [], f"no {confirm.reference} arm in its setting to confirm against"))
                continue
            results = _screening(runs, store)
            if results is None or base is None:
                decisions.append(Decision(first, [], "awaiting its screening runs or the reference's"))
                continue
            sign = tasks.of_result(results[0]).metric.sign
            horizon = matched_horizon([r.get("steps") for r in results + base])  # at matched steps
            (final, area), (ref_final, ref_area) = _means(results, horizon), _means(base, horizon)
            gains = sign * (final - ref_final), sign * (area - ref_area)
            said = (f"validation {tasks.number(gains[0], 4, sign=True)}, anytime {tasks.number(gains[1], 4, sign=True)} "
                    f"against {confirm.reference} (gain {confirm.gain:g})")
            if max(g for g in gains if math.isfinite(g)) >= confirm.gain:
                added = [Planned(replace(p.config, seed=seed), p.grid) for p in (first, arms[reference][0])
                         for seed in confirm.seeds]
                decisions.append(Decision(first, added, f"confirmed on seeds {', '.join(map(str, confirm.seeds))}: {said}"))
            else:
                decisions.append(Decision(first, [], f"screened out: {said}"))
    return decisions


def _confirmable(spec: Spec) -> tuple[int, int]:
    """(arms that a confirmation stage decides on, confirmation runs if every one of them qualified)."""
    by_setting = _arms_by_setting(spec.runs)
    arms = sum(len(a) - 1 for a in by_setting.values())
    runs = sum(len(a) * len(next(iter(a.values()))[0].confirm.seeds) for a in by_setting.values() if len(a) > 1)
    return arms, runs


def confirmation_runs(decisions: list[Decision]) -> list[Planned]:
    """The runs the decisions add, each once (a reference confirmed by several arms runs once)."""
    return list({p.config.key(): p for d in decisions for p in d.runs}.values())


def _statuses(store: ResultsStore, planned: list[Planned]) -> dict[str, str | None]:
    return {p.config.key(): store.status(p.config.key()) for p in planned}


def _todo(planned: list[Planned], status: dict[str, str | None], rerun_failed: bool) -> list[Planned]:
    return [p for p in planned if status[p.config.key()] != "done"
            and (status[p.config.key()] != "failed" or rerun_failed)]


def print_plan(spec: Spec, store: ResultsStore, workers: int = 1, rerun_failed: bool = False) -> dict[str, Any]:
    """Print the planned runs of both phases and an estimate of their wall time; run nothing."""
    from balora.estimate import Estimator

    estimator = Estimator(store.results())
    selections = select(spec, store)
    ready, awaiting = evaluation_runs(spec, selections)
    decisions = confirmations(ready, store)
    phases = {"tuning": spec.tuning_runs(grown_tunes(spec, store)), "evaluation": ready,
              **({"confirmation": confirmation_runs(decisions)} if any(p.confirm for p in spec.runs) else {})}
    undecided = [d for d in decisions if not d.runs and d.summary.startswith("awaiting")]
    summary: dict[str, Any] = {}
    for phase, planned in phases.items():
        status = _statuses(store, planned)
        todo = _todo(planned, status, rerun_failed)
        for p in planned:
            print(f"{p.config.key()}  {status[p.config.key()] or 'planned':<8} {phase:<10} {p.grid:<12} "
                  f"{_describe(p.config)}")
        waiting = awaiting if phase == "evaluation" else []
        for p in waiting:
            print(f"{'-':<16}  {'awaiting':<8} {phase:<10} {p.grid:<12} {_describe(p.config)} (to be selected)")
        if phase == "confirmation":
            for d in decisions:
                print(f"{'-':<16}  {'decided' if d.runs or not d.summary.startswith('awaiting') else 'awaiting':<8} "
                      f"{phase:<12} {d.planned.grid:<12} {_describe(d.planned.config).rsplit(' seed', 1)[0].strip()}: "
                      f"{d.summary}")
        seconds = sum(estimator.seconds(p.config) for p in todo + waiting)
        summary[phase] = {"runs": len(planned) + len(waiting), "done": sum(s == "done" for s in status.values()),
                          "to_run": len(todo) + len(waiting), "seconds": seconds}
    cells = list(selections.values())
    total = sum(phase["seconds"] for phase in summary.values()) / workers
    print(f"sweep '{spec.name}':")
    for phase, numbers in summary.items():
        selected = (f"; {sum(s.chosen is not None for s in cells)} of {len(cells)} tuned cells selected, "
                    f"{len(awaiting)} runs awaiting selection") if phase == "evaluation" and cells else ""
        if phase == "confirmation":
            arms, most = _confirmable(spec)
            decided = [d for d in decisions if d not in undecided]
            selected = (f"; of {arms} arms, {len(decided)} decided ({sum(bool(d.runs) for d in decided)} confirmed); "
                        f"if every arm qualified, {most} runs in all")
        print(f"  {phase:<10} {numbers['runs']:>4} runs: {numbers['done']} done, {numbers['to_run']} to run{selected}, "
              f"about {numbers['seconds'] / 60 / workers:.0f} min")
    print(f"  total      about {total / 60:.0f} min ({total / 3600:.1f} h) with {workers} worker{'s' * (workers > 1)}; "
          f"times from {estimator.sources()}")
    return {**summary, "seconds": total}


def sync_results(store: ResultsStore, folder: str | Path, spec: Spec) -> dict[str, int]:
    """Bring the store and a run folder in line: import every run file the store has not got as done,
    and write a file for every run of this sweep (tuning runs included) the store has done but the folder lacks."""
    on_disk = run_keys(folder)
    imported = [key for key in sorted(on_disk) if store.status(key) != "done"]
    for key in imported:
        record = read_run(run_path(folder, key))
        store.add(record, str(record.get("sweep") or spec.name))
    written = [r for r in store.runs(spec.name, status="done") if r.key not in on_disk]
    for record in written:
        write_run(folder, dict(record.result or {}, key=record.key), record.sweep)
    return {"imported": len(imported), "written": len(written)}


def _warn_if_bf16_is_emulated(spec: Spec) -> None:
    """One line where this machine, which runs a local sweep's runs and a dry run's calibration, emulates bf16."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if any(p.config.precision == "bf16" for p in spec.runs) and not native_bf16(device):
        print(f"balora: warning: sweep '{spec.name}' runs in bf16 on {bf16_emulation(device)}; its runs, and a "
              "--dry-run's calibration, take several times longer than on a machine with native bf16", file=sys.stderr)


def run_sweep(spec: Spec, db: str = "results/balora.db", runs_dir: str = "runs", dry_run: bool = False,
              workers: int = 1, backend: str = "local", ray_address: str | None = None,
              rerun_failed: bool = False, results_dir: str | None = None) -> dict[str, Any]:
    """Run every planned run not yet done, tuning phase first; return counts of done, failed and skipped
    runs, and of evaluation runs still awaiting a selection (a tuning run of their cell failed).
    Finished runs also go to `results_dir` (default: the spec's `results_dir`) as run files."""
    if workers < 1:
        raise BaloraError(f"--workers must be at least 1, got {workers}")
    if dry_run or backend == "local":
        _warn_if_bf16_is_emulated(spec)
    where = "--results-dir" if results_dir else f"the results_dir of sweep '{spec.name}'"
    results_dir = results_dir or spec.results_dir
    # found now, dry run too, not when the first finished run is saved
    output_folder(runs_dir, "--runs-dir")
    if results_dir:
        output_folder(results_dir, where)
    with ResultsStore(db) as store:
        if results_dir:
            synced = sync_results(store, results_dir, spec)
            print(f"run files in {results_dir}: {synced['imported']} imported into {db}, "
                  f"{synced['written']} written from it")
        if dry_run:
            return print_plan(spec, store, workers if backend == "local" else 1, rerun_failed)
        counts: dict[str, Any] = {"planned": 0, "done": 0, "failed": 0, "skipped": 0, "awaiting": 0}
        started, inside_runs = time.perf_counter(), [0.0]
        executor = _executor(backend, workers, ray_address)
        try:
            # Tuning, then again for the candidates of every grid that grew past an end; then the evaluation
            # runs at each cell's selection, then again wherever one ended at chance and the cell selected anew.
            seen: set[str] = set()
            announced: set[str] = set()
            evaluation_phase = "evaluation" if any(p.tune for p in spec.runs) else ""
            while True:
                tuning = [p for p in spec.tuning_runs(grown_tunes(spec, store)) if p.config.key() not in seen]
                if tuning:
                    seen |= {p.config.key() for p in tuning}
                    _run_phase(store, executor, spec.name, "tuning", tuning, runs_dir, rerun_failed, counts,
                               inside_runs, results_dir)
                    continue
                selections = select(spec, store)
                if results_dir:  # every run a selection read, so that the folder's report selects alike
                    write_missing(store, results_dir, [k for s in selections.values() for k in s.reads])
                for selection in selections.values():
                    chosen = selection.chosen and " ".join(f"{k}={v}" for k, v in selection.chosen.items())
                    line = (f"{'selected ' + chosen if chosen else 'awaiting selection'} for "
                            f"{_describe(selection.planned.config).rsplit(' seed', 1)[0].strip()}: {selection.summary}")
                    if line not in announced:
                        announced.add(line)
                        tqdm.write(line)
                ready, awaiting = evaluation_runs(spec, selections)
                counts["awaiting"] = len(awaiting)
                phase, todo = evaluation_phase, [p for p in ready if p.config.key() not in seen]
                if not todo:  # screening is over: the confirmation seeds of the arms it qualifies
                    decisions = confirmations(ready, store)
                    for decision in decisions:
                        line = f"{_describe(decision.planned.config).rsplit(' seed', 1)[0].strip()}: {decision.summary}"
                        if line not in announced:
                            announced.add(line)
                            tqdm.write(line)
                    phase, todo = "confirmation", [p for p in confirmation_runs(decisions) if p.config.key() not in seen]
                if not todo:
                    break
                seen |= {p.config.key() for p in todo}
                _run_phase(store, executor, spec.name, phase, seed_major(todo), runs_dir, rerun_failed, counts,
                           inside_runs, results_dir)
        finally:
            executor.close()
    wall = time.perf_counter() - started
    # Bookkeeping: what the sweep spent outside the runs' own phases (database, spawning, config,
    # imports); meaningful for in-process execution, where run time and wall time add up.
    counts["wall_seconds"] = round(wall, 1)
    counts["bookkeeping_share"] = max(0.0, wall - inside_runs[0]) / wall if counts["done"] and workers == 1 else None
    share = "" if counts["bookkeeping_share"] is None else f", bookkeeping {100 * counts['bookkeeping_share']:.1f}% of wall time"
    awaiting = (f", {counts['awaiting']} awaiting a selection (a tuning run failed: --rerun-failed)"
                if counts["awaiting"] else "")
    print(f"sweep '{spec.name}': {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped"
          f"{awaiting} in {wall / 60:.1f} min{share}")
    return counts


def _run_phase(store: ResultsStore, executor: Any, sweep: str, phase: str, planned: list[Planned], runs_dir: str,
               rerun_failed: bool, counts: dict[str, Any], inside_runs: list[float], results_dir: str | None) -> None:
    """Run the runs of `planned` not yet done, recording each outcome in the store (and, with
    `results_dir`, as a run file) as it arrives."""
    status = _statuses(store, planned)
    if results_dir:
        write_missing(store, results_dir, list(status))
    todo = _todo(planned, status, rerun_failed)
    counts["planned"] += len(todo)
    counts["skipped"] += len(planned) - len(todo)
    bar = tqdm(total=len(todo), desc=f"sweep {sweep}" + (f" {phase}" if phase else ""), unit="run",
               dynamic_ncols=True)

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
            unwritten = None
            if results_dir:  # the file first: once it exists, no later sweep runs this again
                try:
                    write_run(results_dir, outcome, sweep)
                except OSError as err:  # a full disk, say: the finished run is recorded all the same
                    unwritten = err
            store.finish(key, outcome, str(folder / "result.json"), str(folder / "adapter"))
            counts["done"] += 1
            inside_runs[0] += outcome["timings"]["total"]
            if unwritten is not None:  # a later sweep writes the file from the database (`sync_results`)
                raise BaloraError(f"run {key} finished and is recorded as done in {store.path}, but its run file could "
                                  f"not be written to {results_dir} ({unwritten}); fix that, and the next sweep writes "
                                  "it from the database")
        bar.update(1)

    in_flight: dict[Any, Planned] = {}
    queue = iter(todo)
    try:
        while True:
            # Claim only as capacity frees up, so an interrupted sweep holds at most the runs in flight.
            while len(in_flight) < executor.capacity and (planned_run := next(queue, None)) is not None:
                if store.claim(planned_run.config.key(), planned_run.config.to_dict(), sweep, rerun_failed):
                    in_flight[executor.submit(planned_run, runs_dir)] = planned_run
                else:  # another sweep got there first
                    counts["skipped"] += 1
                    bar.total -= 1
            if not in_flight:
                break
            handle, outcome = executor.next_done(list(in_flight))
            done = in_flight.pop(handle)
            record(done, outcome, out_dir(runs_dir, done))
    finally:
        store.unclaim([p.config.key() for p in in_flight.values()])
        bar.close()


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
        # silence() runs before the worker imports balora.sweeps (and with it PEFT and bitsandbytes)
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=silence)

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
    with ResultsStore(db, create=False) as store:
        records = store.runs(sweep, status)
    if not records:
        return "no runs recorded"
    lines = [f"{'key':<16}  {'status':<7}  {'sweep':<10}  {'phase':<10}  {'method':<22}  {'budget':<8}  {'data':<10}  "
             f"{'seed':>4}  {'accuracy':>8}"]
    for r in records:
        data = f"{r.shots}-shot" if r.shots else f"n={r.train_size or 'all'}"
        accuracy = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"  # a tuning run has no test accuracy
        phase = "tuning" if r.config.get("tuning") else "evaluation"
        lines.append(f"{r.key:<16}  {r.status:<7}  {r.sweep or '-':<10}  {phase:<10}  {r.method:<22}  "
                     f"{str(r.budget_rank or r.budget):<8}  {data:<10}  {r.seed:>4}  {accuracy:>8}")
    return "\n".join(lines)


# What `results_table` shows as its own columns; any other field in which its rows differ goes in a column too.
TABLE_FIELDS = ("method", "budget_rank", "shots", "train_size")


def results_table(db: str, sweep: str | None = None) -> str:
    """Mean ± std test accuracy over seeds, one row per protocol (everything but the seed), with parameter
    counts. Rows that differ in a field other than method, budget and data show it in a last column."""
    import statistics

    with ResultsStore(db, create=False) as store:
        results = [r for r in store.results(sweep) if not r["config"].get("tuning")]  # test accuracy: selected only
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

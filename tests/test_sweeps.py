from __future__ import annotations

import itertools
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from balora.cli import main
from balora.config import RunConfig, protocol_key
from balora.errors import BaloraError
from balora.estimate import Estimator
from balora.runfiles import read_runs
from balora.specs import PRESETS, load_spec, preset_for_legacy_flags
from balora.store import ResultsStore
from balora.sweeps import results_table, run_sweep
from balora.tuning import superseded, tuning_cells


def write_spec(tmp_path: Path, model_dir: Path, csv: Path, grids: str, extra_base: str = "") -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""name: tiny
base:
  model: {model_dir}
  dataset: {csv}
  shots: 10
  budget_rank: 4
  min_rank: 1
  epochs: 1
  batch_size: 8
  gradient_samples: 20
  evaluations: 1
{extra_base}grids:
{grids}""")
    return spec


@pytest.mark.parametrize("preset", PRESETS)
def test_every_protocol_of_a_preset_has_three_seeds_or_more(preset):
    """Fewer than 3 matched seeds cannot be tested: a preset that plans them plans untestable comparisons."""
    seeds: dict[str, set[int]] = {}
    for planned in load_spec(preset).runs:
        seeds.setdefault(protocol_key(planned.config.to_dict()), set()).add(planned.config.seed)
    assert seeds and min(len(s) for s in seeds.values()) >= 3


def test_a_protocol_is_everything_but_the_seed():
    config = RunConfig(shots=64, budget_rank=8)
    assert "seed" not in config.protocol() and config.protocol()["epochs"] == 5  # what the run trains for
    assert protocol_key(config.to_dict()) == protocol_key({**config.to_dict(), "seed": 7, "epochs": 5})
    assert protocol_key({"method": "lora", "budget_rank": 8}) == protocol_key({"method": "lora", "budget_rank": 8.0})
    assert protocol_key(config.to_dict()) != protocol_key({**config.to_dict(), "learning_rate": 1e-3})


def _finished(config: RunConfig, accuracy: float) -> dict:
    return {"config": config.to_dict(), "metrics": {"accuracy": accuracy, "f1": accuracy, "majority_rate": 0.56},
            "params": {"lora": 73_728, "lora_final": 73_728, "head": 770}, "timings": {"total": 60.0}}


def test_results_table_has_one_row_per_protocol(tmp_path):
    """The paper preset's 64-shot LoRA on query+value (Experiment 2) and on query+value+intermediate (the
    strategies grid) are two protocols: two rows, each showing its target modules."""
    runs = [p.config for p in load_spec("paper").runs if p.config.method == "lora" and p.config.shots == 64]
    with ResultsStore(tmp_path / "r.db") as store:
        for config in runs:
            store.claim(config.key(), config.to_dict(), "paper")
            store.finish(config.key(), _finished(config, 0.7 if config.target_modules else 0.6))
    rows = results_table(str(tmp_path / "r.db")).splitlines()[1:]
    assert len(rows) == 2
    by_targets = {"intermediate.dense" in row: row for row in rows}
    assert " 3   0.7000" in by_targets[True] and "10   0.6000" in by_targets[False]  # 5 seeds, then 5 more (issue 38)
    assert "target_modules=None" in by_targets[False] and "batch_size" not in rows[0]  # shared fields are not shown


def test_quick_preset_compares_ba_lora_with_lora_at_one_budget_over_three_seeds():
    runs = load_spec("quick").runs
    assert {p.config.method for p in runs} >= {"lora", "ba_lora"}
    assert len({p.config.budget_rank for p in runs}) == 1 and len({p.config.seed for p in runs}) >= 3


def test_quick_reuses_the_rates_its_committed_tuning_sweep_selected():
    """The main job fixes each method's learning rate at what `quick_tuned` selected on validation
    (results/quick_tuned), and otherwise trains exactly as that sweep's evaluation runs did."""
    from balora.runfiles import read_runs
    from balora.tuning import tuning_cells

    committed = read_runs(Path(__file__).parents[1] / "results" / "quick_tuned")
    selected = {c.example["method"]: c.selected.candidate for c in tuning_cells(committed)}
    tuned = {p.config.method: p.config for p in load_spec("quick_tuned").runs}
    for planned in load_spec("quick").runs:
        config = planned.config
        assert (config.learning_rate,) == selected[config.method]
        assert protocol_key(replace(tuned[config.method], learning_rate=config.learning_rate, tuned=None).to_dict()) == \
            protocol_key(config.to_dict())


@pytest.mark.parametrize("preset, task", [("quick_tuned", "classification"), ("lm", "causal_lm"), ("vision", "image")])
def test_a_preset_plans_every_run_with_its_task_s_warm_start_step(preset, task):
    from balora import tasks

    assert {planned.config.gamma for planned in load_spec(preset).runs} == {tasks.get(task).warm_start_gamma}


def test_paper_preset_is_seed000_design():
    """Issue 8's reading of seed 000 (and seeds 001/002's strategy table), grid by grid; its runs go to
    results/paper as run files."""
    spec = load_spec("paper")
    assert spec.results_dir == "results/paper"
    grids: dict[str, list] = {}
    for planned in spec.runs:
        grids.setdefault(planned.grid, []).append(planned.config)
    main, heuristics, ablations = ["lora", "ba_lora", "adalora", "eva"], ["linear_decay", "attention_heavy", "magnitude",
                                                                          "activation"], ["ba_lora_no_warmstart",
                                                                                          "ba_lora_uniform",
                                                                                          "ba_lora_no_budget"]
    more = list(range(45, 52))  # issue 38: LoRA and BA-LoRA to 10 seeds where the answer matters
    exp1 = grids["exp1_budgets"]  # Exp. 1: budgets at r = 4, 8, 16, a 2,000-example subset, 3 seeds
    assert sorted((c.method, c.budget_rank, c.seed) for c in exp1) == sorted(
        [*itertools.product(main, [4, 8, 16], [42, 43, 44]), *itertools.product(["lora", "ba_lora"], [8], more)])
    assert {(c.train_size, c.shots) for c in exp1} == {(2000, None)}
    exp2 = grids["exp2_fewshot"]  # Exp. 2: 16–128 shots per class, LoRA and BA-LoRA at r = 8, 5 seeds (10 at 16, 64)
    assert sorted((c.method, c.shots, c.seed) for c in exp2) == sorted(
        [*itertools.product(["lora", "ba_lora"], [16, 32, 64, 128], [42, 43, 44, 45, 46]),
         *itertools.product(["lora", "ba_lora"], [16, 64], more[2:])])
    assert {c.budget_rank for c in exp2} == {8}
    exp4 = grids["exp4_ablations"]  # Exp. 4: the ablations at 64 shots, 5 seeds, against full BA-LoRA's runs
    assert sorted((c.method, c.seed) for c in exp4) == sorted(itertools.product(ablations, [42, 43, 44, 45, 46]))
    keys = {p.config.key() for p in spec.runs}
    assert all(replace(c, method="ba_lora").key() in keys and (c.shots, c.budget_rank) == (64, 8) for c in exp4)
    strategies = grids["strategies"]  # the heuristics against LoRA and BA-LoRA, all at one budget
    assert {c.method for c in strategies} == {"lora", "ba_lora", *heuristics}
    assert len({(c.budget_rank, c.shots, tuple(c.target_modules)) for c in strategies}) == 1
    assert len(spec.runs) == 36 + 14 + 40 + 20 + 15 + 18
    # Exp. 2 trains the same number of steps at every shot count: epochs × batches per epoch = 160
    assert {c.epochs * math.ceil(2 * c.shots / c.batch_size) for c in exp2} == {160}
    for configs in grids.values():  # one protocol per experiment and shot count: only method and seed vary
        for shots in {c.shots for c in configs}:
            protocol = {(c.epochs, c.batch_size, c.evaluations, c.gradient_samples, tuple(c.target_modules or ()))
                        for c in configs if c.shots == shots}
            assert len(protocol) == 1, protocol


def test_the_dynamic_preset_s_static_arms_are_the_paper_s_own_runs():
    """Issue 11's comparison on the paper's protocol: every static run it shares a setting and budget with
    the paper preset has the paper's key, so a sweep with the paper's database runs only the rest."""
    paper, dynamic = load_spec("paper"), load_spec("dynamic")
    paper_keys = {p.config.key() for p in [*paper.runs, *paper.tuning_runs()]}
    shared = [p for p in [*dynamic.runs, *dynamic.tuning_runs()] if p.config.method != "ba_lora_dynamic" and (
        p.config.shots is None or (p.config.budget_rank, p.config.method) in {(8, "lora"), (8, "ba_lora")})]
    assert len(shared) == 24 + 80 and all(p.config.key() in paper_keys for p in shared)
    assert {p.config.method for p in dynamic.runs} == {"ba_lora_dynamic", "ba_lora", "adalora", "lora"}
    assert {(p.config.budget_rank, p.config.shots, p.config.train_size) for p in dynamic.runs} == {
        (4, 64, None), (8, 64, None), (4, None, 2000), (8, None, 2000)}


@pytest.mark.parametrize("grids, extra, message", [
    ("  - method: [lora]\n    sed: [1]\n", "", "line 14: unknown key(s) sed"),
    ("  - method: [lora, bogus]\n", "", "line 13: unknown method 'bogus'"),
    ("  - method: [lora]\n    epochs: [two]\n", "", "line 14: epochs must be int"),
    ("  - method: [lora]\n", "  colour: red\n", "line 12: unknown key(s) colour"),
    ("  - method: [lora]\n    tune: {learning_rate: [0.001]}\n", "", "line 14: tune needs seeds"),
    ("  - method: [lora]\n    tune: {learning_rate: 0.001, seeds: [1]}\n", "", "line 14: tune learning_rate needs a list"),
    ("  - method: [lora]\n    tune: {learning_rate: [0.001, 0.001], seeds: [1]}\n", "", "line 14: .* a candidate twice"),
    ("  - method: [lora]\n    tune: {method: [lora], seeds: [1]}\n", "", "line 14: 'method' cannot be tuned"),
    ("  - method: [lora]\n    tune: {learning_rate: [0.001], seeds: [1]}\n    learning_rate: [0.01]\n", "",
     "line 15: 'learning_rate' is tuned in grid grid0; remove its fixed value"),
    ("  - method: [lora]\n    tune: {learning_rate: [0.001], seeds: [1]}\n", "  learning_rate: 0.01\n",
     "line 12: 'learning_rate' is tuned"),
    ("  - method: [lora]\n    tuning: true\n", "", "line 14: 'tuning' is set by the sweep itself"),
    ("  - method: [lora]\n    seed: [1, 2, 1]\n", "", "line 14: grid grid0 lists seed 1 twice"),
])
def test_spec_errors_name_the_line(tmp_path, grids, extra, message):
    spec = write_spec(tmp_path, Path("m"), Path("d.csv"), grids, extra)
    with pytest.raises(BaloraError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        load_spec(str(spec))


def test_identical_grid_points_run_once_and_only_filters(tmp_path):
    spec = write_spec(tmp_path, Path("minilm"), Path("d.csv"), "  - method: [lora, ba_lora]\n    seed: [1, 2]\n"
                      "  - method: [lora]\n    seed: [1]\n")
    assert len(load_spec(str(spec)).runs) == 4
    assert {p.config.method for p in load_spec(str(spec), ["method=lora"]).runs} == {"lora"}
    with pytest.raises(BaloraError, match="not a run setting"):
        load_spec(str(spec), ["colour=red"])


def _with_margin(tmp_path: Path, value: str) -> Path:
    spec = write_spec(tmp_path, Path("minilm"), Path("d.csv"), "  - method: [lora]\n")
    spec.write_text(spec.read_text().replace("name: tiny\n", f"name: tiny\nequivalence_margin: {value}\n"))
    return spec


def test_a_spec_declares_its_equivalence_margin_and_the_report_finds_a_preset_s(tmp_path):
    """The margin of the report's equivalence test is the spec's (in the metric's units: a fraction of
    accuracy, nats of loss); the report knows a run's spec only by its sweep name, so it reads presets."""
    from balora.specs import report_spec

    assert load_spec(str(_with_margin(tmp_path, "0.02"))).report.equivalence_margin == 0.02
    assert load_spec(str(write_spec(tmp_path, Path("minilm"), Path("d.csv"), "  - method: [lora]\n"))).report.equivalence_margin is None
    assert report_spec("paper").equivalence_margin == load_spec("paper").report.equivalence_margin == 0.01  # ±1 pp of accuracy
    assert report_spec("lm").equivalence_margin == load_spec("lm").report.equivalence_margin == 0.01  # ±0.01 nats of test loss
    assert report_spec("quick").equivalence_margin is None
    assert report_spec("a sweep of a file, not a preset").equivalence_margin is None


@pytest.mark.parametrize("value", ["-0.01", "0", "two", "true", "[0.01]"])
def test_an_equivalence_margin_is_a_positive_number(tmp_path, value):
    with pytest.raises(BaloraError, match="line 2: equivalence_margin is"):
        load_spec(str(_with_margin(tmp_path, value)))


def test_grids_of_one_name_are_one_experiment_in_several_settings_but_may_not_repeat_a_run(tmp_path):
    """As the paper preset's exp2_fewshot at 16, 32, 64 and 128 shots; grids of other names may share a run."""
    spec = write_spec(tmp_path, Path("minilm"), Path("d.csv"), "  - {name: a, method: lora, seed: [1, 2]}\n"
                      "  - {name: a, method: lora, seed: 3}\n  - {name: b, method: [lora, ba_lora], seed: [1, 2]}\n")
    assert len(load_spec(str(spec)).runs) == 5
    spec.write_text(spec.read_text() + "  - {name: a, method: [ba_lora, lora], seed: 2}\n")
    with pytest.raises(BaloraError, match=r"line 16: grid a plans the run lora, seed 2 \(\w+\) that grid a on line 13 "
                                          "already plans; remove the repeated grid"):
        load_spec(str(spec))


@pytest.mark.parametrize("preset", ["paper", "adalora", "quick_tuned", "vision", "qa", "dynamic", "lm"])
def test_comparison_presets_select_every_learning_rate_on_validation(preset):
    spec = load_spec(preset)
    assert all(p.tune and len({c["learning_rate"] for c in p.tune.candidates()}) >= 3 for p in spec.runs)
    assert all(len(p.tune.seeds) >= 2 and not set(p.tune.seeds) & {r.config.seed for r in spec.runs} for p in spec.runs)
    tunes = {p.cell: p.tune for p in spec.runs}  # every candidate of every cell, on every tuning seed
    assert len(spec.tuning_runs()) == sum(len(t.candidates()) * len(t.seeds) for t in tunes.values())


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_run_in_fp32_so_any_machine_runs_them_at_full_speed(preset):
    """A preset is a protocol that every session's machine continues: in bf16, a CPU without AVX512/AMX
    emulates every matrix product (8x slower than fp32 on an AVX2 EPYC, 2026-12-02), and the study would
    stall or change precision half-way (a run's precision is part of its protocol)."""
    assert {p.config.precision for p in load_spec(preset).runs} == {"fp32"}


def test_lm_preset_run_files_join_the_paper_s():
    """Seed 002's study is part of the paper: its run files go where the paper is built from, so that
    `balora report --runs results/paper --paper` has its Results section include them (issue 9)."""
    assert load_spec("lm").results_dir == load_spec("paper").results_dir == "results/paper"


def test_legacy_runner_flags_map_onto_presets():
    assert preset_for_legacy_flags(SimpleNamespace(run_all=True)) == "paper"
    assert preset_for_legacy_flags(SimpleNamespace(run_adalora=True)) == "adalora"
    assert preset_for_legacy_flags(SimpleNamespace(run_qa_lora=True)) == "qa"


def test_sweep_resumes_and_isolates_failures(tmp_path, tiny_model_dir, tiny_csv, capsys):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv,
                      "  - method: [lora, ba_lora]\n    seed: [1, 2]\n  - method: [ba_lora]\n    budget_rank: null\n"
                      "    budget: 10\n")
    db, runs = tmp_path / "r.db", tmp_path / "runs"
    counts = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(runs))
    assert (counts["done"], counts["failed"]) == (4, 1)
    with ResultsStore(db) as store:
        failed = store.runs(status="failed")
        assert len(failed) == 1 and "infeasible budget" in failed[0].error
        done = store.runs(status="done")
        assert all(Path(r.result_path).is_file() and Path(r.adapter_path).is_dir() for r in done)
    again = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(runs))
    assert (again["done"], again["failed"], again["skipped"]) == (0, 0, 5)
    retried = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(runs), rerun_failed=True)
    assert (retried["done"], retried["failed"]) == (0, 1)
    capsys.readouterr()
    assert main(["runs", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("done") == 4 and listing.count("failed") == 1
    assert main(["export", "--db", str(db), "--format", "csv", "--out", str(tmp_path / "runs.csv")]) == 0
    assert len((tmp_path / "runs.csv").read_text().strip().splitlines()) == 6


def test_evaluation_runs_go_seed_by_seed_so_a_stopped_sweep_has_every_arm_at_its_first_seeds(
        tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora, ba_lora, pissa]\n    seed: [3, 1, 2]\n")
    from balora import sweeps

    ran: list[tuple[str, int]] = []

    def record(config: dict, folder: str) -> dict:
        ran.append((config["method"], config["seed"]))
        raise BaloraError("not run: only the order is under test")

    monkeypatch.setattr(sweeps, "execute", record)
    run_sweep(load_spec(str(spec)), db=str(tmp_path / "r.db"), runs_dir=str(tmp_path / "runs"))
    assert ran == [(m, s) for s in (3, 1, 2) for m in ("lora", "ba_lora", "pissa")]


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("folder", ["results_dir", "runs_dir"])
def test_an_output_folder_that_is_a_file_is_refused_before_any_run(folder, dry_run, tmp_path, tiny_model_dir, tiny_csv):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1]\n")
    (tmp_path / "taken").write_text("")
    path = tmp_path / "taken" if folder == "results_dir" else tmp_path / "taken" / "runs"
    with pytest.raises(BaloraError, match="taken is a file" if folder == "results_dir" else "is inside .*taken, a file"):
        run_sweep(load_spec(str(spec)), db=str(tmp_path / "r.db"), dry_run=dry_run,
                  **{"runs_dir": str(tmp_path / "runs"), folder: str(path)})
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.runs() == []


def test_a_finished_run_whose_file_cannot_be_written_is_still_recorded(tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    from balora import sweeps

    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1]\n")
    options = dict(db=str(tmp_path / "r.db"), runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweeps, "write_run", disk_full)
    with pytest.raises(BaloraError, match="finished and is recorded as done in .*r.db, but its run file could not be "
                                          "written .*No space left on device"):
        run_sweep(load_spec(str(spec)), **options)
    with ResultsStore(tmp_path / "r.db") as store:
        assert [r.status for r in store.runs()] == ["done"]
    monkeypatch.undo()
    assert run_sweep(load_spec(str(spec)), **options)["skipped"] == 1  # not run again, and its file is written now
    assert len(read_runs(tmp_path / "results")) == 1


def test_sigkilled_sweep_loses_at_most_the_run_in_flight(tmp_path, tiny_model_dir, tiny_csv):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1, 2, 3, 4, 5, 6]\n")
    db = tmp_path / "r.db"
    command = [sys.executable, "-m", "balora.cli", "sweep", str(spec), "--db", str(db), "--runs-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            if db.exists() and _count(db, "done") >= 2:
                break
        except sqlite3.OperationalError:  # the file exists a moment before its tables do
            pass
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done_before = _count(db, "done")
    assert done_before >= 2 and _count(db, "running") <= 1
    counts = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(tmp_path / "runs"))
    assert counts["done"] == 6 - done_before and _count(db, "done") == 6


def _count(db: Path, status: str) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            return 0  # the sweep has created the file but not yet its tables
        return connection.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]


def test_ray_backend_writes_back_to_the_same_store(tmp_path, tiny_model_dir, tiny_csv):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'balora[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora, ba_lora]\n    seed: [1]\n"
                          "  - method: [lora]\n    budget_rank: null\n    budget: 10\n")
        db = tmp_path / "r.db"
        counts = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(tmp_path / "runs"), backend="ray")
    finally:
        ray.shutdown()
    assert (counts["done"], counts["failed"]) == (2, 1)
    with ResultsStore(db) as store:
        assert {r["config"]["method"] for r in store.results()} == {"lora", "ba_lora"}
        assert "infeasible budget" in store.runs(status="failed")[0].error  # the message crosses Ray intact


TUNED = ("  - method: [lora, ba_lora]\n    seed: [1, 2]\n  - name: fixed\n    method: [lora]\n    seed: [1]\n"
         "    tune: null\ntune: {learning_rate: [1.0e-4, 5.0e-2], seeds: [7]}\n")


def test_tuned_sweep_selects_on_validation_then_evaluates_only_the_selected_rate(tmp_path, tiny_model_dir, tiny_csv,
                                                                                capsys):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, TUNED)
    loaded = load_spec(str(spec))
    assert (len(loaded.tuning_runs()), len(loaded.runs)) == (4, 5)
    db, runs = tmp_path / "r.db", tmp_path / "runs"
    counts = run_sweep(loaded, db=str(db), runs_dir=str(runs))
    assert (counts["done"], counts["failed"], counts["awaiting"]) == (9, 0, 0)
    with ResultsStore(db) as store:
        results = store.results()
    tuning = [r for r in results if r["config"]["tuning"]]
    assert len(tuning) == 4 and all("accuracy" not in r["metrics"] for r in tuning)  # never scored on test
    selected = {c.example["method"]: c.selected.candidate[0] for c in tuning_cells(results)}
    evaluation = [r for r in results if r["config"]["tuned"] and not r["config"]["tuning"]]
    assert sorted((r["config"]["method"], r["config"]["seed"]) for r in evaluation) == [
        ("ba_lora", 1), ("ba_lora", 2), ("lora", 1), ("lora", 2)]
    assert all(r["config"]["learning_rate"] == selected[r["config"]["method"]] and "accuracy" in r["metrics"]
               for r in evaluation)
    fixed = [r for r in results if not r["config"]["tuned"]]
    assert len(fixed) == 1 and fixed[0]["config"]["learning_rate"] == RunConfig.learning_rate

    # The estimate's model, fed with these runs' own timings, gives back about their wall time.
    estimator = Estimator(results)
    estimated = sum(estimator.seconds(RunConfig(**r["config"])) for r in results)
    assert estimated == pytest.approx(sum(r["timings"]["total"] for r in results), rel=0.25)
    assert estimator.sources() == "9 stored runs"

    # Interrupted in either phase: a missing tuning run and a cell's evaluation runs run again, nothing else.
    lora_tuning = next(r["key"] for r in tuning if r["config"]["method"] == "lora")
    lost = [lora_tuning] + [r["key"] for r in evaluation if r["config"]["method"] == "lora"]
    with sqlite3.connect(db) as connection:
        connection.executemany("DELETE FROM runs WHERE key = ?", [(k,) for k in lost])
    again = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(runs))
    assert (again["done"], again["skipped"]) == (3, 6)
    capsys.readouterr()
    assert main(["sweep", str(spec), "--db", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tuning        4 runs: 4 done, 0 to run" in out and "evaluation    5 runs: 5 done, 0 to run" in out
    assert "2 of 2 tuned cells selected, 0 runs awaiting selection" in out


def _tuned_sweep(tmp_path: Path, model_dir: Path, csv: Path, grids: str) -> tuple[Path, str, str, list[dict]]:
    """Run a tuned sweep of `grids` that must do 6 runs and fail none; its spec, database, runs folder and results."""
    spec = write_spec(tmp_path, model_dir, csv, grids)
    db, runs = str(tmp_path / "r.db"), str(tmp_path / "runs")
    counts = run_sweep(load_spec(str(spec)), db=db, runs_dir=runs)
    assert (counts["done"], counts["failed"], counts["awaiting"]) == (6, 0, 0)
    with ResultsStore(db) as store:
        return spec, db, runs, [r.result for r in store.runs(status="done")]


def test_a_grid_grows_where_the_selection_lies_at_its_end_then_evaluates_the_final_choice(
        tmp_path, tiny_model_dir, tiny_csv, monkeypatch, capsys):
    """With `extend: 2` and a selection that always prefers the smallest rate, the sweep tunes 5e-4, then
    2.5e-4 (two values past the low end), then stops growing and evaluates 2.5e-4; resuming runs nothing."""
    monkeypatch.setattr("balora.sweeps.choose", lambda scores: min(scores, key=lambda s: s.candidate))
    spec, db, runs, results = _tuned_sweep(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1]\n"
                                           "tune: {learning_rate: [1.0e-3, 2.0e-3, 4.0e-3], seeds: [7], extend: 2}\n")
    assert sorted(r["config"]["learning_rate"] for r in results if r["config"]["tuning"]) == [
        2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]
    assert [r["config"]["learning_rate"] for r in results if not r["config"]["tuning"]] == [2.5e-4]
    assert run_sweep(load_spec(str(spec)), db=db, runs_dir=runs)["done"] == 0
    capsys.readouterr()
    assert main(["sweep", str(spec), "--db", db, "--dry-run"]) == 0
    assert "tuning        5 runs: 5 done, 0 to run" in capsys.readouterr().out


def test_an_evaluation_run_at_chance_makes_the_cell_select_again_and_evaluate_the_new_value(
        tmp_path, tiny_model_dir, tiny_csv, monkeypatch, capsys):
    """The first value evaluated has a seed whose run ends at chance on validation (simulated): the same sweep
    selects the other value and evaluates it; resuming runs nothing, and the report compares the new value."""
    first: dict[str, float] = {}
    monkeypatch.setattr("balora.tuning.at_chance", lambda r: not r["config"]["tuning"] and r["config"]["seed"] == 2
                        and r["config"]["learning_rate"] == first.setdefault("lr", r["config"]["learning_rate"]))
    spec, db, runs, results = _tuned_sweep(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1, 2]\n"
                                           "tune: {learning_rate: [1.0e-4, 5.0e-2], seeds: [7]}\n")
    evaluated = sorted((r["config"]["learning_rate"], r["config"]["seed"]) for r in results if not r["config"]["tuning"])
    second = ({1e-4, 5e-2} - {first["lr"]}).pop()
    assert evaluated == sorted([(first["lr"], 1), (first["lr"], 2), (second, 1), (second, 2)])
    assert [c.selected.candidate for c in tuning_cells(results)] == [(second,)]
    assert superseded(results) == {r["key"] for r in results if r["config"]["learning_rate"] == first["lr"]
                                                and not r["config"]["tuning"]}
    assert "(at chance: seed 2)" in capsys.readouterr().out
    assert run_sweep(load_spec(str(spec)), db=db, runs_dir=runs)["done"] == 0


def test_a_lengthened_selection_runs_beside_the_runs_stored_before_and_is_evaluated_at_its_epochs(
        tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    """With `lengthen: 1` and a selection that prefers longer training, the sweep trains the selected rate for
    twice the spec's epochs, selects that, and evaluates it (epochs marked tuned); the runs at the spec's
    epochs keep the keys they have without lengthening, so a sweep that adds it reruns none of them."""
    monkeypatch.setattr("balora.sweeps.choose", lambda scores: max(
        scores, key=lambda s: (s.candidate[1] if len(s.candidate) > 1 else 0, -s.candidate[0])))
    grids = "  - method: [lora]\n    seed: [1]\ntune: {learning_rate: [1.0e-3, 2.0e-3], seeds: [7]%s}\n"
    before = load_spec(str(write_spec(tmp_path, tiny_model_dir, tiny_csv, grids % "")))
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, grids % ", lengthen: 1")
    db, runs = str(tmp_path / "r.db"), str(tmp_path / "runs")
    assert run_sweep(load_spec(str(spec)), db=db, runs_dir=runs)["done"] == 4
    with ResultsStore(db) as store:
        results = [r.result for r in store.runs(status="done")]
    tuning = sorted((r["config"]["learning_rate"], r["config"]["epochs"], tuple(r["config"]["tuned"]))
                    for r in results if r["config"]["tuning"])
    assert tuning == [(1e-3, 1, ("learning_rate",)), (1e-3, 2, ("learning_rate", "epochs")),
                      (2e-3, 1, ("learning_rate",))]
    assert {p.config.key() for p in before.tuning_runs()} <= {r["key"] for r in results}
    (evaluation,) = [r["config"] for r in results if not r["config"]["tuning"]]
    assert (evaluation["learning_rate"], evaluation["epochs"], evaluation["tuned"]) == (1e-3, 2, ["learning_rate", "epochs"])
    (cell,) = tuning_cells(results)
    assert cell.fields == ["learning_rate", "epochs"]  # one cell: the runs before lengthening and the longer one
    assert sorted(s.candidate for s in cell.scores) == [(1e-3, 1), (1e-3, 2), (2e-3, 1)]
    assert run_sweep(load_spec(str(spec)), db=db, runs_dir=runs)["done"] == 0


def test_a_sweep_that_shares_a_cell_writes_every_run_its_selection_read_into_its_folder(
        tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    """Another preset with the same cell (as `dynamic` shares `paper`'s static arms) runs nothing with the same
    database, and its folder gets the cell's tuning runs and its evaluation runs at both values, the one at
    chance included: a report from that folder selects the same value and leaves the same runs out."""
    first: dict[str, float] = {}
    monkeypatch.setattr("balora.tuning.at_chance", lambda r: not r["config"]["tuning"] and r["config"]["seed"] == 2
                        and r["config"]["learning_rate"] == first.setdefault("lr", r["config"]["learning_rate"]))
    grids = "  - method: [lora]\n    seed: [1, 2]\ntune: {learning_rate: [1.0e-4, 5.0e-2], seeds: [7]}\n"
    spec, db, runs, results = _tuned_sweep(tmp_path, tiny_model_dir, tiny_csv, grids)
    spec.write_text(spec.read_text().replace("name: tiny\n", "name: other\n"))
    folder = tmp_path / "other"
    assert run_sweep(load_spec(str(spec)), db=db, runs_dir=runs, results_dir=str(folder))["done"] == 0
    shared = read_runs(folder)
    assert sorted(r["key"] for r in shared) == sorted(r["key"] for r in results)
    assert [c.selected.candidate for c in tuning_cells(shared)] == [c.selected.candidate for c in tuning_cells(results)]
    assert superseded(shared) == superseded(results) and len(superseded(shared)) == 2


@pytest.mark.parametrize("name, message", [("extend", "tune extend is how many values a cell's grid may grow by"),
                                           ("lengthen", "tune lengthen is how many times a cell's selection may be trained")])
@pytest.mark.parametrize("value", ["-1", "two", "true"])
def test_tune_extend_and_lengthen_must_be_counts(tmp_path, name, message, value):
    spec = write_spec(tmp_path, Path("minilm"), Path("d.csv"), "  - method: [lora]\n"
                      f"tune: {{learning_rate: [1.0e-3, 2.0e-3], seeds: [7], {name}: {value}}}\n")
    with pytest.raises(BaloraError, match=message):
        load_spec(str(spec))


def test_dry_run_plans_both_phases_and_runs_nothing(tmp_path, tiny_model_dir, tiny_csv, capsys):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, TUNED.replace("seeds: [7]", "seeds: [7, 8]"))
    db = tmp_path / "r.db"
    assert main(["sweep", str(spec), "--db", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tuning        8 runs: 0 done, 8 to run" in out
    assert "evaluation    5 runs: 0 done, 5 to run; 0 of 2 tuned cells selected, 4 runs awaiting selection" in out
    assert "times from a calibration of" in out
    assert re.search(r"total +about \d+ min", out)
    with ResultsStore(db) as store:
        assert store.runs() == []


def test_a_calibration_starved_by_other_processes_measures_the_work_not_the_wait(tmp_path, tiny_model_dir, tiny_csv,
                                                                                 monkeypatch):
    """A dry run next to a running sweep gets little CPU: its wall clock runs on while it waits (simulated here
    as 100 s per clock read), but the CPU time it used is the run's own cost, which the estimate is for."""
    import time

    from balora import estimate

    config = load_spec(str(write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n"))).runs[0].config
    reads = iter(range(10**6))
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: time.process_time() + 100.0 * next(reads))
    rates, _ = estimate.calibrate(config)
    assert rates.step_seconds < 5 and rates.example_seconds < 5


def test_a_failed_tuning_run_holds_back_its_cell(tmp_path, tiny_model_dir, tiny_csv):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    budget_rank: null\n"
                      "    tune: {budget: [10, 256], seeds: [7]}\n")
    counts = run_sweep(load_spec(str(spec)), db=str(tmp_path / "r.db"), runs_dir=str(tmp_path / "runs"))
    assert (counts["done"], counts["failed"], counts["awaiting"]) == (1, 1, 1)


def test_dry_run_estimates_a_causal_lm_sweep(tmp_path, tiny_lm_dir, tiny_alpaca, capsys):
    spec = tmp_path / "lm.yaml"
    spec.write_text(f"""name: tiny_lm
base: {{model: {tiny_lm_dir}, dataset: {tiny_alpaca}, train_size: 16, budget_rank: 4, epochs: 1, batch_size: 4,
       gradient_samples: 8, evaluations: 1, eval_examples: 8}}
grids:
  - method: [lora, ba_lora]
    seed: [1, 2]
""")
    assert main(["sweep", str(spec), "--db", str(tmp_path / "r.db"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "evaluation    4 runs: 0 done, 4 to run" in out and "times from a calibration of" in out


@pytest.mark.parametrize("precision, native, warns", [("bf16", False, True), ("bf16", True, False), ("fp32", False, False)])
def test_a_bf16_sweep_where_bf16_is_emulated_warns_once_before_planning(precision, native, warns, tmp_path, tiny_lm_dir,
                                                                       tiny_alpaca, capsys, monkeypatch):
    """A dry run of a bf16 sweep on an AVX2-only CPU calibrated for over 30 minutes without a word (2026-12-02):
    the sweep says at the start that bf16 is emulated here, whatever it goes on to do."""
    import balora.sweeps

    monkeypatch.setattr(balora.sweeps, "native_bf16", lambda device: native)
    spec = tmp_path / "lm.yaml"
    spec.write_text(f"""name: tiny_lm
base: {{model: {tiny_lm_dir}, dataset: {tiny_alpaca}, train_size: 8, budget_rank: 4, epochs: 1, batch_size: 4,
       evaluations: 1, eval_examples: 4, precision: {precision}}}
grids:
  - method: [lora]
    seed: [1]
""")
    assert main(["sweep", str(spec), "--db", str(tmp_path / "r.db"), "--dry-run"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("balora: warning:")]
    assert warned == ([
        "balora: warning: sweep 'tiny_lm' runs in bf16 on a cpu without native bf16 matrix units (AVX512 or AMX): "
        "matrix products are emulated, several times slower than fp32 here; its runs, and a --dry-run's "
        "calibration, take several times longer than on a machine with native bf16"] if warns else [])


def test_a_causal_lm_sweep_selects_its_learning_rate_on_validation_loss(tmp_path, tiny_lm_dir, tiny_alpaca):
    spec = tmp_path / "lm.yaml"
    spec.write_text(f"""name: tiny_lm
base: {{model: {tiny_lm_dir}, dataset: {tiny_alpaca}, train_size: 16, budget_rank: 4, epochs: 1, batch_size: 4,
       gradient_samples: 8, evaluations: 2, eval_examples: 8}}
tune: {{learning_rate: [1.0e-4, 1.0e-2], seeds: [7]}}
grids:
  - method: [lora]
    seed: [1]
""")
    db = tmp_path / "r.db"
    counts = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(tmp_path / "runs"))
    assert (counts["done"], counts["failed"], counts["awaiting"]) == (3, 0, 0)
    with ResultsStore(db) as store:
        results = [r.result for r in store.runs(status="done")]
    tuning = {r["config"]["learning_rate"]: r["curves"]["validation"][-1][1]["loss"] for r in results if r["config"]["tuning"]}
    evaluation = [r for r in results if not r["config"]["tuning"]]
    assert len(tuning) == 2 and [r["config"]["learning_rate"] for r in evaluation] == [min(tuning, key=tuning.get)]
    assert "perplexity" in evaluation[0]["metrics"]


def _screened(config: RunConfig, finals: list[float], steps: int = 100) -> dict:
    """A stored evaluation run of `steps` steps whose validation accuracy passes through `finals` (the last is its
    final value)."""
    curve = [[round(steps * i / (len(finals) - 1)), {"accuracy": value, "loss": 0.7}] for i, value in enumerate(finals)]
    return {**_finished(config, finals[-1]), "key": config.key(), "steps": steps, "curves": {"validation": curve}}


def test_the_confirmation_stage_reads_the_anytime_metric_at_matched_steps(tmp_path):
    """A reviewer's read (2026-12-07): regime (b)'s arms trained twice LoRA's steps, and the confirmation stage's
    anytime metric, over normalised progress, confirmed them as faster. An arm trained 200 steps whose curve rises
    as LoRA's does over 100 reads, over LoRA's 100 steps, as slower: screened out."""
    from balora.sweeps import confirmations, evaluation_runs, select

    grids = "  - method: [lora, ba_lora]\n    seed: [42, 43]\n"
    spec_path = write_spec(tmp_path, Path("minilm"), Path("d.csv"), grids)
    spec_path.write_text(spec_path.read_text().replace("name: tiny\n", "name: tiny\nconfirm: {seeds: [44, 45], gain: 0.005}\n"))
    spec = load_spec(str(spec_path))
    with ResultsStore(tmp_path / "r.db") as store:
        ready, _ = evaluation_runs(spec, select(spec, store))
        for p in ready:
            longer = p.config.method == "ba_lora"
            store.add(_screened(p.config, [0.5, 0.6, 0.65, 0.68, 0.70], steps=200 if longer else 100), "tiny")
        (decision,) = confirmations(ready, store)
    assert decision.runs == [] and "screened out" in decision.summary and "anytime -0." in decision.summary


def test_a_confirmation_stage_adds_seeds_to_the_arms_that_beat_lora_on_validation(tmp_path):
    """`confirm:` runs the confirmation seeds of an arm, and of LoRA, when the arm's mean final validation
    accuracy (or its mean anytime value) over the screening seeds beats LoRA's by the gain; never on test
    (the test accuracy says the opposite here), and not before every screening run is done."""
    from balora.sweeps import confirmation_runs, confirmations, evaluation_runs, select

    grids = "  - method: [lora, ba_lora, ba_lora_uniform, ba_lora_no_warmstart]\n    seed: [42, 43]\n"
    spec_path = write_spec(tmp_path, Path("minilm"), Path("d.csv"), grids)
    spec_path.write_text(spec_path.read_text().replace("name: tiny\n", "name: tiny\nconfirm: {seeds: [44, 45], gain: 0.005}\n"))
    spec = load_spec(str(spec_path))
    curves = {"lora": [0.5, 0.6, 0.70], "ba_lora": [0.5, 0.6, 0.71],  # +1 pp final: confirmed
              "ba_lora_uniform": [0.5, 0.69, 0.70],  # ties at the end, faster on the way: confirmed by anytime
              "ba_lora_no_warmstart": [0.5, 0.6, 0.70002]}  # +0.002 pp: screened out
    with ResultsStore(tmp_path / "r.db") as store:
        ready, _ = evaluation_runs(spec, select(spec, store))
        waiting = confirmations(ready, store)
        assert len(waiting) == 3 and all("awaiting" in d.summary and not d.runs for d in waiting)
        for p in ready:
            store.add(dict(_screened(p.config, curves[p.config.method]), metrics={"accuracy": 0.1}), "tiny")
        decisions = {d.planned.config.method: d for d in confirmations(ready, store)}
        assert set(decisions) == {"ba_lora", "ba_lora_uniform", "ba_lora_no_warmstart"}  # LoRA is the reference
        assert decisions["ba_lora_no_warmstart"].runs == [] and "screened out" in decisions["ba_lora_no_warmstart"].summary
        assert "validation +0.00002" in decisions["ba_lora_no_warmstart"].summary  # a gain, not "+0.0000"
        added = confirmation_runs(list(decisions.values()))
    assert sorted((p.config.method, p.config.seed) for p in added) == [
        ("ba_lora", 44), ("ba_lora", 45), ("ba_lora_uniform", 44), ("ba_lora_uniform", 45), ("lora", 44), ("lora", 45)]
    bad = spec_path.read_text().replace("gain: 0.005", "gain: -1")
    spec_path.write_text(bad)
    with pytest.raises(BaloraError, match="confirm needs gain"):
        load_spec(str(spec_path))
    spec_path.write_text(bad.replace("gain: -1", "gain: 0.005").replace("seed: [42, 43]", "seed: [42, 44]"))
    with pytest.raises(BaloraError, match="one of its confirmation seeds"):
        load_spec(str(spec_path))


def test_arms_whose_cells_selected_different_training_lengths_share_one_confirmation_setting():
    """Issue 39's regime (b): LoRA's cell selected 3 epochs (only its learning rate was marked tuned: it was not
    lengthened) and BA-LoRA's a lengthened 6; the confirmation stage put them in two settings, found "no lora arm in
    its setting to confirm against" and decided nothing. A tuned cell may lengthen (`tuning.cell_key` leaves its
    epochs out too); an untuned grid's training length is its protocol."""
    from dataclasses import replace

    from balora.sweeps import setting_key

    lora = RunConfig(method="lora", epochs=3, learning_rate=0.004, tuned=["learning_rate"])
    ours = RunConfig(method="ba_lora", epochs=6, learning_rate=0.002, tuned=["learning_rate", "epochs"])
    assert setting_key(lora) == setting_key(ours)
    assert setting_key(replace(lora, tuned=None)) != setting_key(replace(ours, tuned=None))
    assert setting_key(lora) != setting_key(replace(ours, min_rank=0))  # the rest of the protocol still counts


def test_a_sweep_runs_its_confirmation_stage_after_screening(tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    """The sweep runs what `confirmations` decides once screening is done (here every arm qualifies: a gain of
    0 with validation forced to favour it), and a rerun finds nothing left to do."""
    from balora import sweeps

    spec_path = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora, ba_lora]\n    seed: [1]\n")
    spec_path.write_text(spec_path.read_text().replace("name: tiny\n", "name: tiny\nconfirm: {seeds: [2, 3], gain: 0}\n"))
    monkeypatch.setattr(sweeps, "_means", lambda results, horizon: (1.0, 1.0) if results[0]["config"]["method"] == "ba_lora"
                        else (0.0, 0.0))
    db = tmp_path / "r.db"
    counts = run_sweep(load_spec(str(spec_path)), db=str(db), runs_dir=str(tmp_path / "runs"))
    with ResultsStore(db) as store:
        ran = sorted((r.method, r.result["config"]["seed"]) for r in store.runs(status="done"))
    assert counts["done"] == 6 and ran == [("ba_lora", 1), ("ba_lora", 2), ("ba_lora", 3), ("lora", 1), ("lora", 2), ("lora", 3)]
    assert run_sweep(load_spec(str(spec_path)), db=str(db), runs_dir=str(tmp_path / "runs"))["done"] == 0

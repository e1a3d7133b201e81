from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from balora.cli import main
from balora.config import RunConfig, protocol_key
from balora.errors import BaloraError
from balora.store import ResultsStore
from balora.sweeps import PRESETS, load_spec, results_table, run_sweep, seed003_preset


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
    assert " 3   0.7000" in by_targets[True] and " 5   0.6000" in by_targets[False]
    assert "target_modules=None" in by_targets[False] and "batch_size" not in rows[0]  # shared fields are not shown


def test_quick_preset_compares_three_methods_at_one_budget_over_three_seeds():
    runs = load_spec("quick").runs
    assert {p.config.method for p in runs} >= {"lora", "ba_lora", "adalora"}
    assert len({p.config.budget_rank for p in runs}) == 1 and len({p.config.seed for p in runs}) >= 3


def test_paper_preset_covers_seed000_experiments():
    runs = load_spec("paper").runs
    assert {p.config.budget_rank for p in runs} >= {4, 8, 16}
    assert {p.config.shots for p in runs} >= {16, 32, 64, 128}
    assert {"ba_lora_no_warmstart", "ba_lora_uniform", "ba_lora_no_budget", "linear_decay", "attention_heavy"} <= {
        p.config.method for p in runs}
    assert len({p.config.seed for p in runs if p.config.shots == 16}) == 5


@pytest.mark.parametrize("grids, extra, message", [
    ("  - method: [lora]\n    sed: [1]\n", "", "line 14: unknown key(s) sed"),
    ("  - method: [lora, bogus]\n", "", "line 13: unknown method 'bogus'"),
    ("  - method: [lora]\n    epochs: [two]\n", "", "line 14: epochs must be int"),
    ("  - method: [lora]\n", "  colour: red\n", "line 12: unknown key(s) colour"),
])
def test_spec_errors_name_the_line(tmp_path, grids, extra, message):
    spec = write_spec(tmp_path, Path("m"), Path("d.csv"), grids, extra)
    with pytest.raises(BaloraError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(str(spec))


def test_identical_grid_points_run_once_and_only_filters(tmp_path):
    spec = write_spec(tmp_path, Path("m"), Path("d.csv"), "  - method: [lora, ba_lora]\n    seed: [1, 2]\n"
                      "  - method: [lora]\n    seed: [1]\n")
    assert len(load_spec(str(spec)).runs) == 4
    assert {p.config.method for p in load_spec(str(spec), ["method=lora"]).runs} == {"lora"}
    with pytest.raises(BaloraError, match="not a run setting"):
        load_spec(str(spec), ["colour=red"])


def test_seed003_flags_map_onto_presets():
    assert seed003_preset(SimpleNamespace(run_all=True)) == "paper"
    assert seed003_preset(SimpleNamespace(run_adalora=True)) == "adalora"
    with pytest.raises(BaloraError, match="QA-LoRA is not available yet"):
        seed003_preset(SimpleNamespace(run_qa_lora=True))


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


def test_two_worker_processes(tmp_path, tiny_model_dir, tiny_csv):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1, 2, 3]\n")
    counts = run_sweep(load_spec(str(spec)), db=str(tmp_path / "r.db"), runs_dir=str(tmp_path / "runs"), workers=2)
    assert counts["done"] == 3


def test_sigkilled_sweep_loses_at_most_the_run_in_flight(tmp_path, tiny_model_dir, tiny_csv):
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1, 2, 3, 4, 5, 6]\n")
    db = tmp_path / "r.db"
    command = [sys.executable, "-m", "balora.cli", "sweep", str(spec), "--db", str(db), "--runs-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists() and _count(db, "done") >= 2:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done_before = _count(db, "done")
    assert done_before >= 2 and _count(db, "running") <= 1
    counts = run_sweep(load_spec(str(spec)), db=str(db), runs_dir=str(tmp_path / "runs"))
    assert counts["done"] == 6 - done_before and _count(db, "done") == 6


def _count(db: Path, status: str) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
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

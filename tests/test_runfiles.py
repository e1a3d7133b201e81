"""Run files (results/NAME/KEY.json): atomic writing, checked reading, a sweep that writes them and resumes
from them, `balora import`, a report built from them equal to one built through the database, and the
check that a committed report is the one its committed runs give (on results/*/ in this repository too)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from test_sweeps import write_spec

from balora.cli import main
from balora.errors import BaloraError
from balora.report import build_report, check_report, write_report, write_runs_report
from balora.report.readme import begin_marker, blocks_in, end_marker
from balora.runfiles import read_run, read_runs, run_keys, run_path, write_run
from balora.specs import load_spec
from balora.store import ResultsStore
from balora.sweeps import run_sweep

ROOT = Path(__file__).resolve().parents[1]


def _result(key: str = "abc123", accuracy: float = 0.8) -> dict:
    return {"key": key, "config": {"method": "lora", "seed": 1}, "metrics": {"accuracy": accuracy},
            "params": {"lora": 10}, "budget": {"lora_budget": 10}, "adapter": "/somewhere/runs/abc123/adapter"}


def test_write_then_read_round_trips_atomically(tmp_path: Path):
    path = write_run(tmp_path / "runs", _result(), sweep="paper")
    assert path == run_path(tmp_path / "runs", "abc123") and path.name == "abc123.json"
    record = read_run(path)
    assert record["metrics"] == {"accuracy": 0.8} and record["sweep"] == "paper" and record["format"] == "balora-run/1"
    assert "adapter" not in record  # a local path means nothing in a repository
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["abc123.json"]  # no temporary file left behind
    assert read_runs(tmp_path / "runs") == [record] and run_keys(tmp_path / "runs") == {"abc123"}
    assert run_keys(tmp_path / "none") == set()


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"key": "abc123"}', "missing config, metrics, params, budget"),
    ("[1, 2]", "is not a balora run"),
    (json.dumps(_result("other")), "holds run other; rename it to other.json"),
])
def test_bad_run_files_are_refused_with_one_line(tmp_path: Path, content: str, message: str):
    (tmp_path / "abc123.json").write_text(content)
    with pytest.raises(BaloraError, match=message):
        read_runs(tmp_path)
    with pytest.raises(BaloraError, match="no run folder"):
        read_runs(tmp_path / "missing")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_csv: Path) -> Path:
    """A sweep of 6 tiny runs (LoRA and BA-LoRA × 3 seeds) with its run files in `results/tiny`."""
    base = tmp_path_factory.mktemp("swept")
    spec = write_spec(base, tiny_model_dir, tiny_csv, "  - method: [lora, ba_lora]\n    seed: [1, 2, 3]\n")
    spec.write_text(spec.read_text().replace("name: tiny\n", "name: tiny\nresults_dir: results/tiny\n"))
    cwd = Path.cwd()
    os.chdir(base)  # the spec's results_dir is relative, like the paper preset's
    try:
        counts = run_sweep(load_spec(str(spec)), db="results/balora.db", runs_dir="runs")
    finally:
        os.chdir(cwd)
    assert counts["done"] == 6
    return base


def test_sweep_writes_a_file_per_run_and_resumes_from_the_files(swept: Path, tmp_path: Path, tiny_model_dir: Path):
    folder = swept / "results" / "tiny"
    runs = read_runs(folder)
    weights = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert len(runs) == 6 and {r["sweep"] for r in runs} == {"tiny"}
    for run in runs:
        assert {"config", "metrics", "curves", "allocation", "timings", "environment", "params"} <= set(run)
        assert run["environment"]["device"] == "cpu"
        assert run["environment"]["weights_sha256"] == {"model.safetensors": weights}
    spec = load_spec(str(swept / "spec.yaml"))
    # A new database (another machine, a fresh clone): every run is skipped because its file exists.
    fresh = run_sweep(spec, db=str(tmp_path / "fresh.db"), runs_dir=str(tmp_path / "runs"), results_dir=str(folder))
    assert (fresh["done"], fresh["skipped"]) == (0, 6)
    with ResultsStore(tmp_path / "fresh.db") as store:
        assert len(store.results("tiny")) == 6
    # A file lost after its run finished is written again from the database, not rerun.
    lost = run_path(folder, runs[0]["key"])
    lost.unlink()
    again = run_sweep(spec, db=str(tmp_path / "fresh.db"), runs_dir=str(tmp_path / "runs"), results_dir=str(folder))
    assert again["done"] == 0 and read_run(lost) == runs[0]


def test_a_run_another_sweep_stored_gets_its_file_in_this_sweep_s_folder(swept: Path, tmp_path: Path,
                                                                           tiny_model_dir: Path, tiny_csv: Path):
    """The `dynamic` preset shares its static arms with `paper`: with the paper's database it runs none of them
    again, and its results folder must still hold them, or its report compares without them."""
    shared = tmp_path / "paper.db"
    shared.write_bytes((swept / "results" / "balora.db").read_bytes())
    spec = write_spec(tmp_path, tiny_model_dir, tiny_csv, "  - method: [lora]\n    seed: [1, 4]\n")
    spec.write_text(spec.read_text().replace("name: tiny\n", "name: other\n"))
    folder = tmp_path / "other"
    counts = run_sweep(load_spec(str(spec)), db=str(shared), runs_dir=str(tmp_path / "runs"), results_dir=str(folder))
    assert (counts["done"], counts["skipped"]) == (1, 1)  # lora seed 1 is the tiny sweep's run
    assert {r["config"]["seed"] for r in read_runs(folder)} == {1, 4}


def _without_source(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("Source: "))


def _texts(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _without_source(p.read_text())
            for p in sorted(folder.rglob("*")) if p.suffix in (".md", ".tex")}


def test_report_from_files_equals_report_from_imported_database(swept: Path, tmp_path: Path):
    folder = swept / "results" / "tiny"
    db = tmp_path / "imported.db"
    assert main(["import", str(folder), "--db", str(db)]) == 0
    assert main(["import", str(folder), "--db", str(db)]) == 0  # importing twice changes nothing
    with ResultsStore(db) as store:
        assert len(store.runs()) == 6 and len(store.results("tiny")) == 6
    from_files = tmp_path / "files"  # text only: the figures are drawn from these same numbers
    write_runs_report(folder, from_files / "report", paper_dir=from_files / "paper", figures_too=False)
    write_report(db, tmp_path / "db" / "report", paper_dir=tmp_path / "db" / "paper", figures_too=False)
    files, database = _texts(from_files), _texts(tmp_path / "db")
    assert "report/report.md" in files and "paper/generated/criteria.tex" in files
    assert files == database
    assert "## Success criteria" not in files["report/report.md"]  # the tiny spec declares no hypotheses


def test_committed_report_check_fails_when_a_run_changes(swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture):
    """A report 'committed' next to its runs passes the check; changing one stored accuracy makes it fail,
    naming the file and the line, with one error line and status 2; rebuilding it makes it pass again."""
    folder = tmp_path / "results" / "tiny"
    for run in read_runs(swept / "results" / "tiny"):
        write_run(folder, run)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--runs", "results/tiny", "--paper-dir", "paper"]) == 0  # default out: results/tiny/report
    assert (folder / "report" / "report.md").is_file() and (folder / "report" / "report.html").is_file()
    check_report(folder, folder / "report")  # an absolute path names the same runs
    run = read_runs(folder)[0]
    run["metrics"]["accuracy"] += 0.01
    write_run(folder, run)
    capsys.readouterr()
    assert main(["report", "--runs", "results/tiny", "--check"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("balora: error: results/tiny/report/")
    assert " differs: committed " in error and "rebuild it with balora report --runs results/tiny" in error
    with pytest.raises(BaloraError, match="no report in"):
        check_report("results/tiny", "elsewhere")


def test_the_readme_block_of_headline_results_is_generated_and_checked(swept: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture):
    """`--readme` fills the README's block for a results folder from its runs (text before and after
    untouched); `--check --readme` fails with one line when a number in the block is not the runs' own."""
    folder = tmp_path / "results" / "tiny"
    for run in read_runs(swept / "results" / "tiny"):
        write_run(folder, run)
    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\n{begin_marker('results/tiny')}\nhand-typed\n{end_marker('results/tiny')}\n\nAfter.\n")
    assert main(["report", "--runs", "results/tiny", "--readme", "README.md"]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\n") and text.endswith(f"{end_marker('results/tiny')}\n\nAfter.\n")
    assert "hand-typed" not in text and "Compute: " in text
    assert blocks_in(readme) == ["results/tiny"]
    assert main(["report", "--runs", "results/tiny", "--check", "--readme", "README.md"]) == 0
    readme.write_text(text.replace("Compute: ", "Compute: 1", 1))
    capsys.readouterr()
    assert main(["report", "--runs", "results/tiny", "--check", "--readme", "README.md"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "README.md's block for results/tiny differs: committed" in error
    readme.write_text("# Project\n")
    assert main(["report", "--runs", "results/tiny", "--readme", "README.md"]) == 2
    assert "README.md has no block for results/tiny: add the line" in capsys.readouterr().err


COMMITTED = sorted({p.parent for p in ROOT.glob("results/*/*.json")})
README_BLOCKS = blocks_in(ROOT / "README.md")  # the folders whose headline results README.md shows


@pytest.mark.skipif(not COMMITTED, reason="no run files under results/ in this repository yet")
@pytest.mark.parametrize("folder", COMMITTED or [None], ids=str)
def test_committed_reports_match_committed_runs(folder: Path, monkeypatch: pytest.MonkeyPatch):
    """Every committed results folder: its report's numbers are those its committed runs give now, and so are
    those of its block of headline results in README.md, if it has one (checked from the same rebuilt report:
    building results/paper's takes a quarter of a minute)."""
    monkeypatch.chdir(ROOT)
    relative = folder.relative_to(ROOT)
    check_report(relative, relative / "report", readme="README.md" if relative.as_posix() in README_BLOCKS else None)
    # a block for a folder without run files would go unchecked
    assert set(README_BLOCKS) <= {committed.relative_to(ROOT).as_posix() for committed in COMMITTED}


def test_a_report_of_an_empty_run_folder_is_refused_not_written(tmp_path: Path):
    """An empty folder is a wrong --runs (a typo, a sweep not yet run), not a study with nothing to say."""
    (tmp_path / "runs").mkdir()
    with pytest.raises(BaloraError, match="no run files in .*runs; give the folder a sweep's --results-dir wrote to"):
        write_runs_report(tmp_path / "runs", tmp_path / "report")
    assert not (tmp_path / "report").exists()
    assert build_report([], tmp_path / "other").is_file()  # from Python, no results still make a report


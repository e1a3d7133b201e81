"""`balora report`: statistics, tables, figures and the paper's generated inputs, from the results
store or from a folder of run files. What the runs' spec declares for the report (equivalence margin, anytime
section) is found by the runs' sweep name: a preset's, or that of a spec given by file
(`balora.specs.given_spec`, `balora report --spec FILE`).

    write_report("results/balora.db", "report/", paper_dir="paper")     # → report/report.md
    write_runs_report("results/paper", "results/paper/report")          # the same from run files
    check_report("results/paper", "results/paper/report")               # a committed report is up to date
    with given_spec(load_spec("mine.yaml")):                          # a user's spec: its margin, hypotheses
        write_runs_report("results/mine", "results/mine/report")
    build_paper("paper")                                                 # → paper/main.pdf (pdflatex + bibtex)
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Any

from balora import specs
from balora.errors import BaloraError
from balora.report import builder, figures, paper
from balora.report.paper import build_paper
from balora.report.readme import check_readme, headline, write_readme


def build_report(results: list[dict[str, Any]], out_dir: str | Path, paper_dir: str | Path | None = None,
                 source: str = "the given results", figures_too: bool = True) -> Path:
    """Write the report for `results` (result dicts as in `balora.run`) under `out_dir`; with `paper_dir`,
    also the paper's generated inputs under `paper_dir/generated`. Returns the path of report.md.
    Without `figures_too`, only report.md and tables/*.tex (no images, no HTML page)."""
    _build(results, out_dir, paper_dir, source, figures_too)
    return Path(out_dir) / "report.md"


def _build(results: list[dict[str, Any]], out_dir: str | Path, paper_dir: str | Path | None, source: str,
           figures_too: bool, study: str = "", owners: tuple[str, ...] = ()) -> builder.Report | None:
    token = figures.RENDER.set(figures_too)
    try:
        report = builder.write(results, out_dir, source, owners)
        if paper_dir is not None:
            paper.write_generated(report, Path(paper_dir), study)
    finally:
        figures.RENDER.reset(token)
    return report


def write_report(db_path: str | Path = "results/balora.db", out_dir: str | Path = "report",
                 paper_dir: str | Path | None = None, figures_too: bool = True) -> Path:
    """The report for every finished run in the results store at `db_path` (see `build_report`)."""
    from balora.store import ResultsStore  # imported here: building from result dicts needs no database

    with ResultsStore(db_path, create=False) as store:
        results = store.results()
    return build_report(results, out_dir, paper_dir, f"results store {db_path}", figures_too)


def _folder_label(folder: str | Path) -> str:
    """A run folder as the report names it: relative to the working directory where it is inside it, so
    a report names its runs the same way whoever builds it, wherever the repository is."""
    path = Path(folder).resolve()
    return Path(os.path.relpath(path)).as_posix() if path.is_relative_to(Path.cwd()) else path.as_posix()


def write_runs_report(folder: str | Path, out_dir: str | Path, paper_dir: str | Path | None = None,
                      figures_too: bool = True, readme: str | Path | None = None) -> Path:
    """The report for every run file in `folder` (see `balora.runfiles` and `build_report`); no database.
    A folder the paper reports as a study of its own (`paper.STUDIES`, e.g. results/levers) writes its parts
    under `paper_dir/generated/<study>/`. With `readme`, also the folder's generated block of headline results
    in that README (`readme.py`)."""
    report, results = _runs_report(folder, out_dir, paper_dir, figures_too)
    if readme is not None:
        write_readme(readme, _folder_label(folder), headline(report, results))
    return Path(out_dir) / "report.md"


def _runs_report(folder: str | Path, out_dir: str | Path, paper_dir: str | Path | None,
                 figures_too: bool) -> tuple[builder.Report | None, list[dict[str, Any]]]:
    from balora.runfiles import read_runs

    results = read_runs(folder)
    if not results:  # a mistyped folder, or a sweep not yet run: not a study with nothing to report
        raise BaloraError(f"no run files in {folder}; give the folder a sweep's --results-dir wrote to")
    source = f"{len(results)} run files in {_folder_label(folder)}"
    return _build(results, out_dir, paper_dir, source, figures_too, paper.study_of(folder),
                  specs.folder_sweeps(folder)), results


# The text a committed report consists of: what `check_report` compares (figures are images, rebuilt from
# the same numbers; the HTML embeds them).
CHECKED = ("report.md", "tables/*.tex")


def _checked_files(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): path.read_text() for pattern in CHECKED
            for path in sorted(folder.glob(pattern))}


def check_report(folder: str | Path, report_dir: str | Path, readme: str | Path | None = None) -> None:
    """Raise a BaloraError naming the first difference if the report in `report_dir` is not the one the
    run files in `folder` give now (every number, sentence and table of report.md and tables/*.tex), or,
    with `readme`, if that README's block for `folder` is not."""
    committed = _checked_files(Path(report_dir))
    if not committed:
        raise BaloraError(f"no report in {report_dir}; write it with balora report --runs {folder} --out {report_dir}")
    with tempfile.TemporaryDirectory() as scratch:
        report, results = _runs_report(folder, scratch, None, False)
        rebuilt = _checked_files(Path(scratch))
    for name in sorted(set(committed) | set(rebuilt)):
        old, new = committed.get(name), rebuilt.get(name)
        if old == new:
            continue
        if old is None or new is None:
            change = "is missing from the committed report" if old is None else "is not in the rebuilt report"
        else:
            diff = [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
                    if line[:1] in "+-" and not line.startswith(("+++", "---"))]
            change = f"differs: committed {diff[0][1:][:160]!r}" + (
                f", rebuilt {diff[1][1:][:160]!r}" if len(diff) > 1 else "")
        raise BaloraError(f"{Path(report_dir) / name} {change}; it is not the report of the runs in {folder}: "
                          f"rebuild it with balora report --runs {folder} --out {report_dir}")
    if readme is not None:
        check_readme(readme, _folder_label(folder), headline(report, results))


__all__ = ["build_paper", "build_report", "check_report", "write_report", "write_runs_report"]

"""`balora report`: statistics, tables, figures and the paper's generated inputs from the results store.

    write_report("results/balora.db", "report/", paper_dir="paper")  # → report/report.md
    build_paper("paper")                                              # → paper/main.pdf (pdflatex + bibtex)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from balora.errors import BaloraError
from balora.report import builder, paper
from balora.report.paper import build_paper


def build_report(results: list[dict[str, Any]], out_dir: str | Path, paper_dir: str | Path | None = None,
                 source: str = "the given results") -> Path:
    """Write the report for `results` (result dicts as in `balora.run`) under `out_dir`; with `paper_dir`,
    also the paper's generated inputs under `paper_dir/generated`. Returns the path of report.md."""
    report = builder.write(results, out_dir, source)
    if paper_dir is not None:
        paper.write_generated(report, Path(paper_dir))
    return Path(out_dir) / "report.md"


def write_report(db_path: str | Path = "results/balora.db", out_dir: str | Path = "report",
                 paper_dir: str | Path | None = None) -> Path:
    """The report for every finished run in the results store at `db_path` (see `build_report`)."""
    from balora.store import ResultsStore  # imported here: building from result dicts needs no database

    if not Path(db_path).is_file():  # opening would create an empty database at a mistyped path
        raise BaloraError(f"no results database at {db_path}; run a sweep first or give --db PATH")
    with ResultsStore(db_path) as store:
        results = store.results()
    return build_report(results, out_dir, paper_dir, source=f"results store {db_path}")


__all__ = ["build_paper", "build_report", "write_report"]

"""The README's headline results, generated from committed runs, never typed: seed 000's criteria and
the budget (Exp. 1) and few-shot (Exp. 2) sections of a results folder's report, text and tables
(figures stay in the report), the selected values and the compute, between two marker lines of
README.md:

    <!-- generated from results/paper by `balora report --runs results/paper --readme README.md`: do not edit -->
    ...
    <!-- end of results/paper -->

`balora report --runs DIR --readme README.md` rewrites the block; with `--check` it fails when the
block is not the one DIR's runs give, as it does for the report itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from balora.errors import BaloraError
from balora.report.builder import Report
from balora.report.document import Figure, Heading, Paragraph, Table, render_markdown

HEADLINE = ("criteria", "budget", "fewshot")  # the report's sections the README shows


def begin_marker(folder: str) -> str:
    return f"<!-- generated from {folder} by `balora report --runs {folder} --readme README.md`: do not edit -->"


def end_marker(folder: str) -> str:
    return f"<!-- end of {folder} -->"


def compute(results: list[dict[str, Any]]) -> str:
    """What the runs cost: how many, and their summed run time per device (parallel runs overlap in wall time)."""
    tuning = sum(bool(r["config"].get("tuning")) for r in results)
    hours: dict[str, float] = {}
    for result in results:
        device = (result.get("environment") or {}).get("device", "unknown device")
        hours[device] = hours.get(device, 0.0) + (result.get("timings") or {}).get("total", 0.0) / 3600
    spent = ", ".join(f"{h:.1f} h on {device}" for device, h in sorted(hours.items()))
    return (f"Compute: {len(results) - tuning} evaluation and {tuning} tuning runs, run time {spent} "
            "(summed over runs; runs in parallel overlap in wall time).")


def headline(report: Report | None, results: list[dict[str, Any]]) -> str:
    """The HEADLINE sections of `report` as Markdown, one heading level down (they sit in a README section),
    then the tuning appendix's table (the selected values) and what the runs cost."""
    if report is None:
        return "No finished runs yet.\n"
    blocks = [Heading(b.level + 1, b.text) if isinstance(b, Heading) else b
              for name in HEADLINE for b in report.sections.get(name, []) if not isinstance(b, Figure)]
    blocks += [Heading(3, "Protocol: selection on validation, and compute"),
               *[b for b in report.sections.get("tuning", []) if isinstance(b, Table)], Paragraph(compute(results))]
    return render_markdown(blocks, Path("."))


def _span(text: str, readme: Path, folder: str) -> tuple[int, int]:
    """Start and end offsets of the block's content (between the marker lines)."""
    begin, end = begin_marker(folder), end_marker(folder)
    start, stop = text.find(begin + "\n"), text.find(end)
    if start < 0 or stop < start:
        raise BaloraError(f"{readme} has no block for {folder}: add the line '{begin}', then the line '{end}' "
                          "where its results belong")
    return start + len(begin) + 1, stop


def write_readme(readme: str | Path, folder: str, markdown: str) -> None:
    """Replace the content of `folder`'s block in `readme` by `markdown`."""
    path = Path(readme)
    text = _read(path)
    start, stop = _span(text, path, folder)
    path.write_text(text[:start] + markdown + text[stop:])


def check_readme(readme: str | Path, folder: str, markdown: str) -> None:
    """Raise a BaloraError naming the first differing line when `folder`'s block is not `markdown`."""
    path = Path(readme)
    text = _read(path)
    start, stop = _span(text, path, folder)
    for old, new in zip([*text[start:stop].splitlines(), None], [*markdown.splitlines(), None]):
        if old != new:
            raise BaloraError(f"{path}'s block for {folder} differs: committed {str(old)[:160]!r}, rebuilt "
                              f"{str(new)[:160]!r}; rebuild it with balora report --runs {folder} --readme {path}")


def blocks_in(readme: str | Path) -> list[str]:
    """The results folders that `readme` has generated blocks for."""
    return re.findall(r"^<!-- generated from (\S+) by `balora report", _read(Path(readme)), flags=re.MULTILINE)


def _read(path: Path) -> str:
    if not path.is_file():
        raise BaloraError(f"no README at {path}; give --readme PATH")
    return path.read_text()

"""The README's headline results, generated from committed runs, never typed: seed 000's criteria,
Experiments 1 and 2 and seed 002's instruction tuning (sentences and tables as the report words them),
the selected values and the compute, between two marker lines of README.md:

    <!-- generated from results/paper by `balora report --runs results/paper --readme README.md`: do not edit -->
    ...
    <!-- end of results/paper -->

`balora report --runs DIR --readme README.md` rewrites the block; with `--check` it fails when the
block is not the one DIR's runs give, as it does for the report itself.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from balora.errors import BaloraError
from balora.report import claims, tables
from balora.report.builder import Report
from balora.report.criteria import criteria_table
from balora.report.document import Block, Bullets, Heading, Paragraph, Table, render_markdown, slug


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


def _instruction_tuning(report: Report) -> list[Block]:
    """Seed 002's study as the report words it, its claims and tables (none without causal-LM runs); its
    figures and the greedy responses stay in the report."""
    lm = report.sections.get("lm", [])
    kept = [b for b in lm if isinstance(b, Table) or (isinstance(b, Bullets) and set(b.items) <= set(report.lm_claims))]
    return [Heading(3, "Instruction tuning (seed 002)"), *kept] if kept else []


def headline(report: Report | None, results: list[dict[str, Any]]) -> str:
    """Seed 000's criteria; Exp. 1's budget comparisons (settings on a training subset or the full pool)
    and Exp. 2's few-shot ones, then seed 002's instruction tuning, their sentences and tables in the paper's
    compact columns; the tuning appendix's table (the selected values) and what the runs cost. Headings sit
    one level down, inside a README section; figures stay in the report."""
    if report is None:
        return "No finished runs yet.\n"
    analysis = report.analysis
    frame = analysis.frame
    pools = [s for s in analysis.main if frame.loc[frame["setting"] == s, "shots"].isna().all()]
    budget = [t for t in tables.budget_tables(analysis) if t.name in {f"budget_{slug(s)}" for s in pools}]
    blocks: list[Block] = [Heading(3, "Experiment 1: matched budgets"),
                           Bullets([s for setting in pools for s in claims.budget_claims(analysis, setting)]
                                   or ["No runs on a training subset or the full pool yet."]), *budget,
                           Heading(3, "Experiment 2: few-shot"),
                           Bullets([s for name in analysis.fewshot for s in claims.fewshot_claims(analysis, name)]
                                   or ["No runs at two or more shot counts yet."]), *tables.fewshot_tables(analysis),
                           *_instruction_tuning(report),
                           Heading(3, "Protocol: selection on validation, and compute"),
                           *[b for b in report.sections.get("tuning", []) if isinstance(b, Table)],
                           Paragraph(compute(results))]
    # The paper's compact columns; the statistics legend, the same under every table, once at the end.
    legends = list(dict.fromkeys(b.legend for b in blocks if isinstance(b, Table) and b.legend))
    compact = [replace(b.select(b.compact) if b.compact else b, legend="") if isinstance(b, Table) else b
               for b in blocks]
    criteria = [Heading(3, "Seed 000's success criteria"), Bullets([c.sentence for c in report.criteria]),
                criteria_table(report.criteria)]
    return render_markdown([*criteria, *compact, *map(Paragraph, legends)], Path("."))


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

"""The README's headline results, generated from committed runs, never typed: one table of the main methods
against LoRA in every setting of seed 000's Experiments 1 and 2, one of the levers (issue 39: arms that differ in
one lever alone) where the runs have any, seed 002's verdicts and the compute, between
two marker lines of README.md (one block per results folder):

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
from balora.report import tables
from balora.report.analysis import Row
from balora.report.builder import Report
from balora.report.document import Block, Bullets, Paragraph, Table, render_markdown


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


BUDGETS = "Exp. 1, budgets"  # the headline table's experiment of a setting's budget comparisons


def _headline_rows(report: Report) -> list[tuple[str, str, str, Row]]:
    """(experiment, setting, group, row) for each main method's comparison with LoRA in every cell of Exp. 1 (a
    training subset or the full pool, or a shot count no few-shot family holds, per budget) and Exp. 2 (per shot
    count), in the report's order."""
    analysis = report.analysis
    in_fewshot = {s for rows in analysis.fewshot.values() for r in rows for s in r.runs["setting"]}
    found = []
    for setting, rows in analysis.main.items():
        if setting not in in_fewshot:
            found += [(BUDGETS, setting, r.lead, r) for r in rows if r.comparison is not None]
    for name, rows in analysis.fewshot.items():
        found += [("Exp. 2, few-shot", name, f"{r.lead} shots/class", r) for r in rows if r.comparison is not None]
    return found


def headline_table(report: Report) -> Table:
    """One row per main method and setting where it meets LoRA on matched seeds: what it trains, both means, Δ with
    the CI that matches the verdict, and the four-word verdict (Holm-adjusted within the report's table the row
    comes from). What every row's setting shares (model, data, targets) is said once, in the title."""
    found = _headline_rows(report)
    parts = [setting.split(" · ") for _, setting, _, _ in found]
    shared = [p for p in parts[0] if all(p in other for other in parts)] if parts else []
    cells = [[experiment, " · ".join([*(p for p in part if p not in shared), group]), row.label,
              tables.COLUMNS["Final LoRA params"](row), str(row.comparison.n_pairs),
              tables.pct_summary(row.comparison.reference), tables.pct_summary(row.comparison.method),
              tables.delta_text(row.comparison), row.comparison.verdict_label]
             for (experiment, _, group, row), part in zip(found, parts, strict=True)]
    title = "Methods against LoRA at matched budgets" + (f" ({' · '.join(shared)})" if shared else "")
    margins = sorted({row.comparison.metric.amount(row.comparison.margin.value, exact=True) for _, _, _, row in found})
    notes = [f"Equivalence margin: ±{' and ±'.join(margins)}."] if margins else []
    table = Table("headline", title, ["Experiment", "Setting", "Method", "Trained params", "Pairs", "LoRA acc. (%)",
                                     "Acc. (%)", "Δ (pp) [CI]", "Verdict"], cells, notes)
    # budget comparisons alone (a study's) need no column to tell them from a few-shot series
    return table if any(experiment != BUDGETS for experiment, *_ in found) else table.select(table.columns[1:])


def levers_table(report: Report) -> Table:
    """One row per comparison of the report's levers tables (`analysis.levers_rows`): the lever, what its group holds
    fixed, the arm and the group's first arm it is compared with, Δ with the CI that matches its verdict (Holm over
    the levers table of its setting) and the verdict."""
    cells = []
    for setting, rows in report.analysis.levers.items():
        cells += [[setting, r.lever.kind, r.lever.budget, r.lever.held, r.label, r.lever.against,
                   str(r.comparison.n_pairs), tables.delta_text(r.comparison), r.comparison.verdict_label]
                  for r in rows if r.comparison is not None]
    return Table("levers", "One lever at a time: arms that differ in one lever, each at its selected learning rate",
                 ["Setting", "Lever", "Budget", "Held fixed", "Arm", "Against", "Pairs", "Δ (pp) [CI]", "Verdict"],
                 cells, ["Δ: arm − the arm it is against, Holm-adjusted over the comparisons of its setting's levers "
                         "table in the report (other tables compare some of these pairs too, adjusted over their own)."])


def headline(report: Report | None, results: list[dict[str, Any]]) -> str:
    """The README's block: one table of the main methods against LoRA in every setting of Exp. 1 and 2 (`headline_table`),
    the levers table where there is one (`levers_table`), the seed 002 verdicts in a sentence each, how to read the
    table, and what the runs cost. Everything else (criteria, every method, ablations, figures) is on the results
    pages, built from the same runs."""
    if report is None:
        return "No finished runs yet.\n"
    table = headline_table(report)
    blocks: list[Block] = [table] if table.rows else [Paragraph("No comparison with LoRA yet.")]
    if (levers := levers_table(report)).rows:
        blocks.append(levers)
    if report.lm_bottom_lines:
        blocks.append(Bullets(report.lm_bottom_lines))
    blocks += [Paragraph(HOW_TO_READ), Paragraph(compute(results))]
    return render_markdown(blocks, Path("."))


HOW_TO_READ = (
    "Trained params: the adapter's at the end of training, DoRA's magnitude vectors included (AdaLoRA trains more "
    "before its pruning, and PiSSA, OLoRA and LoRA-GA save twice as many, PEFT's conversion to a LoRA of the "
    "original base: the report gives both). Mean ± std "
    "test accuracy over seeds; pairs: seeds both arms ran (same data sample, head and shuffling). Δ: mean per-seed "
    "difference, method − LoRA, with the paired-t CI at the level that matches its verdict after Holm's adjustment "
    "over the comparisons of its report table. Verdict: better or worse where the Holm-adjusted t-test rejects no "
    "difference; equivalent where the Holm-adjusted equivalence test (TOST) bounds Δ within the margin; else "
    "inconclusive, with the minimum detectable effect at 80% power.")


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

"""Anytime performance: does an arm get there sooner, even where it ties with LoRA at the end?

Initialisation methods are often credited with wins in short runs, so a comparison of final accuracy
alone can miss what they claim. The report's section, shown where the runs' spec declares `anytime:
true` (`balora.specs.report_spec`), compares every arm with LoRA, per setting and budget, on two
measures that `balora.report.runs.anytime_columns` computes per run:

- the anytime metric: the area under the run's validation-accuracy curve over its first H optimizer steps,
  divided by H (trapezoid rule), i.e. its mean validation accuracy over those steps, H the fewest steps any
  arm of its setting and budget trained (matched steps: an arm trained twice as long as LoRA is read over its
  first half).
  It is compared as any accuracy is (`balora.report.analysis.compared_rows`: paired on seeds, Holm
  over the table, TOST at the spec's margin, MDE, the four-word verdict), so "better" means
  significantly higher accuracy earlier in training: faster;
- the steps to reach LoRA's final validation accuracy: the first validation step at which the run is
  at least as accurate as the LoRA run with its seed ended; the table gives the median over the arm's
  seeds (a seed that never reaches it counts as later than any) and how many reached it.

An arm is sooner with no difference shown at the end where its anytime verdict is better and its test-accuracy
verdict against LoRA, on the same runs and Holm-adjusted over the same table, is equivalent or
inconclusive. Only runs whose curve has at least 3 points from step 0 to the last step enter the
section. Causal-LM runs (validation loss, lower is better) have the same run columns but are not
compared here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from balora import specs
from balora.report import stats
from balora.report.analysis import Row, budget_groups, compared_rows
from balora.report.claims import p_text, verdict_lists
from balora.report.document import Block, Bullets, Heading, Paragraph, Table, slug
from balora.report.runs import MIN_CURVE_POINTS, REFERENCE, settings
from balora.report.tables import (
    CI_RULE,
    DASH,
    EQUIVALENCE_NOTE,
    REFERENCE_CELL,
    comparison_detail,
    comparison_notes,
    delta_text,
    pct_summary,
    render,
    signed,
)

# The anytime metric reads as accuracy does (a mean of accuracies): pp, and the same default margin.
ANYTIME = dataclasses.replace(stats.ACCURACY, name="anytime")
TITLE = "Anytime performance"
INTRO = (f"Every arm against LoRA at the same setting and budget on how early it learns. Anytime: the area under "
         f"the run's validation-accuracy curve over its first H optimizer steps, divided by H (trapezoid rule), i.e. "
         f"its mean validation accuracy over those steps, with H (matched steps) the fewest steps any arm of its "
         f"budget trained, so that arms trained for different lengths compare at matched steps; from curves with "
         f"at least {MIN_CURVE_POINTS} points up to H; a higher value means faster. It is "
         "compared as accuracy is (paired on seeds, Holm-adjusted over the table, equivalence at the spec's margin). "
         "Steps to LoRA's final: the first validation step at which a run is at least as accurate on validation as "
         "the LoRA run with its seed ended. An arm is sooner with no difference shown at the end where its anytime "
         "verdict is better and its test-accuracy verdict against LoRA (same runs, same table) is equivalent or "
         "inconclusive; an inconclusive one leaves open whether it ends higher.")
# the columns on how soon an arm reaches LoRA, each with its note (the paper says them once, above its anytime tables)
SPEED_NOTES = {
    "Steps to LoRA's final": (
        "Steps to LoRA's final: median over the arm's seeds with a paired LoRA run of the first validation step at "
        "which the run's validation accuracy is at least the LoRA run's final one (a seed that never reaches it counts "
        "as later than any: not reached where half or more never do)."),
    "Reached": "Reached: how many of those seeds reach it.",
    "Test acc. verdict": ("Test acc. verdict: the arm's test accuracy against LoRA on the same runs, Holm-adjusted over "
                          "this table."),
}
STEPS_NOTES = {"Steps": "Steps: optimizer steps, mean over the runs.", **SPEED_NOTES}  # shown while the column is
# the paper's columns (upright at print size with two budgets' rows): how many seeds reach LoRA's final is the report's
COMPACT = ["Budget", "Method", "n", "Anytime (%)", "Δ anytime (pp) [CI]", "Verdict", "Steps to LoRA's final",
           "Test acc. verdict"]
WINS = (stats.EQUIVALENT, stats.INCONCLUSIVE)  # end verdicts under which a better anytime is a win on speed alone


def declaring_sweeps(frame: pd.DataFrame) -> list[str]:
    """The sweeps among `frame`'s runs whose preset declares `anytime: true`."""
    return sorted({s for s in frame["sweep"] if isinstance(s, str) and s and specs.report_spec(s).anytime})


def steps_to_reference_summary(runs: pd.DataFrame) -> tuple[float, int, int]:
    """The median steps to the reference's final value over `runs` with a paired reference (never: ∞), how
    many of them reached it, and how many have a paired reference."""
    paired = runs[runs["reference_final"].notna()]
    steps = [math.inf if s is None or pd.isna(s) else float(s) for s in paired["steps_to_reference"]]
    reached = sum(math.isfinite(s) for s in steps)
    return (float(np.median(steps)) if steps else math.nan), reached, len(steps)


def _median_cell(row: Row) -> str:
    median, _, paired = steps_to_reference_summary(row.runs)
    if not paired:
        return DASH
    return "not reached" if math.isinf(median) else f"{median:g}"


def _reached_cell(row: Row) -> str:
    _, reached, paired = steps_to_reference_summary(row.runs)
    return f"{reached}/{paired}" if paired else DASH


def compare(part: pd.DataFrame) -> tuple[list[Row], dict[tuple[str, str], stats.Comparison | None]]:
    """One setting's rows on the anytime metric, and each row's test-accuracy comparison on the same runs
    (by lead and arm), each Holm-adjusted over its table."""
    groups = budget_groups(part)
    final = {(r.lead, r.arm): r.comparison for r in compared_rows(groups, REFERENCE, stats.ACCURACY)}
    return compared_rows(groups, REFERENCE, ANYTIME), final


def anytime_table(setting: str, rows: list[Row], final: dict[tuple[str, str], stats.Comparison | None]) -> Table:
    columns = ["Method", "n", "Steps", "Matched steps", "Anytime (%)", "Δ anytime (pp) [CI]", "p (Holm)", "p (TOST, Holm)", "MDE (pp)",
               "Verdict", "Steps to LoRA's final", "Reached", "Test acc. verdict"]
    extra = {"Steps": lambda r: f"{pd.to_numeric(r.runs['steps']).mean():g}",
             "Matched steps": lambda r: f"{pd.to_numeric(r.runs['anytime_steps']).min():g}",
             "Anytime (%)": lambda r: pct_summary(stats.summarize(r.runs["anytime"])),
             "Δ anytime (pp) [CI]": lambda r: REFERENCE_CELL if r.comparison is None else delta_text(r.comparison),
             "Steps to LoRA's final": _median_cell, "Reached": _reached_cell,
             "Test acc. verdict": lambda r: REFERENCE_CELL if final[(r.lead, r.arm)] is None
             else final[(r.lead, r.arm)].verdict_label}
    legend = ("Anytime: mean ± std over seeds. Δ: mean per-seed difference in the anytime metric (method − LoRA) "
              f"with {CI_RULE}. p (Holm): "
              "paired t-test on matched seeds, adjusted over this table (Holm); the verdict reads n<3 where fewer than "
              "3 seeds match and not testable where every seed gives the same difference (no test, no CI, no MDE). "
              + EQUIVALENCE_NOTE)
    return Table(f"anytime_{slug(setting)}", f"Anytime performance — {setting}", ["Budget", *columns],
                 render(rows, columns, extra), comparison_notes(rows), legend,
                 COMPACT, STEPS_NOTES, comparison_detail(rows))


def _named(row: Row) -> str:
    return f"{row.label} at {row.lead}"


def speed_wins(rows: list[Row], final: dict[tuple[str, str], stats.Comparison | None]) -> list[Row]:
    """Rows better on the anytime metric whose test-accuracy verdict against LoRA is equivalent or inconclusive."""
    return [r for r in rows if r.comparison is not None and r.comparison.verdict == stats.BETTER
            and (end := final[(r.lead, r.arm)]) is not None and end.verdict in WINS]


def end_words(end: stats.Comparison) -> str:
    """What a faster arm's final test-accuracy verdict against LoRA (`WINS`) says of where it ends: a tie only where
    the equivalence test shows one; an inconclusive verdict leaves open whether it ends higher, with its MDE."""
    if end.verdict == stats.EQUIVALENT:
        return f"it ends {end.verdict_label} of LoRA in test accuracy"
    return f"whether it ends higher is not shown (test accuracy inconclusive, MDE {end.metric.amount(end.mde)})"


def anytime_claims(setting: str, rows: list[Row], final: dict[tuple[str, str], stats.Comparison | None]) -> list[str]:
    """Which arms are faster, slower or equivalent on the anytime metric, then each that is sooner with no
    difference shown at the end (the section's first sentence says where none does)."""
    compared = [r for r in rows if r.comparison is not None]
    if not compared:
        return []
    sentences = [f"{setting}: on the anytime metric (mean validation accuracy over training), of {len(compared)} "
                 f"comparison{'s' if len(compared) != 1 else ''} with LoRA (paired t-tests and equivalence tests, "
                 f"Holm-adjusted over the table, α = {stats.ALPHA}), "
                 f"{verdict_lists([(_named(r), r.comparison) for r in compared], 'faster', 'slower')}."]
    wins = speed_wins(rows, final)
    for r in wins:
        c, end = r.comparison, final[(r.lead, r.arm)]
        sentences.append(
            f"{setting}, {r.lead}: {r.label} learns sooner, with no difference shown at the end — its mean validation "
            f"accuracy over training differs from LoRA's by Δ = {signed(c.delta)} pp ({100 * c.ci_level:.1f}% CI {signed(c.ci_low)} to "
            f"{signed(c.ci_high)}, Holm-adjusted {p_text(c.p_holm)}, {c.n_pairs} matched seeds), while its test "
            f"accuracy is {end.verdict_label} against LoRA's (Δ = {signed(end.delta)} pp).")
    return sentences


def anytime_section(frame: pd.DataFrame, missing: list[str]) -> list[Block]:
    """The section's blocks for the (non-causal-LM) runs of `frame`; a setting without usable curves is noted
    in `missing`."""
    declared = declaring_sweeps(frame)
    blocks: list[Block] = [Heading(2, TITLE), Paragraph(
        f"{INTRO} Shown because the spec{'s' if len(declared) > 1 else ''} of sweep{'s' if len(declared) > 1 else ''} "
        f"{', '.join(declared)} declare{'' if len(declared) > 1 else 's'} anytime: true.")]
    sentences: list[str] = []
    made: list[Table] = []
    wins: list[str] = []
    for setting in settings(frame):
        part = frame[(frame["setting"] == setting) & frame["anytime"].notna()]
        if part.empty:
            missing.append(f"Anytime performance, {setting}: no validation curve with at least {MIN_CURVE_POINTS} "
                           "points from step 0 to the last step.")
            continue
        rows, final = compare(part)
        sentences += anytime_claims(setting, rows, final)
        wins += [f"{_named(r)} ({setting})" for r in speed_wins(rows, final)]
        made.append(anytime_table(setting, rows, final))
    if made:
        overall = (f"Sooner with no difference shown at the end: {'; '.join(wins)}." if wins else
                   "No arm is sooner with no difference shown at the end (better on the anytime metric with a test-accuracy "
                   f"verdict of equivalent or inconclusive) in {'the' if len(made) == 1 else f'any of the {len(made)}'} "
                   f"setting{'s' if len(made) != 1 else ''} compared.")
        blocks += [Bullets([overall, *sentences]), *made]
    else:
        blocks.append(Paragraph("Nothing to show for these results; see Missing data above."))
    return blocks

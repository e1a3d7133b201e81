"""The report's tables, rendered from an `Analysis` as plain-text cells.

Accuracy-type numbers are percentages with two decimals and Δ is in percentage points; every
comparison is paired on matched seeds, with Holm's adjustment over the comparisons of one table, and
its verdict is one of better, worse, equivalent (within the margin) or inconclusive (with the MDE).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np
import pandas as pd

from balora import allocation, method_registry
from balora.config import protocol, section_of
from balora.report import stats
from balora.report.analysis import Analysis, Row, reference_arm, trend_deltas
from balora.report.document import Table, slug
from balora.report.runs import PHASES, REFERENCE, arm_order, budget_label, same_machine_ratios, settings
from balora.tasks import number

T = TypeVar("T")  # what `grouped` groups: a table's rows, or their names

REFERENCE_CELL = "(reference)"  # a comparison table's Δ and verdict in its reference's row
DASH = "–"


def pct(value: float) -> str:
    return DASH if not math.isfinite(value) else f"{100 * value:.2f}"


def pct_summary(summary: stats.Summary) -> str:
    if summary.n == 0:
        return DASH
    return pct(summary.mean) + ("" if math.isnan(summary.std) else f" ± {100 * summary.std:.2f}")


def signed(value: float, scale: float = 100.0) -> str:
    return DASH if not math.isfinite(value) else number(scale * value, 2, sign=True)


def p_value(p: float | None) -> str:
    if p is None:
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def count(value: float) -> str:
    return DASH if not math.isfinite(value) else f"{round(value):,}"


def delta_text(c: stats.Comparison) -> str:
    """Δ in the metric's unit (pp of accuracy, nats of loss), with the CI that matches the verdict where there is a
    test (none where there is no verdict)."""
    def difference(value: float) -> str:
        return DASH if not math.isfinite(value) else c.metric.signed(value)

    if c.n_pairs == 0:
        return DASH
    if not c.tested:
        return difference(c.delta)
    return f"{difference(c.delta)} [{difference(c.ci_low)}, {difference(c.ci_high)}]"


def _mean(row: Row, column: str) -> float:
    return float(row.runs[column].mean())


def _count_over_seeds(row: Row, column: str) -> str:
    """A count that is one per run, such as the LoRA parameters: the mean over the row's runs, marked as such where
    they differ (the no-budget ablation's min-max ranks vary with the seed), so that it is not read as one run's."""
    return count(_mean(row, column)) + (" (mean)" if row.runs[column].nunique() > 1 else "")


def compared(value: Callable[[stats.Comparison], str], reference: str = DASH) -> Callable[[Row], str]:
    """A comparison cell; on the reference's own row, `reference` instead."""
    return lambda r: reference if r.comparison is None else value(r.comparison)


def marked(p: Callable[[stats.Comparison], float | None]) -> Callable[[stats.Comparison], str]:
    """A p-value cell that, where there is no test, says why (the first test column of a table)."""
    return lambda c: f"{c.verdict_label} (n={c.n_pairs})" if not c.tested and c.n_pairs else p_value(p(c))


def verdict_cell(c: stats.Comparison) -> str:
    return c.verdict_label


def mde_cell(c: stats.Comparison) -> str:
    """The minimum detectable effect in the metric's unit, without the unit (the column names it)."""
    return DASH if not math.isfinite(c.mde) else f"{c.metric.scale * c.mde:.{c.metric.digits}f}"


MARGIN_NOTE = "Equivalence margin: "  # how the note on a table's margin starts (the paper says when it was fixed)
MARGIN_SOURCE = "The margin is "  # how the note on where the margin comes from starts (the paper drops it)


def margin_note(comparisons: Iterable[stats.Comparison | None], sweeps: Iterable[str | None]) -> list[str]:
    """Which equivalence margin a table's verdicts used and where it comes from (a spec, or the metric's
    default), with the sweeps of the table's runs, by whose names the report looks their specs up: a note,
    none for a table without comparisons."""
    margins = dict.fromkeys((c.metric.amount(c.margin.value, exact=True), c.margin.source)
                            for c in comparisons if c is not None)
    if not margins:
        return []
    named = sorted({s for s in sweeps if isinstance(s, str) and s})
    return [MARGIN_NOTE + "; ".join(f"±{amount}" for amount, _ in margins) + ".",
            MARGIN_SOURCE + "; ".join(source for _, source in margins)
            + f" (this table's runs are from sweep{'' if len(named) == 1 else 's'} {', '.join(named) or 'unrecorded'})."]


def _d(c: stats.Comparison) -> str:
    return DASH if math.isnan(c.cohens_d) else number(c.cohens_d, 2, sign=True)


def rank_spread(row: Row) -> str:
    """The arm's final ranks across modules: lowest and highest over its seeds, and their mean Gini
    coefficient (0 = uniform ranks, as LoRA's)."""
    summaries = [allocation.summary([allocation.ModuleRank(m["name"], *m["shape"], 0.0, m.get("final_rank", m["rank"]))
                                     for m in result["allocation"]])
                 for result in row.runs["result"] if result.get("allocation")]
    if not summaries:
        return DASH
    low, high = min(s["min"] for s in summaries), max(s["max"] for s in summaries)
    return f"{low}–{high}, G={sum(s['gini'] for s in summaries) / len(summaries):.2f}"


COLUMNS: dict[str, Callable[[Row], str]] = {
    "Method": lambda r: r.label,
    "n": lambda r: str(len(r.runs)),
    "LoRA params": lambda r: _count_over_seeds(r, "lora_params"),
    "Final LoRA params": lambda r: count(_mean(r, "lora_final")),
    "Saved adapter params": lambda r: count(_mean(r, "saved_params")),
    "Head params": lambda r: count(_mean(r, "head_params")),
    "Ranks (Gini)": rank_spread,
    "Eval loss": lambda r: f"{_mean(r, 'loss'):.4f}" + ("" if len(r.runs) < 2 else f" ± {r.runs['loss'].std():.4f}"),
    "Acc. (%)": lambda r: pct_summary(stats.summarize(r.runs["accuracy"])),
    "Majority (%)": lambda r: pct(_mean(r, "majority_rate")),
    "≤ majority": lambda r: f"{int(r.runs['not_learnt'].sum())}/{len(r.runs)}",
    "F1 (%)": lambda r: pct_summary(stats.summarize(r.runs["f1"])),
    "Δ acc. (pp) [CI]": compared(delta_text, REFERENCE_CELL),
    "p (t)": compared(marked(lambda c: c.p_t)),
    "p (Wilcoxon)": compared(lambda c: p_value(c.p_wilcoxon)),
    "d": compared(_d),
    "p (Holm)": compared(lambda c: p_value(c.p_holm)),
    "p (TOST, Holm)": compared(lambda c: p_value(c.p_tost_holm)),
    "MDE (pp)": compared(mde_cell),
    "Verdict": compared(verdict_cell, REFERENCE_CELL),
}
# What a page-wide (paper) version of a comparison table keeps: the lead, the arm, its accuracy, Δ with its CI (at
# the level that matches the Holm-adjusted t-test, so it excludes 0 exactly when that test rejects: p (Holm) would
# repeat it), the Holm-adjusted equivalence test and the verdict. The report keeps every p, Wilcoxon, d and F1.
COMPACT_STATS = ["Budget", "Shots/class", "Method", "n", "LoRA params", "Acc. (%)", "≤ majority",
                 "Δ acc. (pp) [CI]", "p (TOST, Holm)", "Verdict"]
STAT_COLUMNS = ["Δ acc. (pp) [CI]", "p (t)", "p (Wilcoxon)", "d", "p (Holm)", "p (TOST, Holm)", "MDE (pp)", "Verdict"]
# The verdict's rule, said once for accuracy and for test loss (lm.py).
VERDICT_RULE = ("Verdict at α = 0.05: better or worse where p (Holm) is below it (the direction from Δ); else "
                "equivalent within ±margin where p (TOST, Holm) is; else inconclusive, with the MDE: these seeds "
                "show neither a difference nor equivalence.")
TOST_NOTE = ("p (TOST, Holm): paired equivalence test, two one-sided t-tests that the true Δ lies within ± the "
             "equivalence margin (stated with each table), Holm-adjusted over the same comparisons.")
MDE_NOTE = ("MDE: minimum detectable effect, the |Δ| that the Holm-adjusted t-test detects with at least 80% power at "
            "this number of pairs and the observed std of the differences (a paired t-test's at α = 0.05/m, m the "
            "table's tested comparisons: Holm's test rejects whatever Bonferroni's does).")
EQUIVALENCE_NOTE = f"{TOST_NOTE} {MDE_NOTE} {VERDICT_RULE}"
# the level of Δ's interval, said in every legend that shows one (`stats._level`)
CI_RULE = ("its paired-t CI at the confidence that matches the verdict: 1 − 0.05·p/p(Holm) (95% where a table has one "
           "test), which excludes 0 exactly when the verdict is better or worse; on an equivalent row, the equivalence "
           "test's, 1 − 0.1·p(TOST)/p(TOST, Holm) (90% for one test), which lies inside ±margin")
STAT_NOTE = ("Accuracy: mean ± std over seeds. Δ: mean per-seed difference in accuracy (method − reference) with "
             f"{CI_RULE}. p (t): paired "
             "t-test on matched seeds; n<3 where fewer than 3 seeds match, not testable where every seed gives the "
             "same difference (no test, no CI, no MDE). p (Wilcoxon): signed-rank test, from 6 pairs on. d: paired "
             "Cohen's d. p (Holm): the t-test p adjusted over this table (Holm). " + EQUIVALENCE_NOTE)
# column notes every accuracy comparison table has (`Table.column_notes`: said while the column is shown)
ACCURACY_NOTES = {"≤ majority": "≤ majority: runs whose accuracy is not above the majority-class rate (by more than "
                                "0.1 pp), i.e. that have not learnt the task."}


# Fields a comparison table shows by its title, lead column and method column.
SHOWN = ("method", "seed", "budget", "budget_rank", "rank", "model", "dataset", "shots", "train_size")


DIFFERENCES = "Rows also differ in: "  # how the note on what the rows differ in starts (the paper drops it)
CI_LEVEL = "CI level (%)"  # the confidence of each row's interval, a column in the paper


def differing_fields(rows: list[Row]) -> dict[str, list[str]]:
    """The config fields the rows differ in beyond what the table shows, each with its value per row as the table
    writes it (one protocol per row, so a row's first run speaks for it): say, BA-LoRA's gradient sample, which its
    name leaves out when all its runs share it; a dash for a row whose method does not read the field (`_reads`).
    Empty where the rows differ in nothing else."""
    protocols = _protocols(rows)
    differing = {}
    for name in sorted({n for p in protocols for n in p} - set(SHOWN)):
        values = [_shown(p.get(name)) for p in protocols]
        if len(set(values)) > 1 and not all(f"{name}=" in row.label for row in rows):
            differing[name] = [value if _reads(p, name) else DASH for value, p in zip(values, protocols)]
    return differing


def _reads(values: dict, name: str) -> bool:
    """Whether a run of protocol `values` reads field `name`: a method's option only where it is its method's (LoRA
    has a value for dynamic BA-LoRA's reallocation interval, its default, and never uses it)."""
    if section_of(name) != "method":
        return True
    method = method_registry.find(values["method"])
    return method is None or name in method.settings


def _protocols(rows: list[Row]) -> list[dict]:
    return [protocol(row.runs["result"].iloc[0]["config"]) for row in rows]


def _shown(value: object) -> str:
    """A config value as a table writes it: a list as its items, not as Python's repr."""
    return " + ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def grouped(values: list[str], items: list[T]) -> tuple[dict[str, list[T]], str]:
    """`items` grouped by their `values` (in first-seen order), and the value most of them have: what a note that
    says the usual value once, then its exceptions, is written from."""
    by_value: dict[str, list[T]] = {}
    for item, value in zip(items, values):
        by_value.setdefault(value, []).append(item)
    return by_value, max(by_value, key=lambda v: len(by_value[v]))


def hidden_differences(rows: list[Row]) -> list[str]:
    """A note on what the rows differ in beyond what the table shows (`differing_fields`), in words: the usual
    value once, then its exceptions. Empty where the rows differ in nothing else."""
    parts = []
    for name, shown in differing_fields(rows).items():
        by_value, common = grouped(shown, rows)
        if DASH in by_value:  # an option only some rows' methods read: their values, the others said in words
            parts.append(f"{name} " + "; ".join(f"{value} for {_row_names(named)}" for value, named in by_value.items()
                                                if value != DASH) + " (the other rows' methods do not read it)")
        elif 2 * len(by_value[common]) > len(rows):  # the usual value once, then its exceptions
            parts.append(f"{name} {common}, except " + "; ".join(
                f"{value} for {_row_names(named)}" for value, named in by_value.items() if value != common))
        else:
            parts.append(f"{name} " + "; ".join(f"{value} for {_row_names(named)}" for value, named in by_value.items()))
    return [f"{DIFFERENCES}{' | '.join(parts)}."] if parts else []


def ci_levels(rows: list[Row]) -> list[str]:
    """Each row's CI level in percent, as the text writes it ("99.2"); a dash where the row has no interval (the
    reference, or a comparison without a test)."""
    return [DASH if r.comparison is None or not r.comparison.tested else f"{100 * r.comparison.ci_level:.1f}"
            for r in rows]


def comparison_detail(rows: list[Row], only_tuned: bool = False) -> dict[str, list[str]]:
    """What a comparison table's paper version shows as columns and its report says otherwise: the fields the
    rows differ in (the report's note; with `only_tuned`, those some row selected on validation alone, the rows'
    labels saying the others) with the fields each row selected on validation (`tuned`, its config's list, even
    where every row has the same), and each row's CI level (the report's legend gives its rule)."""
    tuned = [p.get("tuned") or [] for p in _protocols(rows)]
    fields = {name: cells for name, cells in differing_fields(rows).items()
              if not only_tuned or any(name in t for t in tuned)}
    return {**fields, "tuned": [_shown(t or None) for t in tuned], CI_LEVEL: ci_levels(rows)}


def _row_names(rows: list[Row]) -> str:
    """Rows by method, each method once with its rows' leads: 'AdaLoRA (r=4, r=8), EVA (r=4)'."""
    leads: dict[str, list[str]] = {}
    for row in rows:
        leads.setdefault(row.label, []).append(row.lead)
    return ", ".join(f"{label} ({', '.join(named)})" for label, named in leads.items())


def render(rows: list[Row], columns: list[str], extra: dict[str, Callable[[Row], str]] | None = None,
           lead: bool = True) -> list[list[str]]:
    """Cells of `rows`: the group label (unless not `lead`), then `columns` from COLUMNS or `extra` (table-specific
    ones)."""
    cells = {**COLUMNS, **(extra or {})}
    return [[*([row.lead] if lead else []), *(cells[c](row) for c in columns)] for row in rows]


def budget_tables(analysis: Analysis) -> list[Table]:
    """Seed 000 Exp. 1: the main methods × budgets against LoRA, per setting."""
    columns = ["Method", "n", "LoRA params", "Final LoRA params", "Head params", "Ranks (Gini)", "Acc. (%)",
               "Majority (%)", "≤ majority", "F1 (%)", *STAT_COLUMNS]
    explained = {"Final LoRA params": "LoRA params: trainable at training time; final: after AdaLoRA's pruning or "
                                      "EVA's redistribution.",
                 "Saved adapter params": "Saved adapter params: the adapter file's, a plain PEFT LoRA of the original "
                                         "base; PiSSA, OLoRA and LoRA-GA move the base weights when they initialise, "
                                         "and PEFT's conversion undoes that with a LoRA of twice the rank (the "
                                         "comparison is at equal trained parameters).",
                 "Ranks (Gini)": "Ranks (Gini): lowest–highest final rank of any module over the seeds, and the mean "
                                 "Gini coefficient of the ranks (0 = the same rank everywhere).", **ACCURACY_NOTES}
    # the paper's version: training-time LoRA params (AdaLoRA prunes to the budget; the report has the final), and
    # the adapter file's where a table has them (what PiSSA, OLoRA and LoRA-GA save is not what they train)
    compact = ["Budget", "Method", "n", "LoRA params", "Saved adapter params", "Head params", "Acc. (%)", "≤ majority",
               "Δ acc. (pp) [CI]", "p (TOST, Holm)", "Verdict"]
    return [Table(f"budget_{slug(setting)}", f"Budget efficiency — {setting}", ["Budget", *shown],
                  render(rows, shown), comparison_notes(rows), STAT_NOTE, compact, _with_dora(explained, rows),
                  comparison_detail(rows))
            for setting, rows in analysis.main.items() for shown in [_with_saved(columns, rows)]]


def _with_saved(columns: list[str], rows: list[Row]) -> list[str]:
    """The budget table's columns, with the adapter file's parameter count after the final count where some
    arm saves more than it trains (PiSSA, OLoRA and LoRA-GA: PEFT's conversion to a LoRA of the original base
    doubles the rank)."""
    if all((row.runs["saved_params"] == row.runs["lora_final"]).all() for row in rows):
        return columns
    at = columns.index("Final LoRA params") + 1
    return [*columns[:at], "Saved adapter params", *columns[at:]]


def _with_dora(explained: dict[str, str], rows: list[Row]) -> dict[str, str]:
    """Where DoRA has a row, the LoRA params note says its magnitude vectors are in the count (paid from the budget,
    which lowers its rank), so the column compares what every arm trains."""
    if not any(row.runs["method"].eq("dora").any() for row in rows):
        return explained
    note = explained["Final LoRA params"].removesuffix(".") + ("; DoRA's include its magnitude vectors (one per output "
                                                              "feature, paid from the budget).")
    # under both counts: the paper's version of the table shows the training-time one only (the report says it once)
    return {"LoRA params": note} | explained | {"Final LoRA params": note}


def comparison_notes(rows: list[Row]) -> list[str]:
    """A comparison table's notes: what its rows differ in beyond what it shows, and its equivalence margin."""
    return hidden_differences(rows) + rows_margin_note(rows)


def rows_margin_note(rows: list[Row]) -> list[str]:
    return margin_note((r.comparison for r in rows), (s for r in rows for s in r.runs["sweep"]))


def fewshot_tables(analysis: Analysis) -> list[Table]:
    """Seed 000 Exp. 2: shots × main methods at one budget, then whether the gap widens as data shrinks."""
    columns = ["Method", "n", "Acc. (%)", "Majority (%)", "≤ majority", *STAT_COLUMNS]
    tables = []
    for name, rows in analysis.fewshot.items():
        tables.append(Table(f"fewshot_{slug(name)}", f"Few-shot accuracy — {name}", ["Shots/class", *columns],
                            render(rows, columns), comparison_notes(rows), STAT_NOTE, COMPACT_STATS, ACCURACY_NOTES,
                            comparison_detail(rows)))
        tables.append(_trend_table(name, rows, analysis.trends[name]))
    return tables


def _trend_table(name: str, rows: list[Row], trends: dict[str, stats.Trend]) -> Table:
    cells = []
    for arm, trend in trends.items():
        deltas = trend_deltas(rows, arm)
        ends = [f"{signed(float(np.mean(deltas[k])))} ({k})" for k in (min(deltas), max(deltas))] if deltas else [
            DASH, DASH]
        slope = DASH if math.isnan(trend.slope) else (
            f"{signed(trend.slope)} [{signed(trend.ci_low)}, {signed(trend.ci_high)}]")
        label = next(r.label for r in rows if r.arm == arm)
        cells.append([label, *ends, slope, p_value(trend.p), trend.verdict])
    note = ("Δ against LoRA at the fewest and the most shots per class (in brackets). Slope: least-squares fit of "
            "the per-seed Δ (pp) against log2(shots per class); negative means a larger gap with fewer shots.")
    return Table(f"fewshot_trend_{slug(name)}", f"Few-shot gap trend — {name}",
                 ["Method", "Δ at fewest shots (pp)", "Δ at most shots (pp)", "Slope (pp per doubling) [95% CI]",
                  "p", "Trend"], cells, [note])


def ablation_tables(analysis: Analysis) -> list[Table]:
    """Seed 000 Exp. 4: each ablation against full BA-LoRA (the reference here), per setting."""
    columns = ["Method", "n", "LoRA params", "Acc. (%)", "Majority (%)", "≤ majority", *STAT_COLUMNS]
    legend = STAT_NOTE.replace("method − reference", "ablation − full BA-LoRA")
    return [Table(f"ablation_{slug(setting)}", f"Ablations against full BA-LoRA — {setting}", ["Budget", *columns],
                  render(rows, columns), comparison_notes(rows), legend, COMPACT_STATS, ACCURACY_NOTES,
                  comparison_detail(rows))
            for setting, rows in analysis.ablation.items()]


LEVER = "Lever, at"  # the levers table's lead column: what varies in a group, and what its arms share


# what a levers table's groups are: the report's caption; the paper's body says it once, before the tables
LEVERS_NOTE = ("Each group holds arms that differ in one lever, each at its own learning rate selected on validation: "
               "their ranks (uniform, allocated by importance, or the allocation's ranks shuffled within each shape) "
               "at one initialisation; their initialisation (LoRA's, B = 0; BA-LoRA's mean-gradient warm-start; "
               "GoRA's) at one kind of ranks; another option (LoRA+, a scaling rule) against the same arm with the "
               "defaults; or the whole method (BA-LoRA against LoRA) with such an option on both sides. The arms' "
               "labels say the options they differ in. The other tables compare some of these pairs too, adjusted over "
               "their own comparisons, so a pair's MDE and verdict may differ there.")


def levers_tables(analysis: Analysis) -> list[Table]:
    """Issue 39's levers: groups of arms that differ in one lever alone, each against its group's first arm, per
    setting (`analysis.levers_rows`)."""
    columns = ["Method", "n", "LoRA params", "Acc. (%)", "≤ majority", *STAT_COLUMNS]
    legend = STAT_NOTE.replace("method − reference", "arm − its group's first arm")
    return [Table(f"levers_{slug(setting)}", f"One lever at a time — {setting}", [LEVER, *columns],
                  render(rows, columns), [LEVERS_NOTE, *rows_margin_note(rows)], legend,
                  [LEVER, "Method", "n", "Acc. (%)", "Δ acc. (pp) [CI]", "p (TOST, Holm)", "Verdict"], ACCURACY_NOTES,
                  comparison_detail(rows, only_tuned=True))
            for setting, rows in analysis.levers.items()]


REDUCTION = "Reduction (%)"


def reduction(rows: list[Row]) -> dict[str, Callable[[Row], str]]:
    """The "Reduction (%)" column of a strategy table: each row's LoRA parameters saved against the table's largest;
    none where every row trains as many (a column of zeros says nothing)."""
    counts = {_mean(r, "lora_params") for r in rows}
    if len(counts) < 2:
        return {}
    return {REDUCTION: lambda r: f"{100 * (1 - _mean(r, 'lora_params') / max(counts)):.1f}"}


def reduced(columns: list[str], extra: dict[str, Callable[[Row], str]]) -> list[str]:
    """`columns` without the reduction where `reduction` gave none."""
    return [c for c in columns if c != REDUCTION or c in extra]


def strategy_tables(analysis: Analysis) -> list[Table]:
    """Seed 002's strategy comparison: every arm's evaluation loss, parameters, saving against the largest
    configuration in the table, and accuracy against LoRA."""
    columns = ["Method", "n", "Eval loss", "LoRA params", REDUCTION, "Ranks (Gini)", "Acc. (%)",
               "Majority (%)", "≤ majority", *STAT_COLUMNS]
    explained = {"Eval loss": "Eval loss: test cross-entropy.",
                 REDUCTION: "Reduction: 1 − LoRA params / the largest LoRA params in this table.",
                 "Ranks (Gini)": "Ranks (Gini): lowest–highest final rank over the seeds, and the ranks' mean Gini "
                                 "coefficient.", **ACCURACY_NOTES}
    tables = []
    for setting, rows in analysis.strategy.items():
        extra = reduction(rows)
        shown = reduced(columns, extra)
        tables.append(Table(f"strategy_{slug(setting)}", f"Strategy comparison — {setting}", ["Budget", *shown],
                            render(rows, shown, extra), comparison_notes(rows), STAT_NOTE,
                            ["Budget", "Method", "n", "Eval loss", "LoRA params", REDUCTION, "Acc. (%)",
                             "≤ majority", "Δ acc. (pp) [CI]", "p (TOST, Holm)", "Verdict"], explained,
                            comparison_detail(rows)))
    return tables


def quantised_tables(analysis: Analysis) -> list[Table]:
    """Seed 003's QA-LoRA: arms on quantised bases against full-precision LoRA, per setting, with what
    quantising saved (stored base-weight bytes) and cost (peak memory, time per step)."""
    columns = ["Method", "n", "Base fp32 / stored (×)", "Peak RSS (MiB)", "Time / step (s)", "Balance",
               "Acc. (%)", "≤ majority", *STAT_COLUMNS]
    extra = {"Base fp32 / stored (×)": lambda r: DASH if r.runs["quant"].isna().all() else f"{_mean(r, 'quant_ratio'):.2f}",
             "Peak RSS (MiB)": lambda r: count(_mean(r, "peak_rss_mib")),
             "Time / step (s)": lambda r: f"{_mean(r, 'time_per_step'):.3f}",
             "Balance": lambda r: DASH if r.runs["balance"].isna().all() else f"{_mean(r, 'balance'):.3g}"}
    note = ("Arms differ from LoRA only in the frozen base (quant: format; group size 0 = one scale per row), the "
            "quantisation schedule and the gradient scale.")
    explained = {"Base fp32 / stored (×)": "Base fp32 / stored: bytes of the quantised base weights (codes, scales, "
                                           "zero-points) against the same weights in fp32.",
                 "Peak RSS (MiB)": RSS_NOTE,
                 "Time / step (s)": "Time / step: training seconds per optimizer step, validation included.",
                 "Balance": "Balance: ‖scaling·B·A‖ / ‖W − Ŵ‖ at the end of training, mean over modules and runs.",
                 **ACCURACY_NOTES}
    return [Table(f"quantised_{slug(setting)}", f"Quantised bases — {setting}", ["Budget", *columns],
                  render(rows, columns, extra), [note, *rows_margin_note(rows)], STAT_NOTE,
                  ["Budget", "Method", "n", "Base fp32 / stored (×)", "Peak RSS (MiB)", "Time / step (s)", "Acc. (%)",
                   "Δ acc. (pp) [CI]", "p (Holm)", "p (TOST, Holm)", "Verdict"], explained)
            for setting, rows in analysis.quantised.items()]


def time_ratios(frame: pd.DataFrame, arm: str) -> list[float]:
    """Total time of each run of `arm` over its matched LoRA run (same setting, budget, seed and machine)."""
    ratios = []
    for _, cell in frame.groupby(["setting", "budget"]):
        reference = cell[cell["arm"] == reference_arm(cell, REFERENCE)]
        ratios += same_machine_ratios(cell[cell["arm"] == arm], reference, "time_total")
    return ratios


def seconds_cell(values: pd.Series, digits: int = 2) -> str:
    """The mean of a phase's seconds over runs, or a dash where no run has that phase."""
    return DASH if values.isna().all() else f"{values.mean():.{digits}f}"


def ratio_cell(ratios: list[float]) -> str:
    """Time ratios as mean ± std (n=...), or a dash without any."""
    ratio = stats.summarize(ratios)
    if ratio.n == 0:
        return DASH
    return f"{ratio.mean:.2f}" + ("" if math.isnan(ratio.std) else f" ± {ratio.std:.2f}") + f" (n={ratio.n})"


def timed_phases(runs: pd.DataFrame, phases: Iterable[str]) -> list[str]:
    """Those of `phases` that some of `runs` timed: a cost table's phase columns."""
    return [p for p in phases if f"time_{p}" in runs and runs[f"time_{p}"].notna().any()]


def cost_cells(runs: pd.DataFrame, reference: pd.DataFrame, phases: list[str], digits: int = 2) -> list[str]:
    """A cost table's cells for one arm's `runs`: mean seconds per phase and in all, the total over the `reference`
    run with the same seed and machine (`same_machine_ratios`), and the mean peak memory."""
    return [*(seconds_cell(runs[f"time_{p}"], digits) for p in phases), f"{runs['time_total'].mean():.{digits}f}",
            ratio_cell(same_machine_ratios(runs, reference, "time_total")), count(runs["peak_rss_mib"].mean())]


COST_NOTE = "Runs of a sweep share the machine with its other workers, so their times include that contention."
RSS_NOTE = "Peak RSS: peak resident set size (the process's memory held in RAM), the largest per-phase peak, mean over runs."


def cost_notes(phases: list[str], reference: str, who: str, matched: str, timed: str = "") -> dict[str, str]:
    """A cost table's column notes (`cost_cells`' columns): one for all its phase columns (with `timed`, what they
    time), said while any is shown, and one for each of the total, the ratio to `reference`'s matched run
    (`matched`: what it shares) and the peak memory; `who` names a row's arm."""
    per_phase = f"Seconds per phase, mean over the runs (– where {who} has no such phase).{timed}"
    return {**{f"{p} (s)": per_phase for p in phases},
            "Total (s)": "Total: seconds of the whole run, mean over the runs: its phases and the moments between them.",
            f"Total / {reference} (×)": f"Total / {reference}: mean ± std of the ratio to the {reference} run with "
                                        f"{matched} (platform, CPU and device as recorded; – where there is none).",
            "Peak RSS (MiB)": RSS_NOTE}


def cost_tables(analysis: Analysis) -> list[Table]:
    """Each arm's mean phase timings, total time relative to matched LoRA runs, and peak memory, per setting."""
    frame = analysis.frame
    tables = []
    for setting in settings(frame):
        part = frame[frame["setting"] == setting]
        phases = timed_phases(part, PHASES)
        cuda = part["peak_cuda_mib"].notna().any()
        columns = ["Budget", "Method", "Runs", *(f"{p} (s)" for p in phases), "Total (s)", "Total / LoRA (×)",
                   "Peak RSS (MiB)", *(["Peak CUDA (MiB)"] if cuda else []), "Steps", "Converged (step)"]
        rows = []
        for budget, cell in part.groupby("budget"):  # one row per arm and budget: one protocol per row
            for arm in arm_order(cell["arm"]):
                runs = cell[cell["arm"] == arm]
                reference = cell[cell["arm"] == reference_arm(cell, REFERENCE)]
                rows.append([budget_label(budget), runs["arm_label"].iloc[0], str(len(runs)),
                             *cost_cells(runs, reference, phases),
                             *([count(runs["peak_cuda_mib"].mean())] if cuda else []),
                             *(count(pd.to_numeric(runs[c]).mean()) for c in ("steps", "convergence_step"))])
        explained = {**cost_notes(phases, "LoRA", "a method", "the same budget, seed and machine"),
                     "Steps": "Steps: optimizer steps.",
                     "Converged (step)": "Converged: first validation step at 95% of the final validation accuracy, "
                                         "mean over runs."}
        # the phases that take time (allocation takes milliseconds), so that the total is about their sum
        compact = ["Budget", "Method", "Runs", "load (s)", "importance (s)", "init (s)", "train (s)", "eval (s)",
                   "Total (s)", "Total / LoRA (×)", "Peak RSS (MiB)", "Peak CUDA (MiB)"]
        tables.append(Table(f"cost_{slug(setting)}", f"Cost — {setting}", columns, rows, [COST_NOTE], compact=compact,
                            column_notes=explained))
    return tables


def coverage_table(frame: pd.DataFrame) -> Table:
    """Which arms ran where: runs per budget and the seeds, so gaps show before any comparison."""
    rows = []
    for setting in settings(frame):
        part = frame[frame["setting"] == setting]
        for arm in arm_order(part["arm"]):
            runs = part[part["arm"] == arm]
            per_budget = ", ".join(f"{budget_label(b)}: {len(r)}" for b, r in runs.groupby("budget"))
            rows.append([setting, runs["arm_label"].iloc[0], per_budget,
                         ", ".join(str(s) for s in sorted(runs["seed"].unique())),
                         ", ".join(sorted({str(s) for s in runs["sweep"] if s})) or DASH])
    return Table("coverage", "Runs per setting, method and budget",
                 ["Setting", "Method", "Runs per budget", "Seeds", "Sweeps"], rows)

"""Every comparison the report makes, computed once: tables, claims and the paper read the same
`Comparison` objects, so a number in a sentence is the number in the table next to it.

Families of comparisons (Holm's adjustment runs within one family, i.e. one table):
- main: the main methods against LoRA, per setting, over budgets (seed 000 Exp. 1);
- fewshot: the main methods against LoRA, per few-shot family and budget, over shot counts (Exp. 2);
- ablation: BA-LoRA's ablations against full BA-LoRA, per setting (Exp. 4);
- strategy: every arm against LoRA, per setting (seed 002's strategy comparison);
- quantised: runs on quantised bases (seed 003's QA-LoRA) against full-precision LoRA, per setting,
  with full-precision BA-LoRA alongside. Runs on quantised bases enter no other family;
- levers: arms that differ in one lever alone, per setting: how the ranks are chosen (uniform, allocated, shuffled)
  with the initialisation and every other option fixed, how B starts (LoRA's B = 0, BA-LoRA's warm-start, GoRA's)
  with the ranks fixed, or another option (LoRA+, a scaling rule), each arm at its own learning rate (`levers_rows`;
  issue 39's 2x2 of allocation x initialisation, with each lever on both sides);
- lm: the causal-LM strategies against LoRA r=8 in test loss, per setting (seed 002's instruction tuning;
  `balora.report.lm` builds them, the report adds them here so that hypotheses are checked on them too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from balora import method_registry
from balora.report import stats
from balora.report.runs import (
    REFERENCE,
    arm_order,
    budget_label,
    by_seed,
    equivalence_margin,
    reference_arm,
    settings,
    variant_words,
)


@dataclass(frozen=True)
class Lever:
    """Where a row of the levers table (`levers_rows`) sits, in words: the README and the paper read these, not the
    row's lead."""

    kind: str  # what varies in the row's group: one of LEVERS
    held: str  # what the group holds fixed
    level: str  # this arm's value of `kind`
    budget: str  # the group's budget (`budget_label`)
    against: str  # the label of the group's first arm, which every other arm of the group is compared with


@dataclass
class Row:
    """One arm in one group (a budget, or a shot count) of a family of comparisons."""

    lead: str  # the group's label
    arm: str
    runs: pd.DataFrame
    comparison: stats.Comparison | None  # None: this row is the reference
    lever: Lever | None = None  # set in the levers table only

    @property
    def label(self) -> str:
        return str(self.runs["arm_label"].iloc[0])


def compared_rows(groups: list[tuple[str, pd.DataFrame]], reference: str,
                  metric: stats.Metric = stats.ACCURACY) -> list[Row]:
    """A row per arm and group, compared with the group's `reference` arm (its plain arm, else its first variant)
    on matched seeds in `metric`, Holm-adjusted across all rows (`group_rows`, `holm_rows`)."""
    return holm_rows([row for lead, cell in groups
                      for row in group_rows(lead, cell, reference_arm(cell, reference), metric)])


def group_rows(lead: str, cell: pd.DataFrame, reference: str | None, metric: stats.Metric) -> list[Row]:
    """A row per arm of one group, compared with the `reference` arm (None: the group has none) on matched seeds
    in `metric` (Δ = arm − reference; better in the metric's direction) at the margin their specs declare
    (`equivalence_margin`); not yet adjusted for the table's other comparisons (`holm_rows`)."""
    ref_runs = cell[cell["arm"] == reference]  # none where the group has no reference
    ref_values = by_seed(ref_runs, metric.name)
    rows = []
    for arm in arm_order(cell["arm"]):
        runs = cell[cell["arm"] == arm]
        comparison = None if arm == reference else stats.paired_comparison(
            by_seed(runs, metric.name), ref_values, metric, equivalence_margin(pd.concat([runs, ref_runs]), metric))
        rows.append(Row(lead, arm, runs, comparison))
    return rows


def holm_rows(rows: list[Row]) -> list[Row]:
    """`rows` with their comparisons Holm-adjusted over the table they make (`stats.holm_adjust`)."""
    adjusted = iter(stats.holm_adjust([r.comparison for r in rows if r.comparison is not None]))
    for row in rows:
        if row.comparison is not None:
            row.comparison = next(adjusted)
    return rows


def budget_groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(budget_label(b), cell) for b, cell in frame.groupby("budget")]


def trend_deltas(rows: list[Row], arm: str) -> dict[int, list[float]]:
    """{shots: per-seed Δ accuracy of `arm` against the reference}, from few-shot rows (lead = shots)."""
    deltas = {}
    for shots in dict.fromkeys(r.lead for r in rows):
        group = [r for r in rows if r.lead == shots]
        method = [r for r in group if r.arm == arm and r.comparison is not None]
        reference = [r for r in group if r.comparison is None]
        if method and reference:
            values, base = by_seed(method[0].runs, "accuracy"), by_seed(reference[0].runs, "accuracy")
            if seeds := sorted(set(values) & set(base)):
                deltas[int(shots)] = [values[s] - base[s] for s in seeds]
    return deltas


# the levels of the levers table's two factors (`method_registry.RANKS`, `INITS`, and GoRA's warm start), in words
RANKS_WORDS = {"uniform": "uniform ranks", "allocated": "allocated ranks", "shuffled": "shuffled ranks"}
INIT_WORDS = {"zero": "LoRA's init", "warm-start": "BA-LoRA's warm-start", "gora": "GoRA's init"}  # LoRA's: B = 0


def lever_levels(runs: pd.DataFrame) -> tuple[str, str, tuple] | None:
    """An arm's (ranks, initialisation, its other options) for the levers table, or None where its method has no
    place there (`Method.ranks`). A warm-starting method's initialisation is its `warmstart_init` (none with
    `warmstart` off); the other options are its variant's (`runs.variant_options`) less those two."""
    first = runs.iloc[0]
    method = method_registry.find(str(first["method"]))
    if method is None or not method.ranks:
        return None
    config = first["result"]["config"]
    warm = method.init == "warm-start" and config.get("warmstart", True)
    init = ("gora" if config.get("warmstart_init") == "gora" else "warm-start") if warm else "zero"
    others = {k: v for k, v in first["variant_options"].items() if k not in ("warmstart", "warmstart_init")}
    return method.ranks, init, tuple(sorted(others.items()))


LEVERS = ("ranks", "init", "options", "method")  # what varies in a group of the levers table (`_lever_groups`)


def _lever_groups(levels: dict[str, tuple[str, str, tuple]]) -> list[tuple[str, str, list[str]]]:
    """(one of LEVERS, what is held, [the reference arm, the arms compared with it]) for the arms of one budget
    (`lever_levels`): the ranks at one initialisation, the initialisation at one kind of ranks, the other options
    (LoRA+, a scaling rule) at one kind of ranks and one initialisation, and, where other options are set, the method
    as a whole (its ranks and its initialisation) with those options on both sides."""
    def words(*parts: str) -> str:
        return ", ".join(p for p in parts if p)

    groups = []
    for name, key in zip(LEVERS, (
            lambda r, i, o: (words(INIT_WORDS[i], variant_words(dict(o))), r == "uniform"),
            lambda r, i, o: (words(RANKS_WORDS[r], variant_words(dict(o))), i == "zero"),
            lambda r, i, o: (words(RANKS_WORDS[r], INIT_WORDS[i]), not o),
            lambda r, i, o: (variant_words(dict(o)) if o else "", r == "uniform" and i == "zero"))):
        held: dict[str, list[tuple[bool, str]]] = {}
        for arm, level in levels.items():
            fixed, is_reference = key(*level)
            if fixed:
                held.setdefault(fixed, []).append((is_reference, arm))
        for fixed, arms in held.items():
            first = [arm for is_reference, arm in arms if is_reference]
            compared = [arm for is_reference, arm in arms if not is_reference]
            if name == "method":  # an arm that differs from LoRA in one factor alone is in a group above
                compared = [a for a in compared if levels[a][0] != "uniform" and levels[a][1] != "zero"]
            if first and compared:
                groups.append((name, fixed, [first[0], *compared]))
    return groups


def _level_words(lever: str, level: tuple[str, str, tuple]) -> str:
    """An arm's value of `lever` (`lever_levels`' `level`) in words: "allocated", "GoRA's init", "LoRA+"."""
    ranks, init, others = level
    return {"ranks": ranks, "init": INIT_WORDS[init], "options": variant_words(dict(others)) or "default options",
            "method": f"{RANKS_WORDS[ranks]}, {INIT_WORDS[init]}"}[lever]


def levers_rows(frame: pd.DataFrame) -> list[Row]:
    """The levers table of one setting: per budget, groups of arms that differ in one lever with the others fixed
    (`_lever_groups`), each arm compared with its group's reference (uniform ranks, B = 0, the default options, or
    LoRA) on matched seeds, Holm-adjusted over the table; the reference row first."""
    rows = []
    for budget, cell in frame.groupby("budget"):
        levels = {arm: found for arm in arm_order(cell["arm"])
                  if (found := lever_levels(cell[cell["arm"] == arm])) is not None}
        for lever, fixed, (reference, *compared) in _lever_groups(levels):
            group = group_rows(f"{budget_label(budget)} · {lever}, at {fixed}",
                               cell[cell["arm"].isin([reference, *compared])], reference, stats.ACCURACY)
            against = next(r.label for r in group if r.comparison is None)
            for row in group:
                row.lever = Lever(lever, fixed, _level_words(lever, levels[row.arm]), budget_label(budget), against)
            rows += sorted(group, key=lambda r: r.comparison is not None)
    return holm_rows(rows)


@dataclass
class Analysis:
    frame: pd.DataFrame
    main: dict[str, list[Row]] = field(default_factory=dict)  # by setting
    fewshot: dict[str, list[Row]] = field(default_factory=dict)  # by "family · budget"
    trends: dict[str, dict[str, stats.Trend]] = field(default_factory=dict)  # by "family · budget", then arm
    ablation: dict[str, list[Row]] = field(default_factory=dict)  # by setting
    strategy: dict[str, list[Row]] = field(default_factory=dict)  # by setting
    levers: dict[str, list[Row]] = field(default_factory=dict)  # by setting (`levers_rows`)
    quantised: dict[str, list[Row]] = field(default_factory=dict)  # by setting
    lm: dict[str, list[Row]] = field(default_factory=dict)  # by setting, in test loss (module docstring)
    missing: list[str] = field(default_factory=list)  # what could not be compared, and why


def analyse(frame: pd.DataFrame) -> Analysis:
    result = Analysis(frame)
    main_methods, ablation_methods = method_registry.group("main"), method_registry.group("ablation")
    for setting in settings(frame):
        everything = frame[frame["setting"] == setting]
        if everything["quant"].notna().any():
            compared = everything[everything["quant"].notna() | everything["arm"].isin((REFERENCE, "ba_lora"))]
            result.quantised[setting] = compared_rows(budget_groups(compared), REFERENCE)
        part = everything[everything["quant"].isna()]
        if part.empty:
            continue
        main = part[part["method"].isin(main_methods)]
        if main.empty:
            result.missing.append(f"Budget efficiency, {setting}: no runs of {', '.join(main_methods)}.")
        else:
            result.main[setting] = compared_rows(budget_groups(main), REFERENCE)
        if (reference_arm(part, REFERENCE) is None) and not part.empty:
            result.missing.append(f"{setting}: no LoRA runs, so no Δ against LoRA.")
        ablations = part[part["method"].isin(("ba_lora", *ablation_methods))]
        if ablations["method"].isin(ablation_methods).any():
            result.ablation[setting] = compared_rows(budget_groups(ablations), "ba_lora")
        else:
            result.missing.append(f"Ablations, {setting}: no ablation runs.")
        if rows := levers_rows(part):
            result.levers[setting] = rows
        if part["method"].isin(main_methods + ablation_methods).all():  # ablations have their own table
            result.missing.append(f"Strategy comparison, {setting}: no heuristic strategies, only main methods "
                                  "and ablations (see the budget and ablation tables).")
        else:
            result.strategy[setting] = compared_rows(budget_groups(part), REFERENCE)
    fewshot = frame[frame["shots"].notna() & frame["method"].isin(main_methods) & frame["quant"].isna()]
    if fewshot.empty:
        result.missing.append("Few-shot comparison: no few-shot runs (config.shots) of the main methods.")
    for (family, budget), part in fewshot.groupby(["family", "budget"], sort=False):
        shots = sorted(part["shots"].unique())
        name = f"{family} · {budget_label(budget, int(part['budget_params'].iloc[0]))}"
        if len(shots) < 2:
            result.missing.append(f"Few-shot comparison, {name}: only one shot count ({int(shots[0])}).")
            continue
        rows = compared_rows([(str(int(k)), part[part["shots"] == k]) for k in shots], REFERENCE)
        result.fewshot[name] = rows
        arms = arm_order(r.arm for r in rows if r.comparison is not None)
        result.trends[name] = {arm: stats.gap_trend(trend_deltas(rows, arm)) for arm in arms}
    return result

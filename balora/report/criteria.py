"""The hypotheses a spec declares (`balora.specs.Hypothesis`), checked against the report's statistics.

Each hypothesis is marked met, not met or not testable, once per table it applies to, with the numbers
behind the mark and a sentence worded from them. The comparisons are the report's own (`Analysis`): paired
on matched seeds, Holm-adjusted within their table, so a criterion never disagrees with a table; a case that
fails says why in the table's verdict (worse, equivalent within ±margin, or inconclusive with its MDE).

Where a hypothesis is checked: over budgets (`over: budget_rank`) in the budget tables, one per setting (the
main methods against LoRA, BA-LoRA's ablations against BA-LoRA, otherwise the strategy table of every arm
against LoRA; a causal LM's strategy table, at its one budget, serves for both); over shots in the few-shot
tables, one per few-shot family and budget; in each table of the hypothesis's metric (`Hypothesis.metric`:
test loss where `where` names the causal-LM task, else accuracy) whose runs have the settings `where` asks for.
Its cases are the values of its dimension that `where` lists (else every row of the table). Better is in the
metric's direction (a lower loss), Δ and gain in its units. The tests:

- difference: Δ better by at least gain with Holm p < alpha in each case;
- equivalence: the Holm-adjusted equivalence test (TOST within the spec's margin) p < alpha in each case;
- trend: the least-squares slope of the per-seed Δ against log2(shots per class) is negative with p < alpha
  (`stats.gap_trend`), over the table's shot counts, each listed one among them.

A criterion over several cases ("every budget") is not met as soon as one tested case fails it; it is met
only when every case was tested and passed; otherwise it is not testable, and the mark says what is missing.
The paper preset declares seed 000's four success criteria (`success_criteria`' default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from balora import method_registry, specs
from balora.config import protocol
from balora.report import stats
from balora.report.analysis import Analysis, Row
from balora.report.claims import counted, margin_text, p_text
from balora.report.document import Table
from balora.report.runs import DEFAULTS, REFERENCE, budget_label, method_name
from balora.report.tables import signed
from balora.specs import Hypothesis, same_value

MET, NOT_MET, NOT_TESTABLE = "met", "not met", "not testable"


@dataclass
class Criterion:
    """One hypothesis in one table: its mark, the numbers, and a sentence."""

    name: str
    test: str  # the statistic and threshold that decide the mark
    where: str
    mark: str
    numbers: str
    sentence: str
    refuted: bool = False  # a case's interval excludes what it claims (`Case.refutes`)


@dataclass
class Case:
    """One case of a hypothesis (a budget, a shot count): the table's comparison of its arm with its reference."""

    label: str
    comparison: stats.Comparison | None

    def outcome(self, hypothesis: Hypothesis) -> tuple[str, str]:
        """(mark, text) of this case under `hypothesis`'s test, gain and alpha."""
        c, arm, reference = self.comparison, method_name(hypothesis.arm), method_name(hypothesis.reference)
        if c is None:
            return NOT_TESTABLE, f"{self.label}: no {arm} and {reference} runs"
        if c.verdict == stats.NO_SPREAD:
            return NOT_TESTABLE, f"{self.label}: the same difference on every matched seed, which no test can assess"
        if c.p_holm is None or c.p_tost_holm is None:
            return NOT_TESTABLE, f"{self.label}: {c.n_pairs} matched seed{'s' if c.n_pairs != 1 else ''}, too few to test"
        # the CI at the level that matches the verdict, as in the tables
        m = c.metric
        numbers = (f"Δ = {m.signed(c.delta)} {m.unit} ({100 * c.ci_level:.1f}% CI {m.signed(c.ci_low)} to "
                   f"{m.signed(c.ci_high)}), "
                   f"Holm {p_text(c.p_holm)}, equivalence (±{margin_text(c)}) Holm {p_text(c.p_tost_holm)}, "
                   f"{c.n_pairs} seeds")
        alpha = hypothesis.alpha
        if hypothesis.test == "equivalence" and c.p_tost_holm < alpha:
            return MET, f"{self.label}: equivalent within ±{margin_text(c)}, {numbers}"
        different, gain = c.p_holm < alpha, m.sign * c.delta
        if hypothesis.test == "difference" and different and gain > 0:
            if gain >= hypothesis.least_gain:
                return MET, f"{self.label}: {arm} significantly better, {numbers}"
            return NOT_MET, (f"{self.label}: {arm} significantly better but by less than "
                             f"{c.metric.amount(hypothesis.least_gain, exact=True)}, {numbers}")
        if different:
            direction = "better" if gain > 0 else "worse"
            return NOT_MET, f"{self.label}: {arm} significantly {direction} than {reference}, {numbers}"
        if c.verdict in (stats.BETTER, stats.WORSE):  # the table's α is not the hypothesis's
            return NOT_MET, f"{self.label}: {c.verdict} at the table's α = {stats.ALPHA:g} only, {numbers}"
        return NOT_MET, f"{self.label}: {c.verdict_label}, {numbers}"


    def refutes(self, hypothesis: Hypothesis) -> bool:
        """Whether this case's interval (at its table's level, as the tables print it) excludes what `hypothesis`
        claims: every Δ in it short of the gain a difference test asks for, or outside the margin an equivalence
        test asks for. A verdict of worse refutes a gain; so does an equivalence whose interval stops short of it,
        or an inconclusive interval that does (a review read "16-shot gain ≥ 2 pp", CI up to +1.24, as unrefuted)."""
        c = self.comparison
        if c is None or not c.tested or math.isnan(c.ci_low):
            return False
        if hypothesis.test == "difference":  # the best gain the interval allows, in the metric's direction
            return max(c.metric.sign * c.ci_low, c.metric.sign * c.ci_high) < hypothesis.least_gain
        if hypothesis.test == "equivalence":
            return c.ci_low > c.margin.value or c.ci_high < -c.margin.value
        return False


def _compared(rows: list[Row], lead: str, arm: str) -> stats.Comparison | None:
    return next((r.comparison for r in rows if r.lead == lead and r.arm == arm and r.comparison is not None), None)


def _over_cases(name: str, test: str, where: str, cases: list[Case], hypothesis: Hypothesis) -> Criterion:
    outcomes = [case.outcome(hypothesis) for case in cases]
    marks = [mark for mark, _ in outcomes]
    mark = NOT_MET if NOT_MET in marks else NOT_TESTABLE if NOT_TESTABLE in marks else MET
    numbers = "; ".join(text for _, text in outcomes)
    deciding = [text for m, text in outcomes if m == mark]
    if mark == MET:
        why = f"it holds in {'the one case' if len(cases) == 1 else f'all {len(cases)} cases'} ({numbers})"
    elif mark == NOT_MET:
        why = f"it fails in {len(deciding)} of {len(cases)} cases ({'; '.join(deciding)})"
    else:
        why = f"{len(deciding)} of {len(cases)} cases could not be tested ({'; '.join(deciding)})"
    refuted = [case.label for case in cases if case.refutes(hypothesis)]
    if refuted:
        why += f"; refuted: the interval of {_listed(refuted)} excludes it"
    return Criterion(name, test, where, mark, numbers, f"{name}, in {where}: {mark} — {why}.", bool(refuted))


def _not_testable(name: str, test: str, where: str, reason: str) -> Criterion:
    return Criterion(name, test, where, NOT_TESTABLE, reason, f"{name}: not testable — {reason}.")


def _listed(values: Sequence[Any]) -> str:
    return ", ".join(map(str, values))


def _setting_text(key: str, values: list[Any]) -> str:
    """One setting of a hypothesis's `where` as its test names it: "r = 8", "not few-shot", "model = vit"."""
    if key == "budget_rank":
        return f"r = {_listed(values)}"
    if key == "shots" and values == [None]:
        return "not few-shot"
    return f"{key} = {_listed(values)}" if len(values) == 1 else f"{key} in {_listed(values)}"


def _places(hypothesis: Hypothesis) -> str:
    """The cases and settings a hypothesis is checked at: "each of r = 4, 8, 16 (not few-shot)"."""
    cases, shots = hypothesis.cases, hypothesis.dimension == "shots"
    several = "each of " if cases is not None and len(cases) > 1 else ""
    named = ("every shot count" if shots else "every budget") if cases is None else (
        f"{several}{_listed(cases)} shots per class" if shots else f"{several}r = {_listed(cases)}")
    settings = "; ".join(_setting_text(key, values) for key, values in hypothesis.filters.items())
    return f"{named} ({settings})" if settings else named


def decided_by(hypothesis: Hypothesis) -> str:
    """The statistic and threshold that decide a hypothesis's mark, as the criteria table gives them."""
    alpha = f"{hypothesis.alpha:g}"
    if hypothesis.test == "trend":
        return (f"least-squares slope of the per-seed Δ against log2(shots per class) < 0 with p < {alpha}, over "
                f"{_places(hypothesis).removeprefix('each of ')}")
    if hypothesis.test == "equivalence":
        return f"at {_places(hypothesis)}: equivalence within the spec's margin, Holm-adjusted TOST p < {alpha}"
    m = hypothesis.metric
    better, at_least = (">", "≥") if m.higher_is_better else ("<", "≤")
    gain = (f"Δ {better} 0" if not hypothesis.least_gain else
            f"Δ {at_least} {m.signed(m.sign * hypothesis.least_gain)} {m.unit}")
    return f"at {_places(hypothesis)}: {gain} and Holm p < {alpha} (paired t-test)"


def _value(run: pd.Series, key: str) -> Any:
    """A run's value of a setting, as a hypothesis's `where` names it (budget_rank: the run's budget; task: the
    task it ran, which its config may leave to the model, `task: auto`; a plug-in's option: its value in
    `method_options`, or its default, as the protocol reads it)."""
    column = {"budget_rank": "budget", "task": "task"}.get(key)
    if column:
        return run[column]
    config = run["result"]["config"]
    return config[key] if key in config else protocol(config).get(key, DEFAULTS.get(key))


def _tables(analysis: Analysis, hypothesis: Hypothesis) -> dict[str, list[Row]]:
    """The report's tables that compare the hypothesis's arm with its reference over its dimension, where
    their runs have the settings it asks for."""
    if hypothesis.dimension == "shots":
        tables = analysis.fewshot
    elif hypothesis.reference != REFERENCE:
        tables = analysis.ablation
    else:
        tables = {**(analysis.main if hypothesis.arm in method_registry.group("main") else analysis.strategy),
                  **analysis.lm}
    filters, metric = hypothesis.filters, hypothesis.metric.name
    return {name: rows for name, rows in tables.items() if rows and all(
        run["metric"] == metric and all(any(same_value(_value(run, key), wanted) for wanted in values)
                                        for key, values in filters.items())
        for runs in (r.runs for r in rows) for _, run in runs.iterrows())}


def _leads(rows: Iterable[Row], hypothesis: Hypothesis) -> list[tuple[str, str]]:
    """(table row lead, case label) of each case: the listed values of the dimension, else every row's."""
    shots = hypothesis.dimension == "shots"
    leads = ([str(int(k)) if shots else budget_label(k) for k in hypothesis.cases] if hypothesis.cases is not None
             else list(dict.fromkeys(r.lead for r in rows)))
    return [(lead, f"{lead} shots" if shots else lead) for lead in leads]


def _trend(name: str, test: str, where: str, trend: stats.Trend | None, shots: list[int],
           hypothesis: Hypothesis) -> Criterion:
    missing = [k for k in hypothesis.cases or [] if k not in shots]
    if trend is None or trend.p is None:
        return _not_testable(name, test, where, "too few paired seeds and shot counts for a regression"
                             if trend is None or trend.verdict == stats.TOO_FEW_POINTS else
                             "every paired seed on the line, so no scatter to test the slope against")
    numbers = (f"slope {signed(trend.slope)} pp per doubling of the shots (95% CI {signed(trend.ci_low)} to "
               f"{signed(trend.ci_high)}), {p_text(trend.p)}, {trend.n_points} paired seeds over shots "
               f"{_listed(shots)}")
    if missing:
        return Criterion(name, test, where, NOT_TESTABLE, numbers, f"{name}, in {where}: not testable — no paired runs "
                         f"at {_listed(missing)} shots per class; so far {numbers}.")
    significant = trend.p < hypothesis.alpha
    mark = MET if significant and trend.slope < 0 else NOT_MET
    phrase = ("the gap against the amount of data: slope inconclusive" if not significant else
              f"the gap {'widens' if trend.slope < 0 else 'narrows'} significantly as data shrinks")
    return Criterion(name, test, where, mark, numbers, f"{name}, in {where}: {mark} — {phrase} ({numbers}).",
                     mark == NOT_MET and significant)


def check(analysis: Analysis, hypothesis: Hypothesis) -> list[Criterion]:
    """`hypothesis` marked in each table it applies to (module docstring); one not-testable criterion where none does."""
    test, arm = decided_by(hypothesis), hypothesis.arm
    tables = _tables(analysis, hypothesis)
    if not tables:
        compared = (f"{method_name(hypothesis.reference)} and {method_name(arm)} runs at two or more shot counts "
                    "per class" if hypothesis.dimension == "shots" else
                    f"table that compares {method_name(arm)} with {method_name(hypothesis.reference)}")
        settings = "; ".join(_setting_text(key, values) for key, values in hypothesis.filters.items())
        return [_not_testable(hypothesis.name, test, settings or "any setting",
                              f"no {compared}" + (f" ({settings})" if settings else ""))]
    found = []
    for where, rows in tables.items():
        if hypothesis.test == "trend":
            shots = sorted(int(r.lead) for r in rows if r.arm == arm and r.comparison is not None
                           and not math.isnan(r.comparison.delta))
            found.append(_trend(hypothesis.name, test, where, analysis.trends[where].get(arm), shots, hypothesis))
        else:
            cases = [Case(label, _compared(rows, lead, arm)) for lead, label in _leads(rows, hypothesis)]
            found.append(_over_cases(hypothesis.name, test, where, cases, hypothesis))
    return found


def declared_hypotheses(frame: pd.DataFrame, owners: Sequence[str] = ()) -> tuple[Hypothesis, ...]:
    """The hypotheses the report checks, each once: those the specs of the sweeps `owners` declare, where
    the runs are those sweeps' folder (their own only: runs a folder shares with another sweep, as the
    `dynamic` preset's static arms are the `paper`'s, do not bring that sweep's); else those the specs of
    the runs' sweeps declare, in the order of the runs' sweeps (found by name, `specs.report_spec`)."""
    sweeps = owners or (dict.fromkeys(s for s in frame["sweep"] if isinstance(s, str) and s) if "sweep" in frame else {})
    return tuple({h.name: h for s in sweeps for h in specs.report_spec(s).hypotheses}.values())


def success_criteria(analysis: Analysis, hypotheses: Sequence[Hypothesis] | None = None) -> list[Criterion]:
    """`hypotheses` checked on `analysis`, each in every table it applies to; by default those of the paper
    preset: the success criteria of the original BA-LoRA proposal (seed 000), on budgets and few-shot data."""
    declared = specs.report_spec("paper").hypotheses if hypotheses is None else hypotheses
    return [criterion for hypothesis in declared for criterion in check(analysis, hypothesis)]


DECLARED_BY_SPEC = "the runs' spec declares"  # where a criterion comes from, in the report's words


def criteria_table(criteria: list[Criterion]) -> Table:
    rows = [[c.name, c.where, c.test, c.mark, c.numbers] for c in criteria]
    note = (f"Each criterion is a hypothesis {DECLARED_BY_SPEC}, decided by the test shown on the paired "
            "comparisons of the comparison tables of the setting under Where (Δ = the arm − its reference, mean over "
            "matched seeds). A criterion over "
            "several cases is met only when every case was tested and passed; not met when a tested case does not pass "
            "it, and an inconclusive case does not pass; and otherwise not testable. A criterion not met is refuted "
            "only where a case's interval of Δ excludes what it claims (a gain of at least its threshold, or a Δ within "
            "the margin); one not met on other cases alone is not shown, not refuted.")
    # how to read the Numbers column: the paper's version, without it, states the verdicts once, in its protocol
    legend = ("Each case gives its table's verdict: better or worse (Holm p < 0.05), equivalent within ±margin "
              "(Holm-adjusted equivalence test p < 0.05), or inconclusive with the minimum detectable effect at 80% "
              "power (MDE): these seeds show neither; Δ's CI is at the level that matches the verdict (on an "
              "equivalent case, the equivalence test's).")
    return Table("criteria", "Success criteria", ["Criterion", "Where", "Test", "Mark", "Numbers"], rows,
                 [note], legend, compact=["Criterion", "Where", "Mark"])


def criteria_summary(criteria: list[Criterion], whose: str = "seed 000's") -> str:
    """One sentence: how many of the criteria were met, not met, or not testable (`whose`: how the sentence
    names their author, e.g. "the" where seed 000 means nothing to the reader)."""
    counts = {mark: sum(c.mark == mark for c in criteria) for mark in (MET, NOT_MET, NOT_TESTABLE)}
    def were(mark: str) -> str:
        return "{} " + ("was" if counts[mark] == 1 else "were") + f" {mark}"

    if counts[NOT_TESTABLE] == len(criteria):
        return f"None of {whose} {len(criteria)} success criteria could be tested on these runs."
    if counts[MET] == 0:  # "4 were not met; none was met" says one thing twice
        untestable = f" ({counts[NOT_TESTABLE]} of them not testable)" if counts[NOT_TESTABLE] else ""
        return f"None of {whose} {len(criteria)} success criteria was met on these runs{untestable}{_refuted(criteria)}."
    marks = counted([(counts[mark], were(mark)) for mark in (MET, NOT_MET, NOT_TESTABLE)])
    return f"Of {whose} {len(criteria)} success criteria, {marks} on these runs."


def _refuted(criteria: list[Criterion]) -> str:
    """Which of the criteria not met are refuted (`Criterion.refuted`) and which only not shown, a clause: a reader
    takes "not met" for "false"."""
    failed = [c for c in criteria if c.mark == NOT_MET]
    refuted, n = sum(c.refuted for c in failed), len(failed)
    if not failed:
        return ""
    if not refuted:
        return (f"; no interval of Δ excludes what {'it claims' if n == 1 else 'they claim'}, so "
                f"{'it is not refuted' if n == 1 else 'none is refuted'} either")
    if refuted == n:
        one = "it is" if len(criteria) == 1 else "the one not met is"
        return f"; {one if n == 1 else f'all {n} are'} refuted: an interval of Δ excludes what {'it' if n == 1 else 'each'} claims"
    rest = n - refuted
    return (f"; of the {n} not met, {refuted} {'is' if refuted == 1 else 'are'} refuted (an interval of Δ excludes what "
            f"{'it claims' if refuted == 1 else 'they claim'}), {'the other is' if rest == 1 else f'the other {rest} are'} "
            "not shown either way")

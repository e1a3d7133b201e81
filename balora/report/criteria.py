"""Seed 000's own success criteria, checked against the report's statistics.

Each criterion is marked met, not met or not testable, with the numbers behind the mark and a
sentence worded from them. The comparisons are the report's own (`Analysis`): paired on matched
seeds, Holm-adjusted within their table, so a criterion never disagrees with a table; a case that
fails says why in the table's verdict (worse, equivalent within ±margin, or inconclusive with its MDE).

1. Exp. 1: BA-LoRA beats LoRA by at least 0.5 pp at every budget (rank-equivalents 4, 8, 16, on a
   training subset or the full pool, not few-shot), each with Holm p < 0.05.
2. Exp. 2: BA-LoRA improves on LoRA at every shot count (16, 32, 64, 128 per class, at r = 8):
   Δ > 0 with Holm p < 0.05 at each.
3. Exp. 2: the gap widens as data shrinks: the least-squares slope of the per-seed gap against
   log2(shots per class) is negative with p < 0.05 (`stats.gap_trend`), over all four shot counts.
4. Exp. 2: the 16-shot improvement is at least 2 pp, with Holm p < 0.05.

A criterion over several cases ("every budget") is not met as soon as one tested case fails it; it
is met only when every case of the seed's design was tested and passed; otherwise it is not
testable, and the mark says what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from balora.report import stats
from balora.report.analysis import Analysis, Row
from balora.report.claims import PROPOSED, counted, margin_text, p_text
from balora.report.document import Table
from balora.report.runs import budget_label
from balora.report.tables import signed

MET, NOT_MET, NOT_TESTABLE = "met", "not met", "not testable"
BUDGETS = (4, 8, 16)  # Exp. 1: rank-equivalents of seed 000's 37.5K, 75K and 150K budgets
SHOTS = (16, 32, 64, 128)  # Exp. 2, per class
FEWSHOT_BUDGET = 8
MIN_GAIN_BUDGET = 0.005  # 0.5 pp
MIN_GAIN_16_SHOT = 0.02  # 2 pp


@dataclass
class Criterion:
    """One criterion in one setting (or few-shot series): its mark, the numbers, and a sentence."""

    name: str
    test: str  # the statistic and threshold that decide the mark
    where: str
    mark: str
    numbers: str
    sentence: str


@dataclass
class Case:
    """One case of a criterion (a budget, a shot count): the comparison of BA-LoRA with LoRA, if any."""

    label: str
    comparison: stats.Comparison | None

    def outcome(self, min_gain: float) -> tuple[str, str]:
        """(mark, text) of this case against `min_gain` (in accuracy, 0.005 = 0.5 pp)."""
        c = self.comparison
        if c is None:
            return NOT_TESTABLE, f"{self.label}: no BA-LoRA and LoRA runs"
        if c.verdict == stats.NO_SPREAD:
            return NOT_TESTABLE, f"{self.label}: the same difference on every matched seed, which no test can assess"
        if c.p_holm is None:
            return NOT_TESTABLE, f"{self.label}: {c.n_pairs} matched seed{'s' if c.n_pairs != 1 else ''}, too few to test"
        # the CI at the level of the better/worse verdict, as in the tables
        numbers = (f"Δ = {signed(c.delta)} pp ({100 * c.ci_level:.1f}% CI {signed(c.ci_low)} to {signed(c.ci_high)}), "
                   f"Holm {p_text(c.p_holm)}, equivalence (±{margin_text(c)}) Holm {p_text(c.p_tost_holm)}, "
                   f"{c.n_pairs} seeds")
        if c.verdict == stats.BETTER and c.delta >= min_gain:
            return MET, f"{self.label}: BA-LoRA significantly better, {numbers}"
        if c.verdict == stats.BETTER:
            return NOT_MET, f"{self.label}: BA-LoRA significantly better but by less than {100 * min_gain:g} pp, {numbers}"
        if c.verdict == stats.WORSE:
            return NOT_MET, f"{self.label}: BA-LoRA significantly worse than LoRA, {numbers}"
        return NOT_MET, f"{self.label}: {c.verdict_label}, {numbers}"


def _proposed(rows: list[Row], lead: str) -> stats.Comparison | None:
    return next((r.comparison for r in rows if r.lead == lead and r.arm == PROPOSED and r.comparison is not None), None)


def _over_cases(name: str, test: str, where: str, cases: list[Case], min_gain: float) -> Criterion:
    outcomes = [case.outcome(min_gain) for case in cases]
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
    return Criterion(name, test, where, mark, numbers, f"{name}, in {where}: {mark} — {why}.")


def _not_testable(name: str, test: str, where: str, reason: str) -> Criterion:
    return Criterion(name, test, where, NOT_TESTABLE, reason, f"{name}: not testable — {reason}.")


def budget_criteria(analysis: Analysis) -> list[Criterion]:
    """Criterion 1, once per setting with training-subset or full-pool runs."""
    name = "BA-LoRA beats LoRA by ≥ 0.5 pp at every budget (Exp. 1)"
    test = f"at each of r = {', '.join(map(str, BUDGETS))}: Δ ≥ +0.50 pp and Holm p < 0.05 (paired t-test)"
    settings = [s for s, rows in analysis.main.items() if rows and rows[0].runs["shots"].isna().all()]
    if not settings:
        return [_not_testable(name, test, "Exp. 1", "no LoRA and BA-LoRA runs on a training subset or the full pool")]
    return [_over_cases(name, test, setting, [Case(budget_label(b), _proposed(analysis.main[setting], budget_label(b)))
                                              for b in BUDGETS], MIN_GAIN_BUDGET) for setting in settings]


def _series(analysis: Analysis) -> dict[str, list[Row]]:
    """Few-shot series at seed 000's Exp. 2 budget."""
    return {name: rows for name, rows in analysis.fewshot.items()
            if rows and float(rows[0].runs["budget"].iloc[0]) == FEWSHOT_BUDGET}


def _trend(name: str, test: str, where: str, trend: stats.Trend | None, shots: list[int]) -> Criterion:
    missing = [k for k in SHOTS if k not in shots]
    if trend is None or trend.verdict == stats.TOO_FEW_POINTS:
        return _not_testable(name, test, where, "too few paired seeds and shot counts for a regression")
    numbers = (f"slope {signed(trend.slope)} pp per doubling of the shots (95% CI {signed(trend.ci_low)} to "
               f"{signed(trend.ci_high)}), {p_text(trend.p)}, {trend.n_points} paired seeds over shots "
               f"{', '.join(map(str, shots))}")
    if missing:
        return Criterion(name, test, where, NOT_TESTABLE, numbers, f"{name}, in {where}: not testable — no paired runs "
                         f"at {', '.join(map(str, missing))} shots per class; so far {numbers}.")
    mark = MET if trend.verdict == stats.WIDENS else NOT_MET
    phrase = {stats.WIDENS: "the gap widens significantly as data shrinks",
              stats.NARROWS: "the gap narrows significantly as data shrinks",
              stats.NO_TREND: "the gap shows no significant trend with the amount of data"}[trend.verdict]
    return Criterion(name, test, where, mark, numbers, f"{name}, in {where}: {mark} — {phrase} ({numbers}).")


def fewshot_criteria(analysis: Analysis) -> list[Criterion]:
    """Criteria 2–4, once per few-shot series at r = 8."""
    names = ("BA-LoRA improves on LoRA at every shot count (Exp. 2)", "The gap widens as data shrinks (Exp. 2)",
             "The 16-shot improvement is ≥ 2 pp (Exp. 2)")
    tests = (f"at each of {', '.join(map(str, SHOTS))} shots per class (r = {FEWSHOT_BUDGET}): Δ > 0 and Holm p < 0.05",
             "least-squares slope of the per-seed Δ against log2(shots per class) < 0 with p < 0.05, over all "
             "four shot counts",
             f"at 16 shots per class (r = {FEWSHOT_BUDGET}): Δ ≥ +2.00 pp and Holm p < 0.05")
    series = _series(analysis)
    if not series:
        reason = (f"no LoRA and BA-LoRA runs at two or more shot counts per class at r = {FEWSHOT_BUDGET}")
        return [_not_testable(n, t, "Exp. 2", reason) for n, t in zip(names, tests)]
    found = []
    for where, rows in series.items():
        shots = sorted(int(r.lead) for r in rows if r.arm == PROPOSED and r.comparison is not None
                       and not math.isnan(r.comparison.delta))
        found += [
            _over_cases(names[0], tests[0], where, [Case(f"{k} shots", _proposed(rows, str(k))) for k in SHOTS], 0.0),
            _trend(names[1], tests[1], where, analysis.trends[where].get(PROPOSED), shots),
            _over_cases(names[2], tests[2], where, [Case("16 shots", _proposed(rows, "16"))], MIN_GAIN_16_SHOT),
        ]
    return found


def success_criteria(analysis: Analysis) -> list[Criterion]:
    """The success criteria of the original BA-LoRA proposal (seed 000): the budget and few-shot ones."""
    return [*budget_criteria(analysis), *fewshot_criteria(analysis)]


def criteria_table(criteria: list[Criterion]) -> Table:
    rows = [[c.name, c.where, c.test, c.mark, c.numbers] for c in criteria]
    note = ("Experiments 1 and 2; each criterion is decided by the test shown on the paired "
            "comparisons of the tables below (Δ = BA-LoRA − LoRA, mean over matched seeds). A criterion over several "
            "cases is not met when a tested case fails it, met only when every case of the design was tested and "
            "passed, and otherwise not testable. Each case gives its table's verdict: better or worse (Holm p < 0.05), "
            "equivalent within ±margin (Holm-adjusted equivalence test p < 0.05), or inconclusive with the minimum "
            "detectable effect at 80% power (MDE): these seeds show neither; Δ's CI is at the level that matches the "
            "better/worse verdict.")
    return Table("criteria", "Seed 000's success criteria", ["Criterion", "Where", "Test", "Mark", "Numbers"], rows,
                 [note], compact=["Criterion", "Where", "Mark"])


def criteria_summary(criteria: list[Criterion], whose: str = "seed 000's") -> str:
    """One sentence: how many of seed 000's criteria were met, not met, or not testable (`whose`: how the
    sentence names their author, e.g. "the" where seed 000 means nothing to the reader)."""
    counts = {mark: sum(c.mark == mark for c in criteria) for mark in (MET, NOT_MET, NOT_TESTABLE)}
    def were(mark: str) -> str:
        return "{} " + ("was" if counts[mark] == 1 else "were") + f" {mark}"

    if counts[NOT_TESTABLE] == len(criteria):
        return f"None of {whose} {len(criteria)} success criteria could be tested on these runs."
    if counts[MET] == 0:  # "4 were not met; none was met" says one thing twice
        untestable = f" ({counts[NOT_TESTABLE]} of them not testable)" if counts[NOT_TESTABLE] else ""
        return f"None of {whose} {len(criteria)} success criteria was met on these runs{untestable}."
    marks = counted([(counts[mark], were(mark)) for mark in (MET, NOT_MET, NOT_TESTABLE)])
    return f"Of {whose} {len(criteria)} success criteria, {marks} on these runs."


_PLAIN = {stats.BETTER: "BA-LoRA was significantly more accurate",
          stats.WORSE: "BA-LoRA was significantly less accurate",
          stats.EQUIVALENT: "the two are equivalent within ±{margin}",
          stats.INCONCLUSIVE: "neither a difference nor equivalence within ±{margin} was shown (inconclusive)"}
_ALL = {1: "", 2: "in both, ", 3: "in all three, "}


def _headline(case: str, c: stats.Comparison | None) -> tuple[str, str] | None:
    """One case of the abstract: Δ with its CI, and the verdict in plain words; None without a test."""
    if c is None or not c.tested or c.verdict not in _PLAIN:
        return None
    verdict = _PLAIN[c.verdict].format(margin=margin_text(c))
    return (f"Δ = {signed(c.delta)} pp ({100 * c.ci_level:.1f}% CI {signed(c.ci_low)} to {signed(c.ci_high)}) "
            f"{case}", verdict)


def abstract_claims(analysis: Analysis) -> list[str]:
    """The abstract's numbers: BA-LoRA − LoRA accuracy at r = 8 on training-subset or full-pool data (Exp. 1),
    and at the fewest and 64 shots per class (Exp. 2), each with its CI, and the verdicts in plain words (once,
    where every case has the same)."""
    cases = []
    for rows in analysis.main.values():
        if rows and rows[0].runs["shots"].isna().all():
            size = rows[0].runs["train_size"].iloc[0] if "train_size" in rows[0].runs else None
            data = "the full training pool" if size is None or size != size else f"{int(size):,} training examples"
            cases.append(_headline(f"with {data} at the rank-{FEWSHOT_BUDGET} budget",
                                   _proposed(rows, budget_label(FEWSHOT_BUDGET))))
    for rows in _series(analysis).values():
        for shots in (SHOTS[0], 64):
            cases.append(_headline(f"with {shots} examples per class", _proposed(rows, str(shots))))
    found = [c for c in cases if c]
    if not found:
        return []
    lead = "BA-LoRA minus LoRA in test accuracy, on matched seeds: "
    verdicts = {verdict for _, verdict in found}
    if len(verdicts) == 1 and len(found) in _ALL:
        listed = [text for text, _ in found]
        joined = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
        return [f"{lead}{joined}; {_ALL[len(found)]}{verdicts.pop()}."]
    return [lead + "; ".join(f"{text}: {verdict}" for text, verdict in found) + "."]

"""Sentences whose wording follows the statistics, each led by its verdict (`stats`): "better" only
where the Holm-adjusted paired test says so, "worse" where BA-LoRA loses, "equivalent within ±margin"
where the Holm-adjusted equivalence test shows a tie, and otherwise "inconclusive" with the minimum
detectable effect, so that a tie is never read into too few seeds; every sentence about one comparison
states Δ and its CI. No claim is made with fewer than 3 matched seeds.

The same sentences go into `report.md` and, LaTeX-escaped, into `paper/generated/`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import pandas as pd

from balora.report import stats
from balora.report.analysis import Analysis, Row, budget_groups, compared_rows, trend_deltas
from balora.report.runs import REFERENCE, allocation_frame, budget_label, dynamic_runs, method_name, settings
from balora.report.tables import pct, pct_summary, signed, time_ratios
from balora.tasks import number

PROPOSED = "ba_lora"


def counted(parts: list[tuple[int, str]], number: Callable[[int], str] = str) -> str:
    """The parts with a non-zero count, each its template filled with `number(count)`, joined as a list in
    words ("significantly worse in 1 and not significantly different in 2"): a zero count is not worth a clause."""
    phrases = [template.format(number(n)) for n, template in parts if n]
    return ", ".join(phrases[:-1]) + (" and " if len(phrases) > 1 else "") + (phrases[-1] if phrases else "")


def share_clause(total: int) -> Callable[[int], str]:
    """How many of `total` cases a clause covers: " in 2", " in all 5", or nothing when there is one case."""
    return lambda n: "" if total == 1 else f" in all {n}" if n == total else f" in {n}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def margin_text(c: stats.Comparison) -> str:
    return c.metric.amount(c.margin.value, exact=True)


def verdict_phrase(c: stats.Comparison, name: str, reference: str, better: str | None = None,
                   worse: str | None = None) -> str:
    """The verdict in words, led by its label (`Comparison.verdict_label`). `better`, `worse`: what a
    significant difference says for this metric (by default "{name} is significantly better than {reference}")."""
    n = c.n_pairs
    return {
        stats.BETTER: f"better — {better or f'{name} is significantly better than {reference}'}",
        stats.WORSE: f"worse — {worse or f'{name} is significantly worse than {reference}'}",
        stats.EQUIVALENT: f"{c.verdict_label} — the equivalence test rules out a difference of {margin_text(c)} or "
                          f"more between {name} and {reference}",
        stats.INCONCLUSIVE: f"{c.verdict_label} — with {n} matched seeds neither a difference nor equivalence within "
                            f"±{margin_text(c)} is shown; only a difference of about {c.metric.amount(c.mde)} or more "
                            f"would be detected with {100 * stats.POWER:.0f}% power",
        stats.TOO_FEW: f"with {n} matched seed{'s' if n != 1 else ''} there are too few for a test, so no claim is made",
        stats.NO_SPREAD: "every matched seed gives the same difference, which no test can assess, so no claim is made",
        stats.NO_REFERENCE: f"there are no {reference} runs here to compare with",
    }[c.verdict]


def statistics_text(c: stats.Comparison) -> str:
    """The tests behind a tested comparison's verdict: the t-test, Holm's adjustment of it, Wilcoxon's where
    there are enough pairs, and the Holm-adjusted equivalence test at the comparison's margin."""
    text = f"paired t-test {p_text(c.p_t)}, Holm-adjusted {p_text(c.p_holm)}"
    if c.p_wilcoxon is not None:
        text += f", Wilcoxon {p_text(c.p_wilcoxon)}"
    return text + f", equivalence test (±{margin_text(c)}) Holm-adjusted {p_text(c.p_tost_holm)}"


def comparison_sentence(row: Row, reference: str, where: str) -> str:
    """One comparison in words: both accuracies, Δ with its CI, the tests, and the verdict."""
    c = row.comparison
    text = (f"{where}: {row.label} reached {pct_summary(c.method)} % accuracy (n = {c.method.n}) against "
            f"{reference}'s {pct_summary(c.reference)} % (n = {c.reference.n})")
    return f"{text}{evidence(c, f'Δ = {signed(c.delta)} pp')}: {verdict_phrase(c, row.label, reference)}."


def evidence(c: stats.Comparison, delta: str) -> str:
    """What a sentence about one comparison of any metric states after the two arms' values: `delta` (the mean
    difference as the sentence words it) over the matched seeds, its CI in the metric's unit and the tests."""
    text = f"; over {c.n_pairs} matched seeds {delta}" if c.n_pairs >= 2 else ""
    if c.tested:
        text += (f" ({100 * c.ci_level:.1f}% CI {c.metric.signed(c.ci_low)} to {c.metric.signed(c.ci_high)}, the "
                 f"level matching Holm's verdict), {statistics_text(c)}")
    return text


def margins_text(comparisons: list[stats.Comparison]) -> str:
    """The equivalence margins of `comparisons`, each once: "±1 pp" (or "±1 pp or ±2 pp")."""
    return " or ".join(dict.fromkeys(f"±{margin_text(c)}" for c in comparisons))


def mdes_text(comparisons: list[stats.Comparison]) -> str:
    """The minimum detectable effects of (inconclusive) `comparisons`: "MDE 2.10 pp", or their range."""
    low, high = min(comparisons, key=lambda c: c.mde), max(comparisons, key=lambda c: c.mde)
    if low.metric.amount(low.mde) == high.metric.amount(high.mde):  # one, or several as printed alike
        return f"MDE{'s' if len(comparisons) > 1 else ''} {low.metric.amount(low.mde)}"
    return f"MDEs {low.metric.amount(low.mde).split()[0]} to {high.metric.amount(high.mde)}"


DECIDED = (stats.BETTER, stats.WORSE, stats.EQUIVALENT, stats.INCONCLUSIVE)  # the verdicts of a test


def verdict_lists(named: list[tuple[str, stats.Comparison]], better: str = "better", worse: str = "worse",
                  each_mde: bool = True) -> str:
    """Who got which verdict, in one clause: "better: A; worse: none; equivalent within ±1 pp: B;
    inconclusive: C (MDE 2.10 pp)", and how many had no test. `better`, `worse`: the first two labels. Without
    `each_mde`, the inconclusive ones' MDEs once, as a range ("C, D (MDEs 1.10 to 2.10 pp)"), where a page is short."""
    def names(verdict: str) -> str:
        listed = [(name, c) for name, c in named if c.verdict == verdict]
        if verdict == stats.INCONCLUSIVE and listed and not each_mde:
            return ", ".join(name for name, _ in listed) + f" ({mdes_text([c for _, c in listed])})"
        return ", ".join(name + (f" ({mdes_text([c])})" if verdict == stats.INCONCLUSIVE else "")
                         for name, c in listed) or "none"

    untested = sum(c.verdict not in DECIDED for _, c in named)
    return (f"{better}: {names(stats.BETTER)}; {worse}: {names(stats.WORSE)}; equivalent within "
            f"{margins_text([c for _, c in named])}: {names(stats.EQUIVALENT)}; inconclusive: {names(stats.INCONCLUSIVE)}"
            + (f"; {untested} not tested (fewer than 3 matched seeds or the same difference on every seed)"
               if untested else ""))


def _budget(row: Row) -> str:
    return f"budget {row.lead} ({int(row.runs['budget_params'].iloc[0]):,} LoRA parameters)"


def proposed_rows(rows: list[Row]) -> list[Row]:
    """BA-LoRA's rows among `rows` that are compared with a reference (the ones its verdicts are about)."""
    return [r for r in rows if r.arm == PROPOSED and r.comparison is not None]


def budget_claims(analysis: Analysis, setting: str) -> list[str]:
    return [comparison_sentence(r, "LoRA", f"{setting}, {_budget(r)}")
            for r in proposed_rows(analysis.main.get(setting, []))]


def fewshot_claims(analysis: Analysis, name: str) -> list[str]:
    rows = analysis.fewshot[name]
    sentences = [comparison_sentence(r, "LoRA", f"{name}, {r.lead} shots per class") for r in proposed_rows(rows)]
    trend = analysis.trends[name].get(PROPOSED)
    if trend is not None:
        deltas = trend_deltas(rows, PROPOSED)
        phrase = {stats.WIDENS: "widens significantly as data shrinks",
                  stats.NARROWS: "narrows significantly as data shrinks",
                  stats.NO_TREND: "against the amount of data: slope inconclusive",
                  stats.TOO_FEW_POINTS: "cannot be tested for a trend (too few points)",
                  stats.NOT_TESTABLE: "cannot be tested for a trend (every point lies on the fitted line)"}[trend.verdict]
        text = f"{name}: the BA-LoRA − LoRA gap {phrase}"
        if trend.p is not None:
            text += (f" (slope {signed(trend.slope)} pp per doubling of the shots, 95% CI {signed(trend.ci_low)} to "
                     f"{signed(trend.ci_high)}, {p_text(trend.p)}, {trend.n_points} paired seeds over "
                     f"{len(deltas)} shot counts)")
        sentences.append(text + ".")
    return sentences


def ablation_claims(analysis: Analysis, setting: str) -> list[str]:
    return [comparison_sentence(r, "full BA-LoRA", f"{setting}, {_budget(r)}")
            for r in analysis.ablation.get(setting, []) if r.comparison is not None]


def levers_claims(analysis: Analysis, setting: str) -> list[str]:
    """Each comparison of the levers table in words, against its group's first arm."""
    return [comparison_sentence(r, r.lever.against, f"{setting}, {r.lead}")
            for r in analysis.levers.get(setting, []) if r.comparison is not None]


def strategy_claims(analysis: Analysis, setting: str) -> list[str]:
    """BA-LoRA against LoRA in detail, then every strategy's verdict against LoRA in one sentence (the
    strategy table's Holm adjustment): a loss or a tie is said as such, as for the other tables."""
    rows = analysis.strategy.get(setting, [])
    compared = [r for r in rows if r.comparison is not None]
    if not compared:
        return []
    sentences = [comparison_sentence(r, "LoRA", f"{setting}, {_budget(r)}") for r in proposed_rows(rows)]
    best = max(rows, key=lambda r: r.runs["accuracy"].mean())
    sentences.append(strategy_verdicts(
        setting, "LoRA", [(r.label, r.comparison) for r in compared], "accuracy",
        f"The highest mean accuracy is {best.label}'s, {pct_summary(stats.summarize(best.runs['accuracy']))} %."))
    return sentences


def strategy_verdicts(setting: str, reference: str, named: list[tuple[str, stats.Comparison]], measure: str, best: str,
                      better: str = "better", worse: str = "worse") -> str:
    """One sentence on a strategy table of any metric: how many strategies were compared with `reference` on
    `measure`, who got which verdict (`verdict_lists`, its first two labels `better` and `worse`), then `best`."""
    return (f"{setting}: of {len(named)} strateg{'y' if len(named) == 1 else 'ies'} compared with {reference} (paired "
            f"t-tests and equivalence tests on {measure}, Holm-adjusted over the table, α = {stats.ALPHA}), "
            f"{verdict_lists(named, better, worse)}. {best}")


def majority_claims(frame: pd.DataFrame) -> list[str]:
    """Runs that did not get above the majority-class rate (not learnt), per setting."""
    sentences = []
    for setting in settings(frame):
        part = frame[frame["setting"] == setting]
        rate = pct(part["majority_rate"].mean())
        stuck = part[part["not_learnt"]]
        if stuck.empty:
            sentences.append(f"{setting}: every run ended above the majority-class rate ({rate} %).")
            continue
        counts = ", ".join(f"{g['arm_label'].iloc[0]} {len(g)}/{int((part['arm'] == arm).sum())}"
                           for arm, g in stuck.groupby("arm", sort=False))
        sentences.append(f"{setting}: {len(stuck)} of {len(part)} runs ended at or below the majority-class rate "
                         f"({rate} %), i.e. did not learn the task — {counts}. Their accuracy measures a failure to "
                         "train, not the allocation.")
    return sentences


def allocation_claims(frame: pd.DataFrame, setting: str) -> list[str]:
    """Descriptive statistics of BA-LoRA's allocations: importance–rank and depth–rank correlation, and
    the rank split between module types."""
    runs = frame[(frame["setting"] == setting) & (frame["arm"] == PROPOSED)]
    modules = allocation_frame(runs, "rank")
    if modules.empty:
        return []
    by_run = modules.groupby("run")
    importance = stats.summarize([stats.spearman(g["importance"].tolist(), g["rank"].tolist()) for _, g in by_run])
    depth = stats.summarize([stats.spearman(g["layer"].tolist(), g["rank"].tolist()) for _, g in by_run])
    return [f"{setting}: over {importance.n} BA-LoRA runs, Spearman's ρ between a module's importance and its "
            f"allocated rank is {_rho(importance)}, and between its layer index and its rank {_rho(depth)} "
            f"(positive: deeper layers get more rank){_split(modules.groupby('kind')['rank'].mean())}."]


def _split(kinds: pd.Series) -> str:
    """Which module type gets the most rank on average and which the least (the heatmaps show every type's ranks,
    layer by layer); nothing where there is one type."""
    if len(kinds) < 2:
        return ""
    if kinds.nunique() == 1:
        return "; every module type gets the same mean rank"
    return f"; {kinds.idxmax()} modules get the most rank on average and {kinds.idxmin()} the least"


def budget_shares(frame: pd.DataFrame, setting: str) -> list[str]:
    """How BA-LoRA's allocated ranks split the budget between attention and MLP modules (`models.is_attention`, as
    the vision section splits them): each one's share of the LoRA parameters and its mean rank per module, against
    the share uniform ranks give it; per budget where the setting has several (a mean over budgets would merge two
    protocols). Nothing where the runs adapt only one of the two."""
    runs = frame[(frame["setting"] == setting) & (frame["arm"] == PROPOSED)]
    by_budget = list(runs.groupby("budget", sort=True))
    said = [_shares(part, f"{setting} at {budget_label(budget)}" if len(by_budget) > 1 else setting)
            for budget, part in by_budget]
    return [sentence for sentence in said if sentence]


def _shares(runs: pd.DataFrame, where: str) -> str:
    """`budget_shares`' sentence for the BA-LoRA runs of one setting and budget, led by `where`; "" where they adapt
    only attention or only MLP modules."""
    from balora.models import is_attention  # deferred: models imports transformers

    modules = allocation_frame(runs, "rank")
    part = modules["module"].map(lambda name: "attention" if is_attention(name) else "MLP")
    if part.nunique() < 2:
        return ""
    spent = (modules["rank"] * modules["cost"]).groupby(part).sum()
    uniform = modules["cost"].groupby(part).sum()  # every run adapts the same modules: their costs' shares
    mean_rank = modules["rank"].groupby(part).mean()
    order = list(spent.sort_values(ascending=False).index)
    held = " and ".join(f"{name} modules {pct(spent[name] / spent.sum())}% (mean rank {mean_rank[name]:.1f})"
                        for name in order)
    uniform_shares = " and ".join(f"{pct(uniform[name] / uniform.sum())}%" for name in order)
    # at min_rank 0 (issue 39's regime (b)) a module given rank 0 is not adapted at all
    left_out = (modules["rank"] == 0).sum() / runs["result"].size
    unadapted = (f"; {left_out:.1f} of its {len(modules) // runs['result'].size} modules per run got rank 0 and were "
                 "not adapted" if left_out else "")
    return (f"{where}: over {runs['result'].size} BA-LoRA runs, the allocated ranks give {held} of the LoRA "
            f"parameters (uniform ranks: {uniform_shares}){unadapted}.")


def reallocation_claims(frame: pd.DataFrame, setting: str) -> list[str]:
    """Per dynamic arm: how often ranks moved, the most parameters ever trained against the budget, and
    the time a reallocation took; then whether reallocating helped: each dynamic arm against static BA-LoRA
    at the same budget, paired on seeds, Holm-adjusted over the setting's budgets."""
    in_setting = frame[frame["setting"] == setting]
    runs = dynamic_runs(in_setting)
    against_static = compared_rows(budget_groups(in_setting[in_setting["arm"].isin({"ba_lora", *runs["arm"]})]),
                                   "ba_lora")
    sentences = []
    for (_, budget), part in runs.groupby(["arm", "budget"], sort=False):
        events = [h for r in part["result"] for h in r["reallocations"] if h["step"] > 0]
        if not events:
            continue
        moved = sum(1 for h in events if h["changed"])
        spent = max(h["params"] / h["budget"] for r in part["result"] for h in r["reallocations"])
        seconds = 1000 * sum(h["seconds"] for h in events) / len(events)
        modules = sum(len(h["changed"]) for h in events) / len(events)
        jumps = [_loss_jump(r["curves"]["train_loss"], h["step"]) for r in part["result"] for h in r["reallocations"]
                 if h["changed"] and h["step"] > 0]
        jumps = [j for j in jumps if j is not None]
        jump = (f" Mean training loss over the 3 steps after a reallocation / the 3 steps up to it: "
                f"{sum(jumps) / len(jumps):.3f} ({len(jumps)} reallocations)." if jumps else "")
        sentences.append(f"{setting}, {part['arm_label'].iloc[0]}, {budget_label(budget)}: {len(events)} reallocations "
                         f"over {len(part)} runs, {moved} of them moved ranks (mean {modules:.1f} modules each); the "
                         f"most LoRA parameters trained at any step was {100 * spent:.2f}% of the budget; a "
                         f"reallocation took {seconds:.1f} ms on average." + jump)
    return sentences + [comparison_sentence(row, "static BA-LoRA", f"{setting}, {_budget(row)}")
                        for row in against_static if row.comparison is not None and row.arm in set(runs["arm"])]


def _loss_jump(train_loss: list, step: int, window: int = 3) -> float | None:
    """Mean loss of the `window` steps after `step` / of the `window` steps up to it (None near the ends)."""
    loss = {int(s): float(v) for s, v in train_loss}
    before = [loss[s] for s in range(step - window + 1, step + 1) if s in loss]
    after = [loss[s] for s in range(step + 1, step + window + 1) if s in loss]
    if len(before) < window or len(after) < window or sum(before) == 0:
        return None
    return (sum(after) / window) / (sum(before) / window)


def _rho(summary: stats.Summary) -> str:
    if math.isnan(summary.mean):
        return "undefined (constant ranks)"
    return number(summary.mean, 2, sign=True) + ("" if math.isnan(summary.std) else f" ± {summary.std:.2f}")


def cost_claims(frame: pd.DataFrame, setting: str) -> list[str]:
    part = frame[frame["setting"] == setting]
    sentences = []
    for arm in dict.fromkeys(part["arm"]):
        if arm.split(" (")[0] == REFERENCE:
            continue
        ratio = stats.summarize(time_ratios(part, arm))
        if ratio.n:
            spread = "" if math.isnan(ratio.std) else f" ± {ratio.std:.2f}"
            sentences.append(f"{part.loc[part['arm'] == arm, 'arm_label'].iloc[0]}: total time "
                             f"{ratio.mean:.2f}{spread} × LoRA's ({ratio.n} matched runs).")
    return [f"{setting} — " + " ".join(sentences)] if sentences else []


def main_rows(analysis: Analysis) -> list[Row]:
    """BA-LoRA against LoRA in every setting and budget, each once and with the verdict of the table that shows
    it: a budget of a few-shot series as its few-shot table has it (Holm-adjusted over the series' shot counts,
    where its own setting's table adjusts over that setting alone and may read it otherwise), the rest as their
    setting's table has it."""
    in_series = [r for rows in analysis.fewshot.values() for r in proposed_rows(rows)]
    shown = {(setting, budget) for r in in_series for setting, budget in zip(r.runs["setting"], r.runs["budget"])}
    alone = [r for rows in analysis.main.values() for r in proposed_rows(rows)
             if (r.runs["setting"].iloc[0], r.runs["budget"].iloc[0]) not in shown]
    return [*alone, *in_series]


def _main_comparisons(analysis: Analysis) -> list[stats.Comparison]:
    return [r.comparison for r in main_rows(analysis)]


def _undecided(comparisons: list[stats.Comparison]) -> list[tuple[int, str]]:
    """The equivalent and the inconclusive comparisons as `counted` parts, with their margin and their MDEs."""
    equivalent = [c for c in comparisons if c.verdict == stats.EQUIVALENT]
    inconclusive = [c for c in comparisons if c.verdict == stats.INCONCLUSIVE]
    return [(len(equivalent), f"equivalent within {margins_text(equivalent)}{{}}" if equivalent else ""),
            (len(inconclusive), f"inconclusive{{}} ({mdes_text(inconclusive)})" if inconclusive else "")]


def summary_claims(analysis: Analysis) -> list[str]:
    """Verdict counts of BA-LoRA against LoRA over every setting and budget, and the few-shot trends."""
    return [*_verdict_counts(analysis), *trend_counts(analysis)]


def verdict_tally(comparisons: list[stats.Comparison]) -> str:
    """How many of `comparisons` got each verdict, the undecided ones with their margin or MDEs: "inconclusive in
    all 8 (MDEs 0.99 to 16.39 pp)" ("" where none was tested)."""
    verdicts = Counter(c.verdict for c in comparisons)
    return counted([(verdicts[stats.BETTER], "better{}"), (verdicts[stats.WORSE], "worse{}"), *_undecided(comparisons)],
                   share_clause(len(comparisons)))


def main_tally(analysis: Analysis, source: str = "") -> str:
    """One sentence in plain words, for a reader without the tables: the verdicts of BA-LoRA against tuned LoRA over
    every setting and budget (`verdict_tally`) of `source` (how the text names the runs, e.g. "the main results": a
    paper with several sources reads "every setting" as all of them); "" where none was tested."""
    comparisons = _main_comparisons(analysis)
    tally = verdict_tally(comparisons)
    if not tally:
        return ""
    of = f" of {source}" if source else ""
    return (f"Over all {len(comparisons)} comparisons of {method_name(PROPOSED)} with tuned LoRA (every setting and "
            f"budget{of}), the verdict was {tally}." if len(comparisons) > 1 else
            f"In the one comparison of {method_name(PROPOSED)} with tuned LoRA{of}, the verdict was {tally}.")


def _verdict_counts(analysis: Analysis) -> list[str]:
    sentences = []
    comparisons = _main_comparisons(analysis)
    verdicts = Counter(c.verdict for c in comparisons)
    if total := len(comparisons):
        untested = total - sum(verdicts[v] for v in DECIDED)
        tested = verdict_tally(comparisons)
        why = "fewer than 3 matched seeds, no LoRA runs, or the same difference on every seed"
        opening = (f"Across {total} setting–budget combinations" if total > 1 else
                   "In the one setting–budget combination")
        sentences.append(
            (f"None of the {total} setting–budget combinations could be tested: each had {why}." if total > 1 else
             f"The one setting–budget combination could not be tested: it had {why}.") if not tested else
            f"{opening} (paired t-tests and equivalence tests on matched seeds, Holm-adjusted per table, "
            f"α = {stats.ALPHA}), the verdict on {method_name(PROPOSED)} against LoRA was {tested}"
            + (f"; {untested} had {why}, and {'was' if untested == 1 else 'were'} not tested." if untested else "."))
    return sentences


def _slope_intervals(analysis: Analysis, verdict: str) -> str:
    """The 95% CIs of the slopes of BA-LoRA's few-shot series with `verdict`: " (95% CI −0.37 to +1.17 pp per
    doubling of the shots)" (an inconclusive slope said without its interval read as no trend)."""
    trends = [t[PROPOSED] for t in analysis.trends.values() if PROPOSED in t and t[PROPOSED].verdict == verdict]
    intervals = "; ".join(f"{signed(t.ci_low)} to {signed(t.ci_high)}" for t in trends)
    return f" (95% CI{'s' if len(trends) > 1 else ''} {intervals} pp per doubling of the shots)"


def trend_counts(analysis: Analysis) -> list[str]:
    """At most one sentence: BA-LoRA's few-shot series counted by the verdict on the slope of its gap to LoRA
    against the amount of data, with the intervals of the inconclusive slopes; none without a series."""
    sentences = []
    trends = Counter(t[PROPOSED].verdict for t in analysis.trends.values() if PROPOSED in t)
    if total := sum(trends.values()):
        sentences.append(
            (f"Over {total} few-shot series (one per budget)" if total > 1 else "In the one few-shot series")
            + ", the BA-LoRA − LoRA gap "
            + counted([(trends[stats.WIDENS], "widened significantly as data shrank{}"),
                       (trends[stats.NARROWS], "narrowed significantly{}"),
                       (trends[stats.NO_TREND], "had a slope against the amount of data that is inconclusive{}"
                                                + _slope_intervals(analysis, stats.NO_TREND)),
                       (trends[stats.TOO_FEW_POINTS], "had too few shot counts for a trend{}")], share_clause(total)) + ".")
    return sentences


def conclusion_claims(analysis: Analysis) -> list[str]:
    """The bottom line, worded from the verdicts of BA-LoRA against LoRA in every setting and budget: it says
    BA-LoRA helps only where tests say so, says so when it loses, and calls a tie a tie only where the
    equivalence test shows one; where the seeds show neither, it says so, with their MDEs."""
    comparisons = _main_comparisons(analysis)
    verdicts = Counter(c.verdict for c in comparisons)
    better, worse = verdicts[stats.BETTER], verdicts[stats.WORSE]
    tested = sum(verdicts[v] for v in DECIDED)
    if tested == 0:
        return ["No comparison of BA-LoRA with LoRA had 3 or more matched seeds, so these results support no claim "
                "about BA-LoRA's accuracy relative to LoRA."]
    rest = counted(_undecided(comparisons), share_clause(tested - better - worse))
    undetected = (" A difference smaller than a comparison's MDE would likely go undetected, so an inconclusive "
                  "comparison does not show that the two methods are alike." if verdicts[stats.INCONCLUSIVE] else "")
    if better == tested:
        bottom = "BA-LoRA was significantly more accurate than LoRA in every tested comparison."
    elif worse == tested:
        bottom = "BA-LoRA was significantly less accurate than LoRA in every tested comparison."
    elif better == 0 and worse == 0:
        bottom = (f"BA-LoRA was neither significantly better nor significantly worse than LoRA in any tested "
                  f"comparison: the verdict was {rest}.{undetected}")
    elif better == 0:
        bottom = (f"BA-LoRA did not beat LoRA significantly in any tested comparison and was significantly worse in "
                  f"{worse} of {tested}; in the rest the verdict was {rest}.{undetected}")
    else:
        bottom = (f"The evidence is mixed: BA-LoRA was significantly better than LoRA in {better} of {tested} tested "
                  f"comparisons, significantly worse in {worse}" + (f", and in the rest the verdict was {rest}"
                                                                      if rest else "") + f".{undetected}")
    # the abstract's verdict counts would repeat the bottom line here
    return [bottom, *_not_learnt(analysis), *trend_counts(analysis)]


def _not_learnt(analysis: Analysis) -> list[str]:
    """A caveat when LoRA or BA-LoRA runs behind these comparisons never beat the majority-class rate."""
    frame = analysis.frame
    runs = frame[frame["setting"].isin(analysis.main) & frame["arm"].isin((REFERENCE, PROPOSED))]
    stuck = int(runs["not_learnt"].sum())
    if stuck == 0:
        return []
    return [f"{stuck} of the {len(runs)} LoRA and BA-LoRA runs behind these comparisons ended at or below the "
            "majority-class rate; where they did, the comparison measures a failure to train, not the allocation."]

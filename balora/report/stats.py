"""Paired statistics for comparing a method with a reference (LoRA) on matched seeds.

Runs of two methods that share a seed share the data sample, the head initialisation and the
shuffling, so the per-seed difference removes that variance: every test here is paired. The tests
are scipy's and statsmodels', and so is the multiple-comparison adjustment; the power analysis is scipy's
noncentral t.

- Δ: mean of the per-seed differences;
- p_t: paired t-test (two-sided, `scipy.stats.ttest_rel`); p_wilcoxon: Wilcoxon signed-rank
  (`scipy.stats.wilcoxon`), only from 6 pairs on (below that its smallest attainable two-sided p is
  above 0.05);
- d: paired Cohen's d (d_z = mean difference / standard deviation of the differences);
- p_tost: paired equivalence test, two one-sided t-tests that the true Δ lies within ±margin
  (`statsmodels.stats.weightstats.ttost_paired`: the larger of the two one-sided p-values). The margin
  is the spec's (`Margin`; `Metric.margin` where none is declared);
- MDE: the minimum detectable effect, the |Δ| that the table's Holm-adjusted t-test detects with at
  least 80% power at this number of pairs: a two-sided paired t-test's at α/m, m the table's tested
  comparisons (the power from scipy's noncentral t, in standard deviations of the differences), times
  the observed standard deviation of the differences. α/m is Bonferroni's level, and Holm's test rejects
  whatever Bonferroni's does, so its power is at least this test's (at the unadjusted α an effect above
  the MDE could go undetected by the adjusted test); one comparison alone is tested at α;
- p_holm, p_tost_holm: Holm's step-down adjustment of the t-tests, and separately of the equivalence
  tests, across the comparisons of one table (`holm_adjust`, with
  `statsmodels.stats.multitest.multipletests`);
- the verdict, one of four words: better or worse where the Holm-adjusted t-test rejects "no
  difference" at α (its direction from Δ's sign and the metric's: a higher accuracy, a lower loss is
  better), else equivalent (within ±margin) where the Holm-adjusted equivalence test rejects "a
  difference of at least the margin", else inconclusive, with the MDE: these seeds show neither;
- the confidence interval of Δ (paired t) is at the level that matches the verdict: after `holm_adjust`,
  1 − α·p_t/p_holm (1 − α where a table has one test), so it excludes 0 exactly when the verdict is
  better or worse; on an equivalent comparison, the equivalence test's interval, 1 − 2α·p_tost/p_tost_holm
  (90% where a table has one test), which lies inside ±margin exactly when the verdict is equivalent
  (an interval that crossed the margin beside "equivalent" read as a contradiction). Before adjustment
  the levels are 1 − α and 1 − 2α.

Not testable, so no p-value, no MDE and no verdict either way: fewer than `MIN_PAIRS` matched seeds,
and differences without spread (every seed gives the same Δ, e.g. two runs stuck at the majority class:
a t statistic would divide by zero).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

# Every comparison is read by a task's metric (its direction, units and default margin): one record, the task's.
from balora.tasks import ACCURACY, LOSS, Metric  # noqa: F401 (LOSS re-exported with the others)

ALPHA = 0.05
POWER = 0.8  # of the minimum detectable effect
MIN_PAIRS = 3  # fewer matched seeds: no test, a mark instead
MIN_WILCOXON = 6
# Differences whose standard deviation is below this are equal: equal differences of accuracies (ratios of
# counts) computed from different pairs differ by float rounding, ~1e-16, which would give t ≈ 1e14, p ≈ 0.
TIE = 1e-9

BETTER = "better"
WORSE = "worse"
EQUIVALENT = "equivalent"
INCONCLUSIVE = "inconclusive"
TOO_FEW = "fewer than 3 matched seeds"
NO_SPREAD = "not testable: the same difference on every seed"
NO_REFERENCE = "no reference runs"

# Table cells of the comparisons without a test; the report explains them once.
UNTESTED = {TOO_FEW: "n<3", NO_SPREAD: "not testable", NO_REFERENCE: "no ref."}


@dataclass(frozen=True)
class Margin:
    """The equivalence margin of a comparison, in the metric's units, and where it comes from (for the notes)."""

    value: float
    source: str


def default_margin(metric: Metric) -> Margin:
    return Margin(metric.margin, f"the default for {metric.name}")


@dataclass(frozen=True)
class Summary:
    """Mean ± sample standard deviation over seeds (std is NaN for a single run)."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Summary(float(array.mean()), std, int(array.size))


@dataclass(frozen=True)
class Comparison:
    """A method against a reference on the seeds both have (`n_pairs`)."""

    method: Summary  # over all of the method's seeds
    reference: Summary  # over all of the reference's seeds
    n_pairs: int
    delta: float  # mean per-seed difference, method − reference (a gain where `metric` is higher-is-better)
    stderr: float  # standard error of `delta` (NaN below 2 pairs)
    ci_level: float  # confidence of [ci_low, ci_high]
    ci_low: float
    ci_high: float
    p_t: float | None  # None: not tested (see `verdict`)
    p_wilcoxon: float | None
    cohens_d: float  # NaN where the differences have no spread
    p_holm: float | None
    p_tost: float | None  # equivalence within ±margin; None where p_t is
    p_tost_holm: float | None
    mde: float  # minimum detectable |Δ| at 80% power, in the metric's units; NaN where not tested
    metric: Metric
    margin: Margin
    verdict: str

    @property
    def tested(self) -> bool:
        return self.p_t is not None

    @property
    def verdict_label(self) -> str:
        """The verdict as every table and sentence writes it: better, worse, "equivalent within ±1 pp",
        "inconclusive (MDE 2.34 pp)", or the mark of a comparison without a test."""
        if self.verdict == EQUIVALENT:
            return f"equivalent within ±{self.metric.amount(self.margin.value, exact=True)}"
        if self.verdict == INCONCLUSIVE:
            return f"inconclusive (MDE {self.metric.amount(self.mde)})"
        return UNTESTED.get(self.verdict, self.verdict)


def _verdict(gain: float, p: float | None, p_tost: float | None, n_pairs: int, spread: float, alpha: float) -> str:
    """`gain`: the mean difference signed so that positive is better (`Metric.sign` × Δ)."""
    if n_pairs == 0:
        return NO_REFERENCE
    if n_pairs < MIN_PAIRS:
        return TOO_FEW
    if not spread > TIE:
        return NO_SPREAD
    if p is not None and p < alpha:
        return BETTER if gain > 0 else WORSE
    return EQUIVALENT if p_tost is not None and p_tost < alpha else INCONCLUSIVE


def _interval(delta: float, stderr: float, n: int, level: float) -> tuple[float, float]:
    """Paired-t confidence interval of the mean difference at confidence `level`."""
    if n < 2 or not math.isfinite(stderr):
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * stderr
    return delta - half, delta + half


@functools.cache
def detectable_effect(n_pairs: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The standardised effect (mean / SD of the differences) that a two-sided paired t-test on `n_pairs`
    pairs detects with `power` at `alpha`; it depends on nothing else, so it is solved once per n."""
    # The power from the noncentral t, solved by a bracketing root finder: statsmodels' `TTestPower.solve_power`
    # stops short at a Holm-sized α and few pairs (at 3 pairs and α = 0.05/3 it returned 4.29 SDs, below its 4.52 at
    # α = 0.05/2), and its `power` is NaN where a tail underflows; the lower tail is taken as the upper tail of −nc.
    critical = float(stats.t.ppf(1 - alpha / 2, n_pairs - 1))

    def shortfall(effect: float) -> float:
        nc = effect * math.sqrt(n_pairs)
        return float(stats.nct.sf(critical, n_pairs - 1, nc) + stats.nct.sf(critical, n_pairs - 1, -nc)) - power

    return float(optimize.brentq(shortfall, 1e-6, 1e3))


def paired_comparison(method: Mapping[int, float], reference: Mapping[int, float], metric: Metric = ACCURACY,
                      margin: Margin | None = None, alpha: float = ALPHA) -> Comparison:
    """Compare `method` with `reference`, both given as {seed: value} of `metric`; pairs are the shared seeds.
    Δ is method − reference in the metric's units; the verdict reads its direction from the metric (better is a
    higher accuracy, a lower loss). `margin`: the equivalence margin (`metric`'s default where None)."""
    margin = margin or default_margin(metric)
    seeds = sorted(set(method) & set(reference))
    ours = np.array([method[s] for s in seeds], dtype=float)
    theirs = np.array([reference[s] for s in seeds], dtype=float)
    differences = ours - theirs
    n = differences.size
    delta = float(differences.mean()) if n else math.nan
    spread = float(differences.std(ddof=1)) if n >= 2 else math.nan
    stderr = spread / math.sqrt(n) if n >= 2 else math.nan
    testable = n >= MIN_PAIRS and spread > TIE
    p_t = float(stats.ttest_rel(ours, theirs).pvalue) if testable else None
    p_w = float(stats.wilcoxon(ours, theirs).pvalue) if testable and n >= MIN_WILCOXON else None
    p_tost = float(ttost_paired(ours, theirs, -margin.value, margin.value)[0]) if testable else None
    verdict = _verdict(metric.sign * delta, p_t, p_tost, n, spread, alpha)
    level = _level(verdict, 1.0, 1.0, alpha)
    return Comparison(summarize(list(method.values())), summarize(list(reference.values())), n, delta, stderr,
                      level, *_interval(delta, stderr, n, level), p_t, p_w,
                      delta / spread if spread > TIE else math.nan, p_t, p_tost, p_tost,
                      detectable_effect(n, alpha) * spread if testable else math.nan, metric, margin, verdict)


def _level(verdict: str, factor: float, tost_factor: float, alpha: float) -> float:
    """The confidence of the interval that matches `verdict`, given Holm's factors (adjusted p / p) of the t-test
    and of the equivalence test: the equivalence test's interval (1 − 2α') on an equivalent comparison, so that it
    lies inside ±margin; else the t-test's (1 − α'), which excludes 0 exactly when the verdict is better or worse."""
    return 1 - 2 * alpha / tost_factor if verdict == EQUIVALENT else 1 - alpha / factor


def _holm(ps: list[float], alpha: float) -> list[float]:
    return [float(p) for p in multipletests(ps, alpha=alpha, method="holm")[1]] if ps else []


def holm_adjust(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons of one table with Holm-adjusted p-values, of the t-tests and (separately, over the
    same comparisons) of the equivalence tests, verdicts from them, each tested comparison's CI at the
    level that matches its verdict (`_level`) and its MDE at Bonferroni's α/m, which Holm's test detects with at
    least the stated power. Untested ones are not counted in the adjustment and keep their
    p-values None."""
    tested = [i for i, c in enumerate(comparisons) if c.tested]
    adjusted = _holm([comparisons[i].p_t for i in tested], alpha)
    equivalence = _holm([comparisons[i].p_tost for i in tested], alpha)
    result = list(comparisons)
    for i, p_holm, p_tost_holm in zip(tested, adjusted, equivalence):
        c = comparisons[i]
        # Holm's factors for this comparison; a p-value that underflows to 0 gets Bonferroni's, the largest.
        factor = p_holm / c.p_t if c.p_t > 0 else len(tested)
        tost_factor = p_tost_holm / c.p_tost if c.p_tost > 0 else len(tested)
        spread = c.stderr * math.sqrt(c.n_pairs)
        verdict = _verdict(c.metric.sign * c.delta, p_holm, p_tost_holm, c.n_pairs, spread, alpha)
        level = _level(verdict, factor, tost_factor, alpha)
        result[i] = replace(c, p_holm=p_holm, p_tost_holm=p_tost_holm, ci_level=level,
                            mde=detectable_effect(c.n_pairs, alpha / len(tested)) * spread,
                            **dict(zip(("ci_low", "ci_high"), _interval(c.delta, c.stderr, c.n_pairs, level))),
                            verdict=verdict)
    return result


WIDENS = "widens as data shrinks"
NARROWS = "narrows as data shrinks"
NO_TREND = "slope inconclusive"  # neither widens nor narrows shown: not "no trend"
TOO_FEW_POINTS = "too few points for a trend"
NOT_TESTABLE = "not testable: no scatter about the line"


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of the per-seed Δ against log2(shots): Δ change per doubling of data."""

    slope: float
    ci_low: float
    ci_high: float
    p: float | None
    n_points: int
    verdict: str


def gap_trend(deltas_by_shots: Mapping[int, Sequence[float]], alpha: float = ALPHA) -> Trend:
    """Does the gap to the reference widen as data shrinks? A negative slope against log2(shots)
    means a larger Δ at fewer shots."""
    x = np.array([math.log2(k) for k, ds in deltas_by_shots.items() for _ in ds], dtype=float)
    y = np.array([d for ds in deltas_by_shots.values() for d in ds], dtype=float)
    if len(set(x)) < 2 or x.size < 3:
        return Trend(math.nan, math.nan, math.nan, None, int(x.size), TOO_FEW_POINTS)
    fit = stats.linregress(x, y)
    if not fit.stderr > TIE:  # every point on the line (or every Δ equal): no test
        return Trend(float(fit.slope), math.nan, math.nan, None, int(x.size), NOT_TESTABLE)
    p = float(fit.pvalue)
    half = stats.t.ppf(1 - alpha / 2, x.size - 2) * fit.stderr
    verdict = NO_TREND if p >= alpha else (WIDENS if fit.slope < 0 else NARROWS)
    return Trend(float(fit.slope), fit.slope - half, fit.slope + half, p, int(x.size), verdict)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ; NaN where either side is constant (no ranking to correlate)."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)

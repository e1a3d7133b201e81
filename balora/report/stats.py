"""Paired statistics for comparing a method with a reference (LoRA) on matched seeds.

Runs of two methods that share a seed share the data sample, the head initialisation and the
shuffling, so the per-seed difference removes that variance: every test here is paired.

- Δ: mean of the per-seed differences, with a t-based 95% confidence interval;
- p_t: paired t-test (two-sided); p_wilcoxon: Wilcoxon signed-rank, only from 6 pairs on
  (below that its smallest attainable two-sided p is above 0.05);
- d: paired Cohen's d (d_z = mean difference / standard deviation of the differences);
- p_holm: Holm's step-down adjustment across the comparisons of one table (`holm_adjust`).

With fewer than `MIN_PAIRS` matched seeds no p-value is computed: the verdict says so instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_PAIRS = 3  # fewer matched seeds: no test, a mark instead
MIN_WILCOXON = 6

BETTER = "significantly better"
WORSE = "significantly worse"
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "fewer than 3 matched seeds"
NO_REFERENCE = "no reference runs"

# Short forms for table cells; the report explains them once.
SHORT_VERDICT = {BETTER: "better", WORSE: "worse", NO_DIFFERENCE: "n.s.", TOO_FEW: "n<3", NO_REFERENCE: "no ref."}


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
    delta: float  # mean per-seed difference, method − reference
    ci_low: float
    ci_high: float
    p_t: float | None
    p_wilcoxon: float | None
    cohens_d: float
    p_holm: float | None
    verdict: str


def _verdict(delta: float, p: float | None, n_pairs: int, alpha: float) -> str:
    if n_pairs == 0:
        return NO_REFERENCE
    if p is None:
        return TOO_FEW
    if p < alpha:
        return BETTER if delta > 0 else WORSE
    return NO_DIFFERENCE


def _paired_t(differences: np.ndarray) -> float:
    """Two-sided paired t-test p. Identical differences have no spread: scipy returns NaN there,
    but the evidence is all-or-nothing (all zero: none; all equal and non-zero: overwhelming)."""
    if np.ptp(differences) == 0:
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def _wilcoxon(differences: np.ndarray) -> float | None:
    if differences.size < MIN_WILCOXON:
        return None
    if not np.any(differences):
        return 1.0  # no non-zero difference to rank
    return float(stats.wilcoxon(differences).pvalue)


def _cohens_d(differences: np.ndarray) -> float:
    if differences.size < 2:
        return math.nan
    spread = differences.std(ddof=1)
    if spread == 0:
        return 0.0 if differences.mean() == 0 else math.copysign(math.inf, differences.mean())
    return float(differences.mean() / spread)


def paired_comparison(method: Mapping[int, float], reference: Mapping[int, float], alpha: float = ALPHA) -> Comparison:
    """Compare `method` with `reference`, both given as {seed: value}; pairs are the shared seeds."""
    seeds = sorted(set(method) & set(reference))
    differences = np.array([method[s] - reference[s] for s in seeds], dtype=float)
    n = differences.size
    delta = float(differences.mean()) if n else math.nan
    ci_low = ci_high = math.nan
    if n >= 2:
        half = stats.t.ppf(1 - alpha / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n)
        ci_low, ci_high = delta - half, delta + half
    p_t = _paired_t(differences) if n >= MIN_PAIRS else None
    p_w = _wilcoxon(differences)
    return Comparison(summarize(list(method.values())), summarize(list(reference.values())), n, delta, ci_low,
                      ci_high, p_t, p_w, _cohens_d(differences), p_t, _verdict(delta, p_t, n, alpha))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in input order; None (no test) stays None and is not counted."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(tested)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))  # step-down: never below an earlier one
        adjusted[i] = running
    return adjusted


def holm_adjust(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons of one table with Holm-adjusted p-values and verdicts from them."""
    adjusted = holm([c.p_t for c in comparisons])
    return [replace(c, p_holm=p, verdict=_verdict(c.delta, p, c.n_pairs, alpha)) for c, p in zip(comparisons, adjusted)]


WIDENS = "widens as data shrinks"
NARROWS = "narrows as data shrinks"
NO_TREND = "no significant trend"
TOO_FEW_POINTS = "too few points for a trend"


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
    p = float(fit.pvalue) if np.isfinite(fit.pvalue) else 1.0
    half = stats.t.ppf(1 - alpha / 2, x.size - 2) * fit.stderr if x.size > 2 else math.nan
    verdict = NO_TREND if p >= alpha else (WIDENS if fit.slope < 0 else NARROWS)
    return Trend(float(fit.slope), fit.slope - half, fit.slope + half, p, int(x.size), verdict)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ; NaN where either side is constant (no ranking to correlate)."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)

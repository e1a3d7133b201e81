"""The report's statistics against scipy and hand computations."""

from __future__ import annotations

import gc
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from balora.report import stats


def test_paired_comparison_matches_scipy_and_hand_computation():
    a = {1: 0.81, 2: 0.79, 3: 0.84, 4: 0.80, 5: 0.83, 6: 0.82, 7: 0.78}
    b = {1: 0.78, 2: 0.79, 3: 0.80, 4: 0.77, 5: 0.81, 6: 0.80, 7: 0.78, 8: 0.90}  # seed 8 has no pair
    c = stats.paired_comparison(a, b)
    x, y = np.array([a[s] for s in range(1, 8)]), np.array([b[s] for s in range(1, 8)])
    d = x - y
    assert c.n_pairs == 7
    assert c.delta == pytest.approx(d.mean())
    assert c.p_t == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert c.p_wilcoxon == pytest.approx(sps.wilcoxon(x, y).pvalue)
    assert c.cohens_d == pytest.approx(d.mean() / d.std(ddof=1))
    half = sps.t.ppf(0.975, 6) * d.std(ddof=1) / math.sqrt(7)
    assert (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert c.method.n == 7 and c.reference.n == 8  # summaries use every seed of each side
    assert c.reference.mean == pytest.approx(np.mean(list(b.values())))


def test_wilcoxon_only_from_six_pairs():
    a = {s: 0.8 + 0.01 * s for s in range(5)}
    b = {s: 0.7 + 0.013 * s for s in range(5)}
    assert stats.paired_comparison(a, b).p_wilcoxon is None


def _tested(p: float) -> stats.Comparison:
    """A comparison whose t-test gave `p` (5 pairs, Δ = +2 pp)."""
    return replace(stats.paired_comparison({s: 0.8 + 0.01 * s for s in range(5)}, {s: 0.78 + 0.012 * s for s in range(5)}),
                   p_t=p, p_holm=p)


def test_holm_against_hand_computation():
    p = [0.01, 0.04, 0.03, None, 0.005]
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max-accumulated 0.06
    untested = stats.paired_comparison({1: 0.9, 2: 0.91}, {1: 0.7, 2: 0.72})
    adjusted = stats.holm_adjust([untested if q is None else _tested(q) for q in p])
    assert [c.p_holm for c in adjusted] == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert [c.verdict for c in adjusted] == [stats.BETTER, stats.NO_DIFFERENCE, stats.NO_DIFFERENCE, stats.TOO_FEW,
                                             stats.BETTER]
    assert [c.p_holm for c in stats.holm_adjust([_tested(0.5), _tested(0.9)])] == pytest.approx([1.0, 1.0])


def test_large_consistent_difference_is_significant_and_direction_is_kept():
    base = {s: 0.70 + 0.01 * (s % 3) for s in range(6)}
    better = {s: v + 0.05 + 0.002 * s for s, v in base.items()}
    worse = {s: v - 0.05 - 0.002 * s for s, v in base.items()}
    up, down = stats.holm_adjust([stats.paired_comparison(better, base), stats.paired_comparison(worse, base)])
    assert up.verdict == stats.BETTER and down.verdict == stats.WORSE
    assert up.p_holm == pytest.approx(min(1.0, 2 * min(up.p_t, down.p_t)))


def test_two_seeds_give_the_too_few_mark_not_a_p_value():
    c = stats.paired_comparison({1: 0.9, 2: 0.91}, {1: 0.7, 2: 0.72})
    assert c.p_t is None and c.p_holm is None and c.verdict == stats.TOO_FEW
    assert stats.holm_adjust([c])[0].verdict == stats.TOO_FEW


@pytest.mark.parametrize("method, reference", [
    ({1: 0.578, 2: 0.578, 3: 0.578}, {1: 0.578, 2: 0.578, 3: 0.578}),  # identical runs (both at the majority class)
    ({1: 0.60, 2: 0.62, 3: 0.70, 4: 0.65}, {1: 0.59, 2: 0.61, 3: 0.69, 4: 0.64}),  # +1 pp on every seed
    ({1: 0.7005, 2: 0.7105, 3: 0.7205}, {1: 0.6905, 2: 0.7005, 3: 0.7105}),  # equal up to float rounding
])
def test_differences_without_spread_are_not_testable_rather_than_p_0_or_1(method, reference):
    c = stats.paired_comparison(method, reference)
    assert c.p_t is None and c.p_wilcoxon is None and math.isnan(c.cohens_d)
    assert c.verdict == stats.NO_SPREAD
    adjusted = stats.holm_adjust([c, _tested(0.01)])
    assert adjusted[0].verdict == stats.NO_SPREAD and adjusted[1].p_holm == pytest.approx(0.01)  # not counted


deltas = st.lists(st.floats(-0.05, 0.1), min_size=3, max_size=8)


@settings(max_examples=50, deadline=None)
@given(st.lists(deltas, min_size=1, max_size=5))
def test_the_ci_excludes_0_exactly_when_the_holm_verdict_is_significant(families):
    comparisons = [stats.paired_comparison({s: 0.7 + d for s, d in enumerate(ds)}, dict.fromkeys(range(len(ds)), 0.7))
                   for ds in families]
    with pytest.MonkeyPatch.context() as patch:  # statsmodels' Holm calls gc.collect(): ~1 s with torch loaded
        patch.setattr(gc, "collect", lambda *args: 0)
        adjusted = stats.holm_adjust(comparisons)
    for c in adjusted:
        if not c.tested:
            continue
        assert c.ci_level >= 0.95
        significant = c.verdict in (stats.BETTER, stats.WORSE)
        margin = min(abs(c.ci_low), abs(c.ci_high))
        if margin > 1e-9 and abs(c.p_holm - stats.ALPHA) > 1e-9:  # not on the boundary itself
            assert significant == (c.ci_low > 0 or c.ci_high < 0), c


def test_the_ci_of_a_single_test_is_the_plain_95_percent_interval():
    a = {s: 0.8 + 0.013 * (s % 3) for s in range(6)}
    b = {s: 0.78 + 0.011 * (s % 2) for s in range(6)}
    (c,) = stats.holm_adjust([stats.paired_comparison(a, b)])
    d = np.array([a[s] - b[s] for s in range(6)])
    half = sps.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    assert c.ci_level == pytest.approx(0.95) and (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))


def test_gap_trend_detects_widening():
    deltas = {16: [0.05, 0.06, 0.055], 32: [0.035, 0.04, 0.03], 64: [0.01, 0.015, 0.02]}
    trend = stats.gap_trend(deltas)
    x = [math.log2(k) for k, v in deltas.items() for _ in v]
    y = [d for v in deltas.values() for d in v]
    assert trend.slope == pytest.approx(sps.linregress(x, y).slope)
    assert trend.verdict == stats.WIDENS
    assert stats.gap_trend({16: [0.1, 0.2]}).verdict == stats.TOO_FEW_POINTS


def test_a_trend_with_every_point_on_the_line_is_not_testable():
    trend = stats.gap_trend({16: [0.04, 0.04], 32: [0.03, 0.03], 64: [0.02]})
    assert trend.p is None and trend.verdict == stats.NOT_TESTABLE and trend.slope == pytest.approx(-0.01)

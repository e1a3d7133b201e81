"""The report's statistics against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
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


def test_holm_against_hand_computation():
    p = [0.01, 0.04, 0.03, None, 0.005]
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max-accumulated 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


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
    assert math.isfinite(c.ci_low)  # the CI exists from two pairs on; the test does not


def test_identical_runs_are_no_difference():
    c = stats.paired_comparison({1: 0.578, 2: 0.578, 3: 0.578}, {1: 0.578, 2: 0.578, 3: 0.578})
    assert c.p_t == 1.0 and c.cohens_d == 0.0 and c.verdict == stats.NO_DIFFERENCE


def test_gap_trend_detects_widening():
    deltas = {16: [0.05, 0.06, 0.055], 32: [0.035, 0.04, 0.03], 64: [0.01, 0.015, 0.02]}
    trend = stats.gap_trend(deltas)
    x = [math.log2(k) for k, v in deltas.items() for _ in v]
    y = [d for v in deltas.values() for d in v]
    assert trend.slope == pytest.approx(sps.linregress(x, y).slope)
    assert trend.verdict == stats.WIDENS
    assert stats.gap_trend({16: [0.1, 0.2]}).verdict == stats.TOO_FEW_POINTS


@given(st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=12))
def test_holm_properties(pvalues):
    adjusted = stats.holm(pvalues)
    for raw, adj in zip(pvalues, adjusted):
        assert (raw is None) == (adj is None)
        if raw is not None:
            assert raw <= adj <= 1.0
    tested = sorted((p, a) for p, a in zip(pvalues, adjusted) if p is not None)
    assert all(a1 <= a2 for (_, a1), (_, a2) in zip(tested, tested[1:]))  # order is kept


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
    # Δ = +2 pp, beyond the ±1 pp margin: no equivalence either, so the untested-by-Holm ones are inconclusive
    assert [c.verdict for c in adjusted] == [stats.BETTER, stats.INCONCLUSIVE, stats.INCONCLUSIVE, stats.TOO_FEW,
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
def test_the_ci_excludes_0_exactly_when_the_holm_verdict_is_significant_and_lies_in_the_margin_when_equivalent(
        families):
    comparisons = [stats.paired_comparison({s: 0.7 + d for s, d in enumerate(ds)}, dict.fromkeys(range(len(ds)), 0.7))
                   for ds in families]
    with pytest.MonkeyPatch.context() as patch:  # statsmodels' Holm calls gc.collect(): ~1 s with torch loaded
        patch.setattr(gc, "collect", lambda *args: 0)
        adjusted = stats.holm_adjust(comparisons)
    for c in adjusted:
        if not c.tested:
            continue
        if c.verdict == stats.EQUIVALENT:  # the equivalence test's interval (90% for one test), inside the margin
            assert c.ci_level >= 0.9 and -c.margin.value < c.ci_low <= c.ci_high < c.margin.value, c
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


def tost_by_hand(d: np.ndarray, margin: float) -> float:
    """TOST by hand: H0 Δ ≤ −margin and H0 Δ ≥ +margin, each a one-sided t-test; the larger p decides."""
    se = d.std(ddof=1) / math.sqrt(d.size)
    p_low = sps.t.sf((d.mean() + margin) / se, d.size - 1)
    p_high = sps.t.cdf((d.mean() - margin) / se, d.size - 1)
    return max(p_low, p_high)


@pytest.mark.parametrize("differences, equivalent", [
    ((0.002, -0.001, 0.003, 0.0, 0.001, -0.002), True),  # tight around 0: inside ±1 pp
    ((0.015, -0.012, 0.008, -0.014, 0.005), False),  # mean ≈ 0 but too spread to rule out ±1 pp
    ((0.0095, 0.0105, 0.0098, 0.0102), False),  # tight, but at the +1 pp edge
])
def test_tost_is_the_larger_of_two_one_sided_t_tests(differences: tuple[float, ...], equivalent: bool):
    reference = {s: 0.70 + 0.01 * s for s in range(len(differences))}
    method = {s: reference[s] + d for s, d in enumerate(differences)}
    c = stats.paired_comparison(method, reference)
    expected = tost_by_hand(np.array([method[s] - reference[s] for s in reference]), 0.01)
    assert c.p_tost == pytest.approx(expected)
    assert (c.p_tost < 0.05) is equivalent
    assert c.margin.value == 0.01  # accuracy's default: ±1 pp


def mde_by_hand(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The effect δ (in SDs of the differences) at which a two-sided paired t-test has `power`: the
    noncentral t with n − 1 df and noncentrality δ√n beyond ±t_crit, solved for δ; times the SD."""
    critical = sps.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(delta: float) -> float:
        nc = delta * math.sqrt(n)
        # the lower tail as the upper tail of −nc: the same value, but no NaN where it underflows
        return sps.nct.sf(critical, n - 1, nc) + sps.nct.sf(critical, n - 1, -nc) - power

    from scipy.optimize import brentq
    return brentq(shortfall, 0.01, 20) * sd


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mde_is_the_effect_a_paired_t_test_detects_with_80_percent_power(n: int):
    reference = {s: 0.70 for s in range(n)}
    method = {s: 0.70 + 0.004 * ((s * 7) % 5 - 2) + 0.001 * s for s in range(n)}
    c = stats.paired_comparison(method, reference)
    sd = np.std([method[s] - reference[s] for s in range(n)], ddof=1)
    assert c.mde == pytest.approx(mde_by_hand(n, sd), rel=1e-4)
    # a known value: with 10 pairs, 80% power at α = 0.05 needs about one SD of the differences (d ≈ 0.996)
    if n == 10:
        assert c.mde / sd == pytest.approx(0.996, abs=1e-3)


def test_mde_after_holm_is_at_bonferronis_alpha_so_an_effect_above_it_is_not_missed_by_the_adjusted_test():
    """N2 of review 3: an MDE at the unadjusted α sat below |Δ| of an inconclusive comparison. Holm's test rejects
    whatever Bonferroni's does, so the MDE at α/m is an effect the adjusted test detects with at least 80% power."""
    reference = {s: 0.70 for s in range(5)}
    rows = [{s: 0.70 + shift + 0.004 * ((s * 7) % 5 - 2) for s in range(5)} for shift in (0.004, 0.0, -0.001)]
    adjusted = stats.holm_adjust([stats.paired_comparison(m, reference) for m in rows])
    for method, c in zip(rows, adjusted):
        sd = np.std([method[s] - reference[s] for s in range(5)], ddof=1)
        assert c.mde == pytest.approx(mde_by_hand(5, sd, alpha=0.05 / 3), rel=1e-4)
        assert c.mde > stats.paired_comparison(method, reference).mde  # above the unadjusted one
        if abs(c.delta) > c.mde:
            assert c.verdict in (stats.BETTER, stats.WORSE)
    # a smaller α needs a larger effect, even at 3 pairs (statsmodels' solver returned less at 0.05/3 than at 0.05/2)
    effects = [stats.detectable_effect(3, 0.05 / m) for m in (1, 2, 3, 8)]
    assert effects == sorted(effects) and effects[2] == pytest.approx(mde_by_hand(3, 1.0, alpha=0.05 / 3), rel=1e-4)


def test_no_mde_or_equivalence_test_without_a_test():
    few = stats.paired_comparison({1: 0.9, 2: 0.91}, {1: 0.7, 2: 0.72})
    flat = stats.paired_comparison({1: 0.6, 2: 0.62, 3: 0.7}, {1: 0.59, 2: 0.61, 3: 0.69})
    for c in (few, flat):
        assert c.p_tost is None and c.p_tost_holm is None and math.isnan(c.mde)


# Per-seed differences (method − reference) giving each of the four verdicts at a ±1 pp margin.
VERDICTS = {
    "better": ((0.050, 0.052, 0.049, 0.055, 0.051), "BETTER", "better"),
    "worse": ((-0.050, -0.052, -0.049, -0.055, -0.051), "WORSE", "worse"),
    "equivalent": ((0.002, -0.001, 0.003, 0.0, 0.001, -0.002), "EQUIVALENT", "equivalent within ±1 pp"),
    "inconclusive": ((0.03, -0.025, 0.01), "INCONCLUSIVE", "inconclusive (MDE {:.2f} pp)"),
}


@pytest.mark.parametrize("case", sorted(VERDICTS))
def test_the_four_verdicts(case: str):
    differences, verdict, label = VERDICTS[case]
    reference = {s: 0.70 + 0.01 * s for s in range(len(differences))}
    method = {s: reference[s] + d for s, d in enumerate(differences)}
    (c,) = stats.holm_adjust([stats.paired_comparison(method, reference)])
    assert c.verdict == getattr(stats, verdict)
    d = np.array(differences)
    assert c.verdict_label == label.format(100 * mde_by_hand(d.size, d.std(ddof=1)))


def test_the_verdict_of_a_loss_is_worded_in_nats_at_its_own_margin():
    reference = {s: 3.84 + 0.01 * s for s in range(5)}
    tight = {s: reference[s] + d for s, d in enumerate((0.001, -0.001, 0.0005, 0.0, -0.0005))}
    spread = {s: reference[s] + d for s, d in enumerate((0.03, -0.02, 0.01, -0.015, 0.02))}
    equal, unsure = stats.holm_adjust([stats.paired_comparison(tight, reference, stats.LOSS),
                                       stats.paired_comparison(spread, reference, stats.LOSS)])
    assert equal.verdict_label == "equivalent within ±0.01 nats"
    d = np.array([spread[s] - reference[s] for s in range(5)])
    assert unsure.verdict_label == f"inconclusive (MDE {mde_by_hand(5, d.std(ddof=1), alpha=0.05 / 2):.4f} nats)"  # Holm over 2


def test_a_declared_margin_decides_equivalence():
    """The same differences: inconclusive at ±1 pp, equivalent at a declared ±3 pp."""
    reference = {s: 0.70 + 0.01 * s for s in range(5)}
    method = {s: reference[s] + d for s, d in enumerate((0.015, -0.012, 0.008, -0.014, 0.005))}
    default = stats.paired_comparison(method, reference)
    wide = stats.paired_comparison(method, reference, margin=stats.Margin(0.03, "declared by the test"))
    assert default.verdict == stats.INCONCLUSIVE
    assert wide.verdict == stats.EQUIVALENT and wide.verdict_label == "equivalent within ±3 pp"
    d = np.array([method[s] - reference[s] for s in range(5)])
    assert wide.p_tost == pytest.approx(tost_by_hand(d, 0.03))


def test_holm_adjusts_the_equivalence_tests_over_the_same_family():
    """An equivalence p below 0.05 alone that Holm lifts above it: inconclusive, not equivalent."""
    reference = {s: 0.70 + 0.01 * s for s in range(5)}
    near = {s: reference[s] + d for s, d in enumerate((0.007, -0.005, 0.004, -0.006, 0.003))}
    spread = {s: reference[s] + d for s, d in enumerate((0.015, -0.012, 0.008, -0.014, 0.005))}
    margin = stats.Margin(0.007, "declared by the test")
    alone = stats.paired_comparison(near, reference, margin=margin)
    assert 0.025 < alone.p_tost < 0.05 and alone.verdict == stats.EQUIVALENT
    family = stats.holm_adjust([alone, stats.paired_comparison(spread, reference, margin=margin)])
    low, high = sorted(c.p_tost for c in family)  # Holm by hand: ×2 for the smaller, then running maximum
    holm = {low: min(1.0, 2 * low), high: min(1.0, max(2 * low, high))}
    assert [c.p_tost_holm for c in family] == pytest.approx([holm[c.p_tost] for c in family])
    assert family[0].p_tost_holm > 0.05 and family[0].verdict == stats.INCONCLUSIVE

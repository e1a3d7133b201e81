from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balora.allocation import (
    STRATEGIES,
    ModuleRank,
    allocate,
    describe,
    lora_budget,
    rank_budget,
    rank_equivalent,
    shuffled,
    summary,
    total_params,
    unbudgeted_minmax,
)
from balora.errors import BaloraError
from balora.models import TargetModule


def square(n: int, width: int = 384) -> list[TargetModule]:
    return [TargetModule(f"layer.{i}.{kind}", width, width) for i in range(n // 2) for kind in ("query", "value")]


def test_rank_budget_uses_true_shapes():
    # NOTES.md: DistilBERT q_lin+v_lin r=8 is 147,456, MiniLM is 73,728; GPT-2 c_attn is 768 -> 2304.
    assert rank_budget(square(12, 768), 8) == 147_456
    assert rank_budget(square(12, 384), 8) == 73_728
    assert rank_budget([TargetModule("c_attn", 2304, 768)], 8) == 8 * (768 + 2304)
    assert rank_equivalent(square(12), 73_728) == 8


def test_head_counted_only_when_asked():
    targets = square(12)
    assert lora_budget(targets, rank=8, head_params=770) == 73_728
    assert lora_budget(targets, rank=8, head_params=770, count_head=True) == 73_728 - 770
    with pytest.raises(BaloraError, match="head"):
        lora_budget(targets, params=500, head_params=770, count_head=True)
    with pytest.raises(BaloraError, match="exactly one"):
        lora_budget(targets, params=10, rank=8)


def test_minmax_gives_more_rank_to_more_important_modules():
    targets = square(12)
    importance = {t.name: float(i + 1) for i, t in enumerate(targets)}
    rows = allocate(importance, targets, rank_budget(targets, 8), strategy="minmax")
    ranks = [r.rank for r in rows]
    assert total_params(rows) == 73_728
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]


def test_seed000_is_the_old_name_of_minmax():
    """`seed000` (stored configs use it) allocates exactly as `minmax`, and a config naming it keeps its run key."""
    from balora.config import RunConfig

    targets = square(12)
    importance = {t.name: float((7 * i) % 5 + 1) for i, t in enumerate(targets)}
    budget = rank_budget(targets, 8)
    assert allocate(importance, targets, budget, strategy="minmax") == \
        allocate(importance, targets, budget, strategy="seed000")
    config = RunConfig(method="ba_lora", strategy="seed000")
    assert config.strategy == "seed000" and config.key() == "99a370b4e4fca649"


def test_infeasible_budget_is_a_clear_error():
    with pytest.raises(BaloraError, match="infeasible budget.*minimum of 18,432"):
        allocate({}, square(12), 10_000, min_rank=2)


def test_top_k_leaves_unchosen_modules_unadapted():
    targets = square(12)
    importance = {t.name: float(i) for i, t in enumerate(targets)}
    rows = allocate(importance, targets, rank_budget(targets, 8), strategy="top_k", top_k=4)
    assert [r.rank > 0 for r in rows] == [False] * 8 + [True] * 4


def test_no_budget_ablation_ignores_the_budget():
    targets = square(12)
    importance = {t.name: float(i) for i, t in enumerate(targets)}
    rows = unbudgeted_minmax(importance, targets, base_rank=8)
    assert [r.rank for r in rows][0] == 4 and rows[-1].rank == 16
    assert total_params(rows) != rank_budget(targets, 8)


shapes = st.lists(st.tuples(st.integers(4, 96), st.integers(4, 96)), min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(shapes=shapes, data=st.data(), strategy=st.sampled_from(STRATEGIES), min_rank=st.integers(0, 3))
def test_budget_is_never_exceeded_and_nothing_more_fits(shapes, data, strategy, min_rank):
    targets = [TargetModule(f"m{i}", d_out, d_in) for i, (d_out, d_in) in enumerate(shapes)]
    importance = {t.name: data.draw(st.floats(0, 1e3, allow_nan=False)) for t in targets}
    adapted = targets
    if strategy == "top_k":  # only the top half by importance is adapted
        order = sorted(range(len(targets)), key=lambda j: (-importance[targets[j].name], j))
        adapted = [targets[j] for j in order[: max(1, len(targets) // 2)]]
    minimum = sum(min(min_rank, t.max_rank) * t.cost_per_rank for t in adapted)
    budget = data.draw(st.integers(1, 40 * sum(t.cost_per_rank for t in targets)))
    if budget < minimum:
        with pytest.raises(BaloraError, match="infeasible"):
            allocate(importance, targets, budget, strategy=strategy, min_rank=min_rank)
        return
    rows = allocate(importance, targets, budget, strategy=strategy, min_rank=min_rank)
    spent = total_params(rows)
    assert spent <= budget
    highs = {t.name: t.max_rank for t in targets}
    if strategy == "top_k":  # modules left out get rank 0 and cannot grow
        highs = {r.name: (highs[r.name] if r.rank > 0 else 0) for r in rows}
    if strategy == "threshold":
        return  # below-threshold modules are held at min_rank by design; covered by the checks above
    growable = [r for r in rows if r.rank < highs[r.name]]
    # Exactness: no module that may still grow can take one more rank within the budget.
    assert all(r.d_in + r.d_out > budget - spent for r in growable)
    for r in rows:
        assert min(min_rank, highs[r.name]) <= r.rank <= highs[r.name] or (strategy == "top_k" and r.rank == 0)


@settings(max_examples=200, deadline=None)
@given(widths=st.lists(st.integers(64, 1024), min_size=2, max_size=40), rank=st.integers(2, 32),
       strategy=st.sampled_from(["minmax", "proportional", "uniform"]), seed=st.integers(0, 10**6))
def test_rank_equivalent_budgets_are_at_least_99_percent_used(widths, rank, strategy, seed):
    import random

    rng = random.Random(seed)
    targets = [TargetModule(f"m{i}", w, rng.choice(widths)) for i, w in enumerate(widths)]
    budget = rank_budget(targets, rank)
    rows = allocate({t.name: rng.random() for t in targets}, targets, budget, strategy=strategy)
    assert 0.99 * budget <= total_params(rows) <= budget


@settings(max_examples=300, deadline=None)
@given(shapes=shapes, max_rank=st.none() | st.integers(1, 100), head=st.integers(0, 500), count_head=st.booleans(),
       data=st.data())
def test_a_budget_is_accepted_exactly_when_it_can_be_spent_to_99_percent(shapes, max_rank, head, count_head, data):
    targets = [TargetModule(f"m{i}", d_out, d_in) for i, (d_out, d_in) in enumerate(shapes)]
    capacity = sum(min(t.max_rank, max_rank or t.max_rank) * t.cost_per_rank for t in targets)  # every module at its top
    paid = head if count_head else 0
    total = data.draw(st.integers(paid + 1, paid + 2 * capacity))
    options = dict(head_params=head, count_head=count_head, max_rank=max_rank)
    if 99 * (total - paid) > 100 * capacity:
        largest = capacity * 100 // 99 + paid  # the head, if paid for, comes on top
        with pytest.raises(BaloraError, match=rf"largest feasible budget \(spent to 99%\) is {largest:,};"):
            lora_budget(targets, params=total, **options)
        assert lora_budget(targets, params=largest, **options) == largest - paid  # the one named is feasible
        with pytest.raises(BaloraError, match="largest feasible budget"):
            lora_budget(targets, params=largest + 1, **options)
        return
    budget = lora_budget(targets, params=total, **options)
    if budget >= capacity:  # at or above the top, allocation spends exactly the top: at least 99%
        rows = allocate({}, targets, budget, strategy="uniform", min_rank=0, max_rank=max_rank)
        assert 0.99 * budget <= total_params(rows) == capacity


def mixed_shapes() -> list[TargetModule]:
    """Llama-like modules of four different shapes: allocation must treat them by rank, not by size."""
    shapes = {"q_proj": (576, 576), "k_proj": (192, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}
    return [TargetModule(f"layers.{i}.{kind}", *shape) for i in range(3) for kind, shape in shapes.items()]


def test_scores_that_differ_only_by_noise_give_a_near_uniform_allocation():
    import random

    rng = random.Random(0)
    targets = mixed_shapes()
    noisy = {t.name: 1.0 + 1e-3 * rng.random() for t in targets}
    rows = allocate(noisy, targets, rank_budget(targets, 8))  # the default strategy
    assert {r.rank for r in rows} <= {7, 8, 9}
    assert summary(rows)["gini"] < 0.02


@settings(max_examples=100, deadline=None)
@given(scores=st.lists(st.floats(1e-9, 1e3), min_size=12, max_size=12), factor=st.floats(1e-6, 1e6),
       power=st.sampled_from([0.5, 1.0, 2.0]), strategy=st.sampled_from(["proportional", "threshold", "top_k"]))
def test_multiplying_every_score_by_a_constant_changes_nothing(scores, factor, power, strategy):
    targets = mixed_shapes()
    budget = rank_budget(targets, 8)
    base = {t.name: s for t, s in zip(targets, scores)}
    scaled = {name: s * factor for name, s in base.items()}
    first = [r.rank for r in allocate(base, targets, budget, strategy=strategy, power=power)]
    second = [r.rank for r in allocate(scaled, targets, budget, strategy=strategy, power=power)]
    assert first == second


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_twice_the_importance_gets_a_larger_rank_in_proportion(power):
    targets = mixed_shapes()
    importance = {t.name: 1.0 for t in targets}
    importance[targets[0].name] = 2.0  # q_proj of layer 0, same shape as q_proj of layers 1 and 2
    rows = allocate(importance, targets, rank_budget(targets, 8), power=power)
    doubled, peer = rows[0].rank, rows[4].rank
    assert doubled > peer
    assert abs(doubled / peer - 2 ** power) <= 1.5 / peer  # the ideal ratio, up to integer rounding


def test_a_bound_can_stop_the_larger_rank():
    targets = mixed_shapes()
    importance = {t.name: 1.0 for t in targets} | {targets[0].name: 2.0}
    rows = allocate(importance, targets, rank_budget(targets, 8), max_rank=8)
    assert rows[0].rank == 8


def test_equal_scores_give_exactly_lora_s_uniform_rank_on_any_shapes():
    targets = mixed_shapes()
    for strategy in ("proportional", "uniform"):
        rows = allocate({t.name: 3.0 for t in targets}, targets, rank_budget(targets, 8), strategy=strategy)
        assert {r.rank for r in rows} == {8}


def test_summary_measures_distance_from_uniform():
    targets = square(4)
    even = [ModuleRank(t.name, t.d_out, t.d_in, 0.0, 8) for t in targets]
    assert summary(even) == {"min": 8, "median": 8, "max": 8, "gini": 0.0}
    one_has_all = [ModuleRank(t.name, t.d_out, t.d_in, 0.0, 32 if i == 0 else 0) for i, t in enumerate(targets)]
    assert summary(one_has_all)["gini"] == pytest.approx(3 / 4)
    assert describe(even).startswith("ranks min 8 / median 8 / max 8, Gini 0.000")


def test_non_positive_power_is_an_error():
    with pytest.raises(BaloraError, match="power"):
        allocate({}, square(2), 10_000, power=0.0)


@settings(max_examples=200, deadline=None)
@given(shapes=st.lists(st.sampled_from([(32, 32), (48, 32), (32, 48), (16, 80), (64, 64)]), min_size=1, max_size=12),
       data=st.data(), seed=st.integers(0, 10**6))
def test_shuffled_ranks_keep_the_histogram_the_total_and_every_bound(shapes, data, seed):
    """`ba_lora_shuffled`'s ranks: moved only between modules of one shape up to transposition (16 × 80 and
    48 × 48 cost alike but 80 × 16 cannot take rank 20), so the parameter count is exactly the allocation's."""
    targets = [TargetModule(f"m{i}", d_out, d_in) for i, (d_out, d_in) in enumerate(shapes)]
    importance = {t.name: data.draw(st.floats(0, 1e3, allow_nan=False)) for t in targets}
    rows = allocate(importance, targets, data.draw(st.integers(sum(t.cost_per_rank for t in targets),
                                                                 8 * sum(t.cost_per_rank for t in targets))), min_rank=1)
    moved = shuffled(rows, seed)
    assert moved == shuffled(rows, seed) and [m.name for m in moved] == [m.name for m in rows]
    assert sorted(m.rank for m in moved) == sorted(m.rank for m in rows) and total_params(moved) == total_params(rows)
    assert all(m.rank <= min(m.d_in, m.d_out) and m.importance == r.importance for m, r in zip(moved, rows))
    for shape in {(m.d_in + m.d_out, min(m.d_in, m.d_out)) for m in rows}:
        def group(allocation, shape=shape):
            return sorted(m.rank for m in allocation if (m.d_in + m.d_out, min(m.d_in, m.d_out)) == shape)
        assert group(moved) == group(rows)


@settings(max_examples=300, deadline=None)
@given(shapes=shapes, data=st.data(), strategy=st.sampled_from(STRATEGIES), power=st.sampled_from([0.5, 1.0, 4.0]))
def test_with_min_rank_0_no_budget_is_infeasible_or_exceeded_and_rank_0_costs_nothing(shapes, data, strategy, power):
    """min_rank 0: any positive budget is feasible (nothing must be adapted), never exceeded, and a module
    left at rank 0 costs 0 and is left out of the LoRA config (PEFT does not wrap it). An allocation with
    nothing adapted (threshold or top_k whose chosen modules cannot afford a rank) is a clear error."""
    from balora.methods import lora_config

    targets = [TargetModule(f"m{i}", d_out, d_in) for i, (d_out, d_in) in enumerate(shapes)]
    importance = {t.name: data.draw(st.floats(0, 1e3, allow_nan=False)) for t in targets}
    budget = data.draw(st.integers(1, 4 * sum(t.cost_per_rank for t in targets)))
    rows = allocate(importance, targets, budget, strategy=strategy, min_rank=0, power=power)
    assert total_params(rows) == sum(r.rank * (r.d_in + r.d_out) for r in rows) <= budget
    assert all(r.params == 0 for r in rows if r.rank == 0) and all(r.rank >= 0 for r in rows)
    if budget >= min(t.cost_per_rank for t in targets) and strategy not in ("threshold", "top_k"):
        assert any(r.rank > 0 for r in rows)  # what fits is spent (threshold and top_k hold the unchosen at 0)
    if not any(r.rank > 0 for r in rows):
        with pytest.raises(BaloraError, match="every module rank 0"):
            lora_config(rows, task_type=None, alpha_ratio=2.0, lora_dropout=0.0, modules_to_save=None)
    else:
        config = lora_config(rows, task_type=None, alpha_ratio=2.0, lora_dropout=0.0, modules_to_save=None)
        assert set(config.target_modules) == {r.name for r in rows if r.rank > 0}
        assert set(config.rank_pattern.values()) == {r.rank for r in rows if r.rank > 0}

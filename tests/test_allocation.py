from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balora.allocation import (
    STRATEGIES,
    allocate,
    lora_budget,
    rank_budget,
    rank_equivalent,
    total_params,
    unbudgeted_seed000,
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


def test_seed000_gives_more_rank_to_more_important_modules():
    targets = square(12)
    importance = {t.name: float(i + 1) for i, t in enumerate(targets)}
    rows = allocate(importance, targets, rank_budget(targets, 8), strategy="seed000")
    ranks = [r.rank for r in rows]
    assert total_params(rows) == 73_728
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]


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
    rows = unbudgeted_seed000(importance, targets, base_rank=8)
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
       strategy=st.sampled_from(["seed000", "proportional", "uniform"]), seed=st.integers(0, 10**6))
def test_rank_equivalent_budgets_are_at_least_99_percent_used(widths, rank, strategy, seed):
    import random

    rng = random.Random(seed)
    targets = [TargetModule(f"m{i}", w, rng.choice(widths)) for i, w in enumerate(widths)]
    budget = rank_budget(targets, rank)
    rows = allocate({t.name: rng.random() for t in targets}, targets, budget, strategy=strategy)
    assert 0.99 * budget <= total_params(rows) <= budget

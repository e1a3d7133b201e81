"""BA-LoRA (the original proposal's method) and its ablations: gradient importance, an allocation under the exact budget,
and B warm-started from the mean gradient, each ablation turning one part off; and the shuffled control."""

from __future__ import annotations

from balora import allocation, importance
from balora.methods.base import (
    MethodContext,
    Prepared,
    allocate_ranks,
    importance_scores,
    mean_gradients,
    with_warm_start,
)


def budgeted(ctx: MethodContext, warmstart: bool, rest_rank: int = 0, shuffle: bool = False) -> Prepared:
    """BA-LoRA's allocation by the run's importance metric and strategy, warm-started unless `warmstart` is off;
    `shuffle`: the ranks shuffled between modules of one shape (`allocation.shuffled`) before the warm start."""
    metric = ctx.config.importance_metric
    gradients = mean_gradients(ctx) if metric in importance.GRADIENT_METRICS or warmstart else None
    ranks = allocate_ranks(ctx, importance_scores(ctx, metric, gradients), ctx.config.strategy, rest_rank=rest_rank)
    if shuffle:
        ranks = allocation.shuffled(ranks, ctx.config.seed)
    return with_warm_start(ctx, ranks, gradients if warmstart else None)


def ba_lora(ctx: MethodContext) -> Prepared:
    """BA-LoRA: gradient importance, budgeted allocation, warm-start (unless turned off)."""
    return budgeted(ctx, ctx.config.warmstart)


def ba_lora_no_warmstart(ctx: MethodContext) -> Prepared:
    """Ablation: BA-LoRA's allocation with PEFT's standard init (B = 0)."""
    return budgeted(ctx, False)


def ba_lora_uniform(ctx: MethodContext) -> Prepared:
    """Ablation: BA-LoRA's warm-start with uniform ranks at the same budget."""
    return with_warm_start(ctx, allocate_ranks(ctx, {}, "uniform"), mean_gradients(ctx))


def ba_lora_shuffled(ctx: MethodContext) -> Prepared:
    """Control: random allocation with BA-LoRA's rank histogram. BA-LoRA's allocation (same importance
    metric, strategy and bounds), its ranks then shuffled across modules by the run's seed, only between
    modules of one shape (`allocation.shuffled`), so that the same ranks cost exactly the same parameters
    on targets of mixed shapes; B is warm-started at the shuffled ranks unless --warmstart is off. Does
    the importance signal matter at all?"""
    return budgeted(ctx, ctx.config.warmstart, shuffle=True)


def ba_lora_no_budget(ctx: MethodContext) -> Prepared:
    """Ablation: the minmax strategy's normalised ranks without the trim/fill; spends what they cost."""
    gradients = mean_gradients(ctx)
    scores = importance_scores(ctx, ctx.config.importance_metric, gradients)
    base = ctx.config.base_rank or allocation.nearest_rank(ctx.targets, ctx.budget)
    ranks = allocation.unbudgeted_minmax(scores, ctx.targets, base, ctx.config.min_rank)
    return with_warm_start(ctx, ranks, gradients)

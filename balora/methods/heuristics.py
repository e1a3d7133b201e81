"""The heuristic allocations: ranks by depth, by module kind, or by a score that needs no gradient; LoRA's
standard init (B = 0)."""

from __future__ import annotations

from collections.abc import Callable

from balora.errors import BaloraError
from balora.methods.base import MethodContext, Prepared, allocate_ranks, importance_scores, lora_config_for
from balora.models import is_attention, layer_index


def linear_decay(ctx: MethodContext) -> Prepared:
    """Heuristic: rank changes linearly with depth, from 1 to `heuristic_ratio` (relative)."""
    depths = {t.name: layer_index(t.name) for t in ctx.targets}
    deepest = max(depths.values()) or 1
    ratio = ctx.config.heuristic_ratio
    weight = {n: 1 + (ratio - 1) * d / deepest for n, d in depths.items()}
    if ctx.config.decay_direction == "decreasing":
        weight = {n: 1 + ratio - w for n, w in weight.items()}
    ranks = allocate_ranks(ctx, weight, "proportional", power=1.0)
    return Prepared(lora_config_for(ctx, ranks), ranks)


def attention_heavy(ctx: MethodContext) -> Prepared:
    """Heuristic: attention modules get `heuristic_ratio` × the rank of feed-forward modules."""
    kinds = {is_attention(t.name) for t in ctx.targets}
    if kinds != {True, False}:
        raise BaloraError("attention_heavy needs attention and feed-forward targets; e.g. for BERT "
                          "--target-modules query value intermediate.dense output.dense")
    weight = {t.name: ctx.config.heuristic_ratio if is_attention(t.name) else 1.0 for t in ctx.targets}
    ranks = allocate_ranks(ctx, weight, "proportional", power=1.0)
    return Prepared(lora_config_for(ctx, ranks), ranks)


def scored_heuristic(metric: str) -> Callable[[MethodContext], Prepared]:
    """The heuristic that allocates in proportion to `metric`'s scores (at the run's allocation power)."""
    def method(ctx: MethodContext) -> Prepared:
        ranks = allocate_ranks(ctx, importance_scores(ctx, metric, None), "proportional")
        return Prepared(lora_config_for(ctx, ranks), ranks)

    method.__doc__ = f"Heuristic: ranks in proportion to `{metric}` scores, standard LoRA init."
    return method


magnitude = scored_heuristic("magnitude")
activation = scored_heuristic("activation")

"""Dynamic BA-LoRA: BA-LoRA's start, then ranks that keep moving during training under the same exact budget."""

from __future__ import annotations

from balora.methods.ba_lora import budgeted
from balora.methods.base import MethodContext, Prepared
from balora.reallocation import RankController, ReallocationConfig


def ba_lora_dynamic(ctx: MethodContext) -> Prepared:
    """BA-LoRA whose ranks keep moving during training under the same exact budget: the matrices are
    resized, not masked (`balora.reallocation`). Every module keeps at least `min_rank`."""
    c = ctx.config
    settings = ReallocationConfig(every=c.realloc_every, warmup=c.realloc_warmup, final_fraction=c.realloc_final,
                                  score=c.importance_metric, strategy=c.realloc_strategy, ema=c.realloc_ema,
                                  uncertainty=c.realloc_uncertainty, min_rank=c.min_rank, max_rank=c.max_rank,
                                  power=c.allocation_power, threshold=c.threshold, top_k=c.top_k, seed=c.seed)
    prepared = budgeted(ctx, c.warmstart, rest_rank=c.min_rank)
    controller = RankController(settings, ctx.targets, ctx.budget, ctx.total_steps, c.alpha_ratio, prepared.allocation,
                                scaling_rule=c.scaling_rule)
    prepared.after_step, prepared.history = controller, controller.history
    prepared.effective_ranks = lambda _model: dict(controller.ranks)
    return prepared

"""Fixed-rank LoRA, the reference every method is compared with."""

from __future__ import annotations

from balora.methods.base import MethodContext, Prepared, allocate_ranks, lora_config_for


def lora(ctx: MethodContext) -> Prepared:
    """Fixed-rank LoRA: the same rank on every module. A budget that is not a whole rank (e.g. with
    --count-head) is spent by the nearest uniform allocation: two adjacent ranks, largest remainder."""
    ranks = allocate_ranks(ctx, {}, "uniform")
    return Prepared(lora_config_for(ctx, ranks), ranks)

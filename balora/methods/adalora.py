"""PEFT's AdaLoRA at the budget's rank: SVD-form adapters whose singular values are pruned during training."""

from __future__ import annotations

import torch
from peft import AdaLoraConfig, PeftModel
from torch import nn

from balora import allocation, initialisation
from balora.errors import BaloraError
from balora.methods.base import MethodContext, Prepared, whole_rank


def adalora(ctx: MethodContext) -> Prepared:
    """PEFT's AdaLoRA: starts at `adalora_init_ratio` × the budget's rank, prunes singular values
    to the budget's rank on average; `update_and_allocate` runs after every optimizer step.

    Its schedule comes from the run's T optimizer steps so that pruning always completes: the first
    tinit = ⌊T/10⌋ steps train at the initial rank, the budget then falls along PEFT's cubic curve with
    a pruning decision every deltaT = ⌊T/20⌋ steps, at step T − tfinal (tfinal = ⌊T/5⌋) the final mask
    is forced to exactly the target total rank, and the last tfinal steps train with that mask fixed.
    Its matrices keep the initial rank throughout (PEFT masks, it does not resize), so results report
    both the training-time and the final parameter counts."""
    target_r = whole_rank(ctx)
    init_r = max(target_r, round(ctx.config.adalora_init_ratio * target_r))
    steps = ctx.total_steps
    tinit, tfinal = max(1, steps // 10), max(1, steps // 5)
    if tinit >= steps - tfinal:
        raise BaloraError(f"adalora needs more training steps than {steps}; raise --epochs or the training size")
    config = AdaLoraConfig(
        task_type=ctx.task_type, target_modules=[t.name for t in ctx.targets], init_r=init_r, target_r=target_r,
        lora_alpha=ctx.config.alpha_ratio * target_r, lora_dropout=ctx.config.lora_dropout, tinit=tinit,
        tfinal=tfinal, deltaT=max(1, steps // 20), total_step=steps, modules_to_save=ctx.head_modules or None,
    )

    def after_step(model: nn.Module, step: int, _optimizer: torch.optim.Optimizer) -> bool:
        model.base_model.update_and_allocate(step)
        return False

    def effective_ranks(model: PeftModel) -> dict[str, int]:
        return {t.name: int((initialisation.lora_layer(model, t.name).lora_E["default"] != 0).sum())
                for t in ctx.targets}

    ranks = [allocation.ModuleRank(t.name, t.d_out, t.d_in, 0.0, init_r) for t in ctx.targets]
    return Prepared(config, ranks, after_step=after_step, effective_ranks=effective_ranks, per_rank_extra=1)

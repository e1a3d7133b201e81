"""PEFT's EVA: ranks redistributed from the SVD of the layer inputs, at the budget's rank."""

from __future__ import annotations

import math

import torch
from peft import EvaConfig, LoraConfig, PeftModel, initialize_lora_eva_weights

from balora import initialisation
from balora.methods.base import MethodContext, Prepared, uniform_ranks, whole_rank


def _every_position(layer_input: torch.Tensor | tuple, _model_input: object, _layer_name: str) -> torch.Tensor:
    """EVA's SVD input for a batch without padding: each position's layer input, one row per position."""
    x = layer_input[0] if isinstance(layer_input, tuple | list) else layer_input
    return x.reshape(-1, x.shape[-1])


def eva(ctx: MethodContext) -> Prepared:
    """PEFT's EVA: ranks redistributed from the SVD of layer inputs (budget in rank units). PEFT moves the
    ranks itself, so the scaling rule is set through its options: `adjust_scaling_factors` keeps alpha/r
    (constant); without it alpha stays at the budget rank's, over r (standard) or, with rsLoRA, over √r."""
    rank, rule = whole_rank(ctx), ctx.config.scaling_rule
    config = LoraConfig(
        task_type=ctx.task_type, target_modules=[t.name for t in ctx.targets], r=rank,
        lora_alpha=ctx.config.alpha_ratio * (math.sqrt(rank) if rule == "rslora" else rank),
        use_rslora=rule == "rslora", lora_dropout=ctx.config.lora_dropout, init_lora_weights="eva",
        eva_config=EvaConfig(rho=ctx.config.eva_rho, adjust_scaling_factors=rule == "constant"),
        modules_to_save=ctx.head_modules or None,
    )

    def initialise(model: PeftModel) -> None:
        with ctx.meter.phase("init"):
            batches = [{k: v for k, v in b.items() if k != "labels"} for b in ctx.batches()]
            if "input_ids" in batches[0]:  # text: PEFT's default keeps the non-padding tokens
                initialize_lora_eva_weights(model, batches, show_progress_bar=False)
            else:  # images: every position (patches and class token) is a real input
                initialize_lora_eva_weights(model, batches, prepare_model_inputs_fn=None,
                                            prepare_layer_inputs_fn=_every_position, show_progress_bar=False)

    def effective_ranks(model: PeftModel) -> dict[str, int]:
        return {t.name: initialisation.lora_layer(model, t.name).r.get("default", 0) for t in ctx.targets}

    return Prepared(config, uniform_ranks(ctx, rank), initialise=initialise, effective_ranks=effective_ranks)

"""The peers PEFT ships, at LoRA's budget (issue 38): PiSSA, OLoRA, LoRA-GA and DoRA.

PiSSA, OLoRA and LoRA-GA initialise A and B from the base weight (or its gradient) and subtract their initial
product from it, so that the model starts where it was; the run saves their adapter converted into a plain LoRA
of the original base, at twice the rank (`balora.methods.base.save_adapter`). They take LoRA's uniform ranks (a
budget that is not a whole rank: two adjacent ranks); DoRA one rank, the largest that fits with its magnitude
vectors (`dora_rank`). Every one of them sets each module's alpha by the run's scaling rule.
"""

from __future__ import annotations

import warnings

from peft import LoraGAConfig, preprocess_loraga
from transformers.pytorch_utils import Conv1D

from balora import importance
from balora.errors import BaloraError
from balora.methods.base import MethodContext, Prepared, allocate_ranks, lora_config_for, uniform_ranks
from balora.models import TargetModule

PISSA_INIT = "pissa_niter_16"  # PEFT's fast SVD, 16 subspace iterations: "approximately equivalent" to a full SVD


def pissa(ctx: MethodContext) -> Prepared:
    """PiSSA (arXiv 2404.02948): A and B are the principal singular directions of each base weight, which
    keeps the residual; trains like LoRA from there."""
    ranks = allocate_ranks(ctx, {}, "uniform")
    return Prepared(lora_config_for(ctx, ranks, init_lora_weights=PISSA_INIT), ranks, changes_base=True)


def olora(ctx: MethodContext) -> Prepared:
    """OLoRA (arXiv 2406.01775): A and B from the QR decomposition of each base weight (B its first
    orthonormal columns), which keeps the rest."""
    stored_transposed = [t.name for t in ctx.targets if isinstance(ctx.model.get_submodule(t.name), Conv1D)]
    if stored_transposed:  # PEFT 0.21's olora_init factors the weight as stored, (d_in, d_out): B gets the wrong shape
        raise BaloraError(f"olora cannot adapt {stored_transposed[0]}: PEFT's OLoRA init does not handle GPT-2's "
                          "Conv1D layers; use pissa (which does) or lora")
    ranks = allocate_ranks(ctx, {}, "uniform")
    return Prepared(lora_config_for(ctx, ranks, init_lora_weights="olora"), ranks, changes_base=True)


def lora_ga(ctx: MethodContext) -> Prepared:
    """LoRA-GA (arXiv 2407.05000): A and B from the SVD of each weight's gradient, so that the first steps
    follow full fine-tuning's; the base keeps the rest. PEFT's `preprocess_loraga` averages the gradient of
    one backward pass per batch of balora's importance sample (the one BA-LoRA scores), before the adapter
    exists, and `get_peft_model` initialises from it."""
    ranks = allocate_ranks(ctx, {}, "uniform")
    config = lora_config_for(ctx, ranks, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
    device = next(ctx.model.parameters()).device

    def train_step() -> None:
        with warnings.catch_warnings():
            # PEFT counts the passes with full backward hooks, which torch warns about where a layer's input needs no
            # gradient (the first adapted layers); they fire once per pass all the same, and that is all PEFT counts
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for batch in ctx.batches():
                importance.batch_loss(ctx.model, {k: v.to(device) for k, v in batch.items()}, ctx.loss_fn).backward()

    with ctx.meter.phase("importance"):
        preprocess_loraga(ctx.model, config, train_step)
    return Prepared(config, ranks, changes_base=True)


def dora_rank(targets: list[TargetModule], budget: int) -> int:
    """DoRA's uniform rank: the largest r whose factors and magnitude vectors fit the budget,
    r·Σ(d_in + d_out) + Σ d_out ≤ budget."""
    magnitudes = sum(t.d_out for t in targets)
    per_rank = sum(t.cost_per_rank for t in targets)
    rank = (budget - magnitudes) // per_rank
    if rank < 1:
        raise BaloraError(f"DoRA at rank 1 costs {per_rank + magnitudes:,} parameters with its magnitude vectors, over "
                          f"the budget of {budget:,}; raise the budget")
    return rank


def dora(ctx: MethodContext) -> Prepared:
    """DoRA (arXiv 2402.09353): each weight split into a magnitude vector (d_out entries, trained) and a
    direction that LoRA adapts. The magnitudes are paid from the budget, so DoRA gets the largest uniform
    rank that fits with them (`dora_rank`): on MiniLM's query and value at r=8, rank 7 and 69,120 of the
    73,728 parameters."""
    ranks = uniform_ranks(ctx, dora_rank(ctx.targets, ctx.budget))
    return Prepared(lora_config_for(ctx, ranks, use_dora=True), ranks, extra_params=sum(t.d_out for t in ctx.targets))

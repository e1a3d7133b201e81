"""What every method shares: the context it is given, the `Prepared` it returns, and the helpers its
build function is made of (a `LoraConfig` per allocation, the importance pass, the budgeted allocation, the
warm start), with the saving of a base-changing peer's adapter (`save_adapter`).

Every method receives a `MethodContext` (base model, target modules, LoRA budget, training batches) and
returns a `Prepared`: the PEFT config, the per-module allocation it chose, and optional hooks run on the PEFT
model before training (`initialise`) and after each optimizer step (`after_step`). Budgets are always in LoRA
parameters; the head is counted separately. Every LoRA-family method sets each module's alpha by the run's
scaling rule (`allocation.lora_alpha`).
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model_state_dict
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save_file
from torch import nn

from balora import allocation, importance, initialisation
from balora.config import RunConfig
from balora.errors import BaloraError
from balora.measure import PhaseMeter
from balora.models import TargetModule


@dataclass
class MethodContext:
    config: RunConfig
    model: nn.Module
    targets: list[TargetModule]
    budget: int  # LoRA parameters
    batches: Callable[[], Iterable[dict[str, torch.Tensor]]]  # a fresh pass over the training set
    total_steps: int
    task_type: str | None  # PEFT's; None for image models (their forward takes pixel_values)
    head_modules: list[str]
    meter: PhaseMeter
    importance_samples: int  # this process's share of `gradient_samples` (all of it unless data-parallel)
    loss_fn: importance.LossFn | None = None  # for batches the model's forward cannot score itself


# after_step(model, step, optimizer), called by the training loop after each optimizer step -> True when it
# replaced parameters (a resize: the optimizer already holds the new ones; the loop re-wraps a DDP model so
# that its gradient buckets match the new shapes)
StepHook = Callable[[nn.Module, int, torch.optim.Optimizer], bool]


@dataclass
class Prepared:
    peft_config: PeftConfig
    allocation: list[allocation.ModuleRank]
    initialise: Callable[[PeftModel], None] | None = None
    after_step: StepHook | None = None
    effective_ranks: Callable[[PeftModel], dict[str, int]] | None = None  # ranks after training, if they change
    warm_start: dict[str, torch.Tensor] | None = None  # the mean gradients `initialise` warm-starts B from
    history: list[dict] | None = None  # reallocations during training (step, ranks, importance, params)
    per_rank_extra: int = 0  # parameters per unit of rank besides A and B (AdaLoRA's singular values E)
    extra_params: int = 0  # parameters besides the rank-sized ones (DoRA's magnitude vectors)
    changes_base: bool = False  # the init moves part of the base weights into the adapter (see `save_adapter`)


def lora_config(ranks: list[allocation.ModuleRank], *, task_type: str | None, alpha_ratio: float,
                lora_dropout: float, modules_to_save: list[str] | None, scaling_rule: str = "constant",
                reference_rank: float | None = None, **options: Any) -> LoraConfig:
    """A `LoraConfig` with one escaped `rank_pattern`/`alpha_pattern` entry per adapted module, each
    alpha set by `scaling_rule` at `reference_rank` (`allocation.lora_alpha`; by default alpha/r is
    constant); it reloads with plain PEFT, no balora needed. `options` are further `LoraConfig` fields
    (a peer's `init_lora_weights`, `use_dora`)."""
    active = [m for m in ranks if m.rank > 0]
    if not active:
        raise BaloraError("the allocation gave every module rank 0; raise the budget")
    default = Counter(m.rank for m in active).most_common(1)[0][0]

    def alpha(rank: int) -> float:
        return allocation.lora_alpha(rank, alpha_ratio, scaling_rule, reference_rank)

    return LoraConfig(
        task_type=task_type,
        target_modules=[m.name for m in active],
        r=default,
        lora_alpha=alpha(default),
        rank_pattern={re.escape(m.name): m.rank for m in active},
        alpha_pattern={re.escape(m.name): alpha(m.rank) for m in active},
        lora_dropout=lora_dropout,
        modules_to_save=modules_to_save or None,
        **options,
    )


def lora_config_for(ctx: MethodContext, ranks: list[allocation.ModuleRank], **options: Any) -> LoraConfig:
    """`lora_config` with the run's settings: its scaling rule at the budget's rank-equivalent, the head saved."""
    return lora_config(ranks, task_type=ctx.task_type, alpha_ratio=ctx.config.alpha_ratio,
                       lora_dropout=ctx.config.lora_dropout, modules_to_save=ctx.head_modules,
                       scaling_rule=ctx.config.scaling_rule,
                       reference_rank=allocation.rank_equivalent(ctx.targets, ctx.budget), **options)


def whole_rank(ctx: MethodContext) -> int:
    """The budget as one uniform rank, for PEFT's methods that count their budget in rank units."""
    equivalent = allocation.rank_equivalent(ctx.targets, ctx.budget)
    if abs(equivalent - round(equivalent)) > 1e-9:
        raise BaloraError(f"method {ctx.config.method} counts its budget in whole ranks, but this budget is "
                          f"rank-equivalent {equivalent:.2f}; pass --budget-rank with an integer (and no --count-head)")
    return round(equivalent)


def uniform_ranks(ctx: MethodContext, rank: int) -> list[allocation.ModuleRank]:
    """`rank` on every target (capped by its shape)."""
    return [allocation.ModuleRank(t.name, t.d_out, t.d_in, 0.0, min(rank, t.max_rank)) for t in ctx.targets]


def mean_gradients(ctx: MethodContext) -> importance.GradientStats:
    """The importance pass: gradients over the importance sample (with the Fisher diagonal for that metric)."""
    with ctx.meter.phase("importance"):
        return importance.accumulate_gradients(ctx.model, ctx.batches(), ctx.targets, ctx.importance_samples,
                                               with_fisher=ctx.config.importance_metric == "fisher",
                                               loss_fn=ctx.loss_fn)


def importance_scores(ctx: MethodContext, metric: str, gradients: importance.GradientStats | None) -> dict[str, float]:
    """Each target's score by `metric` (an activation pass first for `activation`)."""
    with ctx.meter.phase("importance"):
        activations = (importance.input_norms(ctx.model, ctx.batches(), ctx.targets, ctx.importance_samples,
                                              ctx.loss_fn) if metric == "activation" else None)
        return importance.score_modules(ctx.model, ctx.targets, metric, gradients, activations)


def allocate_ranks(ctx: MethodContext, scores: dict[str, float], strategy: str,
                   power: float | None = None, rest_rank: int = 0) -> list[allocation.ModuleRank]:
    """Ranks from `scores`; `power` defaults to the run's allocation power (heuristic weights use 1)."""
    c = ctx.config
    with ctx.meter.phase("allocation"):
        return allocation.allocate(scores, ctx.targets, ctx.budget, strategy=strategy, base_rank=c.base_rank,
                                   min_rank=c.min_rank, max_rank=c.max_rank, threshold=c.threshold, top_k=c.top_k,
                                   power=c.allocation_power if power is None else power, rest_rank=rest_rank)


def with_warm_start(ctx: MethodContext, ranks: list[allocation.ModuleRank],
                    gradients: importance.GradientStats | None) -> Prepared:
    """LoRA with the given ranks; B warm-started from `gradients` unless they are None: BA-LoRA's warm start
    (`initialisation.warm_start`), or GoRA's (`initialisation.gora_start`) with `--warmstart-init gora`."""
    def initialise(model: PeftModel) -> None:
        with ctx.meter.phase("init"):
            if ctx.config.warmstart_init == "gora":
                initialisation.gora_start(model, gradients.mean, ctx.config.learning_rate)
            else:
                initialisation.warm_start(model, gradients.mean, ctx.config.gamma, ctx.config.gamma_normalise)

    if gradients is None:
        return Prepared(lora_config_for(ctx, ranks), ranks)
    return Prepared(lora_config_for(ctx, ranks), ranks, initialise, warm_start=gradients.mean)


def initial_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """A copy of the adapter as initialised, for `save_adapter` to convert a base-changing peer against."""
    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_adapter(model: PeftModel, folder: str | Path, initial: dict[str, torch.Tensor] | None = None) -> None:
    """`save_pretrained`; with `initial` (a base-changing peer's `initial_state`), converted by PEFT into a
    plain LoRA of the original base weights: ΔW = B·A − B₀·A₀ = [B | −B₀]·[A; A₀], twice the rank at the
    same scaling (`path_initial_model_for_weight_conversion`). PEFT's conversion keeps the LoRA factors only,
    so the modules trained in full beside them (the head) are written back, or the adapter would not load."""
    if initial is None:
        model.save_pretrained(folder)
        return
    with tempfile.TemporaryDirectory() as scratch:
        start = Path(scratch) / "initial"  # PEFT writes its config here and loads it as adapter "initial"
        start.mkdir()
        save_file(initial, start / SAFETENSORS_WEIGHTS_NAME, metadata={"format": "pt"})
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(start))
    path = Path(folder) / SAFETENSORS_WEIGHTS_NAME
    trained = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()
               if ".lora_A." not in k and ".lora_B." not in k}
    if trained:
        save_file({**load_file(path), **trained}, path, metadata={"format": "pt"})

"""The method registry: how each method turns a base model and a budget into a PEFT adapter.

Every method receives a `MethodContext` (base model, target modules, LoRA budget, training
batches) and returns a `Prepared`: the PEFT config, the per-module allocation it chose, and
optional hooks run on the PEFT model before training (`initialise`) and after each optimizer
step (`after_step`). Budgets are always in LoRA parameters; the head is counted separately.

Every LoRA-family method sets each module's alpha by the run's scaling rule (`allocation.lora_alpha`).
The peers that PEFT ships (PiSSA, OLoRA, LoRA-GA, DoRA) spend the same budget as LoRA (the block
before `pissa`).
"""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import (
    AdaLoraConfig,
    EvaConfig,
    LoraConfig,
    LoraGAConfig,
    PeftConfig,
    PeftModel,
    get_peft_model_state_dict,
    initialize_lora_eva_weights,
    preprocess_loraga,
)
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from balora import allocation, importance, initialisation
from balora.config import RunConfig
from balora.errors import BaloraError
from balora.measure import PhaseMeter
from balora.models import TargetModule, is_attention, layer_index
from balora.reallocation import RankController, ReallocationConfig


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


def _lora_config(ctx: MethodContext, ranks: list[allocation.ModuleRank], **options: Any) -> LoraConfig:
    return lora_config(ranks, task_type=ctx.task_type, alpha_ratio=ctx.config.alpha_ratio,
                       lora_dropout=ctx.config.lora_dropout, modules_to_save=ctx.head_modules,
                       scaling_rule=ctx.config.scaling_rule,
                       reference_rank=allocation.rank_equivalent(ctx.targets, ctx.budget), **options)


def _whole_rank(ctx: MethodContext) -> int:
    """The budget as one uniform rank, for PEFT's methods that count their budget in rank units."""
    equivalent = allocation.rank_equivalent(ctx.targets, ctx.budget)
    if abs(equivalent - round(equivalent)) > 1e-9:
        raise BaloraError(f"method {ctx.config.method} counts its budget in whole ranks, but this budget is "
                          f"rank-equivalent {equivalent:.2f}; pass --budget-rank with an integer (and no --count-head)")
    return round(equivalent)


def _uniform(ctx: MethodContext, rank: int) -> list[allocation.ModuleRank]:
    return [allocation.ModuleRank(t.name, t.d_out, t.d_in, 0.0, min(rank, t.max_rank)) for t in ctx.targets]


def _gradients(ctx: MethodContext) -> importance.GradientStats:
    with ctx.meter.phase("importance"):
        return importance.accumulate_gradients(ctx.model, ctx.batches(), ctx.targets, ctx.importance_samples,
                                               with_fisher=ctx.config.importance_metric == "fisher",
                                               loss_fn=ctx.loss_fn)


def _scores(ctx: MethodContext, metric: str, gradients: importance.GradientStats | None) -> dict[str, float]:
    with ctx.meter.phase("importance"):
        activations = (importance.input_norms(ctx.model, ctx.batches(), ctx.targets, ctx.importance_samples,
                                              ctx.loss_fn) if metric == "activation" else None)
        return importance.score_modules(ctx.model, ctx.targets, metric, gradients, activations)


def _allocate(ctx: MethodContext, scores: dict[str, float], strategy: str,
              power: float | None = None, rest_rank: int = 0) -> list[allocation.ModuleRank]:
    """Ranks from `scores`; `power` defaults to the run's allocation power (heuristic weights use 1)."""
    c = ctx.config
    with ctx.meter.phase("allocation"):
        return allocation.allocate(scores, ctx.targets, ctx.budget, strategy=strategy, base_rank=c.base_rank,
                                   min_rank=c.min_rank, max_rank=c.max_rank, threshold=c.threshold, top_k=c.top_k,
                                   power=c.allocation_power if power is None else power, rest_rank=rest_rank)


def _with_warm_start(ctx: MethodContext, ranks: list[allocation.ModuleRank],
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
        return Prepared(_lora_config(ctx, ranks), ranks)
    return Prepared(_lora_config(ctx, ranks), ranks, initialise, warm_start=gradients.mean)


def lora(ctx: MethodContext) -> Prepared:
    """Fixed-rank LoRA: the same rank on every module. A budget that is not a whole rank (e.g. with
    --count-head) is spent by the nearest uniform allocation: two adjacent ranks, largest remainder."""
    ranks = _allocate(ctx, {}, "uniform")
    return Prepared(_lora_config(ctx, ranks), ranks)


def _ba_lora(ctx: MethodContext, warmstart: bool, rest_rank: int = 0, shuffle: bool = False) -> Prepared:
    metric = ctx.config.importance_metric
    gradients = _gradients(ctx) if metric in importance.GRADIENT_METRICS or warmstart else None
    ranks = _allocate(ctx, _scores(ctx, metric, gradients), ctx.config.strategy, rest_rank=rest_rank)
    if shuffle:
        ranks = allocation.shuffled(ranks, ctx.config.seed)
    return _with_warm_start(ctx, ranks, gradients if warmstart else None)


def ba_lora(ctx: MethodContext) -> Prepared:
    """BA-LoRA (seed 000): gradient importance, budgeted allocation, warm-start (unless turned off)."""
    return _ba_lora(ctx, ctx.config.warmstart)


def ba_lora_dynamic(ctx: MethodContext) -> Prepared:
    """BA-LoRA whose ranks keep moving during training under the same exact budget: the matrices are
    resized, not masked (`balora.reallocation`). Every module keeps at least `min_rank`."""
    c = ctx.config
    settings = ReallocationConfig(every=c.realloc_every, warmup=c.realloc_warmup, final_fraction=c.realloc_final,
                                  score=c.importance_metric, strategy=c.realloc_strategy, ema=c.realloc_ema,
                                  uncertainty=c.realloc_uncertainty, min_rank=c.min_rank, max_rank=c.max_rank,
                                  power=c.allocation_power, threshold=c.threshold, top_k=c.top_k, seed=c.seed)
    prepared = _ba_lora(ctx, c.warmstart, rest_rank=c.min_rank)
    controller = RankController(settings, ctx.targets, ctx.budget, ctx.total_steps, c.alpha_ratio, prepared.allocation,
                                scaling_rule=c.scaling_rule)
    prepared.after_step, prepared.history = controller, controller.history
    prepared.effective_ranks = lambda _model: dict(controller.ranks)
    return prepared


def ba_lora_no_warmstart(ctx: MethodContext) -> Prepared:
    """Ablation: BA-LoRA's allocation with PEFT's standard init (B = 0)."""
    return _ba_lora(ctx, False)


def ba_lora_uniform(ctx: MethodContext) -> Prepared:
    """Ablation: BA-LoRA's warm-start with uniform ranks at the same budget."""
    return _with_warm_start(ctx, _allocate(ctx, {}, "uniform"), _gradients(ctx))


def ba_lora_shuffled(ctx: MethodContext) -> Prepared:
    """Control: random allocation with BA-LoRA's rank histogram. BA-LoRA's allocation (same importance
    metric, strategy and bounds), its ranks then shuffled across modules by the run's seed, only between
    modules of one shape (`allocation.shuffled`), so that the same ranks cost exactly the same parameters
    on targets of mixed shapes; B is warm-started at the shuffled ranks unless --warmstart is off. Does
    the importance signal matter at all?"""
    return _ba_lora(ctx, ctx.config.warmstart, shuffle=True)


def ba_lora_no_budget(ctx: MethodContext) -> Prepared:
    """Ablation: seed 000's normalised ranks without the trim/fill; spends what they cost."""
    gradients = _gradients(ctx)
    scores = _scores(ctx, ctx.config.importance_metric, gradients)
    base = ctx.config.base_rank or allocation.nearest_rank(ctx.targets, ctx.budget)
    ranks = allocation.unbudgeted_seed000(scores, ctx.targets, base, ctx.config.min_rank)
    return _with_warm_start(ctx, ranks, gradients)


def linear_decay(ctx: MethodContext) -> Prepared:
    """Heuristic: rank changes linearly with depth, from 1 to `heuristic_ratio` (relative)."""
    depths = {t.name: layer_index(t.name) for t in ctx.targets}
    deepest = max(depths.values()) or 1
    ratio = ctx.config.heuristic_ratio
    weight = {n: 1 + (ratio - 1) * d / deepest for n, d in depths.items()}
    if ctx.config.decay_direction == "decreasing":
        weight = {n: 1 + ratio - w for n, w in weight.items()}
    ranks = _allocate(ctx, weight, "proportional", power=1.0)
    return Prepared(_lora_config(ctx, ranks), ranks)


def attention_heavy(ctx: MethodContext) -> Prepared:
    """Heuristic: attention modules get `heuristic_ratio` × the rank of feed-forward modules."""
    kinds = {is_attention(t.name) for t in ctx.targets}
    if kinds != {True, False}:
        raise BaloraError("attention_heavy needs attention and feed-forward targets; e.g. for BERT "
                          "--target-modules query value intermediate.dense output.dense")
    weight = {t.name: ctx.config.heuristic_ratio if is_attention(t.name) else 1.0 for t in ctx.targets}
    ranks = _allocate(ctx, weight, "proportional", power=1.0)
    return Prepared(_lora_config(ctx, ranks), ranks)


def _scored_heuristic(metric: str) -> Callable[[MethodContext], Prepared]:
    def method(ctx: MethodContext) -> Prepared:
        ranks = _allocate(ctx, _scores(ctx, metric, None), "proportional")
        return Prepared(_lora_config(ctx, ranks), ranks)

    method.__doc__ = f"Heuristic: ranks in proportion to `{metric}` scores, standard LoRA init."
    return method


def adalora(ctx: MethodContext) -> Prepared:
    """PEFT's AdaLoRA: starts at `adalora_init_ratio` × the budget's rank, prunes singular values
    to the budget's rank on average; `update_and_allocate` runs after every optimizer step.

    Its schedule comes from the run's T optimizer steps so that pruning always completes: the first
    tinit = ⌊T/10⌋ steps train at the initial rank, the budget then falls along PEFT's cubic curve with
    a pruning decision every deltaT = ⌊T/20⌋ steps, at step T − tfinal (tfinal = ⌊T/5⌋) the final mask
    is forced to exactly the target total rank, and the last tfinal steps train with that mask fixed.
    Its matrices keep the initial rank throughout (PEFT masks, it does not resize), so results report
    both the training-time and the final parameter counts."""
    target_r = _whole_rank(ctx)
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


def _every_position(layer_input: torch.Tensor | tuple, _model_input: object, _layer_name: str) -> torch.Tensor:
    """EVA's SVD input for a batch without padding: each position's layer input, one row per position."""
    x = layer_input[0] if isinstance(layer_input, tuple | list) else layer_input
    return x.reshape(-1, x.shape[-1])


def eva(ctx: MethodContext) -> Prepared:
    """PEFT's EVA: ranks redistributed from the SVD of layer inputs (budget in rank units). PEFT moves the
    ranks itself, so the scaling rule is set through its options: `adjust_scaling_factors` keeps alpha/r
    (constant); without it alpha stays at the budget rank's, over r (standard) or, with rsLoRA, over √r."""
    rank, rule = _whole_rank(ctx), ctx.config.scaling_rule
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

    return Prepared(config, _uniform(ctx, rank), initialise=initialise, effective_ranks=effective_ranks)


# The peers PEFT ships, at LoRA's budget (issue 38). PiSSA, OLoRA and LoRA-GA initialise A and B from the base
# weight (or its gradient) and subtract their initial product from it, so that the model starts where it was; the
# run saves their adapter converted into a plain LoRA of the original base, at twice the rank (`save_adapter`).
# They take LoRA's uniform ranks (a budget that is not a whole rank: two adjacent ranks); DoRA one rank, the largest
# that fits with its magnitude vectors (`dora_rank`).

PISSA_INIT = "pissa_niter_16"  # PEFT's fast SVD, 16 subspace iterations: "approximately equivalent" to a full SVD


def pissa(ctx: MethodContext) -> Prepared:
    """PiSSA (arXiv 2404.02948): A and B are the principal singular directions of each base weight, which
    keeps the residual; trains like LoRA from there."""
    ranks = _allocate(ctx, {}, "uniform")
    return Prepared(_lora_config(ctx, ranks, init_lora_weights=PISSA_INIT), ranks, changes_base=True)


def olora(ctx: MethodContext) -> Prepared:
    """OLoRA (arXiv 2406.01775): A and B from the QR decomposition of each base weight (B its first
    orthonormal columns), which keeps the rest."""
    stored_transposed = [t.name for t in ctx.targets if isinstance(ctx.model.get_submodule(t.name), Conv1D)]
    if stored_transposed:  # PEFT 0.21's olora_init factors the weight as stored, (d_in, d_out): B gets the wrong shape
        raise BaloraError(f"olora cannot adapt {stored_transposed[0]}: PEFT's OLoRA init does not handle GPT-2's "
                          "Conv1D layers; use pissa (which does) or lora")
    ranks = _allocate(ctx, {}, "uniform")
    return Prepared(_lora_config(ctx, ranks, init_lora_weights="olora"), ranks, changes_base=True)


def lora_ga(ctx: MethodContext) -> Prepared:
    """LoRA-GA (arXiv 2407.05000): A and B from the SVD of each weight's gradient, so that the first steps
    follow full fine-tuning's; the base keeps the rest. PEFT's `preprocess_loraga` averages the gradient of
    one backward pass per batch of balora's importance sample (the one BA-LoRA scores), before the adapter
    exists, and `get_peft_model` initialises from it."""
    ranks = _allocate(ctx, {}, "uniform")
    config = _lora_config(ctx, ranks, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
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
    ranks = _uniform(ctx, dora_rank(ctx.targets, ctx.budget))
    return Prepared(_lora_config(ctx, ranks, use_dora=True), ranks, extra_params=sum(t.d_out for t in ctx.targets))


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


METHODS: dict[str, Callable[[MethodContext], Prepared]] = {
    "lora": lora,
    "ba_lora": ba_lora,
    "ba_lora_dynamic": ba_lora_dynamic,
    "ba_lora_no_warmstart": ba_lora_no_warmstart,
    "ba_lora_uniform": ba_lora_uniform,
    "ba_lora_no_budget": ba_lora_no_budget,
    "ba_lora_shuffled": ba_lora_shuffled,
    "adalora": adalora,
    "eva": eva,
    "pissa": pissa,
    "olora": olora,
    "lora_ga": lora_ga,
    "dora": dora,
    "linear_decay": linear_decay,
    "attention_heavy": attention_heavy,
    "magnitude": _scored_heuristic("magnitude"),
    "activation": _scored_heuristic("activation"),
}


def get_method(name: str) -> Callable[[MethodContext], Prepared]:
    if name not in METHODS:
        raise BaloraError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]

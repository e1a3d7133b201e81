"""Dynamic rank reallocation during training (seed 003's controller), with real resizing.

After `warmup` optimizer steps and every `every` steps until the last `final_fraction` of training,
the controller re-scores every adapted module from the gradients of its LoRA factors that the
training step has just computed (no extra forward or backward pass), reallocates ranks with
`allocation.allocate` under the same exact budget, and resizes the modules whose rank changed:

- **Shrink** r → r' < r: `scaling·B·A` is replaced by its best rank-r' approximation (truncated SVD,
  computed from QR factors of B and Aᵀ, so never d_out × d_in sized): the module's output changes by
  the discarded singular directions and nothing else. The new A holds the kept right singular vectors
  (rows scaled to the old A's RMS row norm, so A never collapses to zero even when B·A = 0) and B
  holds the rest.
- **Grow** r → r' > r: A and B keep their r components exactly; the new rows of A are drawn like
  PEFT's init (uniform ±1/√d_in, from a generator seeded by the run seed, the step and the module, so
  every data-parallel process draws the same numbers) and the new columns of B are zero, so the
  output is unchanged at the moment of growth.

A resized module's alpha follows the run's scaling rule (`allocation.lora_alpha`: by default alpha =
alpha_ratio·r, so the scaling alpha/r is constant); the resize code uses each module's old and new
scaling, so it holds for any alpha.

Optimizer state (AdamW's `exp_avg`, `exp_avg_sq`; the step count is kept):
- unchanged modules: untouched (same parameter objects, same state);
- grown modules: the kept components carry their state exactly; new components get a zero first
  moment and the matrix's mean second moment. A zero second moment would be wrong here: Adam's bias
  correction assumes all entries started together, and with a high step count a fresh entry's first
  updates would be up to ~6× Adam's normal step;
- shrunk modules: the moments are carried along the kept directions. The new factors lie in the old
  ones' spans, B' = B·M and A' = N·A (M = B⁺B', N = A'A⁺), so for any gradient G of the module's
  output weight the new factors' gradients are linear in the old ones':
  ∂L/∂A' = s'·B'ᵀG = (s'/s)·Mᵀ·∂L/∂A and ∂L/∂B' = (s'/s)·∂L/∂B·Nᵀ (s, s' the old and new scaling).
  The first moment, an average of gradients, is mapped by the same linear maps: exactly the average
  the new factors would have had, had the factors been the current ones all along. The second moment
  (an average of squares) is mapped with the squared coefficients, which is exact when the old
  coordinates' gradients are uncorrelated and keeps Adam's step size in the same range.

Scores are per module, from the LoRA factors θ = (A, B) and their gradients g:
`sensitivity` mean |θ ⊙ g| (AdaLoRA's entry importance, averaged), `grad_norm` ‖g‖, `fisher`
mean g², `magnitude` mean |θ|. They are smoothed by an exponential moving average (β = `ema`), and with
`uncertainty` multiplied by AdaLoRA's uncertainty term, the EMA of |score − its EMA|. Under torchrun
the scores are all-reduced (averaged) before allocating, so every process makes the same decision.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from torch import nn

from balora import allocation
from balora.errors import BaloraError
from balora.initialisation import lora_layer
from balora.models import TargetModule

SCORES = ("sensitivity", "grad_norm", "fisher", "magnitude")
REALLOCATION_STRATEGIES = ("proportional", "threshold", "top_k")


@dataclass
class ReallocationConfig:
    """When and how ranks move during training."""

    every: int = field(default=50, metadata={"help": "Optimizer steps between reallocations."})
    warmup: int = field(default=50, metadata={"help": "Steps before the first reallocation."})
    final_fraction: float = field(default=0.2, metadata={"help": "No reallocation in this last share of training."})
    score: str = field(default="sensitivity", metadata={"help": "sensitivity, grad_norm, fisher or magnitude."})
    strategy: str = field(default="proportional", metadata={"help": "proportional, threshold or top_k."})
    ema: float = field(default=0.85, metadata={"help": "EMA coefficient of the scores (AdaLoRA's beta)."})
    uncertainty: bool = field(default=False, metadata={"help": "Multiply by AdaLoRA's uncertainty term."})
    min_rank: int = field(default=1, metadata={"help": "Smallest rank (at least 1: every module stays adapted)."})
    max_rank: int | None = field(default=None, metadata={"help": "Largest rank; default min(d_in, d_out)."})
    power: float = field(default=1.0, metadata={"help": "Ranks ∝ score^power."})
    threshold: float = field(default=0.5, metadata={"help": "threshold: share of the top score to grow."})
    top_k: int | None = field(default=None, metadata={"help": "top_k: modules that grow (default half)."})
    seed: int = field(default=0, metadata={"help": "Seed of the new components of grown modules."})

    def __post_init__(self) -> None:
        if self.every < 1 or self.warmup < 0:
            raise BaloraError(f"--realloc-every must be ≥ 1 and --realloc-warmup ≥ 0, got {self.every} and {self.warmup}")
        if not 0 <= self.final_fraction < 1:
            raise BaloraError(f"--realloc-final must be in [0, 1), got {self.final_fraction}")
        if not 0 <= self.ema < 1:
            raise BaloraError(f"--realloc-ema must be in [0, 1), got {self.ema}")
        if self.score not in SCORES:
            raise BaloraError(f"importance metric '{self.score}' cannot be measured during training; "
                              f"ba_lora_dynamic accepts {', '.join(SCORES)}")
        if self.strategy not in REALLOCATION_STRATEGIES:
            raise BaloraError(f"unknown reallocation strategy '{self.strategy}'; choose one of "
                              f"{', '.join(REALLOCATION_STRATEGIES)}")
        if self.min_rank < 1:
            raise BaloraError(f"ba_lora_dynamic needs --min-rank ≥ 1 (a PEFT adapter cannot hold rank 0), got {self.min_rank}")


def _lora_pair(model: PeftModel, name: str, adapter: str) -> tuple[nn.Module, nn.Linear, nn.Linear]:
    layer = lora_layer(model, name)
    return layer, layer.lora_A[adapter], layer.lora_B[adapter]


def _scaling(layer: nn.Module, adapter: str, alpha: float, rank: int) -> float:
    return alpha / math.sqrt(rank) if layer.use_rslora.get(adapter, False) else alpha / rank


def _factor_score(metric: str, a: nn.Parameter, b: nn.Parameter) -> torch.Tensor:
    """A 0-d tensor (no host sync: on a GPU the controller never waits for the device between reallocations)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in (a, b)]
    count = a.numel() + b.numel()
    if metric == "magnitude":
        return (a.detach().abs().sum() + b.detach().abs().sum()) / count
    if metric == "sensitivity":
        return ((a.detach() * grads[0]).abs().sum() + (b.detach() * grads[1]).abs().sum()) / count
    if metric == "grad_norm":
        return torch.sqrt(grads[0].square().sum() + grads[1].square().sum())
    return (grads[0].square().sum() + grads[1].square().sum()) / count  # fisher


def truncated_factors(b: torch.Tensor, a: torch.Tensor, rank: int, scale: float,
                      a_row_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B', A') of rank `rank` with B'·A' = scale · (best rank-`rank` approximation of B·A); A''s rows are
    orthogonal with norm `a_row_norm`. Works on the QR factors, so the SVD is r × r."""
    q_b, r_b = torch.linalg.qr(b.double())
    q_a, r_a = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)
    left = q_b @ u[:, :rank] * s[:rank]  # d_out × rank
    right = q_a @ vh[:rank].T  # d_in × rank, orthonormal columns
    return (left * (scale / a_row_norm)).to(b.dtype), (right.T * a_row_norm).to(a.dtype)


# How a moment of the old parameter becomes the new one's: (moment, is_second_moment) -> new moment.
Carry = Callable[[torch.Tensor, bool], torch.Tensor]


def _keep_components(keep: tuple[slice, ...], new: torch.Tensor) -> Carry:
    """Growing: moments copied on `keep` (the kept components); elsewhere a zero first moment and the
    old mean second moment (module docstring)."""
    def carry(moment: torch.Tensor, second: bool) -> torch.Tensor:
        moved = torch.full_like(new, float(moment.mean()) if second else 0.0)
        moved[keep] = moment
        return moved
    return carry


def _linear_map(left: torch.Tensor | None, right: torch.Tensor | None, dtype: torch.dtype) -> Carry:
    """Shrinking: a first moment becomes left·m·right, a second moment left∘²·v·right∘² (module docstring)."""
    def carry(moment: torch.Tensor, second: bool) -> torch.Tensor:
        out = moment.double()
        if left is not None:
            out = (left.square() if second else left) @ out
        if right is not None:
            out = out @ (right.square() if second else right)
        return out.to(dtype)
    return carry


def _swap_parameter(optimizer: torch.optim.Optimizer | None, old: nn.Parameter, new: nn.Parameter, carry: Carry) -> None:
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    if old in optimizer.state:
        # tensors shaped like the parameter are moments (exp_avg, exp_avg_sq, max_exp_avg_sq); the step count stays
        optimizer.state[new] = {key: carry(value, key.endswith("_sq")) if torch.is_tensor(value) and value.shape == old.shape
                                else value for key, value in optimizer.state.pop(old).items()}


@torch.no_grad()
def resize_module(model: PeftModel, name: str, rank: int, alpha: float, optimizer: torch.optim.Optimizer | None = None,
                  generator: torch.Generator | None = None, adapter: str = "default") -> None:
    """Give module `name` LoRA rank `rank` and lora_alpha `alpha` (module docstring: shrink by truncated
    SVD, grow with zero B columns): its `lora_A`/`lora_B` Linear modules get new weight parameters of the
    new shape (a bias of B does not depend on the rank and stays), and the optimizer their state."""
    layer, linear_a, linear_b = _lora_pair(model, name, adapter)
    old_rank = linear_a.out_features
    if rank == old_rank and alpha == layer.lora_alpha[adapter]:
        return
    old_scale, new_scale = layer.scaling[adapter], _scaling(layer, adapter, alpha, rank)
    a, b = linear_a.weight, linear_b.weight
    if rank > old_rank:
        bound = 1 / math.sqrt(linear_a.in_features)
        # drawn on the CPU: the same numbers whatever the device, from a generator every process seeds alike
        fresh = torch.rand(rank - old_rank, linear_a.in_features, generator=generator, dtype=torch.float64)
        new_a = torch.cat([a, ((2 * fresh - 1) * bound).to(a.device, a.dtype)])
        new_b = torch.cat([b * (old_scale / new_scale), b.new_zeros(b.shape[0], rank - old_rank)], dim=1)
        carry_a = _keep_components((slice(0, old_rank), slice(None)), new_a)
        carry_b = _keep_components((slice(None), slice(0, old_rank)), new_b)
    else:
        row_norm = float(a.double().norm() / math.sqrt(old_rank)) or 1.0
        new_b, new_a = truncated_factors(b, a, rank, old_scale / new_scale, row_norm)
        ratio = new_scale / old_scale
        m = torch.linalg.pinv(b.double()) @ new_b.double()  # B' = B·M
        n = new_a.double() @ torch.linalg.pinv(a.double())  # A' = N·A
        carry_a, carry_b = _linear_map(ratio * m.T, None, a.dtype), _linear_map(None, ratio * n.T, b.dtype)
    linear_a.weight = nn.Parameter(new_a, requires_grad=a.requires_grad)
    linear_b.weight = nn.Parameter(new_b, requires_grad=b.requires_grad)
    linear_a.out_features = linear_b.in_features = rank
    _swap_parameter(optimizer, a, linear_a.weight, carry_a)
    _swap_parameter(optimizer, b, linear_b.weight, carry_b)
    layer.r[adapter], layer.lora_alpha[adapter], layer.scaling[adapter] = rank, alpha, new_scale


def record_pattern(model: PeftModel, name: str, rank: int, alpha: float, adapter: str = "default") -> None:
    """Write module `name`'s rank and alpha into the adapter config's escaped patterns, so that the
    saved `adapter_config.json` rebuilds the resized shapes in plain PEFT."""
    config = model.peft_config[adapter]
    config.rank_pattern = dict(config.rank_pattern or {}) | {re.escape(name): rank}
    config.alpha_pattern = dict(config.alpha_pattern or {}) | {re.escape(name): alpha}


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class RankController:
    """The training loop's `after_step(model, step, optimizer) -> bool` hook: scores every step,
    reallocates and resizes on schedule, returns True when parameters were replaced."""

    def __init__(self, config: ReallocationConfig, targets: list[TargetModule], budget: int, total_steps: int,
                 alpha_ratio: float, initial: list[allocation.ModuleRank], adapter: str = "default",
                 scaling_rule: str = "constant") -> None:
        self.config, self.targets, self.budget = config, targets, budget
        self.total_steps, self.alpha_ratio, self.adapter = total_steps, alpha_ratio, adapter
        self.scaling_rule = scaling_rule
        self.ranks = {m.name: m.rank for m in initial}
        self.smoothed: torch.Tensor | None = None  # per target, in `targets` order
        self.uncertain: torch.Tensor | None = None
        self.history: list[dict] = [self._entry(0, {m.name: m.importance for m in initial}, changed=[])]

    def _entry(self, step: int, scores: dict[str, float], changed: list[str], seconds: float = 0.0) -> dict:
        params = sum(self.ranks[t.name] * t.cost_per_rank for t in self.targets)
        if params > self.budget:  # `allocation.allocate` guarantees this; a violation is a bug, not bad input
            raise AssertionError(f"reallocation spent {params} LoRA parameters over a budget of {self.budget}")
        return {"step": step, "ranks": dict(self.ranks), "importance": dict(scores), "params": params,
                "budget": self.budget, "changed": changed, "seconds": seconds}

    def due(self, step: int) -> bool:
        c = self.config
        return 0 < step < self.total_steps * (1 - c.final_fraction) and step >= c.warmup \
            and (step - c.warmup) % c.every == 0

    def observe(self, model: PeftModel) -> None:
        """Update the smoothed score of every module (and the uncertainty term) from the current gradients."""
        beta = self.config.ema
        value = torch.stack([_factor_score(self.config.score, a.weight, b.weight).double()
                             for a, b in (_lora_pair(model, t.name, self.adapter)[1:] for t in self.targets)])
        value = torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
        previous = value if self.smoothed is None else self.smoothed
        self.smoothed = beta * previous + (1 - beta) * value
        deviation = (value - self.smoothed).abs()
        self.uncertain = deviation if self.uncertain is None else beta * self.uncertain + (1 - beta) * deviation

    def scores(self) -> dict[str, float]:
        """Smoothed scores (times the uncertainty term if asked), averaged over data-parallel processes."""
        values = torch.zeros(len(self.targets), dtype=torch.float64) if self.smoothed is None else self.smoothed.clone()
        if self.config.uncertainty and self.uncertain is not None:
            values *= self.uncertain
        if _distributed():
            torch.distributed.all_reduce(values)
            values /= torch.distributed.get_world_size()
        return dict(zip([t.name for t in self.targets], values.tolist()))

    def reallocate(self, model: PeftModel, step: int, optimizer: torch.optim.Optimizer | None) -> bool:
        started = time.perf_counter()
        c = self.config
        scores = self.scores()
        rows = allocation.allocate(scores, self.targets, self.budget, strategy=c.strategy, min_rank=c.min_rank,
                                   max_rank=c.max_rank, threshold=c.threshold, top_k=c.top_k, power=c.power,
                                   rest_rank=c.min_rank)
        changed = [m.name for m in rows if m.rank != self.ranks[m.name]]
        reference_rank = allocation.rank_equivalent(self.targets, self.budget)  # where every scaling rule agrees
        for m in sorted(rows, key=lambda m: m.rank - self.ranks[m.name]):  # shrink first: memory never peaks
            if m.name not in changed:
                continue
            generator = torch.Generator().manual_seed(zlib.crc32(f"{c.seed}/{step}/{m.name}".encode()))
            alpha = allocation.lora_alpha(m.rank, self.alpha_ratio, self.scaling_rule, reference_rank)
            resize_module(model, m.name, m.rank, alpha, optimizer, generator, self.adapter)
            record_pattern(model, m.name, m.rank, alpha, self.adapter)
            self.ranks[m.name] = m.rank
        self.history.append(self._entry(step, scores, changed, time.perf_counter() - started))
        return bool(changed)

    def __call__(self, model: PeftModel, step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        self.observe(model)
        return self.reallocate(model, step, optimizer) if self.due(step) else False

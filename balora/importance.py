"""Phase 1 of BA-LoRA: how much each target module matters for the task.

`accumulate_gradients` runs forward/backward passes over a training subset with gradients enabled
only for the target weights, so no other parameter holds a gradient and there is no optimizer
state: the pass costs about one LoRA training step of memory. Gradients are returned as the mean
over examples, in `(d_out, d_in)` orientation whatever the layer type.

Scores (`score_modules`):
- `sensitivity`: mean |W ⊙ G| (GoRA's metric; the default)
- `grad_norm`: Frobenius norm of G
- `fisher`: mean of G² over mini-batches (empirical Fisher diagonal, averaged over the matrix)
- `magnitude`: mean |W| (no gradients needed)
- `activation`: mean |W| · ‖x_j‖ (Wanda's weight-times-input-norm score; forward passes only)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from balora.errors import BaloraError
from balora.models import TargetModule, model_inputs

METRICS = ("sensitivity", "grad_norm", "fisher", "magnitude", "activation")
GRADIENT_METRICS = ("sensitivity", "grad_norm", "fisher")


@dataclass
class GradientStats:
    """Per-module mean gradient, and mean squared mini-batch gradient for the Fisher score."""

    mean: dict[str, torch.Tensor]
    mean_square: dict[str, torch.Tensor]
    num_examples: int
    num_batches: int


def _oriented(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`(d_out, d_in)` view of a weight-shaped tensor (Conv1D stores `(d_in, d_out)`)."""
    return tensor.t() if isinstance(module, Conv1D) else tensor


def oriented_weight(model: nn.Module, target: TargetModule) -> torch.Tensor:
    module = model.get_submodule(target.name)
    return _oriented(module, module.weight.detach())


Batch = Mapping[str, Any] | Sequence[Any]  # keyword arguments of the model's forward, or a tuple for a loss_fn
LossFn = Callable[[nn.Module, Batch], torch.Tensor]  # the mean loss of a batch


def _tensors(batch: Batch) -> list[torch.Tensor]:
    values = batch.values() if isinstance(batch, Mapping) else batch
    return [v for v in values if isinstance(v, torch.Tensor)]


def examples_in(batch: Batch) -> int:
    tensors = _tensors(batch)
    if not tensors:
        raise BaloraError("a batch holds no tensors; give batches of tensors (a dict for the model, or a tuple "
                          "with loss_fn)")
    return int(tensors[0].shape[0])


def _first(batch: Batch, take: int, device: torch.device) -> Batch:
    """The batch's first `take` examples on `device` (non-tensor entries pass through)."""
    def part(value: Any) -> Any:
        return value[:take].to(device) if isinstance(value, torch.Tensor) and value.dim() else value

    if isinstance(batch, Mapping):
        return {k: part(v) for k, v in batch.items()}
    return type(batch)(part(v) for v in batch) if isinstance(batch, tuple | list) else batch


def batch_loss(model: nn.Module, batch: Batch, loss_fn: LossFn | None = None) -> torch.Tensor:
    """The batch's mean loss: `loss_fn(model, batch)`, or else the model's own loss from `labels`."""
    if loss_fn is not None:
        return loss_fn(model, batch)
    if not isinstance(batch, Mapping) or "labels" not in batch:
        raise BaloraError("the importance pass needs a loss: give batches as dicts with 'labels' (what the model's "
                          "forward takes), or pass loss_fn(model, batch) -> loss")
    loss = getattr(model(**model_inputs(batch)), "loss", None)
    if loss is None:
        raise BaloraError(f"{type(model).__name__} returned no loss from its labels; pass loss_fn(model, batch) -> loss")
    return loss


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    """Sum across data-parallel processes (each saw its own shard), so every rank ends with the
    same mean gradient and allocates the same ranks."""
    if _distributed():
        for tensor in tensors:
            torch.distributed.all_reduce(tensor)


def accumulate_gradients(model: nn.Module, batches: Iterable[Batch], targets: list[TargetModule], num_samples: int,
                         with_fisher: bool = False, loss_fn: LossFn | None = None) -> GradientStats:
    """Mean gradient of the loss w.r.t. each target weight over the first `num_samples` examples.

    Each batch's mean loss is weighted by its size, so the result is the per-example mean however
    the examples are batched. `requires_grad` flags are restored afterwards. `with_fisher` also
    keeps the mean squared mini-batch gradient, at the cost of one more weight-sized buffer. Batches are
    dicts for the model's forward (its `loss` from `labels`), or anything `loss_fn(model, batch)` takes.
    """
    if num_samples <= 0:
        raise BaloraError(f"--gradient-samples must be positive, got {num_samples}")
    device = next(model.parameters()).device
    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    weights = {t.name: model.get_submodule(t.name).weight for t in targets}
    target_ids = {id(w) for w in weights.values()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in target_ids)
        parameter.grad = None
    squares = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()} if with_fisher else {}
    seen = batches_done = 0
    was_training = model.training
    model.eval()  # no dropout: the estimate should not depend on dropout noise
    try:
        for batch in batches:
            if seen >= num_samples:
                break
            take = min(examples_in(batch), num_samples - seen)
            batch = _first(batch, take, device)
            previous = {name: (w.grad.clone() if w.grad is not None else None) for name, w in weights.items()
                        if with_fisher}
            (batch_loss(model, batch, loss_fn) * take).backward()
            for name, w in weights.items():
                if not with_fisher or w.grad is None:
                    continue
                delta = w.grad if previous[name] is None else w.grad - previous[name]
                squares[name] += (delta.float() / take) ** 2
            seen += take
            batches_done += 1
    finally:
        model.train(was_training)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(saved_flags[name])
    means = {}
    for target in targets:
        w = weights[target.name]
        grad = w.grad.float() if w.grad is not None else torch.zeros_like(w, dtype=torch.float32)
        w.grad = None
        means[target.name] = grad
    counts = torch.tensor([float(seen), float(batches_done)], device=device)
    _all_reduce(list(means.values()) + list(squares.values()) + [counts])
    examples, batches_total = int(counts[0].item()), int(counts[1].item())
    if examples == 0:
        raise BaloraError("the importance pass saw no examples: the training set is empty")
    modules = {t.name: model.get_submodule(t.name) for t in targets}
    return GradientStats(
        mean={n: _oriented(modules[n], g / examples) for n, g in means.items()},
        mean_square={n: _oriented(modules[n], s / batches_total) for n, s in squares.items()},
        num_examples=examples,
        num_batches=batches_total,
    )


@dataclass
class ProbeReport:
    """How the head probe went: cross-entropy on the importance sample before and after, and its accuracy."""

    loss_before: float
    loss_after: float
    accuracy: float
    examples: int
    steps: int


def _pooled_rows(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Each sequence's last non-padding position, as Hugging Face's decoder classifiers pool it."""
    pad = getattr(model.config, "pad_token_id", None)
    mask = torch.ones_like(input_ids, dtype=torch.bool) if pad is None else input_ids != pad
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (positions * mask).argmax(-1)


def fit_head(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], head: str, steps: int,
             learning_rate: float = 1e-2, weight_decay: float = 0.01) -> ProbeReport:
    """Fit the head module `head` on the frozen body's features (a linear probe, as in LP-FT,
    arXiv 2202.10054), so that importance measures what the task needs, not the distance to a random head.

    The head's inputs are recorded in one forward pass without gradients; the head alone is then trained
    full-batch with AdamW for `steps` steps on them, which costs little next to that one forward pass.
    A head applied to every token (GPT-2's, Llama's `score`) is trained on each sequence's pooled
    position. Under torchrun each process records its shard and gradients are all-reduced every step,
    so all processes end with the same head.
    """
    module = model.get_submodule(head)
    device = next(model.parameters()).device
    features, labels, outputs_per_token = [], [], []

    def record(_module, inputs, output):
        features.append(inputs[0].detach())
        outputs_per_token.append(output.dim() == 3)

    handle = module.register_forward_hook(record)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                model(**{k: v for k, v in batch.items() if k != "labels"})
                if outputs_per_token[-1]:  # keep only the pooled position's features
                    rows = _pooled_rows(model, batch["input_ids"])
                    features[-1] = features[-1][torch.arange(rows.shape[0], device=device), rows]
                labels.append(batch["labels"])
    finally:
        handle.remove()
    count = torch.tensor([float(sum(y.numel() for y in labels))], device=device)
    _all_reduce([count])
    parameters = list(module.parameters())
    saved_flags = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)

    def loss_and_hits() -> tuple[torch.Tensor, torch.Tensor]:
        # batch by batch: a head that pools itself (RoBERTa's) sees sequences of each batch's length
        summed, hits = torch.zeros((), device=device), torch.zeros((), device=device)
        for x, y in zip(features, labels):
            logits = module(x)
            summed = summed + torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            hits = hits + (logits.argmax(-1) == y).sum()
        return summed, hits.float()

    def global_mean(summed: torch.Tensor) -> float:
        total = summed.detach().reshape(1).clone()
        _all_reduce([total])
        return float(total / count)

    try:
        with torch.no_grad():
            before = global_mean(loss_and_hits()[0])
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            summed, _ = loss_and_hits()
            (summed / count).backward()
            _all_reduce([p.grad for p in parameters if p.grad is not None])
            optimizer.step()
        with torch.no_grad():
            summed, hits = loss_and_hits()
            after, accuracy = global_mean(summed), global_mean(hits)
    finally:
        optimizer.zero_grad(set_to_none=True)
        for parameter, flag in zip(parameters, saved_flags):
            parameter.requires_grad_(flag)
        model.train(was_training)
    return ProbeReport(before, after, accuracy, int(count.item()), steps)


def input_norms(model: nn.Module, batches: Iterable[Batch], targets: list[TargetModule], num_samples: int,
                loss_fn: LossFn | None = None) -> dict[str, torch.Tensor]:
    """Per-input-feature L2 norm of each target's inputs over `num_samples` examples (forward only)."""
    sums = {t.name: torch.zeros(t.d_in) for t in targets}
    hooks = []
    for target in targets:
        def hook(_module, inputs, _output, name=target.name):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] += (x ** 2).sum(0).cpu()
        hooks.append(model.get_submodule(target.name).register_forward_hook(hook))
    device = next(model.parameters()).device
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if seen >= num_samples:
                    break
                take = min(examples_in(batch), num_samples - seen)
                batch = _first(batch, take, device)
                if loss_fn is None:
                    model(**model_inputs(batch))
                else:
                    loss_fn(model, batch)
                seen += take
    finally:
        for handle in hooks:
            handle.remove()
    return {name: s.sqrt() for name, s in sums.items()}


def score_modules(model: nn.Module, targets: list[TargetModule], metric: str,
                  gradients: GradientStats | None = None,
                  activations: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """One non-negative, finite score per target module (0 where a module got no gradient)."""
    if metric not in METRICS:
        raise BaloraError(f"unknown importance metric '{metric}'; choose one of {', '.join(METRICS)}")
    if metric == "fisher" and gradients is not None and not gradients.mean_square:
        raise ValueError("metric 'fisher' needs gradients accumulated with_fisher=True")
    if metric in GRADIENT_METRICS and gradients is None:
        raise ValueError(f"metric '{metric}' needs gradients")
    if metric == "activation" and activations is None:
        raise ValueError("metric 'activation' needs input norms")
    scores = {}
    for target in targets:
        weight = oriented_weight(model, target).float()
        if metric == "sensitivity":
            value = (weight * gradients.mean[target.name].to(weight.device)).abs().mean()
        elif metric == "grad_norm":
            value = gradients.mean[target.name].norm()
        elif metric == "fisher":
            value = gradients.mean_square[target.name].mean()
        elif metric == "magnitude":
            value = weight.abs().mean()
        else:
            value = (weight.abs() * activations[target.name].to(weight.device)).mean()
        value = float(value)
        scores[target.name] = value if value == value and value != float("inf") else 0.0
    return scores

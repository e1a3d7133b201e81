"""Phase 4: a plain PyTorch training loop over a PEFT model (each task evaluates it: `balora.tasks`).

We use our own short loop rather than `transformers.Trainer` so that per-step hooks (AdaLoRA's
`update_and_allocate`), validation curves and timing stay explicit and cost nothing extra; the
optimizer and schedule are the standard ones (AdamW, linear warm-up then linear decay).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from balora.methods import StepHook
from balora.models import model_inputs
from balora.tasks import Metric


@dataclass
class Distributed:
    """Data-parallel placement from the environment `torchrun` / `accelerate launch` set
    (WORLD_SIZE, RANK, LOCAL_RANK); one process on one device otherwise."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
        if world > 1 and not torch.distributed.is_initialized():
            if cuda:
                torch.cuda.set_device(device)
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
        return cls(torch.distributed.get_rank() if world > 1 else 0, world, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's share of `items` (every process gets a disjoint, near-equal part)."""
        return items[self.rank::self.world]

    def even_shard(self, items: list) -> list:
        """This process's share of `items`, padded by wrap-around (as `DistributedSampler` does) so that
        every process has the same number of examples, hence of batches and steps: DDP's collectives
        and AdaLoRA's `total_step` need that."""
        padded = [items[i % len(items)] for i in range(-(-len(items) // self.world) * self.world)] if items else []
        return padded[self.rank::self.world]

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)


@dataclass
class TrainSettings:
    epochs: int = 5
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    validate_at: frozenset[int] = frozenset()  # steps after which to validate (0: before the first)
    progress: bool = True
    precision: str = "fp32"  # of the forward passes, see `autocast`
    loraplus_ratio: float = 1.0  # B's learning rate over the rest's, see `optimizer_groups`


@dataclass
class TrainLog:
    steps: int = 0
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def convergence_step(self, metric: Metric, fraction: float = 0.95) -> int | None:
        """First step at which validation `metric` reached `fraction` of its final value (where lower is
        better, as for a loss: the first step whose value is within 1/`fraction` of the final one)."""
        if not self.validation:
            return None
        final = self.validation[-1][1][metric.name]
        return next(step for step, values in self.validation if metric.reached(values[metric.name], final, fraction))


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward passes' precision. `bf16`: bfloat16 autocast, so matrix products run in bf16 while
    softmax, norms and losses stay fp32, and the weights, gradients, optimizer state and saved adapter
    stay fp32 (no loss scaling needed, unlike fp16). `fp32`: nothing changes. Backward runs outside it,
    as PyTorch recommends: its ops follow the dtypes autocast chose in the forward pass."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware: a GPU that supports bf16, or a CPU with AVX512 or
    AMX (what oneDNN checks). Elsewhere bf16 autocast still gives bf16 results, but oneDNN emulates each
    product: on an AVX2-only EPYC a 768×576 by 576×1536 product took 282 ms in bf16 against 35 ms in fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_emulation(device: torch.device) -> str:
    """What a device without native bf16 (`native_bf16` false) does with bf16, for a warning's line."""
    units = " (AVX512 or AMX)" if device.type == "cpu" else ""
    return (f"a {device.type} without native bf16 matrix units{units}: matrix products are emulated, several times "
            "slower than fp32 here")


def optimizer_groups(model: nn.Module, learning_rate: float, loraplus_ratio: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups: with LoRA+ (arXiv 2402.12354) every B matrix trains at
    `loraplus_ratio` × `learning_rate`, and everything else (A, DoRA's magnitudes, AdaLoRA's E, the head)
    at `learning_rate`; at ratio 1, one group, the optimizer as before. (PEFT's `create_loraplus_optimizer`
    also moves every vector, the head's bias included, to B's rate and sets weight decay to 0 unless told
    otherwise; LoRA+ raises B's rate, and that is all this changes.) The schedule multiplies each group's
    rate by the same factor, so B stays at `loraplus_ratio` × A's throughout."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if loraplus_ratio == 1:
        return [{"params": [p for _, p in trainable], "lr": learning_rate}]
    return [{"params": [p for name, p in trainable if "lora_B" not in name], "lr": learning_rate},
            {"params": [p for name, p in trainable if "lora_B" in name], "lr": learning_rate * loraplus_ratio}]


def total_steps(loader: DataLoader, epochs: int) -> int:
    return len(loader) * epochs


def train(model: nn.Module, loader: DataLoader, settings: TrainSettings,
          validate: Callable[[nn.Module], dict[str, float]] | None = None,
          after_step: StepHook | None = None) -> TrainLog:
    """Train the trainable parameters of `model` (possibly wrapped in DDP); `after_step(model, step,
    optimizer)` runs on the unwrapped model after each optimizer step and before gradients are cleared
    (where AdaLoRA's `update_and_allocate` and the rank controller belong). The learning-rate schedule
    lives on the optimizer's parameter groups, so it continues unchanged when a hook swaps parameters."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(optimizer_groups(model, settings.learning_rate, settings.loraplus_ratio),
                                  lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = total_steps(loader, settings.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * steps), steps)
    validate_at = settings.validate_at if validate else frozenset()
    log = TrainLog()
    if 0 in validate_at:
        log.validation.append((0, validate(inner)))
    model.train()
    bar = tqdm(total=steps, desc="train", unit="step", disable=not settings.progress, dynamic_ncols=True)
    for _ in range(settings.epochs):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(settings.precision, device):
                loss = model(**model_inputs(batch)).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            log.steps += 1
            if after_step is not None and after_step(inner, log.steps, optimizer) and model is not inner:
                model = DistributedDataParallel(inner, device_ids=model.device_ids)
            optimizer.zero_grad(set_to_none=True)
            value = loss.item()
            log.train_loss.append((log.steps, value))
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            if log.steps in validate_at:
                log.validation.append((log.steps, validate(inner)))
    bar.close()
    return log

"""The loop-speed comparison shared by the benchmarks: balora's `train` against a bare PEFT + torch loop.

Both loops train a fresh copy of the same PEFT model on the same pre-built batches with the same AdamW
and linear schedule, and the same forward precision (fp32, or bf16 autocast as `--precision bf16` runs).
They are timed in turns, `repeats` times each, after one untimed warm-up pass,
alternating which goes first, so that load from other processes on a shared machine falls on both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import get_linear_schedule_with_warmup

from balora.training import TrainSettings, autocast, train


def _ours(model: torch.nn.Module, batches: list[dict], precision: str) -> float:
    start = time.perf_counter()
    train(model, batches, TrainSettings(epochs=1, learning_rate=2e-3, progress=False, precision=precision))
    return time.perf_counter() - start


def _bare(model: torch.nn.Module, batches: list[dict], precision: str) -> float:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * len(batches)), len(batches))
    start = time.perf_counter()
    for batch in batches:
        with autocast(precision, next(model.parameters()).device):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def compare_loops(fresh_model: Callable[[], torch.nn.Module], batches: list[dict], repeats: int,
                  precision: str = "fp32") -> tuple[list[float], list[float]]:
    """Seconds per pass over `batches` of balora's loop and of the bare loop, `repeats` timings each."""
    _bare(fresh_model(), batches, precision)  # warm-up: the first pass pays one-off allocation costs
    ours, bare = [], []
    for repeat in range(repeats):
        for loop in ((_ours, _bare) if repeat % 2 == 0 else (_bare, _ours)):
            (ours if loop is _ours else bare).append(loop(fresh_model(), batches, precision))
    return ours, bare

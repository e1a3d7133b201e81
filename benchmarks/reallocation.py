"""The cost of dynamic rank reallocation (issue 11's benchmark; not a timed test).

Prints, each against a baseline measured in the same invocation:

1. Seconds per reallocation (score, allocate, resize, rebuild the optimizer state) on MiniLM
   query+value (12 modules) and on a synthetic model of 100 Linear modules (target < 1 s), with
   scores that change every time so that ranks really move.
2. Training steps per second with the rank controller (reallocating every `--every` steps) /
   without it, on the same MiniLM batches: the controller's per-step scoring plus its reallocations.
3. With `--wall`, total wall time of `ba_lora_dynamic` / `lora` end to end on the 2,000-example
   setting, reallocating every 50 steps (target ≤ 1.10; about 6 minutes on 2 CPU cores).

Usage: python benchmarks/reallocation.py [--steps 40] [--every 10] [--repeats 5] [--wall]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from balora.allocation import ModuleRank, rank_budget
from balora.models import TargetModule, target_modules
from balora.reallocation import RankController, ReallocationConfig
from balora.training import TrainSettings, train


def _peft(model: nn.Module, names: list[str], rank: int) -> nn.Module:
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=names)
    return get_peft_model(model, config)


def _controller(targets, rank: int, total_steps: int, every: int) -> RankController:
    initial = [ModuleRank(t.name, t.d_out, t.d_in, 0.0, rank) for t in targets]
    return RankController(ReallocationConfig(every=every, warmup=every, final_fraction=0.0), targets,
                          rank_budget(targets, rank), total_steps, 2.0, initial)


def seconds_per_reallocation(model: nn.Module, targets: list[TargetModule], loss: Callable[[nn.Module], torch.Tensor],
                             repeats: int, rank: int = 8) -> float:
    """Median time of one reallocation after a real backward and AdamW step, scores rotating each time."""
    model = _peft(model, [t.name for t in targets], rank)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    controller = _controller(targets, rank, 10 ** 6, 1)
    times = []
    for repeat in range(repeats):
        loss(model).backward()
        optimizer.step()
        controller.observe(model)
        n = len(targets)
        controller.smoothed = torch.tensor([1.0 + ((i + repeat * n // 3) % n) for i in range(n)], dtype=torch.float64)
        start = time.perf_counter()
        moved = controller.reallocate(model, repeat + 1, optimizer)
        times.append(time.perf_counter() - start)
        assert moved, "scores rotated but no rank moved"
        optimizer.zero_grad(set_to_none=True)
    return statistics.median(times)


class Synthetic(nn.Module):
    """100 Linear layers of mixed widths (256 to 1024) in a residual chain."""

    def __init__(self, width: int = 512, layers: int = 100) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, 256 * (1 + i % 4)), nn.ReLU())
                                    for i in range(layers // 2))
        self.outs = nn.ModuleList(nn.Linear(256 * (1 + i % 4), width) for i in range(layers // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, out in zip(self.blocks, self.outs):
            x = x + out(block(x))
        return x


def minilm_batches(steps: int, batch_size: int = 16) -> list[dict]:
    from balora.data import load_rotten_tomatoes, make_loader, select_training
    from balora.models import load_tokenizer

    examples = select_training(load_rotten_tomatoes().pool, None, steps * batch_size, 42)
    return list(make_loader(examples, load_tokenizer("minilm"), batch_size, shuffle=True, seed=42, max_length=64))


def step_rate_ratio(batches: list[dict], every: int) -> tuple[float, float, int]:
    """Steps/s of the training loop with the controller and without, same batches and init."""
    from balora.models import load_classifier

    rates, moves = [], 0
    for dynamic in (False, True):
        torch.manual_seed(42)
        base = load_classifier("minilm", 2, 42)
        targets = target_modules(base, ["query", "value"])
        model = _peft(base, [t.name for t in targets], 8)
        controller = _controller(targets, 8, len(batches), every) if dynamic else None
        start = time.perf_counter()
        train(model, batches, TrainSettings(epochs=1, learning_rate=2e-3, progress=False),
              after_step=controller)
        rates.append(len(batches) / (time.perf_counter() - start))
        if controller is not None:
            moves = sum(1 for h in controller.history if h["changed"])
    return rates[1], rates[0], moves


def wall_ratio() -> tuple[float, float]:
    def run(method: str, out: Path) -> float:
        command = [sys.executable, "-m", "balora.cli", "train", "--method", method, "--budget-rank", "8",
                   "--train-size", "2000", "--epochs", "3", "--batch-size", "32", "--learning-rate", "2e-3",
                   "--realloc-every", "50", "--realloc-warmup", "50", "--evaluations", "1", "--seed", "42",
                   "--quiet", "--out", str(out)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads((out / "result.json").read_text())["timings"]["total"]

    with tempfile.TemporaryDirectory() as tmp:
        return run("ba_lora_dynamic", Path(tmp) / "dynamic"), run("lora", Path(tmp) / "lora")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps for the step-rate ratio")
    parser.add_argument("--every", type=int, default=10, help="reallocation interval for the step-rate ratio")
    parser.add_argument("--repeats", type=int, default=5, help="reallocations timed per model")
    parser.add_argument("--wall", action="store_true", help="also the end-to-end wall-time ratio (minutes)")
    args = parser.parse_args()
    torch.manual_seed(0)

    from balora.models import load_classifier

    batches = minilm_batches(args.steps)
    minilm = load_classifier("minilm", 2, 42)
    minilm_targets = target_modules(minilm, ["query", "value"])
    minilm_seconds = seconds_per_reallocation(minilm, minilm_targets, lambda m: m(**batches[0]).loss, args.repeats)
    print(f"one reallocation, MiniLM query+value ({len(minilm_targets)} modules): {minilm_seconds * 1000:.1f} ms "
          f"(median of {args.repeats})")

    synthetic = Synthetic()
    synthetic_targets = [TargetModule(name, m.out_features, m.in_features) for name, m in synthetic.named_modules()
                         if isinstance(m, nn.Linear)]
    inputs = torch.randn(32, 512)
    synthetic_seconds = seconds_per_reallocation(synthetic, synthetic_targets, lambda m: m(inputs).square().mean(),
                                                 args.repeats)
    print(f"one reallocation, synthetic model ({len(synthetic_targets)} modules): {synthetic_seconds * 1000:.1f} ms "
          f"(target < 1000 ms)")

    dynamic, static, moves = step_rate_ratio(batches, args.every)
    print(f"training steps/s with the controller / without: {dynamic:.2f} / {static:.2f} = {dynamic / static:.3f} "
          f"({args.steps} steps of batch 16, reallocating every {args.every} steps, ranks moved {moves} times)")
    if args.wall:
        dynamic_s, lora_s = wall_ratio()
        print(f"total wall time ba_lora_dynamic / lora, 2,000 examples, 3 epochs, every 50 steps: "
              f"{dynamic_s:.1f} s / {lora_s:.1f} s = {dynamic_s / lora_s:.3f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()

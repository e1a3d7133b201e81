"""Quantised bases on the embedded default (issue 10's benchmark; not a timed test).

Prints, each against fp32 measured in the same invocation on MiniLM:

1. Stored base-weight bytes of the quantised modules, fp32 / quantised, for every format at group
   size 64 (scales and zero-points included), with and without double quantisation; on the LoRA
   targets (query+value) and on every linear layer (`--quant-modules all`).
2. Training step time, quantised / fp32: LoRA r=8 on query+value, the same pre-tokenised batches,
   the same loop (`balora.training.train`), after one warm-up step; the five models take turns for
   `--rounds` rounds and each reports its median, so load changes on a shared machine cancel out.

Where bitsandbytes is installed, its `Linear4bit` (`--quant-backend bitsandbytes`, NF4 and FP4) joins both:
its stored bytes, and its step time against fp32 and against balora's own layer of the same format.

Usage: python benchmarks/quant.py [--steps 10] [--rounds 3] [--batch-size 16] [--group-size 64] [--skip-memory]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model

from balora import quantisation
from balora.data import load_rotten_tomatoes, make_loader, select_training
from balora.models import head_module_names, load_classifier, load_tokenizer, target_modules
from balora.quiet import silence
from balora.training import TrainSettings, train

BNB = importlib.util.find_spec("bitsandbytes") is not None
BNB_FORMATS = ("nf4", "fp4")


def quantised_minilm(fmt: str | None, group: int, everything: bool = False, double: bool = False,
                     backend: str = "torch") -> torch.nn.Module:
    model = load_classifier("minilm", 2, 42)
    if fmt is not None:
        names = (quantisation.linear_module_names(model, tuple(head_module_names(model))) if everything
                 else [t.name for t in target_modules(model, ["query", "value"])])
        quantisation.quantise_model(model, names, fmt, group, double, backend=backend)
    return model


def memory_rows(group: int) -> None:
    print(f"stored base-weight bytes, group size {group} (scales and zero-points included)")
    print(f"{'format':<18} {'modules':<8} {'fp32 bytes':>12} {'stored bytes':>13} {'fp32 / stored':>14}")
    arms = [(fmt, "torch") for fmt in quantisation.FORMATS] + [(fmt, "bitsandbytes") for fmt in BNB_FORMATS if BNB]
    for everything in (False, True):
        for fmt, backend in arms:
            for double in (False, True):
                model = quantised_minilm(fmt, group, everything, double, backend)
                report = quantisation.memory_report(quantisation.quantised_layers(model))
                label = fmt + (" +dq" if double else "") + (" bnb" if backend == "bitsandbytes" else "")
                print(f"{label:<18} {'all' if everything else 'q+v':<8} {report['fp32_bytes']:>12,} "
                      f"{report['stored_bytes']:>13,} {report['ratio']:>13.2f}x")


def lora_model(fmt: str | None, group: int, backend: str = "torch") -> torch.nn.Module:
    torch.manual_seed(42)
    config = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])
    return get_peft_model(quantised_minilm(fmt, group, backend=backend), config)


def step_seconds(models: dict[str, torch.nn.Module], batches: list[dict], rounds: int,
                 clock=time.perf_counter) -> dict[str, float]:
    """Median seconds per step of each model by `clock`; the models take turns, one pass over `batches`
    each per round, so a change in the machine's load affects all of them alike."""
    settings = TrainSettings(epochs=1, learning_rate=2e-3, progress=False)
    for model in models.values():
        train(model, batches[:1], settings)  # warm-up: allocator and kernels
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = clock()
            train(model, batches, settings)
            times[name].append((clock() - start) / len(batches))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--skip-memory", action="store_true", help="only the step times")
    args = parser.parse_args()
    silence()
    if not args.skip_memory:
        memory_rows(args.group_size)
    data = load_rotten_tomatoes()
    examples = select_training(data.pool, None, args.steps * args.batch_size, 42)
    batches = list(make_loader(examples, load_tokenizer("minilm"), args.batch_size, shuffle=True, seed=42, max_length=64))
    models = {name: lora_model(None if name == "fp32" else name, args.group_size)
              for name in ("fp32", *quantisation.FORMATS)}
    if BNB:
        models.update({f"{fmt}-bnb": lora_model(fmt, args.group_size, "bitsandbytes") for fmt in BNB_FORMATS})
    print(f"\ntraining step time, LoRA r=8 on query+value, median of {args.rounds} interleaved rounds of "
          f"{args.steps} steps of batch {args.batch_size}, {torch.get_num_threads()} threads")
    # Wall time is what a user waits; CPU time of this process is what the step costs, and unlike wall
    # time it barely moves when other processes share the cores.
    for label, clock in (("wall", time.perf_counter), ("CPU", time.process_time)):
        seconds = step_seconds(models, batches, args.rounds, clock)
        for name, value in seconds.items():
            against_torch = f"  bnb / torch {value / seconds[name[:-4]]:.2f}x" if name.endswith("-bnb") else ""
            print(f"{label:<5} {name:<8} {value * 1000:8.1f} ms/step  {value / seconds['fp32']:.2f}x{against_torch}")


if __name__ == "__main__":
    main()

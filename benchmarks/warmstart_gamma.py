"""The warm-start step γ, measured before any training (how each task's default γ was chosen).

For each γ, BA-LoRA's allocation and warm-start are applied to a fresh copy of the model and we print
the loss on the importance sample (where the gradient came from) and the loss (and accuracy, for a
classifier) on the validation split, against PEFT's standard init (B = 0, γ = 0). One importance pass
serves every γ. A task's default (`Task.warm_start_gamma` in `balora.tasks`) is the tested γ with the lowest mean
validation loss.

    python benchmarks/warmstart_gamma.py                      # MiniLM, Rotten Tomatoes 64-shot (classification)
    python benchmarks/warmstart_gamma.py --model smollm2 --dataset critic_instructions --train-size 200 \\
        --gradient-samples 64 --eval-examples 64 --max-length 96 --gammas 3e-5 1e-4 3e-4 1e-3 5e-3
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch
from peft import get_peft_model

from balora import importance
from balora.config import RunConfig
from balora.initialisation import warm_start
from balora.methods import get_method
from balora.run import seed_everything, setup


def measure(config: RunConfig, gammas: list[float]) -> dict[float, dict[str, float]]:
    run = setup(config)
    seed_everything(config.seed)
    prepared = get_method("ba_lora_no_warmstart")(run.method_context(1))
    gradients = importance.accumulate_gradients(run.model, run.importance_batches(), run.targets,
                                                len(run.importance_examples)).mean

    def score(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> dict[str, float]:
        return run.task.evaluate(model, loader, run.data)

    validation = run.loader(run.data.validation[:config.eval_examples], shuffle=False, batch_size=config.eval_batch_size)
    rows = {}
    for gamma in [0.0, *gammas]:
        seed_everything(config.seed)
        model = get_peft_model(copy.deepcopy(run.model), prepared.peft_config)
        if gamma:
            warm_start(model, gradients, gamma)
        sample, held_out = score(model, run.importance_batches()), score(model, validation)
        rows[gamma] = {"sample_loss": sample["loss"], "val_loss": held_out["loss"],
                       "val_accuracy": held_out.get("accuracy", float("nan"))}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--dataset", default="rotten_tomatoes")
    parser.add_argument("--shots", type=int, default=None, help="examples per class (default: 64 unless --train-size)")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--gradient-samples", type=int, default=RunConfig.gradient_samples)
    parser.add_argument("--eval-examples", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--budget-rank", type=float, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    args = parser.parse_args()
    shots = args.shots if args.shots is not None or args.train_size is not None else 64
    torch.set_num_threads(max(1, torch.get_num_threads()))
    configs = [RunConfig(method="ba_lora", model=args.model, dataset=args.dataset, shots=shots, train_size=args.train_size,
                         budget_rank=args.budget_rank, gradient_samples=args.gradient_samples, eval_examples=args.eval_examples,
                         max_length=args.max_length, eval_batch_size=16, gamma=args.gammas[0], seed=seed)
               for seed in args.seeds]
    runs = [measure(config, args.gammas) for config in configs]
    data = f"{shots}-shot" if shots is not None else f"{args.train_size} examples"
    print(f"{args.model}, {args.dataset} {data}, rank-equivalent {args.budget_rank:g}, {args.gradient_samples} importance "
          f"samples, seeds {args.seeds}: before any training")
    classifier = not any(math.isnan(r[0.0]["val_accuracy"]) for r in runs)
    print(f"{'gamma':>7}  {'sample loss':>11}  {'val loss':>8}" + ("  val accuracy (mean, per seed)" if classifier else ""))
    for gamma in runs[0]:
        mean = {k: statistics.mean(r[gamma][k] for r in runs) for k in runs[0][gamma]}
        per_seed = ", ".join(f"{r[gamma]['val_accuracy']:.3f}" for r in runs)
        print(f"{gamma:>7g}  {mean['sample_loss']:>11.4f}  {mean['val_loss']:>8.4f}"
              + (f"  {mean['val_accuracy']:>8.4f} ({per_seed})" if classifier else ""))


if __name__ == "__main__":
    main()

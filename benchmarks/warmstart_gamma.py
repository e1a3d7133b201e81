"""The warm-start step γ, measured before any training (how `initialisation.DEFAULT_GAMMA` was chosen).

For each γ, BA-LoRA's allocation and warm-start are applied to a fresh copy of the model and we print
the loss on the importance sample (where the gradient came from) and accuracy and loss on the
validation split, against PEFT's standard init (B = 0, γ = 0). One importance pass serves every γ.

    python benchmarks/warmstart_gamma.py [--shots 64] [--seeds 42 43 44] [--gammas 0.005 0.01 0.02 0.05 0.1]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from peft import get_peft_model

from balora import importance
from balora.config import RunConfig
from balora.initialisation import warm_start
from balora.methods import get_method
from balora.run import seed_everything, setup
from balora.training import evaluate


def measure(seed: int, shots: int, gammas: list[float]) -> dict[float, dict[str, float]]:
    config = RunConfig(method="ba_lora", shots=shots, budget_rank=8, seed=seed, max_length=64)
    run = setup(config)
    seed_everything(seed)
    prepared = get_method("ba_lora_no_warmstart")(run.method_context(1))
    gradients = importance.accumulate_gradients(run.model, run.importance_batches(), run.targets,
                                                len(run.importance_examples)).mean
    validation = run.loader(run.data.validation, shuffle=False, batch_size=64)
    rows = {}
    for gamma in [0.0, *gammas]:
        seed_everything(seed)
        model = get_peft_model(copy.deepcopy(run.model), prepared.peft_config)
        if gamma:
            warm_start(model, gradients, gamma)
        sample = evaluate(model, run.importance_batches(), run.data.num_labels)
        held_out = evaluate(model, validation, run.data.num_labels)
        rows[gamma] = {"sample_loss": sample["loss"], "val_loss": held_out["loss"], "val_accuracy": held_out["accuracy"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shots", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = [measure(seed, args.shots, args.gammas) for seed in args.seeds]
    print(f"MiniLM, Rotten Tomatoes {args.shots}-shot, rank-equivalent 8, seeds {args.seeds}: before any training")
    print(f"{'gamma':>6}  {'sample loss':>11}  {'val loss':>8}  {'val accuracy (mean, per seed)':>30}")
    for gamma in runs[0]:
        mean = {k: statistics.mean(r[gamma][k] for r in runs) for k in runs[0][gamma]}
        per_seed = ", ".join(f"{r[gamma]['val_accuracy']:.3f}" for r in runs)
        print(f"{gamma:>6g}  {mean['sample_loss']:>11.4f}  {mean['val_loss']:>8.4f}  {mean['val_accuracy']:>8.4f} ({per_seed})")


if __name__ == "__main__":
    main()

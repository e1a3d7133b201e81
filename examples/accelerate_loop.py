"""A balora plan trained by your own loop under accelerate: MiniLM on Rotten Tomatoes (runs offline).

    python examples/accelerate_loop.py --steps 60
    accelerate launch --num_processes 2 examples/accelerate_loop.py   # data-parallel: one plan for all

Create the `Accelerator` first: under `accelerate launch` that starts torch.distributed, so `balora.plan`
gives each process its share of the importance sample and all-reduces the gradients, and every process
gets the same plan (and, from the plan's seed, the same LoRA init).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

import balora
from balora.data import load_text_dataset, make_loader, select_training
from balora.models import load_classifier, load_tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--dataset", default="rotten_tomatoes")
    parser.add_argument("--shots", type=int, default=64)
    parser.add_argument("--budget-rank", type=float, default=8)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="out/accelerate_loop")
    args = parser.parse_args(argv)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    tokenizer = load_tokenizer(args.model)
    data = load_text_dataset(args.dataset)
    loader = make_loader(select_training(data.pool, args.shots, None, seed=42), tokenizer, args.batch_size,
                         shuffle=True, seed=42)
    model = load_classifier(args.model, data.num_labels, seed=42)

    plan = balora.plan(model, loader, budget_rank=args.budget_rank, num_samples=args.samples)
    accelerator.print(plan)
    peft_model = plan.apply(model)

    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model, optimizer, loader = accelerator.prepare(peft_model, optimizer, loader)
    peft_model.train()
    step, losses = 0, []
    while step < args.steps:
        for batch in loader:
            loss = peft_model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            if step == args.steps:
                break
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(peft_model).save_pretrained(Path(args.out) / "adapter")
    first, last = sum(losses[:5]) / len(losses[:5]), sum(losses[-5:]) / len(losses[-5:])
    accelerator.print(f"training loss {first:.3f} (first 5 steps) -> {last:.3f} (last 5); adapter in {args.out}/adapter")
    return {"model": accelerator.unwrap_model(peft_model), "first_loss": first, "last_loss": last}


if __name__ == "__main__":
    main()

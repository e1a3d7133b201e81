"""Pretraining the offline ViT (`vit-fashion`) on CPU (issue 13's benchmark; not a timed test).

Prints, each against a baseline measured in the same invocation:

1. The cached model's record (building it first if it is absent, which takes minutes): wall and CPU
   time of the pretraining, training images per second, test accuracy on Fashion-MNIST's 10,000 test
   images, and the wall time / the 10-minute target (aim ≤ 1).
2. Training images per second of `vision_pretraining.pretrain`'s loop / a bare torch loop (forward,
   backward, AdamW step, same recipe, same batches, same threads), on `--images` training images:
   what our loop's scheduler, shuffling and normalisation cost (aim ≥ 0.95).

Usage: python benchmarks/vit_pretraining.py [--images 3840] [--repeats 3] [--no-build]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import ViTForImageClassification

from balora import assets
from balora.vision_pretraining import RECIPE, RECORD_FILE, PretrainRecipe, cached_vit_fashion, normalised, pretrain, vit_config

TARGET_SECONDS = 600


def bare_loop_rate(arrays: dict[str, np.ndarray], recipe: PretrainRecipe) -> float:
    """Images/s of the plainest loop on the recipe's model and batches: no schedule, inputs normalised up front."""
    torch.manual_seed(recipe.seed)
    model = ViTForImageClassification(vit_config(recipe, assets.FASHION_MNIST_CLASSES)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    images = torch.from_numpy(arrays["train_images"]).unsqueeze(1)
    pixels = normalised(images, float(images.float().mean() / 255), float(images.float().std() / 255))
    labels = torch.from_numpy(arrays["train_labels"])
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(recipe.seed))
    batches = [(pixels[batch], labels[batch]) for batch in order.split(recipe.batch_size)]
    start = time.perf_counter()
    for _ in range(recipe.epochs):
        for x, y in batches:
            model(pixel_values=x, labels=y).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return recipe.epochs * len(pixels) / (time.perf_counter() - start)


def loop_ratio(arrays: dict[str, np.ndarray], images: int, repeats: int) -> tuple[float, float]:
    """Median images/s of our loop and of the bare loop, alternating, one epoch over `images` images each."""
    subset = {"train_images": arrays["train_images"][:images], "train_labels": arrays["train_labels"][:images],
              "test_images": arrays["test_images"][:1000], "test_labels": arrays["test_labels"][:1000]}
    recipe = replace(RECIPE, epochs=1)
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            ours.append(pretrain(subset, Path(tmp) / str(repeat), recipe, threads=torch.get_num_threads())["train_images_per_second"])
            bare.append(bare_loop_rate(subset, recipe))
    return statistics.median(ours), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3840, help="training images per loop-ratio repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-build", action="store_true", help="do not pretrain the cached model if it is absent")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    folder = assets.cache_dir() / "assets" / f"{assets.VIT_FASHION_NAME}-{RECIPE.key()}"
    if folder.is_dir() or not args.no_build:
        record = json.loads((cached_vit_fashion() / RECORD_FILE).read_text())
        print(f"vit-fashion ({record['parameters']:,} parameters, {record['threads']} threads, "
              f"load average {record['load_average_at_start']} at start), built with torch {record['torch']}:")
        print(f"  pretraining wall time    {record['wall_seconds']:8.1f} s   "
              f"/ {TARGET_SECONDS} s target = {record['wall_seconds'] / TARGET_SECONDS:.2f}")
        print(f"  pretraining CPU time     {record['cpu_seconds']:8.1f} s   (all threads)")
        print(f"  training images/s        {record['train_images_per_second']:8.1f}")
        print(f"  test accuracy            {record['test_accuracy']:8.4f}   ({record['test_images']:,} test images)")
    else:
        print(f"no cached vit-fashion in {folder} (--no-build): pretraining figures skipped", file=sys.stderr)
    ours, bare = loop_ratio(assets.fashion_mnist(), args.images, args.repeats)
    print(f"training loop, {args.images:,} images x {args.repeats} repeats, {torch.get_num_threads()} threads: "
          f"ours {ours:.1f} images/s, bare torch loop {bare:.1f} images/s, ratio {ours / bare:.3f} (aim >= 0.95)")


if __name__ == "__main__":
    main()

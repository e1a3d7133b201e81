"""Training throughput on images: balora's loop against a bare PEFT + torch loop (issue 13; not a timed test).

Both loops train the same LoRA model (rank 8 on the ViT's query/value projections, the classifier in
`modules_to_save`, PEFT's ViT example) from the same initial weights on the same pre-built batches of
scikit-learn digits (resized and normalised by the model's image processor once, before timing), with
the same AdamW and linear schedule. The two are timed in turns, `--repeats` times each, and the medians
compared (after one untimed warm-up pass, alternating which loop goes first), so that load from other
processes on a shared machine falls on both. Prints images per second
of each and the ratio (target ≥ 0.95: no framework tax).

The default model is a ViT with vit-fashion's shape (28×28 grey images in 7×7 patches, 4 layers of width
128, MLP 256) and random weights, built in a temporary folder: throughput does not depend on the weights.
`--model vit-fashion` (or any image-classification model folder) times that model instead.

Usage: python benchmarks/vision.py [--model PATH|vit-fashion] [--steps 60] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def random_vit(folder: Path) -> Path:
    """vit-fashion's architecture with random weights, and an image processor to 28×28, normalised."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=128, num_hidden_layers=4,
                       num_attention_heads=4, intermediate_size=256, num_labels=10)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.5], image_std=[0.5]).save_pretrained(folder)
    return folder


def throughput(model_name: str, steps: int, batch_size: int, repeats: int) -> tuple[list[float], list[float], int]:
    """Images per second of balora's `train` and of a bare loop, each timed `repeats` times in turns."""
    import torch
    from loops import compare_loops
    from peft import LoraConfig, get_peft_model

    from balora.images import load_digits, make_image_loader
    from balora.models import default_target_names, load_image_classifier, load_image_processor

    data = load_digits()
    labels = data.label_names
    examples = (data.pool * (1 + steps * batch_size // len(data.pool)))[:steps * batch_size]
    processor = load_image_processor(model_name)
    base = load_image_classifier(model_name, labels, 42)
    batches = list(make_image_loader(examples, processor, base.config.num_channels, batch_size, shuffle=True, seed=42))
    targets = default_target_names(base)

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(42)
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=targets, modules_to_save=["classifier"])
        return get_peft_model(load_image_classifier(model_name, labels, 42), config)

    images = sum(len(b["labels"]) for b in batches)
    ours, bare = compare_loops(fresh_model, batches, repeats)
    return [images / t for t in ours], [images / t for t in bare], images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="image model (default: vit-fashion's shape, random weights)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from balora.quiet import silence

    silence()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(random_vit(Path(tmp)))
        ours, bare, images = throughput(model, args.steps, args.batch_size, args.repeats)
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(f"setting: {args.model or 'random ViT, vit-fashion shape'}, digits, {args.steps} steps of batch "
          f"{args.batch_size} ({images} images), LoRA r=8 on query/value + classifier, {args.repeats} repeats each")
    print(f"balora loop  images/s: {ours_median:.1f} (runs: {', '.join(f'{r:.1f}' for r in ours)})")
    print(f"bare loop    images/s: {bare_median:.1f} (runs: {', '.join(f'{r:.1f}' for r in bare)})")
    print(f"ratio  balora loop / bare PEFT loop images per s: {ours_median / bare_median:.3f}")


if __name__ == "__main__":
    main()

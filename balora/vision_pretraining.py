"""The offline stand-in for an ImageNet-pretrained ViT: a small ViT pretrained once on Fashion-MNIST.

No pretrained ViT ships anywhere reachable offline, and LoRA on random weights measures nothing, so
balora builds its own pretrain-then-adapt setting from data that does ship (`assets.fashion_mnist`):
`RECIPE` trains a small ViT on Fashion-MNIST's 60,000 training images, measures its accuracy on the
10,000 test images, and saves an ordinary Hugging Face folder (`config.json`, `model.safetensors`,
`preprocessor_config.json`) with `recipe.json`: the recipe, the measured accuracy, the wall time, the
library versions and the SHA-256 of the weights, which every later load checks.

The image processor normalises with Fashion-MNIST's own mean and standard deviation and resizes any
grey image to 28x28, so other small grey images (scikit-learn's 8x8 digits) go through the same
processor. `python -m balora.vision_pretraining` builds the cached model and prints its record.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from balora import assets
from balora.errors import BaloraError

RECORD_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class PretrainRecipe:
    """How the offline ViT is pretrained: its architecture and its optimisation, all pinned."""

    image_size: int = field(default=assets.VIT_FASHION_IMAGE, metadata={"help": "input side in pixels (Fashion-MNIST's 28)"})
    patch_size: int = field(default=assets.VIT_FASHION_PATCH,
                            metadata={"help": "patch side: 28/7 gives 16 patches plus the CLS token"})
    hidden_size: int = field(default=64, metadata={"help": "width of the transformer"})
    num_hidden_layers: int = field(default=4, metadata={"help": "transformer blocks"})
    num_attention_heads: int = field(default=4, metadata={"help": "attention heads; must divide hidden_size"})
    intermediate_size: int = field(default=128, metadata={"help": "width of each block's MLP"})
    epochs: int = field(default=4, metadata={"help": "passes over the training images"})
    batch_size: int = field(default=128, metadata={"help": "images per optimizer step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW decoupled weight decay"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up, then cosine decay to 0"})
    seed: int = field(default=0, metadata={"help": "seeds the initial weights and the shuffling"})

    def __post_init__(self) -> None:
        sizes = {k: v for k, v in asdict(self).items() if k not in ("learning_rate", "weight_decay", "warmup_fraction", "seed")}
        if any(v <= 0 for v in sizes.values()):
            raise BaloraError(f"pretraining recipe sizes must be positive, got {sizes}")
        if self.hidden_size % self.num_attention_heads or self.image_size % self.patch_size:
            raise BaloraError(f"hidden_size {self.hidden_size} must be divisible by num_attention_heads {self.num_attention_heads} "
                              f"and image_size {self.image_size} by patch_size {self.patch_size}")
        if not (self.learning_rate > 0 and self.weight_decay >= 0 and 0 <= self.warmup_fraction < 1):
            raise BaloraError("pretraining recipe needs learning_rate > 0, weight_decay >= 0 and 0 <= warmup_fraction < 1")

    def key(self) -> str:
        """Eight hex digits naming this recipe's cache folder: another recipe builds another model."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


RECIPE = PretrainRecipe()


def vit_config(recipe: PretrainRecipe, classes: tuple[str, ...]) -> ViTConfig:
    """The ViT architecture of `recipe`: grey single-channel images, one label per class."""
    return ViTConfig(
        image_size=recipe.image_size, patch_size=recipe.patch_size, num_channels=1,
        hidden_size=recipe.hidden_size, num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads, intermediate_size=recipe.intermediate_size,
        id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)},
    )


def image_processor(size: int, mean: float, std: float) -> ViTImageProcessor:
    """Resize to `size`x`size`, scale to [0, 1], normalise with the pretraining images' mean and std."""
    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
                             do_normalize=True, image_mean=[mean], image_std=[std])


def pretrain(arrays: dict[str, np.ndarray], out: Path, recipe: PretrainRecipe = RECIPE,
             classes: tuple[str, ...] = assets.FASHION_MNIST_CLASSES, threads: int | None = None) -> dict:
    """Train a ViT on `arrays` (`train_images`/`test_images` as (n, side, side) uint8, `*_labels` as ints) by
    `recipe`, save it with its processor and `recipe.json` into the new folder `out`, and return the record."""
    started, cpu_started, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        torch.manual_seed(recipe.seed)
        train = torch.from_numpy(np.ascontiguousarray(arrays["train_images"])).unsqueeze(1)
        labels = torch.from_numpy(np.asarray(arrays["train_labels"], dtype=np.int64))
        mean, std = float(train.float().mean() / 255), float(train.float().std() / 255)
        model = ViTForImageClassification(vit_config(recipe, classes))
        steps = recipe.epochs * math.ceil(len(train) / recipe.batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, recipe.warmup_fraction))
        order = torch.Generator().manual_seed(recipe.seed)
        model.train()
        training_started = time.perf_counter()
        for epoch in range(recipe.epochs):
            for batch in torch.randperm(len(train), generator=order).split(recipe.batch_size):
                loss = model(pixel_values=normalised(train[batch], mean, std), labels=labels[batch]).loss
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            print(f"balora: vit-fashion: epoch {epoch + 1}/{recipe.epochs}, last loss {loss.item():.3f}, "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        train_seconds = time.perf_counter() - training_started
        measured = accuracy(model, arrays["test_images"], arrays["test_labels"], mean, std)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    image_processor(recipe.image_size, mean, std).save_pretrained(out)
    record = {
        "name": assets.VIT_FASHION_NAME,
        "what": "stand-in for an ImageNet-pretrained ViT: a small ViT pretrained on Fashion-MNIST",
        "recipe": asdict(recipe) | {"optimizer": "AdamW", "schedule": "linear warm-up, cosine decay to 0",
                                    "loss": "cross-entropy", "augmentation": "none"},
        "train_images": len(train), "test_images": len(arrays["test_images"]),
        "normalisation": {"mean": mean, "std": std},
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_accuracy": measured,
        "train_seconds": round(train_seconds, 2),
        "train_images_per_second": round(recipe.epochs * len(train) / train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
        "threads": used_threads,
        "load_average_at_start": round(load, 2),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "model_sha256": assets._sha256(out / WEIGHTS_FILE),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def warmup_cosine(step: int, steps: int, warmup_fraction: float) -> float:
    """Learning-rate multiplier: linear from 0 over the warm-up steps, then cosine down to 0 at `steps`."""
    warmup = max(1, round(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def normalised(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images (n, 1, side, side) as the processor gives them: scaled to [0, 1], then standardised."""
    return (images.float() / 255 - mean) / std


@torch.no_grad()
def accuracy(model: ViTForImageClassification, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> float:
    """Share of `images` whose predicted class is the label."""
    model.eval()
    pixels = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    predictions = torch.cat([model(pixel_values=normalised(chunk, mean, std)).logits.argmax(-1) for chunk in pixels.split(1000)])
    return round(float((predictions.numpy() == np.asarray(labels)).mean()), 4)


def verified(folder: Path) -> Path:
    """`folder` if its weights match the SHA-256 its `recipe.json` recorded, else a BaloraError."""
    try:
        expected = json.loads((folder / RECORD_FILE).read_text())["model_sha256"]
    except (OSError, ValueError, KeyError) as err:
        raise BaloraError(f"'{folder}' has no readable {RECORD_FILE} ({err}); delete the folder to rebuild the model") from None
    found = assets._sha256(folder / WEIGHTS_FILE) if (folder / WEIGHTS_FILE).is_file() else "no weights file"
    if found != expected:
        raise BaloraError(f"checksum mismatch for '{folder / WEIGHTS_FILE}': {RECORD_FILE} records {expected}, found {found}; "
                          "the weights are corrupt or were changed, delete the folder to rebuild the model")
    return folder


# The default recipe's build that balora ships (its weights, processor and `recipe.json`, 0.6 MB): pretraining is
# not bit-reproducible across machines (their CPUs' kernels round differently), and runs on two builds are two
# base models, so every machine starts from this one, the build results/levers' ViT runs used.
SHIPPED = Path(__file__).parent / "shipped" / assets.VIT_FASHION_NAME


def cached_vit_fashion(recipe: PretrainRecipe = RECIPE) -> Path:
    """The cached `vit-fashion` folder for `recipe`: for the default recipe balora's shipped build (`SHIPPED`),
    checked against its recorded checksum; for another, pretrained on Fashion-MNIST with every core on first use."""
    target = assets.cache_dir() / "assets" / f"{assets.VIT_FASHION_NAME}-{recipe.key()}"
    if target.is_dir():
        return verified(target)
    if recipe == RECIPE and SHIPPED.is_dir():
        with assets.building(target) as tmp:
            staging = shutil.copytree(verified(SHIPPED), tmp / "model")
            return assets.publish(staging, target)
    arrays = assets.fashion_mnist()
    print(f"balora: vit-fashion: pretraining once on Fashion-MNIST into {target} (about 10 minutes on 2 cores)", file=sys.stderr)
    with assets.building(target) as tmp:
        staging = tmp / "model"
        pretrain(arrays, staging, recipe, threads=os.cpu_count())
        return assets.publish(staging, target)


def main() -> int:
    """Build (or check) the cached model and print its folder and record; errors as one `balora: error:` line."""
    try:
        folder = cached_vit_fashion()
    except BaloraError as err:
        print(f"balora: error: {err}", file=sys.stderr)
        return 2
    print(folder)
    print((folder / RECORD_FILE).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

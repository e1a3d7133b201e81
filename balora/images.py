"""Labelled images: scikit-learn's digits, Fashion-MNIST, Hugging Face image datasets, a local folder.

Every source becomes an `ImageDataset`: the three fixed splits of `data.TextDataset` (test, validation,
pool), holding `ImageExample`s, so training sets are drawn by the same seeded samplers (`--shots`,
`--train-size`, stratified importance sample). Batches are `pixel_values` + `labels`, made by the
model's own image processor, so its resizing and normalisation are applied; a grey image is given to a
3-channel model as RGB.

- `digits`: scikit-learn's 1,797 8×8 handwritten digits (intensity 0–16, scaled to 0–255 grey).
- `fashion_mnist`: Fashion-MNIST from the assets layer; its own 10,000-image test split is the test set.
- `cifar10`, `cifar100`, `food101` or any hub name: through `datasets` (online users).
- a folder of class subfolders of image files (ImageFolder layout), or one with `train/` and `test/`
  (optionally `validation/`) subfolders, each in that layout.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers.image_processing_utils import BaseImageProcessor

from balora import assets
from balora.data import EMBEDDED_VALIDATION_SIZE, SPLIT_SEED, TextDataset, fixed_split, hub_splits
from balora.errors import BaloraError

IMAGE_DATASETS = ("digits", "fashion_mnist")
# Hub datasets by their short name: (dataset path, label column); the image column is found by its type.
HUB_IMAGE_DATASETS = {"cifar10": ("uoft-cs/cifar10", "label"), "cifar100": ("uoft-cs/cifar100", "fine_label"),
                      "food101": ("ethz/food101", "label")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FASHION_VALIDATION_SIZE = 5000


@dataclass
class ImageExample:
    """One labelled image: a grey (H×W) or colour (H×W×C) uint8 array, an image file, or a loader
    called when the image is batched (a hub dataset's row, decoded only then)."""

    image: np.ndarray | Path | Callable[[], Any]
    label: int


class ImageDataset(TextDataset):
    """`TextDataset`'s splits (`pool`, `validation`, `test`) and label names, holding `ImageExample`s."""


def _examples(images: np.ndarray, labels: np.ndarray) -> list[ImageExample]:
    return [ImageExample(image, int(label)) for image, label in zip(images, labels)]


def load_digits() -> ImageDataset:
    """scikit-learn's 8×8 digits as uint8 grey images, split like a local file (a fifth test, a tenth
    validation, fixed seed)."""
    from sklearn.datasets import load_digits as sklearn_digits  # deferred: only this dataset needs it

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    examples = _examples(images, bunch.target)
    names = [str(d) for d in range(10)]
    return ImageDataset(**vars(fixed_split("digits", names, examples, len(examples) // 5, len(examples) // 10)))


def load_fashion_mnist() -> ImageDataset:
    """Fashion-MNIST (assets layer) with Zalando's class names: its test split is the test set, 5,000
    training images (fixed seed) are the validation set, the other 55,000 the pool."""
    arrays = assets.fashion_mnist()
    pool = _examples(arrays["train_images"], arrays["train_labels"])
    random.Random(SPLIT_SEED).shuffle(pool)
    return ImageDataset("fashion_mnist", list(assets.FASHION_MNIST_CLASSES), pool[FASHION_VALIDATION_SIZE:], pool[:FASHION_VALIDATION_SIZE],
                        _examples(arrays["test_images"], arrays["test_labels"]))


def _class_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _folder_examples(folder: Path, label_names: list[str] | None = None) -> tuple[list[ImageExample], list[str]]:
    """Every image under `folder/<class>/`; each file is opened (header only) so a broken one fails here."""
    from PIL import Image, UnidentifiedImageError

    classes = _class_folders(folder)
    names = label_names or [c.name for c in classes]
    if label_names is None and len(names) < 2:
        found = f"one class folder only ({names[0]})" if names else "no class subfolders"
        raise BaloraError(f"image folder '{folder}' has {found}; a classifier needs two or more: put each class's "
                          "images in its own subfolder (folder/cat/1.png, folder/dog/2.png, ...)")
    index = {name: i for i, name in enumerate(names)}
    examples = []
    for class_folder in classes:
        if class_folder.name not in index:
            raise BaloraError(f"image folder '{folder}': class '{class_folder.name}' is not among the training "
                              f"classes {names}")
        for file in sorted(f for f in class_folder.rglob("*") if f.is_file() and not f.name.startswith(".")):
            try:
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    raise UnidentifiedImageError(f"suffix {file.suffix or '(none)'}")
                with Image.open(file) as image:
                    image.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                raise BaloraError(f"'{file}' is not a readable image ({err}); image folders may hold only image files "
                                  f"({', '.join(sorted(IMAGE_SUFFIXES))})") from None
            examples.append(ImageExample(file, index[class_folder.name]))
    if not examples:
        raise BaloraError(f"image folder '{folder}' holds no image files; put images in its class subfolders")
    return examples, names


def load_image_folder(path: Path) -> ImageDataset:
    """Class subfolders (split here: a fifth test, a tenth validation), or `train/`, `test/` and optionally
    `validation/` subfolders in that layout (validation carved from train when absent)."""
    if not (path / "train").is_dir():
        examples, names = _folder_examples(path)
        return ImageDataset(**vars(fixed_split(path.name, names, examples, max(1, len(examples) // 5),
                                               max(1, len(examples) // 10))))
    if not (path / "test").is_dir():
        raise BaloraError(f"image folder '{path}' has train/ but no test/; give both (class subfolders in each)")
    pool, names = _folder_examples(path / "train")
    test, _ = _folder_examples(path / "test", names)
    if (path / "validation").is_dir():
        validation, _ = _folder_examples(path / "validation", names)
    else:
        random.Random(SPLIT_SEED).shuffle(pool)
        cut = max(1, len(pool) // 10)
        validation, pool = pool[:cut], pool[cut:]
    return ImageDataset(path.name, names, pool, validation, test)


def _hub_rows(split: Any, image_column: str, label_column: str) -> list[ImageExample]:
    """Rows of a hub split whose images are decoded only when batched (food101 does not fit in memory)."""
    def loader(i: int) -> Callable[[], Any]:
        return lambda: split[i][image_column]

    return [ImageExample(loader(i), int(label)) for i, label in enumerate(split[label_column])]


def load_hub_images(name: str, label_column: str = "label") -> ImageDataset:
    """A Hugging Face image dataset (`cifar10`, `cifar100`, `food101`, or a hub path): its test split (or
    validation where there is none) is the test set; a validation set is carved from train (fixed seed)."""
    import datasets  # deferred: importing `datasets` costs seconds

    path, label_column = HUB_IMAGE_DATASETS.get(name, (name, label_column))
    splits = hub_splits(name, (path,), f"not an embedded image dataset ({', '.join(IMAGE_DATASETS)}), not a local "
                        "image folder", "--dataset digits or a folder of class subfolders of images")
    train = splits["train"]
    image_column = next((c for c, f in train.features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None or label_column not in train.features:
        raise BaloraError(f"dataset '{name}' has no image column or no '{label_column}' column (columns: "
                          f"{', '.join(train.features)}); pass --label-column")
    names = list(getattr(train.features[label_column], "names", None) or
                 [str(v) for v in sorted(set(train[label_column]))])
    pool = _hub_rows(train, image_column, label_column)
    test = _hub_rows(splits["test" if "test" in splits else "validation"], image_column, label_column)
    random.Random(SPLIT_SEED).shuffle(pool)
    cut = min(EMBEDDED_VALIDATION_SIZE, len(pool) // 10)
    return ImageDataset(name, names, pool[cut:], pool[:cut], test)


def load_image_dataset(name: str, label_column: str = "label") -> ImageDataset:
    """Resolve an image dataset name: embedded (`digits`, `fashion_mnist`), a local folder, or the hub."""
    if name == "digits":
        return load_digits()
    if name == "fashion_mnist":
        return load_fashion_mnist()
    path = Path(name)
    if path.is_dir():
        return load_image_folder(path)
    if path.exists():
        raise BaloraError(f"image dataset '{name}' is a file; give a folder of class subfolders of images, "
                          "--dataset digits, or a hub name such as cifar10")
    return load_hub_images(name, label_column)


def as_pil(image: np.ndarray | Path | Callable[[], Any], mode: str) -> Any:
    """The image as a PIL image in `mode` ('L' grey or 'RGB')."""
    from PIL import Image

    if isinstance(image, Path):
        with Image.open(image) as opened:
            return opened.convert(mode)
    if callable(image):
        image = image()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert(mode)


def make_image_loader(examples: list[ImageExample], processor: BaseImageProcessor, channels: int, batch_size: int,
                      shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of `pixel_values` (the processor's resizing and normalisation) and `labels`; images are
    given to a `channels`-channel model as grey (1) or RGB (3)."""
    mode = "L" if channels == 1 else "RGB"

    def collate(batch: list[ImageExample]) -> dict[str, torch.Tensor]:
        images = [np.asarray(as_pil(e.image, mode)) for e in batch]
        if mode == "L":  # a channel axis, so that the processor does not have to guess the layout
            images = [image[..., None] for image in images]
        pixels = processor(images=images, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([e.label for e in batch])}

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(examples, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)

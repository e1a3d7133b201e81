"""Labelled text data: the embedded Rotten Tomatoes snippets, Hugging Face datasets, local files.

Every source becomes a `TextDataset` with three fixed splits: `test` (final metrics), `validation`
(learning curves, convergence speed) and `pool` (what training examples are drawn from). Training
sets are drawn from the pool by a seeded sampler: k shots per class, a random subset, or all.
"""

from __future__ import annotations

import bz2
import csv
import io
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from balora import assets
from balora.errors import BaloraError

EMBEDDED_DATASETS = ("rotten_tomatoes", "presidential_debates")
HUB_ALIASES = {"sst2": ("glue", "sst2"), "glue/sst2": ("glue", "sst2")}
# The embedded split is fixed forever so results stay comparable across versions: shuffle the
# cleaned snippets with this seed, then take the test set, then validation (SST-2's dev size).
SPLIT_SEED = 20240501
EMBEDDED_TEST_SIZE = 2000
EMBEDDED_VALIDATION_SIZE = 872
LOCAL_SUFFIXES = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class Example:
    text: str
    label: int


@dataclass
class TextDataset:
    name: str
    label_names: list[str]
    pool: list[Example]
    validation: list[Example]
    test: list[Example]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def majority_rate(self) -> float:
        """Test accuracy of always predicting the most frequent training-pool class."""
        top = Counter(e.label for e in self.pool).most_common(1)[0][0]
        return sum(e.label == top for e in self.test) / len(self.test)


def fixed_split(name: str, label_names: list[str], examples: list[Example], test: int, validation: int) -> TextDataset:
    if len(examples) < test + validation + 2:
        raise BaloraError(f"dataset '{name}' has only {len(examples)} examples; it needs more than {test + validation}")
    rng = random.Random(SPLIT_SEED)
    shuffled = examples[:]
    rng.shuffle(shuffled)
    return TextDataset(
        name, label_names, shuffled[test + validation:], shuffled[test:test + validation], shuffled[:test]
    )


def rotten_tomatoes_rows() -> list[dict[str, str]]:
    """The raw rows of the embedded Rotten Tomatoes corpus: category (fresh, rotten, plot), text, movie_name."""
    folder = assets.fetch(assets.ROTTEN_TOMATOES)
    raw = bz2.decompress((folder / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    return list(csv.DictReader(io.StringIO(raw)))


def load_rotten_tomatoes() -> TextDataset:
    """Rotten Tomatoes critic snippets (Pang & Lee), the offline stand-in for SST-2.

    Cleaning: keep `fresh` (1) and `rotten` (0), strip whitespace, drop empty and duplicate texts.
    """
    seen: set[str] = set()
    examples = []
    for row in rotten_tomatoes_rows():
        text = (row["text"] or "").strip()
        if row["category"] not in ("fresh", "rotten") or not text or text in seen:
            continue
        seen.add(text)
        examples.append(Example(text, int(row["category"] == "fresh")))
    return fixed_split("rotten_tomatoes", ["negative", "positive"], examples, EMBEDDED_TEST_SIZE, EMBEDDED_VALIDATION_SIZE)


def load_presidential_debates() -> TextDataset:
    """Statements from the 2016 US presidential and vice-presidential debates, labelled with the speaker's
    party (Democratic, Republican, or Moderator): a second real, offline task, three classes, longer texts.

    Cleaning: strip whitespace, drop empty and duplicate statements (1,122 rows in the file). Split like a
    local file: a fifth for test, a tenth for validation, the rest is the pool.
    """
    import pandas as pd  # deferred: only this loader and local files need pandas

    folder = assets.fetch(assets.PRESIDENTIAL_DEBATES)
    frame = pd.read_csv(folder / "presidential_debates_2016.csv.gz")
    names = ["Democratic", "Moderator", "Republican"]
    seen: set[str] = set()
    examples = []
    for text, party in zip(frame["statement"], frame["party"]):
        text = str(text).strip() if isinstance(text, str) else ""
        if text and text not in seen and party in names:
            seen.add(text)
            examples.append(Example(text, names.index(party)))
    return fixed_split("presidential_debates", names, examples, len(examples) // 5, len(examples) // 10)


def _labelled(rows: list[dict], text_column: str, label_column: str, source: str,
              label_names: list[str] | None = None) -> tuple[list[Example], list[str]]:
    if not rows:
        raise BaloraError(f"dataset '{source}' is empty; give a file with at least one labelled row")
    missing = [c for c in (text_column, label_column) if c not in rows[0]]
    if missing:
        raise BaloraError(
            f"dataset '{source}' has no column {', '.join(repr(c) for c in missing)} (columns: "
            f"{', '.join(rows[0])}); pass --text-column/--label-column"
        )
    if label_names is None:
        label_names = sorted({str(r[label_column]) for r in rows}, key=_natural_key)
        if len(label_names) < 2:
            raise BaloraError(f"dataset '{source}' has one class only ({label_column} = {label_names[0]!r}); "
                              "a classifier needs two or more; check --label-column")
    index = {name: i for i, name in enumerate(label_names)}
    examples = []
    for row in rows:
        text, label = row[text_column], str(row[label_column])
        if text is None or not str(text).strip():
            continue
        if label not in index:
            raise BaloraError(f"dataset '{source}': label '{label}' is not among the training labels {label_names}")
        examples.append(Example(str(text), index[label]))
    if not examples:
        raise BaloraError(f"dataset '{source}' has no non-empty text in column '{text_column}'")
    return examples, label_names


def _natural_key(value: str) -> tuple:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def read_rows(path: Path) -> list[dict]:
    import pandas as pd  # deferred: only local files need pandas

    kind = LOCAL_SUFFIXES.get(path.suffix)
    if kind is None:
        raise BaloraError(f"cannot read '{path}': use a .csv, .jsonl, .json or .parquet file")
    try:
        if kind == "csv":
            frame = pd.read_csv(path)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=path.suffix == ".jsonl")
    except pd.errors.EmptyDataError:
        return []
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, malformed (pandas and pyarrow raise ValueErrors)
        reason = " ".join(str(err).split())[:200]
        raise BaloraError(f"cannot read '{path}' as {kind}: {reason}; check that it is a well-formed, "
                          f"UTF-8 {kind} file") from None
    return frame.to_dict(orient="records")


def load_local(path: Path, text_column: str, label_column: str) -> TextDataset:
    """A file (split into pool/validation/test here) or a folder with `train`, `validation`, `test` files."""
    if path.is_file():
        examples, names = _labelled(read_rows(path), text_column, label_column, str(path))
        test = max(1, len(examples) // 5)
        return fixed_split(path.stem, names, examples, test, max(1, len(examples) // 10))
    files = {f.stem: f for f in sorted(path.iterdir()) if f.suffix in LOCAL_SUFFIXES}
    if "train" not in files or "test" not in files:
        raise BaloraError(f"folder '{path}' needs train.* and test.* files (csv, jsonl or parquet), found {sorted(files)}")
    pool, names = _labelled(read_rows(files["train"]), text_column, label_column, str(files["train"]))
    test, _ = _labelled(read_rows(files["test"]), text_column, label_column, str(files["test"]), names)
    if "validation" in files:
        validation, _ = _labelled(read_rows(files["validation"]), text_column, label_column,
                                  str(files["validation"]), names)
    else:  # carve a validation set out of the training file, reproducibly
        rng = random.Random(SPLIT_SEED)
        rng.shuffle(pool)
        cut = max(1, len(pool) // 10)
        validation, pool = pool[:cut], pool[cut:]
    return TextDataset(path.name, names, pool, validation, test)


def hub_splits(name: str, args: tuple[str, ...], what: str, offline: str) -> Any:
    """`datasets.load_dataset(*args)` for dataset `name`; when the hub is unreachable or has no such dataset, a
    BaloraError saying `what` else the name is not, and what to use `offline`."""
    import datasets  # deferred: importing `datasets` costs seconds

    try:
        if not assets.hub_reachable():
            raise ConnectionError("hub unreachable")
        return datasets.load_dataset(*args)
    except Exception as err:  # noqa: BLE001 - the hub raises many types; all mean "unavailable"
        raise BaloraError(f"unknown dataset '{name}': {what}, and not loadable from the Hugging Face hub "
                          f"({type(err).__name__}); offline, use {offline}") from None


def load_hub(name: str, text_column: str | None, label_column: str) -> TextDataset:
    """A Hugging Face dataset. GLUE's test labels are hidden, so its validation split is our test set
    and a validation set is carved from train."""

    args = HUB_ALIASES.get(name, tuple(name.split(":", 1)))
    text_column = text_column or ("sentence" if args == ("glue", "sst2") else "text")
    splits = hub_splits(name, args, f"not embedded ({', '.join(EMBEDDED_DATASETS)}), not a local file",
                        "--dataset rotten_tomatoes or a local CSV/JSONL/Parquet file")
    train = splits["train"]
    class_names = getattr(train.features.get(label_column), "names", None)
    label_values = [str(i) for i in range(len(class_names))] if class_names else None
    pool, label_values = _labelled(list(train), text_column, label_column, name, label_values)
    has_test_labels = "test" in splits and min(splits["test"][label_column]) >= 0
    evaluation = splits["test" if has_test_labels else "validation"]
    test, _ = _labelled(list(evaluation), text_column, label_column, name, label_values)
    rng = random.Random(SPLIT_SEED)
    rng.shuffle(pool)
    cut = min(EMBEDDED_VALIDATION_SIZE, len(pool) // 10)
    return TextDataset(name, list(class_names or label_values), pool[cut:], pool[:cut], test)


def load_text_dataset(name: str, text_column: str | None = None, label_column: str = "label") -> TextDataset:
    """Resolve a dataset name: embedded, local path, or Hugging Face hub."""
    if name == "rotten_tomatoes":
        return load_rotten_tomatoes()
    if name == "presidential_debates":
        return load_presidential_debates()
    path = Path(name)
    if path.exists():
        return load_local(path, text_column or "text", label_column)
    return load_hub(name, text_column, label_column)


def select_training(pool: list[Example], shots: int | None, train_size: int | None, seed: int,
                    min_classes: int = 2) -> list[Example]:
    """The training set for one run: `shots` per class (stratified), `train_size` at random, or the pool.
    A classifier needs `min_classes` classes; instruction data (whose label is only a sampling stratum) 1."""
    rng = random.Random(seed)
    if shots is not None:
        by_class: dict[int, list[Example]] = {}
        for example in pool:
            by_class.setdefault(example.label, []).append(example)
        smallest = min(by_class.items(), key=lambda kv: len(kv[1]))
        if shots > len(smallest[1]):
            raise BaloraError(
                f"--shots {shots} is larger than class {smallest[0]}, which has {len(smallest[1])} "
                f"training examples; use --shots {len(smallest[1])} or fewer"
            )
        chosen = [e for label in sorted(by_class) for e in rng.sample(by_class[label], shots)]
    elif train_size is not None:
        if train_size > len(pool):
            raise BaloraError(f"--train-size {train_size} exceeds the training pool ({len(pool)}); use at most {len(pool)}")
        chosen = rng.sample(pool, train_size)
    else:
        chosen = pool[:]
    classes = Counter(e.label for e in chosen)
    if len(classes) < min_classes:
        found = f"only class {next(iter(classes))}" if classes else "no examples"
        raise BaloraError(f"the training set has {found} ({len(chosen)} example{'s' * (len(chosen) != 1)}): a classifier needs two classes "
                          "or more; draw a larger --train-size or check --label-column")
    rng.shuffle(chosen)
    return chosen


def _class_order(label: Hashable | None) -> tuple:
    return (label is None, 0 if label is None else label)


def stratified_indices(labels: Sequence[Hashable | None], size: int, seed: int) -> list[int]:
    """Positions of a seeded random sample of `size` items, stratified by label, in random order.

    Each class gets its share of `size` (largest remainder), drawn uniformly at random within the class,
    so neither text length nor order can bias the sample. Items whose label is None form one group of
    their own (all None: a plain random sample). With `size` at least the number of items, all are kept.
    """
    if size >= len(labels):
        return list(range(len(labels)))
    by_class: dict[Hashable | None, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class, key=_class_order)
    quotas = {c: size * len(by_class[c]) // len(labels) for c in classes}
    remainders = sorted(classes, key=lambda c: (-(size * len(by_class[c]) % len(labels)), _class_order(c)))
    for label in remainders[: size - sum(quotas.values())]:
        quotas[label] += 1
    rng = random.Random(seed)
    chosen = [i for c in classes for i in rng.sample(by_class[c], quotas[c])]
    rng.shuffle(chosen)
    return chosen


def importance_sample(examples: list[Example], size: int, seed: int) -> list[Example]:
    """A seeded random sample of `size` training examples, stratified by class, for the importance pass.

    Importance scores, the warm-start gradient and EVA's statistics all come from this one sample, so it
    must represent the training set (`stratified_indices`). With `size` at least the training set, the
    whole set is used.
    """
    return [examples[i] for i in stratified_indices([e.label for e in examples], size, seed)]


def make_loader(examples: list[Example], tokenizer: PreTrainedTokenizerBase, batch_size: int,
                shuffle: bool, seed: int = 0, max_length: int = 128, pad_to_multiple_of: int = 1) -> DataLoader:
    """Batches padded to the longest sequence in each batch (rounded up to `pad_to_multiple_of` tokens),
    not to a fixed length.

    Without shuffling (evaluation), examples are ordered by length so that each batch holds texts
    of similar length: metrics do not depend on order, and padding, which costs as much compute
    as real tokens, nearly vanishes (about 2× faster evaluation on short snippets).
    """
    if not shuffle:
        examples = sorted(examples, key=lambda e: len(e.text))

    def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
        encoded = tokenizer([e.text for e in batch], padding="longest", truncation=True, max_length=max_length,
                            pad_to_multiple_of=pad_to_multiple_of if pad_to_multiple_of > 1 else None,
                            return_tensors="pt")
        encoded["labels"] = torch.tensor([e.label for e in batch])
        return dict(encoded)

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(examples, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)

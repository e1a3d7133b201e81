from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from conftest import sentiment_rows

from balora.data import Example, load_text_dataset, make_loader, select_training
from balora.errors import BaloraError


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_files_load_with_fixed_splits(tmp_path, suffix):
    rows = sentiment_rows(100)
    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame(rows)
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".jsonl": lambda: path.write_text("\n".join(json.dumps(r) for r in rows))}[suffix]()
    first, second = load_text_dataset(str(path)), load_text_dataset(str(path))
    assert first.num_labels == 2
    assert len(first.test) == 20 and len(first.validation) == 10 and len(first.pool) == 70
    assert [e.text for e in first.test] == [e.text for e in second.test]


def test_folder_with_named_splits_and_custom_columns_and_many_classes(tmp_path):
    for split, n in (("train", 30), ("test", 9)):
        pd.DataFrame({"review": [f"text {i}" for i in range(n)], "stars": [f"c{i % 3}" for i in range(n)]}).to_csv(
            tmp_path / f"{split}.csv", index=False)
    data = load_text_dataset(str(tmp_path), text_column="review", label_column="stars")
    assert data.label_names == ["c0", "c1", "c2"] and len(data.test) == 9
    assert len(data.pool) + len(data.validation) == 30


def test_missing_columns_and_empty_files_are_clear_errors(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"sentence": ["a"], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(BaloraError, match="no column 'text'.*--text-column"):
        load_text_dataset(str(path))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BaloraError, match="empty"):
        load_text_dataset(str(empty))


def test_unknown_dataset_offline_names_the_embedded_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BaloraError, match="unknown dataset 'no_such_dataset_xyz'.*--dataset rotten_tomatoes"):
        load_text_dataset("no_such_dataset_xyz")


POOL = [Example(f"t{i}", i % 3) for i in range(60)]


def test_k_shot_is_stratified_and_seeded():
    chosen = select_training(POOL, shots=4, train_size=None, seed=1)
    assert Counter(e.label for e in chosen) == {0: 4, 1: 4, 2: 4}
    assert chosen == select_training(POOL, 4, None, 1)
    assert chosen != select_training(POOL, 4, None, 2)


def test_k_shot_larger_than_a_class_and_oversized_subsets_are_errors():
    with pytest.raises(BaloraError, match="--shots 21 is larger than class 0"):
        select_training(POOL, 21, None, 0)
    with pytest.raises(BaloraError, match="--train-size 61 exceeds"):
        select_training(POOL, None, 61, 0)
    assert len(select_training(POOL, None, 10, 0)) == 10


def test_batches_pad_to_their_longest_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [Example("good", 1), Example("bad movie", 0), Example("the plot was very dull", 0), Example("fine", 1)]
    batches = list(make_loader(examples, tokenizer, batch_size=2, shuffle=False))
    # Sorted by length for evaluation: the short pair pads to 3 tokens ([CLS] w [SEP]), not to the longest overall.
    assert batches[0]["input_ids"].shape[1] < batches[1]["input_ids"].shape[1]
    assert batches[1]["input_ids"].shape[1] == 7
    padded = list(make_loader(examples, tokenizer, batch_size=2, shuffle=False, pad_to_multiple_of=8))
    assert [b["input_ids"].shape[1] for b in padded] == [8, 8]  # fewer distinct shapes, the same tokens
    assert [b["attention_mask"].sum().item() for b in padded] == [b["attention_mask"].sum().item() for b in batches]


def test_glue_sst2_through_the_datasets_path(monkeypatch):
    """The hub path, with `datasets.load_dataset` answered locally: GLUE hides test labels (-1), so
    its validation split becomes our test set and validation is carved from train."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = sentiment_rows(60)
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": [r["text"] for r in rows], "label": [r["label"] for r in rows]},
                                            features=features),
        "validation": datasets.Dataset.from_dict({"sentence": ["good film", "awful plot"], "label": [1, 0]}, features=features),
        "test": datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [-1, -1]}, features=features),
    })
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: calls.append(args) or splits)
    monkeypatch.setattr("balora.assets.hub_reachable", lambda: True)
    data = load_text_dataset("glue/sst2")
    assert calls == [("glue", "sst2")]
    assert data.label_names == ["negative", "positive"]
    assert [(e.text, e.label) for e in data.test] == [("good film", 1), ("awful plot", 0)]
    assert len(data.pool) + len(data.validation) == 60 and len(data.validation) == 6


def test_importance_sample_is_stratified_and_not_biased_by_length():
    from balora.data import Example, importance_sample

    # 300 examples whose length grows with their index; 2:1 class ratio
    examples = [Example("word " * (i + 1), int(i % 3 != 0)) for i in range(300)]
    sample = importance_sample(examples, 60, seed=7)
    assert len(sample) == 60 and len({id(e) for e in sample}) == 60
    assert sum(e.label for e in sample) == 40  # the training set's class shares, exactly
    lengths = sorted(len(e.text) for e in sample)
    mean_length = sum(len(e.text) for e in examples) / len(examples)
    assert abs(sum(lengths) / len(lengths) - mean_length) < 0.25 * mean_length  # the 60 shortest average a fifth
    assert importance_sample(examples, 60, seed=7) == sample and importance_sample(examples, 60, seed=8) != sample
    assert importance_sample(examples, 1000, seed=7) == examples

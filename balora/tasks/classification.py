"""Text classification, and what every classifier task shares (`LabelledTask`): labelled examples, a new head
over the dataset's label names, accuracy as the primary metric, macro F1, precision and recall beside it, and
the majority-class rate stored with the metrics.

Any model no other task recognises is trained as a text classifier (`fallback`), a causal LM included when
`--task classification` says so.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from balora.config import RunConfig
from balora.data import EMBEDDED_DATASETS, Example, TextDataset, load_text_dataset, make_loader
from balora.models import load_classifier, load_tokenizer
from balora.tasks.base import ACCURACY, Metric, Processor, Task, weights_cast_once


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1, precision and recall (a class never predicted has precision 0)."""
    precision, recall, f1 = [], [], []
    for c in range(num_labels):
        tp = int(((predictions == c) & (labels == c)).sum())
        predicted, actual = int((predictions == c).sum()), int((labels == c).sum())
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"accuracy": float((predictions == labels).float().mean()),
            "f1": sum(f1) / num_labels, "precision": sum(precision) / num_labels, "recall": sum(recall) / num_labels}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_labels: int) -> dict[str, float]:
    """Loss and classification metrics of `model` on `loader` (padding does not affect them).

    The loss is the task's cross-entropy computed here from the logits, not the model's `loss`, which
    for AdaLoRA includes its orthogonality penalty (PEFT adds it in eval mode too); labels are not
    passed to the model, so that penalty is not even computed."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predictions, labels, loss_sum, count = [], [], 0.0, 0
    with weights_cast_once(model):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            targets = batch.pop("labels")
            logits = model(**batch).logits
            loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            count += targets.shape[0]
            predictions.append(logits.argmax(-1).cpu())
            labels.append(targets.cpu())
    model.train(was_training)
    metrics = classification_metrics(torch.cat(predictions), torch.cat(labels), num_labels)
    metrics["loss"] = loss_sum / count
    return metrics


class LabelledTask(Task):
    """A classifier task: examples with labels, a head over the label names, scored by accuracy."""

    metric: ClassVar[Metric] = ACCURACY
    min_classes: ClassVar[int] = 2  # a classifier trained on one class learns nothing to compare

    def labels(self, data: TextDataset) -> list[str]:
        return data.label_names

    def evaluate(self, model: nn.Module, loader: DataLoader, data: TextDataset) -> dict[str, float]:
        return evaluate(model, loader, data.num_labels)

    def reference_metrics(self, data: TextDataset) -> dict[str, float]:
        return {"majority_rate": data.majority_rate()}

    def headline(self, metrics: dict[str, float]) -> str:
        return (f"accuracy {metrics['accuracy']:.4f}  f1 {metrics['f1']:.4f}  "
                f"(majority class {metrics['majority_rate']:.3f})")


class Classification(LabelledTask):
    """Labelled text, a sequence classifier."""

    name = "classification"
    label = "text classification"
    model_kind = "text classifier"
    embedded_models = ("minilm",)
    embedded_datasets = EMBEDDED_DATASETS
    # The warm-start step γ (`balora.initialisation`): the tested step with the lowest mean validation loss
    # before any training (`benchmarks/warmstart_gamma.py`, seeds 42-44, rank-equivalent 8). MiniLM on Rotten
    # Tomatoes 64-shot (query/value): 0.6938 with B = 0, 0.6937 at 0.005, higher at 0.01-0.1.
    warm_start_gamma = 0.005
    peft_task_type = "SEQ_CLS"
    model_class = AutoModelForSequenceClassification
    fallback = True  # every model loads as a sequence classifier, a new head on its last hidden state

    def read_dataset(self, config: RunConfig) -> TextDataset:
        return load_text_dataset(config.dataset, config.text_column, config.label_column)

    def load_processor(self, config: RunConfig) -> PreTrainedTokenizerBase:
        return load_tokenizer(config.model)

    def load_model(self, config: RunConfig, labels: list[str] | None) -> PreTrainedModel:
        """A fresh classifier head over `labels`, seeded."""
        return load_classifier(config.model, len(labels or []), config.seed)

    def loader(self, examples: list[Example], processor: Processor, model: nn.Module, config: RunConfig,
               batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(examples, processor, batch_size, shuffle, config.seed, config.max_length,
                           config.pad_to_multiple_of)

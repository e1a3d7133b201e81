"""The three tasks in one place: the dataset, model and input processor each loads.

`run.setup` loads through these and the sweep estimator sizes datasets through `load_task_data`, so a
new task is added here once.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from balora.config import RunConfig
from balora.data import TextDataset, load_text_dataset
from balora.images import ImageDataset, load_image_dataset
from balora.instructions import InstructionDataset, load_instruction_dataset
from balora.models import load_causal_lm, load_classifier, load_image_classifier, load_image_processor, load_tokenizer

TaskDataset = TextDataset | InstructionDataset | ImageDataset


def load_task_data(config: RunConfig, task: str) -> TaskDataset:
    """The run's dataset as its task reads it: instructions, images, or labelled text."""
    if task == "causal_lm":
        return load_instruction_dataset(config.dataset, config.instruction_columns)
    if task == "image":
        return load_image_dataset(config.dataset, config.label_column)
    return load_text_dataset(config.dataset, config.text_column, config.label_column)


def load_task_model(config: RunConfig, task: str, label_names: list[str]) -> PreTrainedModel:
    """The base model with the task's head: a fresh classifier over `label_names`, seeded, for the two
    classification tasks; a causal LM's own head (no labels) for instructions."""
    if task == "causal_lm":
        return load_causal_lm(config.model)
    if task == "image":
        return load_image_classifier(config.model, label_names, config.seed)
    return load_classifier(config.model, len(label_names), config.seed)


def load_task_processor(config: RunConfig, task: str) -> PreTrainedTokenizerBase | BaseImageProcessor:
    """The tokenizer, or for images the image processor."""
    return load_image_processor(config.model) if task == "image" else load_tokenizer(config.model)

"""The three tasks in one place: the dataset, model and input processor each loads, and the settings
whose default depends on the task.

`run.setup` loads through these and the sweep estimator sizes datasets through `load_task_data`, so a
new task is added here once.
"""

from __future__ import annotations

import dataclasses

from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from balora.config import RunConfig
from balora.data import EMBEDDED_DATASETS as EMBEDDED_TEXT
from balora.data import TextDataset, load_text_dataset
from balora.errors import BaloraError, missing_local_path
from balora.images import IMAGE_DATASETS, ImageDataset, load_image_dataset
from balora.instructions import EMBEDDED_INSTRUCTIONS, InstructionDataset, load_instruction_dataset
from balora.models import (
    EMBEDDED_TASKS,
    load_causal_lm,
    load_classifier,
    load_image_classifier,
    load_image_processor,
    load_tokenizer,
    task_of,
)

TaskDataset = TextDataset | InstructionDataset | ImageDataset

# The warm-start step γ (`balora.initialisation`) each task defaults to: the tested step with the lowest
# mean validation loss before any training (`benchmarks/warmstart_gamma.py`, seeds 42-44, rank-equivalent 8).
# MiniLM on Rotten Tomatoes 64-shot (query/value): 0.6938 with B = 0, 0.6937 at 0.005, higher at 0.01-0.1.
# SmolLM2 on 200 critic_instructions examples (all 210 projections, 64 importance samples, 64 validation
# examples): 4.353 with B = 0, 4.217 at 3e-5, 4.137 at 1e-4, 4.346 at 3e-4, 6.509 at 1e-3 and 17.230 at
# 0.005: a pretrained causal LM with every projection adapted is far more sensitive to the step.
WARM_START_GAMMA = {"classification": 0.005, "image": 0.005, "causal_lm": 1e-4}
# Each task's embedded datasets, known by name before anything loads; how a message names the task and its models.
EMBEDDED_DATASETS = {"classification": EMBEDDED_TEXT, "causal_lm": EMBEDDED_INSTRUCTIONS, "image": IMAGE_DATASETS}
TASK_NAMES = {"classification": "text classification", "causal_lm": "instruction tuning", "image": "image classification"}
MODEL_KINDS = {"classification": "text classifier", "causal_lm": "causal LM", "image": "image classifier"}


def with_task_defaults(config: RunConfig, task: str | None = None) -> RunConfig:
    """`config` with the fields it leaves to the task (`gamma`) set to the task's default, so that the
    config a run stores, and its key, say what the run did. `task` is the model's, looked up if not given."""
    if config.gamma is not None:
        return config
    return dataclasses.replace(config, gamma=WARM_START_GAMMA[task or task_of(config.model, config.task)])


def check_dataset(config: RunConfig, task: str) -> None:
    """Refuse, before anything is fetched, built or looked up on the hub, a dataset `task` cannot read: an embedded
    one of another task (naming the models that fit it), or a local path that is not there."""
    owner = next((t for t, names in EMBEDDED_DATASETS.items() if config.dataset in names), task)
    if owner != task:
        fits = " or ".join(m for m, t in EMBEDDED_TASKS.items() if t == owner)
        as_classifier = (f", or --task classification to train {config.model} as one"
                         if (task, owner) == ("causal_lm", "classification") else "")
        raise BaloraError(f"model '{config.model}' ({TASK_NAMES[task]}) and dataset '{config.dataset}' "
                          f"({TASK_NAMES[owner]}) belong to different tasks; for {config.dataset} use --model {fits} "
                          f"or another {MODEL_KINDS[owner]} (a local folder or hub name){as_classifier}")
    if missing_local_path(config.dataset):
        raise BaloraError(f"dataset '{config.dataset}' does not exist; check the path, or use an embedded dataset "
                          f"({', '.join(EMBEDDED_DATASETS[task])})")


def load_task_data(config: RunConfig, task: str) -> TaskDataset:
    """The run's dataset as its task reads it: instructions, images, or labelled text."""
    check_dataset(config, task)
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

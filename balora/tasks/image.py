"""Image classification: labelled images, an image classifier with a new head, the image processor's resizing
and normalisation. It has no PEFT task type (PEFT's ViT example): the model's forward takes `pixel_values`,
and the head is named in `modules_to_save`."""

from __future__ import annotations

from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from balora import assets
from balora.config import RunConfig
from balora.images import IMAGE_DATASETS, ImageDataset, ImageExample, load_image_dataset, make_image_loader
from balora.models import load_image_classifier, load_image_processor
from balora.tasks.base import Processor
from balora.tasks.classification import LabelledTask


class ImageClassification(LabelledTask):
    """Labelled images, an image classifier (ViT, DeiT, ...)."""

    name = "image"
    label = "image classification"
    model_kind = "image classifier"
    embedded_models = (assets.VIT_FASHION_NAME,)
    embedded_datasets = IMAGE_DATASETS
    warm_start_gamma = 0.005  # the text classifiers' measured step (`balora.tasks.classification`)
    peft_task_type = None
    model_class = AutoModelForImageClassification
    report_analyses = ("layer importance",)

    def recognises(self, model_config: PretrainedConfig) -> bool:
        """A model type transformers can load for image classification."""
        return model_config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    def read_dataset(self, config: RunConfig) -> ImageDataset:
        return load_image_dataset(config.dataset, config.label_column)

    def load_processor(self, config: RunConfig) -> BaseImageProcessor:
        return load_image_processor(config.model)

    def load_model(self, config: RunConfig, labels: list[str] | None) -> PreTrainedModel:
        """A fresh classifier head over `labels`, seeded."""
        return load_image_classifier(config.model, labels or [], config.seed)

    def loader(self, examples: list[ImageExample], processor: Processor, model: nn.Module, config: RunConfig,
               batch_size: int, shuffle: bool) -> DataLoader:
        return make_image_loader(examples, processor, model.config.num_channels, batch_size, shuffle, config.seed)

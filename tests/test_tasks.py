"""Each task loads its own kind of dataset, model and processor through balora.tasks, and the sweep
estimator sizes datasets through the same function as a run."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import save_tiny_vit, tiny_gpt2_lm, tiny_lm_tokenizer, write_image_folder
from transformers import PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from balora.config import RunConfig
from balora.errors import BaloraError
from balora.estimate import dataset_sizes
from balora.images import ImageDataset
from balora.instructions import InstructionDataset
from balora.tasks import load_task_data, load_task_model, load_task_processor, with_task_defaults


def task_run(task: str, request: pytest.FixtureRequest, tmp_path: Path) -> RunConfig:
    """A run of `task` on tiny local data: GPT-2 for causal LM, a grey-scale ViT for images, BERT otherwise."""
    if task == "causal_lm":
        tiny_lm_tokenizer().save_pretrained(tmp_path / "lm")
        tiny_gpt2_lm().save_pretrained(tmp_path / "lm")
        return RunConfig(model=str(tmp_path / "lm"), dataset=str(request.getfixturevalue("tiny_alpaca")))
    if task == "image":
        return RunConfig(model=str(save_tiny_vit(tmp_path / "vit")),
                         dataset=str(write_image_folder(tmp_path / "images", classes=3)))
    return RunConfig(model=str(request.getfixturevalue("tiny_model_dir")), dataset=str(request.getfixturevalue("tiny_csv")))


@pytest.mark.parametrize("task", ["classification", "causal_lm", "image"])
def test_each_task_loads_its_own_data_model_and_processor(task: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    config = task_run(task, request, tmp_path)
    data = load_task_data(config, task)
    assert isinstance(data, InstructionDataset) == (task == "causal_lm")
    assert isinstance(data, ImageDataset) == (task == "image")
    labels = [] if task == "causal_lm" else data.label_names
    model = load_task_model(config, task, labels)
    if task == "causal_lm":
        assert model.get_output_embeddings() is not None
    else:
        assert model.config.num_labels == len(labels)
    processor = load_task_processor(config, task)
    assert isinstance(processor, BaseImageProcessor if task == "image" else PreTrainedTokenizerBase)


@pytest.mark.parametrize("task", ["classification", "causal_lm", "image"])
def test_estimator_sizes_the_dataset_a_run_loads(task: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    config = task_run(task, request, tmp_path)
    data = load_task_data(config, task)
    sizes = dataset_sizes(config)
    assert (sizes.pool, sizes.validation, sizes.test) == (len(data.pool), len(data.validation), len(data.test))


@pytest.mark.parametrize("task, gamma", [("classification", 0.005), ("causal_lm", 1e-4), ("image", 0.005)])
def test_the_warm_start_step_defaults_to_the_task_s_own(task, gamma, request, tmp_path):
    config = task_run(task, request, tmp_path)
    assert config.gamma is None and with_task_defaults(config).gamma == gamma
    assert with_task_defaults(replace(config, gamma=0.02)).gamma == 0.02  # a step the user gives is kept


def test_a_classifier_s_resolved_config_keeps_the_key_its_runs_were_stored_under():
    """Runs stored when 0.005 was every task's default keep their keys, so sweeps still find them done."""
    assert with_task_defaults(RunConfig()).key() == RunConfig(gamma=0.005).key()


@pytest.mark.parametrize("model, task, dataset, message", [
    ("vit-fashion", "image", "rotten_tomatoes", "model 'vit-fashion' (image classification) and dataset 'rotten_tomatoes' "
     "(text classification) belong to different tasks; for rotten_tomatoes use --model minilm or another text classifier"),
    ("minilm", "classification", "critic_instructions", "for critic_instructions use --model smollm2 or another causal LM"),
    ("minilm", "classification", "fashion_mnist", "for fashion_mnist use --model vit-fashion or another image classifier"),
    ("smollm2", "causal_lm", "presidential_debates", "for presidential_debates use --model minilm or another text "
     "classifier (a local folder or hub name), or --task classification to train smollm2 as one"),
    ("vit-fashion", "image", "critic_instructions", "for critic_instructions use --model smollm2"),
])
def test_a_model_and_an_embedded_dataset_of_another_task_are_refused_before_loading(model, task, dataset, message,
                                                                                    monkeypatch):
    from balora import assets

    monkeypatch.setattr(assets, "fetch", lambda asset: pytest.fail(f"{asset.name} was fetched"))
    with pytest.raises(BaloraError) as err:
        load_task_data(RunConfig(model=model, dataset=dataset), task)
    assert message in str(err.value)


@pytest.mark.parametrize("task", ["classification", "causal_lm", "image"])
@pytest.mark.parametrize("path", ["/nonexistent/file.csv", "./nonexistent", "../nonexistent/images"])
def test_a_missing_local_dataset_is_called_missing_not_looked_up_on_the_hub(task, path):
    with pytest.raises(BaloraError, match=f"dataset '{re.escape(path)}' does not exist; check the path"):
        load_task_data(RunConfig(dataset=path), task)

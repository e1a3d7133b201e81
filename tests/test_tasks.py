"""A task is one unit (`balora.tasks`): each registered task declares its metric and loads its own kind of
dataset, model and processor, batches and evaluates them; the sweep estimator sizes datasets through the same
hook as a run; the modules that run a task name none; and a task registered from outside runs end to end."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import save_tiny_vit, tiny_gpt2_lm, tiny_lm_tokenizer, write_image_folder
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from balora import tasks
from balora.config import RunConfig
from balora.errors import BaloraError
from balora.estimate import dataset_sizes
from balora.images import ImageDataset
from balora.instructions import InstructionDataset
from balora.run import run_experiment
from balora.tasks import LOSS, Classification, task_of, with_task_defaults
from balora.training import TrainLog

TASKS = ["classification", "causal_lm", "image"]
PACKAGE = Path(__file__).parents[1] / "balora"


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


@pytest.mark.parametrize("task, metric, higher_is_better", [("classification", "accuracy", True),
                                                             ("causal_lm", "loss", False), ("image", "accuracy", True)])
def test_each_task_declares_its_primary_metric_with_a_direction(task, metric, higher_is_better):
    declared = tasks.get(task).metric
    assert (declared.name, declared.higher_is_better) == (metric, higher_is_better)
    assert declared.margin == 0.01  # 1 pp of accuracy, 0.01 nats of loss: the report's defaults


def test_the_registered_tasks_are_the_three_in_the_order_messages_list_them():
    assert tasks.names() == tuple(TASKS)
    assert [t.name for t in tasks.all_tasks() if t.fallback] == ["classification"]
    with pytest.raises(BaloraError, match="unknown task 'regression'; choose one of auto, classification, causal_lm, image"):
        tasks.get("regression")


@pytest.mark.parametrize("task", TASKS)
def test_each_task_loads_its_own_data_model_and_processor(task: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    config = task_run(task, request, tmp_path)
    unit = task_of(config.model)
    assert unit.name == task  # the model's saved config says which task it is
    data = unit.load_data(config)
    assert isinstance(data, InstructionDataset) == (task == "causal_lm")
    assert isinstance(data, ImageDataset) == (task == "image")
    labels = unit.labels(data)
    model = unit.load_model(config, labels)
    if task == "causal_lm":
        assert labels is None and model.get_output_embeddings() is not None
    else:
        assert model.config.num_labels == len(labels)
    processor = unit.load_processor(config)
    assert isinstance(processor, BaseImageProcessor if task == "image" else PreTrainedTokenizerBase)


@pytest.mark.parametrize("task", TASKS)
def test_each_task_batches_and_evaluates_its_data_to_its_primary_metric(task, request, tmp_path):
    config = task_run(task, request, tmp_path)
    unit = tasks.get(task)
    data = unit.load_data(config)
    model = unit.load_model(config, unit.labels(data))
    loader = unit.loader(data.validation[:6], unit.load_processor(config), model, config, batch_size=4, shuffle=False)
    assert all("labels" in batch for batch in loader)
    metrics = unit.evaluate(model, loader, data)
    assert unit.metric.name in metrics and "loss" in metrics
    assert set(unit.reference_metrics(data)) == (set() if task == "causal_lm" else {"majority_rate"})


@pytest.mark.parametrize("path", [PACKAGE / f"{name}.py" for name in ("run", "training", "tuning", "api", "cli",
                                                                      "quantisation", "models", "estimate", "sweeps",
                                                                      "specs")], ids=lambda p: p.name)
def test_the_modules_that_run_a_task_name_none(path: Path):
    """Task names appear only in `balora/tasks/`: no string literal of the code that runs, trains, tunes,
    plans, merges or prints a run equals one (a comparison with a task name, a dict keyed by task names)."""
    named = [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and node.value in TASKS]
    assert named == [], f"balora/{path.name} names tasks: {named}"


def test_convergence_reads_the_metric_s_direction():
    log = TrainLog(validation=[(0, {"accuracy": 0.5, "loss": 4.0}), (10, {"accuracy": 0.9, "loss": 1.04}),
                               (20, {"accuracy": 0.92, "loss": 1.0})])
    assert log.convergence_step(tasks.ACCURACY) == 10  # 0.9 >= 0.95 × 0.92
    assert log.convergence_step(LOSS) == 10  # 1.04 × 0.95 <= 1.0
    assert TrainLog(validation=[(0, {"loss": 2.0}), (5, {"loss": 1.1}), (9, {"loss": 1.0})]).convergence_step(LOSS) == 9


@pytest.mark.parametrize("task", TASKS)
def test_estimator_sizes_the_dataset_a_run_loads(task: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    config = task_run(task, request, tmp_path)
    data = tasks.get(task).load_data(config)
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
        tasks.get(task).load_data(RunConfig(model=model, dataset=dataset))
    assert message in str(err.value)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("path", ["/nonexistent/file.csv", "./nonexistent", "../nonexistent/images"])
def test_a_missing_local_dataset_is_called_missing_not_looked_up_on_the_hub(task, path):
    with pytest.raises(BaloraError, match=f"dataset '{re.escape(path)}' does not exist; check the path"):
        tasks.get(task).load_data(RunConfig(dataset=path))


class LossScoredText(Classification):
    """A fourth task, registered from here: BERT-type text classifiers, read by their loss, with no
    majority-class rate, a γ of its own, and no embedded models or data."""

    name = "loss_scored_text"
    label = "loss-scored text classification"
    model_kind = "loss-scored classifier"
    embedded_models = ()
    embedded_datasets = ()
    warm_start_gamma = 0.02
    metric = LOSS
    fallback = False

    def recognises(self, model_config: PretrainedConfig) -> bool:
        return model_config.model_type == "bert"

    def reference_metrics(self, data) -> dict[str, float]:
        return {}


@pytest.fixture
def fourth_task():
    task = tasks.register(LossScoredText())
    yield task
    tasks.unregister(task.name)


def test_a_task_registered_from_outside_runs_through_the_run_s_hooks(fourth_task, tiny_model_dir, tiny_csv):
    """run.setup and run_experiment know the task from the registry alone: `--task auto` picks it from the model's
    config, it sets γ, and its metric decides the convergence step."""
    config = RunConfig(model=str(tiny_model_dir), dataset=str(tiny_csv), method="lora", shots=8, budget_rank=2,
                       epochs=2, batch_size=8, gradient_samples=16, evaluations=3, min_rank=1, eval_examples=16)
    result = run_experiment(config, progress=False).result
    assert result["task"] == "loss_scored_text" and result["config"]["gamma"] == 0.02
    assert "majority_rate" not in result["metrics"] and "loss" in result["metrics"]
    log = TrainLog(validation=[(step, values) for step, values in result["curves"]["validation"]])
    assert result["convergence_step"] == log.convergence_step(LOSS)
    assert tasks.get("loss_scored_text") is fourth_task


"""What a task is: the `Task` a run calls at fixed points, its primary `Metric`, and the registry of tasks.

A task declares what the rest of balora needs to know about it (its name, how messages name it and its
models, its embedded models and datasets, its default warm-start step γ, PEFT's task type, the transformers
class that builds its model, its primary metric, the fewest classes its training set may hold) and has the
hooks a run calls unconditionally, in this order (its options, a dataclass, are `options`):

    load_data(config)                           its dataset (`read_dataset`, once `check_dataset` found it fits)
    load_processor(config)                      the tokenizer, or an image processor
    labels(data)                                the label names its head predicts; None for a task without
    load_model(config, labels)                  the base model with the task's head
    loader(examples, processor, model, config, batch_size, shuffle)       batches (collation)
    evaluate(model, loader, data)               the metrics of a model on one split
    reference_metrics(data)                     what the data alone scores (a classifier's majority-class rate)
    generate(model, data, processor, config)    where `generates`: answers to test prompts, stored with the result
    headline(metrics)                           the test metrics as `balora train` prints them

`recognises(model_config)` says whether a model's saved config is of this task (`--task auto`); a model no
task recognises is trained as the `fallback` task. `register` makes a task known to `--task`, `task_of`,
sweep specs, the dry run and the report; `balora.tasks` registers the built-in ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from balora.config import RunConfig
from balora.errors import BaloraError, missing_local_path
from balora.models import model_config
from balora.options import TASK_OPTIONS, Options

Processor = PreTrainedTokenizerBase | BaseImageProcessor


def number(value: float, digits: int, sign: bool = False) -> str:
    """`value` with `digits` decimals, and with "+" before a positive one where `sign`. A non-zero value that rounds
    to zero gets up to three more decimals, down to its first digit, and keeps its sign: "-0.00" read as a minus on
    a zero, and "0.00" as an interval's end that excludes 0 where the interval includes it ([-0.004, +6.69])."""
    for places in range(digits, digits + 4):
        text = f"{value:{'+' if sign else ''}.{places}f}"
        if float(text) != 0:
            return text
    return f"{0:.{digits}f}"


@dataclass(frozen=True)
class Metric:
    """A task's primary metric: what validation curves, convergence, selection and the report read a run by, and
    how the report writes an amount of it (a difference, a margin): `unit` after scaling by `scale`, with `digits`
    decimals."""

    name: str  # its key in a run's metrics and validation points
    higher_is_better: bool
    margin: float = 0.01  # the equivalence margin where no spec declares one, in the metric's own units
    unit: str = ""
    scale: float = 1.0
    digits: int = 4

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is: `sign × (a − b)` is a's gain over b."""
        return 1.0 if self.higher_is_better else -1.0

    def reached(self, value: float, final: float, fraction: float) -> bool:
        """Whether `value` is within `fraction` of `final`: at least `fraction` × final where higher is better,
        at most final / `fraction` where lower is."""
        return value >= fraction * final if self.higher_is_better else value * fraction <= final

    def amount(self, value: float, exact: bool = False) -> str:
        """`value` in the unit: "2.34 pp"; `exact` for a declared number such as a margin, as written ("1 pp")."""
        number = f"{self.scale * value:g}" if exact else f"{self.scale * value:.{self.digits}f}"
        return f"{number} {self.unit}"

    def signed(self, value: float) -> str:
        """A difference in the unit, with its sign and without the unit (a table's column names it): "+2.34"."""
        return number(self.scale * value, self.digits, sign=True)


ACCURACY = Metric("accuracy", higher_is_better=True, unit="pp", scale=100.0, digits=2)  # margin ±1 pp
LOSS = Metric("loss", higher_is_better=False, unit="nats")  # margin ±0.01 nats of test cross-entropy


class Task:
    """One task (module docstring). A subclass sets the class attributes and overrides the hooks."""

    name: ClassVar[str]  # --task, and the `task` a stored result names
    label: ClassVar[str]  # how messages name the task: "text classification"
    model_kind: ClassVar[str]  # how messages name its models: "text classifier"
    embedded_models: ClassVar[tuple[str, ...]] = ()  # embedded models of this task, known before any is fetched
    embedded_datasets: ClassVar[tuple[str, ...]] = ()  # embedded datasets, known by name before anything loads
    warm_start_gamma: ClassVar[float]  # the warm-start step γ a run of this task defaults to
    peft_task_type: ClassVar[str | None]  # PEFT's task type; None where the model's forward is not a text model's
    model_class: ClassVar[type]  # the transformers auto class that builds its model, with the head, from a config
    metric: ClassVar[Metric]
    min_classes: ClassVar[int] = 1  # the fewest classes (sampling strata) a training set may hold
    also_trains: ClassVar[tuple[str, ...]] = ()  # other tasks its models can be trained as (`--task NAME`)
    generates: ClassVar[bool] = False  # answers test prompts after training (`generate`)

    @property
    def options(self) -> type[Options]:
        """Its options class, in `balora.options.TASK_OPTIONS` (where `RunConfig` reads it without torch)."""
        return TASK_OPTIONS.get(self.name, Options)
    fallback: ClassVar[bool] = False  # the task of a model no task recognises (exactly one task is)
    # the report's analyses of its runs beyond those every task's metric gets ("layer importance": attention
    # against MLP modules, for vision transformers)
    report_analyses: ClassVar[tuple[str, ...]] = ()

    def recognises(self, model_config: PretrainedConfig) -> bool:
        """Whether a model with this saved config is of this task (`--task auto`)."""
        return False

    def load_data(self, config: RunConfig) -> Any:
        """The run's dataset, once `check_dataset` has found that it fits the task."""
        check_dataset(config, self)
        return self.read_dataset(config)

    def read_dataset(self, config: RunConfig) -> Any:
        """The dataset `config` names, split into pool, validation and test."""
        raise NotImplementedError

    def load_processor(self, config: RunConfig) -> Processor:
        raise NotImplementedError

    def labels(self, data: Any) -> list[str] | None:
        """The label names the task's head predicts (stored with the result); None for a task without a label head."""
        return None

    def load_model(self, config: RunConfig, labels: list[str] | None) -> PreTrainedModel:
        raise NotImplementedError

    def loader(self, examples: list[Any], processor: Processor, model: nn.Module, config: RunConfig, batch_size: int,
               shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader: DataLoader, data: Any) -> dict[str, float]:
        """The metrics of `model` on `loader`'s split, the primary metric among them."""
        raise NotImplementedError

    def reference_metrics(self, data: Any) -> dict[str, float]:
        """Metrics of the data alone, stored with every run's metrics (a tuning run's included)."""
        return {}

    def generate(self, model: nn.Module, data: Any, processor: Processor, config: RunConfig) -> list[dict[str, str]]:
        """Where `generates`: the trained model's answers to test prompts, with what they answer."""
        raise NotImplementedError

    def headline(self, metrics: dict[str, float]) -> str:
        """The test metrics as `balora train` prints them."""
        return f"test {self.metric.name} {metrics[self.metric.name]:.4f}"


@contextlib.contextmanager
def weights_cast_once(model: nn.Module) -> Iterator[None]:
    """For inference under bf16 autocast: each frozen weight cast to bf16 once per autocast region, not at
    every forward. Autocast caches its low-precision copy only of leaf tensors that require grad, so a
    frozen base weight is cast again at each call; in greedy decoding, one token per forward, casting the
    whole model every token dominates the time. The frozen floating-point parameters are flagged as
    requiring grad for the duration (callers run under `no_grad`, so no graph is built), which lets
    autocast cache them; the values, hence the outputs, are the same. The flags are restored on exit."""
    frozen = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    try:
        for parameter in frozen:
            parameter.requires_grad_(True)
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make `task` known everywhere: `--task`, `task_of`, sweep specs, the dry run, the report."""
    if task.name in _REGISTRY or task.name == "auto":
        raise BaloraError(f"task {task.name} is already registered")
    if task.fallback and any(t.fallback for t in _REGISTRY.values()):
        raise BaloraError(f"task {task.name}: {fallback().name} is already the fallback task")
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> Task:
    """Forget a registered task (for tests and plug-ins that registered their own)."""
    return _REGISTRY.pop(name)


def names() -> tuple[str, ...]:
    """Every task, in the order they were registered."""
    return tuple(_REGISTRY)


def all_tasks() -> tuple[Task, ...]:
    return tuple(_REGISTRY.values())


def get(name: str) -> Task:
    if name not in _REGISTRY:
        raise BaloraError(f"unknown task '{name}'; choose one of {', '.join(('auto', *_REGISTRY))}")
    return _REGISTRY[name]


def fallback() -> Task:
    """The task of a model no task recognises, and of results and merges stored before the task was
    recorded (they were all classifiers)."""
    return next(t for t in _REGISTRY.values() if t.fallback)


def of_result(result: dict[str, Any]) -> Task:
    """The task a stored record names: a run's `result.json` or run file, a merged model's `quantisation.json`."""
    return get(result["task"]) if result.get("task") else fallback()


def of_peft_task_type(task_type: str | None) -> Task:
    """The task PEFT's `task_type` names (`balora.plan` on a user's model); the fallback for one no task has."""
    return next((t for t in _REGISTRY.values() if task_type is not None and t.peft_task_type == task_type),
                fallback())


def owner_of_dataset(dataset: str) -> Task | None:
    """The task whose embedded dataset `dataset` is, if any."""
    return next((t for t in _REGISTRY.values() if dataset in t.embedded_datasets), None)


def check_dataset(config: RunConfig, task: Task) -> None:
    """Refuse, before anything is fetched, built or looked up on the hub, a dataset `task` cannot read: an embedded
    one of another task (naming the models that fit it), or a local path that is not there."""
    owner = owner_of_dataset(config.dataset) or task
    if owner is not task:
        fits = " or ".join(owner.embedded_models)
        trains_as = (f", or --task {owner.name} to train {config.model} as one" if owner.name in task.also_trains
                     else "")
        raise BaloraError(f"model '{config.model}' ({task.label}) and dataset '{config.dataset}' "
                          f"({owner.label}) belong to different tasks; for {config.dataset} use --model {fits} "
                          f"or another {owner.model_kind} (a local folder or hub name){trains_as}")
    if missing_local_path(config.dataset):
        raise BaloraError(f"dataset '{config.dataset}' does not exist; check the path, or use an embedded dataset "
                          f"({', '.join(task.embedded_datasets)})")


def task_of(model: str, task: str = "auto") -> Task:
    """The task named `task`, or for `auto` the model's: an embedded model's declared task, else the first task
    that recognises the model's saved config, else the fallback task."""
    if task != "auto":
        return get(task)
    owner = next((t for t in _REGISTRY.values() if model in t.embedded_models), None)
    if owner is not None:
        return owner
    saved = model_config(model)
    return next((t for t in _REGISTRY.values() if t.recognises(saved)), fallback())


def with_task_defaults(config: RunConfig, task: str | None = None) -> RunConfig:
    """`config` with the fields it leaves to the task (`gamma`) set to the task's default, so that the
    config a run stores, and its key, say what the run did. `task` is the model's, looked up if not given."""
    if config.gamma is not None:
        return config
    return dataclasses.replace(config, gamma=task_of(config.model, task or config.task).warm_start_gamma)

"""The tasks: what a run trains a model to do, one unit per task.

`base` defines a task (`Task`: its declarations and the hooks a run calls, with its primary `Metric`) and the
registry; one module per task implements it: `classification` (text, and `LabelledTask`, what every classifier
task shares), `causal_lm` (instruction tuning) and `image` (image classification). The three are registered
here, in `--task`'s order. A new task is its module, its one `register` call here and its test: `run.setup`,
the sweep estimator (`load_data`), `--task auto` (`recognises`), sweep specs and `RunConfig`'s task defaults
(`with_task_defaults`), selection and convergence (`metric`) all read the registry.
"""

from __future__ import annotations

from balora.tasks.base import (
    ACCURACY,
    LOSS,
    Metric,
    Task,
    all_tasks,
    check_dataset,
    fallback,
    get,
    names,
    number,
    of_peft_task_type,
    of_result,
    register,
    task_of,
    unregister,
    with_task_defaults,
)
from balora.tasks.causal_lm import CausalLM
from balora.tasks.classification import Classification, LabelledTask
from balora.tasks.image import ImageClassification

for _task in (Classification(), CausalLM(), ImageClassification()):
    register(_task)
del _task

__all__ = [
    "ACCURACY", "LOSS", "CausalLM", "Classification", "ImageClassification", "LabelledTask", "Metric", "Task",
    "all_tasks", "check_dataset", "fallback", "get", "names", "number", "of_peft_task_type", "of_result", "register",
    "task_of", "unregister", "with_task_defaults",
]

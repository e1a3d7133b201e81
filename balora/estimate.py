"""Wall-time estimates for planned runs (`balora sweep --dry-run`), from measured step times.

A run's time is modelled as

    overhead + steps × step_seconds + evaluated examples × example_seconds

with steps = ⌈training examples / batch size⌉ × epochs and evaluated examples = validation passes
(`RunConfig.validation_steps`) × the validation split, plus the test set unless it is a tuning run.
The rates belong to a *profile*: model, dataset, batch sizes, max length and targets. They come from stored runs of the same profile
(each run's validation seconds over its validation passes give example_seconds; its train phase less
those, over its steps, step_seconds; everything outside training and test, per method, the overhead);
for a profile with no stored run, from a calibration: the model loaded and a few training steps and
validation batches timed here (medians, so that a stall behind another process counts once; each the
smaller of its wall and CPU time, so that waiting for the CPU another process holds does not count), with
the importance pass counted as one step per batch of its sample.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any

from balora import method_registry
from balora.config import DEFAULTS, RunConfig, method_settings

CALIBRATION_STEPS = 4


def profile(config: dict[str, Any]) -> tuple:
    """What a run's per-step and per-example times depend on."""
    names = ("model", "dataset", "text_column", "label_column", "batch_size", "eval_batch_size", "max_length")
    return (*(config.get(n) for n in names), repr(config.get("target_modules")))


@dataclass
class Sizes:
    pool: int
    validation: int
    test: int
    labels: int


@dataclass
class Rates:
    step_seconds: float
    example_seconds: float
    overhead: dict[str, float] = field(default_factory=dict)  # by method; "" = any method
    source: str = ""

    def overhead_for(self, config: RunConfig) -> float:
        if config.method in self.overhead:
            return self.overhead[config.method]
        # the methods that score modules (or initialise, like LoRA-GA) on the importance sample pass over it first
        method = method_registry.find(config.method)
        extra = 0.0 if method is not None and not method.importance_pass else (
            math.ceil(config.gradient_samples / config.batch_size) * self.step_seconds)
        return self.overhead.get("", 0.0) + extra


def _measured(result: dict[str, Any]) -> tuple[float, float, float] | None:
    """(step seconds, example seconds, overhead) of one stored run, or None when it lacks the timings."""
    timings, data = result.get("timings") or {}, result.get("data") or {}
    passes, steps = len((result.get("curves") or {}).get("validation") or []), result.get("steps")
    if not steps or not passes or not data.get("validation") or "train" not in timings:
        return None
    if "validation_seconds" in result:
        validation = result["validation_seconds"]
    elif timings.get("eval") and data.get("test"):  # runs stored before validation was timed on its own
        validation = passes * data["validation"] * timings["eval"] / data["test"]
    else:
        return None
    overhead = timings["total"] - timings["train"] - timings.get("eval", 0.0)
    return max(0.0, timings["train"] - validation) / steps, validation / (passes * data["validation"]), overhead


def stored_rates(results: list[dict[str, Any]]) -> dict[tuple, Rates]:
    """Rates per profile from stored runs."""
    found: dict[tuple, list[tuple[str, tuple[float, float, float]]]] = {}
    for result in results:
        if (measured := _measured(result)) is not None:
            found.setdefault(profile(result["config"]), []).append((result["config"]["method"], measured))
    rates = {}
    for key, runs in found.items():
        overhead = {"": statistics.fmean(m[2] for _, m in runs)}
        for method in {name for name, _ in runs}:
            overhead[method] = statistics.fmean(m[2] for name, m in runs if name == method)
        rates[key] = Rates(statistics.fmean(m[0] for _, m in runs), statistics.fmean(m[1] for _, m in runs),
                           overhead, f"{len(runs)} stored run{'s' * (len(runs) != 1)}")
    return rates


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(start: tuple[float, float], end: tuple[float, float]) -> float:
    """Wall time, but no more than the CPU time this process used (over all its threads): next to a running
    sweep the calibration waits for the CPU without using it, and the estimate is of a run's own cost."""
    return min(end[0] - start[0], end[1] - start[1])


def calibrate(config: RunConfig) -> tuple[Rates, Sizes]:
    """Time a few training steps and validation batches of `config`'s model on its data (LoRA at its budget)."""
    from peft import get_peft_model

    from balora.methods import get_method
    from balora.run import setup
    from balora.training import TrainSettings, train

    # LoRA reads none of the other methods' settings (and refuses them set): they go back to their defaults
    probe = replace(config, method="lora", head_probe_steps=0, tuning=True, method_options=None,
                    **{name: DEFAULTS[name] for name in method_settings() if name in DEFAULTS})
    run = setup(probe)
    model = get_peft_model(run.model, get_method("lora")(run.method_context(CALIBRATION_STEPS)).peft_config)
    loader = run.loader(run.train_examples[:(CALIBRATION_STEPS + 1) * config.batch_size], shuffle=True)
    ends: list[tuple[float, float]] = []  # when each step ended; the first step, which pays one-off set-up costs, is left out
    train(model, loader, TrainSettings(epochs=max(1, math.ceil((CALIBRATION_STEPS + 1) / len(loader))),
                                       learning_rate=config.learning_rate, progress=False, precision=config.precision),
          after_step=lambda _model, _step, _optimizer: ends.append(_clock()))
    # Medians, not means: on a shared machine one step or batch may stall behind another process.
    step_seconds = statistics.median(_elapsed(a, b) for a, b in zip(ends, ends[1:]))
    per_example = []
    for start in range(0, CALIBRATION_STEPS * config.eval_batch_size, config.eval_batch_size):
        batch = run.data.validation[start:start + config.eval_batch_size]
        if batch:
            started = _clock()
            run.evaluator(batch)(model)
            per_example.append(_elapsed(started, _clock()) / len(batch))
    example_seconds = statistics.median(per_example)
    rates = Rates(step_seconds, example_seconds, {"": run.meter.timings()["load"]},
                  f"a calibration of {len(ends) - 1} steps")
    return rates, _sizes(run.data)


def _sizes(data: Any) -> Sizes:
    # Strata counted from the pool: a classifier's classes, instruction data's sampling strata.
    return Sizes(len(data.pool), len(data.validation), len(data.test), len({e.label for e in data.pool}))


def dataset_sizes(config: RunConfig) -> Sizes:
    from balora.tasks import task_of

    return _sizes(task_of(config.model, config.task).load_data(config))


def run_seconds(config: RunConfig, rates: Rates, sizes: Sizes) -> float:
    """Estimated wall time of one run (see the module docstring)."""
    examples = config.shots * sizes.labels if config.shots else min(config.train_size or sizes.pool, sizes.pool)
    steps = math.ceil(examples / config.batch_size) * config.train_epochs
    evaluated = len(config.validation_steps(steps)) * sizes.validation + (0 if config.tuning else sizes.test)
    return rates.overhead_for(config) + steps * rates.step_seconds + evaluated * rates.example_seconds


class Estimator:
    """Estimates for many runs: stored rates where a profile has runs, one calibration per other profile."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.rates = stored_rates(results)
        self.sizes: dict[tuple, Sizes] = {}
        self.used: set[tuple] = set()

    def seconds(self, config: RunConfig) -> float:
        key = profile(config.to_dict())
        self.used.add(key)
        if key not in self.rates:
            self.rates[key], self.sizes[key] = calibrate(config)
        if key not in self.sizes:
            self.sizes[key] = dataset_sizes(config)
        return run_seconds(config, self.rates[key], self.sizes[key])

    def sources(self) -> str:
        """Where the rates of the profiles estimated so far came from."""
        return "; ".join(sorted({self.rates[k].source for k in self.used})) or "no run left to estimate"

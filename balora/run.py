"""One experiment end to end: data → model → method (importance, allocation, init) → training →
evaluation → `result.json` and a PEFT adapter.

The result written here is the unit everything downstream (sweeps, results store, report) reads:

    config       RunConfig as a dict, plus `key`, its hash
    environment  versions, platform, CPU model, device, threads, weights_sha256 (of each of the model's weight files)
    budget       target LoRA budget, its rank-equivalent, whether the head was counted, and what the final
                 LoRA parameters leave of it (unspent; negative: over it)
    params       lora (trainable at training time, DoRA's magnitude vectors included), lora_final (after
                 AdaLoRA pruning / EVA), head, total_trainable, base_model; for PiSSA, OLoRA and LoRA-GA
                 also saved_adapter: the saved adapter's LoRA parameters, converted to the original base at
                 twice the rank (`methods.save_adapter`)
    allocation   per module: name, shape [d_out, d_in], importance, rank, params, final_rank
    task         the task's name: classification, causal_lm or image (`balora.tasks`; it follows the model,
                 `tasks.task_of`)
    metrics      the task's test metrics (`Task.evaluate`; none for a tuning run) and its reference metrics
                 (`Task.reference_metrics`). classification and image: accuracy, f1, precision, recall, loss;
                 majority-class rate. causal_lm: token-weighted loss on response tokens, perplexity, tokens
    generations  a task that `generates` (causal_lm): greedy responses to the first test prompts, with their
                 references (None for a tuning run)
    reallocations  (ba_lora_dynamic) per reallocation: step, ranks, importance, params, budget, changed, seconds
    curves       train_loss [[step, loss]], validation [[step, {metrics}]] (step 0 = after init)
    convergence_step  first step reaching 95% of the final value of the task's primary validation metric
                 (accuracy; a causal LM's loss, lower is better: within 1/0.95 of it)
    timings      seconds per phase (load, importance, allocation, init, train, eval, and a causal LM's
                 greedy answers: generate) and total
    validation_seconds  of the train phase, the seconds spent on the validation curve
    memory       peak RSS MiB per phase (and CUDA max-allocated MiB on a GPU)
    quantisation (with --quant) format, group size, schedule, gradient scale; stored bytes of the
                 quantised base weights against fp32; the balance ‖scaling·B·A‖/‖W − Ŵ‖ per module
                 at every validation point
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
import transformers
from peft import get_peft_model
from torch.utils.data import DataLoader

from balora import __version__
from balora.allocation import lora_budget, rank_budget, rank_equivalent, summary
from balora.base_transform import BaseTransform, base_transform
from balora.config import RunConfig
from balora.data import Example, importance_sample, select_training
from balora.errors import BaloraError
from balora.importance import ProbeReport, fit_head
from balora.measure import PhaseMeter
from balora.methods import MethodContext, Prepared, get_method, initial_state, save_adapter
from balora.models import (
    TargetModule,
    head_module_names,
    head_parameter_count,
    target_modules,
    weights_checksums,
)
from balora.quiet import write_library_log
from balora.tasks import Task, task_of, with_task_defaults
from balora.tasks.base import Processor
from balora.training import Distributed, TrainSettings, autocast, bf16_emulation, native_bf16, total_steps, train


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo, else what `platform` knows): the report compares run
    times only between runs on the same machine, and a platform string alone does not say which CPU ran."""
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def environment(model: str, bf16_units: bool) -> dict[str, Any]:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"balora": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "platform": platform.platform(),
            "cpu": cpu_name(), "device": device, "native_bf16": bf16_units, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "weights_sha256": weights_checksums(model)}


def resolve_budget(config: RunConfig, targets: list[TargetModule], head_params: int) -> int:
    """LoRA parameters this run may spend: `budget`, `budget_rank`, or else what uniform `rank` (default 8)
    costs. A `rank` given with a budget must cost exactly that budget."""
    bounds = dict(head_params=head_params, count_head=config.count_head, max_rank=config.max_rank)
    if config.budget is None and config.budget_rank is None:
        return lora_budget(targets, rank=config.rank or 8, **bounds)
    budget = lora_budget(targets, params=config.budget, rank=config.budget_rank, **bounds)
    if config.rank is not None and rank_budget(targets, config.rank) != budget:
        raise BaloraError(f"--rank {config.rank} costs {rank_budget(targets, config.rank):,} LoRA parameters, but the "
                          f"budget is {budget:,}{' after the head' if config.count_head else ''}; give --rank or a "
                          "budget, not both")
    return budget


@dataclass
class RunOutput:
    result: dict[str, Any]
    model: torch.nn.Module  # the trained PEFT model


def _lora_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)


def _trained_head_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n)


@dataclass
class Setup:
    """Everything loaded before a method runs; shared by `plan_allocation` and `run_experiment`."""

    config: RunConfig
    task: Task
    data: Any  # the task's dataset (`Task.load_data`): pool, validation and test
    train_examples: list[Example]
    importance_examples: list[Example]  # the one sample for importance, warm-start, EVA and the head probe
    probe: ProbeReport | None
    processor: Processor  # the tokenizer, or for images the image processor
    model: torch.nn.Module
    targets: list[TargetModule]
    head_params: int
    budget: int
    meter: PhaseMeter
    placement: Distributed
    transform: BaseTransform  # what the run does to the frozen base (a quantised base: `--quant`)

    def loader(self, examples: list[Example], shuffle: bool, batch_size: int | None = None) -> DataLoader:
        return self.task.loader(examples, self.processor, self.model, self.config, batch_size or self.config.batch_size,
                                shuffle)

    def evaluator(self, examples: list[Example]) -> Callable[[torch.nn.Module], dict[str, float]]:
        """Metrics of a model on `examples` (validation or test; the first `eval_examples` of them if set),
        batches built once."""
        examples = examples[:self.config.eval_examples]
        loader = self.loader(examples, shuffle=False, batch_size=self.config.eval_batch_size)

        def score(model: torch.nn.Module) -> dict[str, float]:
            with autocast(self.config.precision, self.placement.device):
                return self.task.evaluate(model, loader, self.data)
        return score

    def generations(self, model: torch.nn.Module) -> list[dict[str, str]]:
        """The task's answers to test prompts (`Task.generate`), under the run's precision."""
        with autocast(self.config.precision, self.placement.device):
            return self.task.generate(model, self.data, self.processor, self.config)

    def importance_batches(self) -> DataLoader:
        """This process's part of the importance sample (under torchrun each process scores its own
        shard and importance all-reduces the gradients)."""
        return self.loader(self.placement.shard(self.importance_examples), shuffle=False)

    def method_context(self, total_steps: int) -> MethodContext:
        return MethodContext(self.config, self.model, self.targets, self.budget, self.importance_batches, total_steps,
                             self.task.peft_task_type, head_module_names(self.model), self.meter,
                             len(self.placement.shard(self.importance_examples)))


def setup(config: RunConfig) -> Setup:
    get_method(config.method)  # fail fast on an unknown method, before loading anything
    transform = base_transform(config)  # and on a missing optional package
    meter = PhaseMeter()
    placement = Distributed.from_env()
    with meter.phase("load"):
        task = task_of(config.model, config.task)  # first: a wrong model name fails before data loads
        config = with_task_defaults(config, task.name)
        data = task.load_data(config)  # then the data, which checks first that it fits the task
        processor = task.load_processor(config)  # and only then what may be built (vit-fashion: minutes)
        model = task.load_model(config, task.labels(data)).to(placement.device)
        train_examples = select_training(data.pool, config.shots, config.train_size, config.seed,
                                         min_classes=task.min_classes)
    targets = target_modules(model, config.target_modules)
    head_params = head_parameter_count(model)
    transform.prepare(model, targets, meter)
    budget = resolve_budget(config, targets, head_params)
    sample = importance_sample(train_examples, config.gradient_samples, config.seed)
    run = Setup(config, task, data, train_examples, sample, None, processor, model, targets, head_params, budget, meter,
                placement, transform)
    heads = head_module_names(model)
    if config.head_probe_steps and heads:
        with meter.phase("probe"):  # the head is fitted before any method runs: every method starts from it
            run.probe = fit_head(model, run.importance_batches(), heads[-1], config.head_probe_steps)
    return run


def plan_allocation(config: RunConfig) -> tuple[Setup, Prepared]:
    """Importance and allocation only, no training (`balora allocate`): the method's `Prepared`, whose
    `allocation` holds the ranks and `extra_params` what the method pays besides them (DoRA's magnitudes)."""
    run = setup(config)
    seed_everything(config.seed)
    steps = total_steps(run.loader(run.placement.even_shard(run.train_examples), shuffle=True), config.train_epochs)
    with run.transform.importance_context(run.model):
        return run, get_method(config.method)(run.method_context(steps))


def run_experiment(config: RunConfig, out_dir: str | Path | None = None, progress: bool = True) -> RunOutput:
    """Run one experiment; with `out_dir`, write `result.json` and `adapter/` there.

    Under `torchrun`/`accelerate launch` every process trains on its shard of the training set
    (DDP averages gradients) and only the first process writes.
    """
    run = setup(config)
    config = run.config  # with the task's defaults filled in: what the run does and stores
    task, data, meter, placement, transform = run.task, run.data, run.meter, run.placement, run.transform
    bf16_units = native_bf16(placement.device)
    if config.precision == "bf16" and placement.is_main and not bf16_units:
        print(f"balora: warning: --precision bf16 on {bf16_emulation(placement.device)}; --precision fp32 is faster on "
              "this machine", file=sys.stderr)
    train_loader = run.loader(placement.even_shard(run.train_examples), shuffle=True)
    seed_everything(config.seed)
    steps = total_steps(train_loader, config.train_epochs)
    with transform.importance_context(run.model):  # a quantised base: importance needs a float Ŵ's gradients
        prepared = get_method(config.method)(run.method_context(steps))
    seed_everything(config.seed)  # LoRA's random A depends only on the seed, not on the method's work
    with meter.phase("adapter"):
        model = get_peft_model(run.model, prepared.peft_config)
        transform.adapter_created(model)
    if prepared.initialise is not None:
        prepared.initialise(model)
        # what it warm-started from, the mean gradients (an fp32 copy of every target weight), training never reads
        prepared.initialise = prepared.warm_start = None
    initial = initial_state(model) if prepared.changes_base else None  # what the saved adapter is converted against
    lora_params, trained_head = _lora_parameter_count(model), _trained_head_count(model)
    transform.before_training(model, steps)

    evaluate_validation = run.evaluator(data.validation)
    validation_seconds = [0.0]  # inside the train phase; estimates of later runs' time separate the two

    def validate(m: torch.nn.Module) -> dict[str, float]:
        started = time.perf_counter()
        transform.on_validation(m)
        metrics = evaluate_validation(m)
        validation_seconds[0] += time.perf_counter() - started
        return metrics

    def after_step(m: torch.nn.Module, step: int, optimizer: torch.optim.Optimizer) -> bool:
        transform.after_step(m, step)
        replaced = prepared.after_step is not None and prepared.after_step(m, step, optimizer)
        if replaced:  # ba_lora_dynamic's resize: its modules have new parameters
            transform.parameters_replaced(m)
        return replaced

    settings = TrainSettings(config.train_epochs, config.learning_rate, config.weight_decay, config.warmup_ratio,
                             frozenset(config.validation_steps(steps)), progress and placement.is_main, config.precision,
                             config.loraplus_ratio)
    seed_everything(config.seed)
    with meter.phase("train"):  # the validation curve, its step-0 point included, is part of training
        log = train(placement.wrap(model), train_loader, settings, validate, after_step)
    transform.before_evaluation(model)
    metrics: dict[str, float] = {}
    generations = None
    if not config.tuning:  # a tuning run is scored on validation only: test accuracy exists only where selected
        with meter.phase("eval"):
            metrics = run.evaluator(data.test)(model)
        if task.generates:  # timed apart: greedy answers stop at EOS, so their cost depends on what the model writes
            with meter.phase("generate"):
                generations = run.generations(model)
    metrics.update(task.reference_metrics(data))

    final_ranks = (prepared.effective_ranks(model) if prepared.effective_ranks
                   else {m.name: m.rank for m in prepared.allocation})
    lora_final = prepared.extra_params + sum(final_ranks[m.name] * (m.d_in + m.d_out + prepared.per_rank_extra)
                                             for m in prepared.allocation)
    result = {
        "key": config.key(),
        "config": config.to_dict(),
        "task": task.name,
        "environment": environment(config.model, bf16_units),
        "data": {"dataset": data.name, "train_examples": len(run.train_examples),
                 "validation": len(data.validation[:config.eval_examples]), "test": len(data.test[:config.eval_examples]),
                 "labels": task.labels(data)},
        "budget": {"lora_budget": run.budget, "rank_equivalent": rank_equivalent(run.targets, run.budget),
                   "count_head": config.count_head, "unspent": run.budget - lora_final},
        "params": {"lora": lora_params, "lora_final": lora_final, "head": trained_head,
                   "total_trainable": lora_params + trained_head,
                   "base_model": sum(p.numel() for p in model.parameters() if not p.requires_grad),
                   **({"saved_adapter": 2 * lora_final} if prepared.changes_base else {})},
        "allocation": [dict(m.to_dict(), final_rank=final_ranks[m.name]) for m in prepared.allocation],
        "allocation_summary": summary(prepared.allocation),
        **({"reallocations": prepared.history} if prepared.history is not None else {}),
        "importance_sample": {"examples": len(run.importance_examples),
                              "probe": None if run.probe is None else vars(run.probe)},
        "metrics": metrics,
        **({"generations": generations} if task.generates else {}),
        "curves": {"train_loss": log.train_loss, "validation": log.validation},
        "steps": log.steps,
        "convergence_step": log.convergence_step(task.metric),
        "timings": meter.timings(),
        "validation_seconds": validation_seconds[0],
        "memory": {"peak_rss_mib": meter.peak_rss_mib, "peak_cuda_mib": meter.peak_cuda_mib},
    }
    transform.finalise(model, result)  # a quantised base: result["quantisation"]; a plain PEFT adapter to save
    result["environment"]["world_size"] = placement.world
    if out_dir is not None and placement.is_main:
        with meter.phase("save"):
            save_adapter(model, Path(out_dir) / "adapter", initial)
        result["timings"] = meter.timings()  # now with the save
        save_result(result, Path(out_dir))
        write_library_log(Path(out_dir))
    return RunOutput(result, model)


def save_result(result: dict[str, Any], out_dir: Path) -> None:
    """Write `result.json` atomically, after the adapter: its presence means the run is complete."""
    result["adapter"] = str((out_dir / "adapter").resolve())
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out_dir / "result.json")


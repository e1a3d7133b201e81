"""The way in for users' own training code: one call plans a budgeted, importance-allocated LoRA.

    plan = balora.plan(model, train_dataloader, budget_rank=8, target_modules=["q_proj", "v_proj"])
    print(plan)                        # module, shape, importance, rank, params; the budget used
    peft_model = plan.apply(model)     # get_peft_model with the rank/alpha patterns, then the warm-start
    # ... train it with a Trainer, TRL's SFTTrainer, accelerate or a plain loop; save_pretrained as usual

Ranks can keep moving during training under the same budget (`ba_lora_dynamic`'s controller,
`balora.reallocation`): `Trainer(..., callbacks=[ReallocationCallback(plan, every=50, warmup=50)])`, or in a
plain loop `hook = plan.reallocator(peft_model, total_steps=n)` and, after each `optimizer.step()` and before
`zero_grad`, `hook(peft_model, step, optimizer)` (step counts from 1). A resize swaps parameters inside the
optimizer in place (the optimizer object and the LR schedule stay), and the adapter config's patterns follow,
so `save_pretrained` still writes a plain PEFT adapter.

`plan` runs exactly BA-LoRA's method from the CLI (`methods.ba_lora`: importance, allocation, warm-start
gradients) on the user's model and data; nothing is trained. The result is a `Plan`: the ranks, a plain
PEFT `LoraConfig` (`lora_config()`), and the mean gradients for the warm-start. It saves as JSON
(`to_dict`/`from_dict`, ranks only) or as a folder with the gradients (`save`/`load`).

The importance sample. Like the CLI's, it is a seeded random sample of `num_samples` examples, stratified by
class where labels are known, never the first batches of the loader (which may be sorted or grouped):
- a `DataLoader` over a map-style dataset (a list, a 🤗 `Dataset`, any `__getitem__`/`__len__`): examples are
  drawn by index, stratified by the `labels`/`label` field when it holds one class per example (a column
  read for a 🤗 `Dataset`; other datasets are read once, item by item), plain random otherwise (token labels
  of a language model). They are batched with the loader's own `collate_fn` and `batch_size`, ordered by
  length (`input_ids` or `text`) to save padding, as the CLI does; the loader's sampler is not used.
- a list or tuple of ready batches: whole batches in a seeded random order, until `num_samples` examples.
- any other iterable (a generator, a loader over an `IterableDataset`): its first `num_samples` examples,
  in the order given, read once and kept for the pass; shuffle it yourself.
Under torchrun/accelerate (torch.distributed initialised), each process takes its share of that one sample
and the gradients are all-reduced, so every process gets the same plan.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, Subset
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from balora import allocation, initialisation, methods, models, tasks
from balora.config import RunConfig
from balora.data import stratified_indices
from balora.errors import BaloraError
from balora.importance import Batch, LossFn, examples_in
from balora.initialisation import lora_layer
from balora.measure import PhaseMeter
from balora.reallocation import RankController, ReallocationConfig

# RunConfig fields that shape a plan, passed through `plan(**options)`; the rest of RunConfig is about runs.
OPTIONS = ("strategy", "allocation_power", "importance_metric", "base_rank", "threshold", "top_k", "gamma",
           "gamma_normalise", "alpha_ratio", "lora_dropout", "scaling_rule", "warmstart_init", "learning_rate")
# PEFT task types by the model class's name suffix; other models (a plain nn.Module) get none.
TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForCausalLM": "CAUSAL_LM", "ForTokenClassification": "TOKEN_CLS",
              "ForQuestionAnswering": "QUESTION_ANS", "ForConditionalGeneration": "SEQ_2_SEQ_LM"}
FORMAT = 1  # version of `Plan.to_dict`
LATER_PLAN_FIELDS = ("scaling_rule", "warmstart_init", "learning_rate")  # optional in a plan.json: their defaults


@dataclass
class Plan:
    """Per-module LoRA ranks under a budget, and how to build the adapter from them."""

    modules: list[allocation.ModuleRank] = field(metadata={"help": "One row per target: name, shape, importance, rank."})
    budget: int = field(metadata={"help": "LoRA parameters the ranks may spend (after the head if count_head)."})
    task_type: str | None = field(default=None, metadata={"help": "PEFT task type, e.g. SEQ_CLS, CAUSAL_LM."})
    modules_to_save: list[str] = field(default_factory=list, metadata={"help": "Heads trained in full beside the adapter."})
    head_params: int = field(default=0, metadata={"help": "Parameters of modules_to_save."})
    count_head: bool = field(default=False, metadata={"help": "Whether the head was paid out of the budget."})
    alpha_ratio: float = field(default=2.0, metadata={"help": "lora_alpha = alpha_ratio × rank, per module."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    warmstart: bool = field(default=True, metadata={"help": "Whether apply() warm-starts B from the gradients."})
    gamma: float = field(default=tasks.fallback().warm_start_gamma,
                         metadata={"help": "Warm-start step size (`plan` uses the task's default)."})
    gamma_normalise: bool = field(default=True, metadata={"help": "Warm-start from G/RMS(G), not G."})
    scaling_rule: str = field(default="constant", metadata={
        "help": "Each module's alpha/r across the unequal ranks: constant, rslora or standard (RunConfig.scaling_rule)."})
    warmstart_init: str = field(default="balora", metadata={
        "help": "apply()'s warm start: balora's (gamma), or gora's (one step of learning_rate, GoRA's exact init)."})
    learning_rate: float | None = field(default=None, metadata={"help": "The step GoRA's init takes (warmstart_init gora)."})
    seed: int = field(default=42, metadata={"help": "Seed of the sample and of LoRA's random A in apply()."})
    importance: dict[str, Any] = field(default_factory=dict, metadata={"help": "metric, examples, seconds."})
    gradients: dict[str, torch.Tensor] | None = field(default=None, repr=False,
                                                      metadata={"help": "Mean gradients for the warm-start."})

    def __post_init__(self) -> None:
        if not self.modules:
            raise BaloraError("a plan needs at least one module")
        if self.warmstart_init == "gora" and self.learning_rate is None:
            raise BaloraError("warmstart_init='gora' takes one step of your learning rate: give learning_rate=")
        if self.gradients is not None and set(self.gradients) != {m.name for m in self.modules}:
            raise BaloraError("the warm-start gradients do not match the plan's modules; save and load them together")

    @property
    def ranks(self) -> dict[str, int]:
        return {m.name: m.rank for m in self.modules}

    @property
    def lora_params(self) -> int:
        return allocation.total_params(self.modules)

    def lora_config(self) -> LoraConfig:
        """A plain PEFT `LoraConfig` (escaped `rank_pattern`/`alpha_pattern`) for `get_peft_model`."""
        reference = self.budget / sum(m.d_in + m.d_out for m in self.modules)  # the budget's rank-equivalent
        return methods.lora_config(self.modules, task_type=self.task_type, alpha_ratio=self.alpha_ratio,
                                   lora_dropout=self.lora_dropout, modules_to_save=self.modules_to_save,
                                   scaling_rule=self.scaling_rule, reference_rank=reference)

    def apply(self, model: nn.Module, warmstart: bool | None = None) -> PeftModel:
        """`get_peft_model(model, self.lora_config())`, then B warm-started from the plan's gradients
        (`warmstart`: default as planned). LoRA's random A comes from `seed`, the same on
        every process, without touching the caller's random state. The model is modified in place, as
        `get_peft_model` does."""
        warmstart = self.warmstart if warmstart is None else warmstart
        if warmstart and self.gradients is None:
            raise BaloraError("this plan has no warm-start gradients (to_dict keeps ranks only); use Plan.load on "
                              "a folder written by Plan.save, or apply(model, warmstart=False)")
        self._check_shapes(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            peft_model = get_peft_model(model, self.lora_config())
        if warmstart and self.warmstart_init == "gora":
            initialisation.gora_start(peft_model, self.gradients, self.learning_rate)
        elif warmstart:
            initialisation.warm_start(peft_model, self.gradients, self.gamma, self.gamma_normalise)
        return peft_model

    def reallocator(self, peft_model: PeftModel, *, total_steps: int, every: int = 50, warmup: int = 50,
                    adapter: str = "default", **settings: Any) -> RankController:
        """The `after_step(model, step, optimizer) -> bool` hook of `ba_lora_dynamic` for `peft_model` (what
        `apply` returned, not yet resized): call it after each optimizer step, before `zero_grad`, with
        step = optimizer steps done (1, 2, ...). It scores every step, and on schedule (after `warmup`, every
        `every` steps, not in the last `final_fraction` of `total_steps`) reallocates this plan's budget and
        resizes modules, swapping their parameters and AdamW state inside `optimizer`; True when it did.
        `settings`: `ReallocationConfig`'s other fields (score, strategy, ema, min_rank, ...); seed: the plan's."""
        try:
            config = ReallocationConfig(**{"seed": self.seed, "every": every, "warmup": warmup, **settings})
        except TypeError as err:
            raise BaloraError(f"{err}; reallocation settings are the fields of balora.reallocation.ReallocationConfig") from None
        if total_steps < 1:
            raise BaloraError(f"total_steps must be positive, got {total_steps}")
        found = {}
        for m in self.modules:
            try:
                found[m.name] = lora_layer(peft_model, m.name).r[adapter]
            except (AttributeError, KeyError):
                found[m.name] = 0
        if found != self.ranks or min(found.values()) < 1:
            name = next(n for n, r in found.items() if r != self.ranks[n] or r < 1)
            raise BaloraError(f"module {name} has LoRA rank {found[name]} in this model and {self.ranks[name]} in the "
                              "plan; reallocate the model plan.apply(model) returned, from a plan with min_rank ≥ 1")
        targets = [models.TargetModule(m.name, m.d_out, m.d_in) for m in self.modules]
        return RankController(config, targets, self.budget, total_steps, self.alpha_ratio, self.modules, adapter)

    def _check_shapes(self, model: nn.Module) -> None:
        found = {name: models.weight_shape(module) for name, module in model.named_modules()}
        wrong = [m for m in self.modules if found.get(m.name) != (m.d_out, m.d_in)]
        if wrong:
            raise BaloraError(f"this model does not match the plan: module {wrong[0].name} is {found.get(wrong[0].name)} "
                              f"here, ({wrong[0].d_out}, {wrong[0].d_in}) in the plan; plan again on this model")

    def to_dict(self) -> dict[str, Any]:
        """Everything but the gradients, as JSON-ready values (`save` keeps the gradients too)."""
        return {"format": FORMAT, "modules": [m.to_dict() for m in self.modules], "budget": self.budget,
                "task_type": self.task_type, "modules_to_save": self.modules_to_save, "head_params": self.head_params,
                "count_head": self.count_head, "alpha_ratio": self.alpha_ratio, "lora_dropout": self.lora_dropout,
                "warmstart": self.warmstart, "gamma": self.gamma, "gamma_normalise": self.gamma_normalise, "seed": self.seed,
                "importance": self.importance, "scaling_rule": self.scaling_rule, "warmstart_init": self.warmstart_init,
                "learning_rate": self.learning_rate}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], gradients: dict[str, torch.Tensor] | None = None) -> Plan:
        """The plan `to_dict` wrote; without `gradients`, a warm-started plan applies only with warmstart=False."""
        try:
            if values["format"] != FORMAT:
                raise BaloraError(f"plan format {values['format']} is not {FORMAT}; plan again with this balora")
            modules = [allocation.ModuleRank(m["name"], int(m["shape"][0]), int(m["shape"][1]), float(m["importance"]),
                                             int(m["rank"])) for m in values["modules"]]
            rest = {k: values[k] for k in ("budget", "task_type", "modules_to_save", "head_params", "count_head",
                                           "alpha_ratio", "lora_dropout", "warmstart", "gamma", "gamma_normalise", "seed",
                                           "importance")}
            rest |= {k: values[k] for k in LATER_PLAN_FIELDS if k in values}  # plans written before they existed
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise BaloraError(f"not a balora plan ({type(err).__name__}: {err}); write it with Plan.to_dict") from None
        return cls(modules, gradients=gradients, **rest)

    def save(self, folder: str | Path) -> Path:
        """`plan.json`, and `warmstart.safetensors` with the gradients when the plan has them."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.gradients is not None:
            save_file({k: v.contiguous() for k, v in self.gradients.items()}, str(folder / "warmstart.safetensors"))
        (folder / "plan.json").write_text(json.dumps(self.to_dict(), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Plan:
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            values = json.loads((folder / "plan.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BaloraError(f"cannot read a plan from {folder} ({err}); write one with Plan.save") from None
        weights = folder / "warmstart.safetensors"
        return cls.from_dict(values, load_file(str(weights)) if weights.exists() else None)

    def __str__(self) -> str:
        equivalent = allocation.rank_equivalent(
            [models.TargetModule(m.name, m.d_out, m.d_in) for m in self.modules], self.lora_params)
        head = f"; head {self.head_params:,} ({'counted' if self.count_head else 'not counted'})" if self.head_params else ""
        return (f"{allocation.table(self.modules)}\nLoRA parameters: {self.lora_params:,} of a {self.budget:,} budget "
                f"(rank-equivalent {equivalent:.2f}){head}; warm-start {'on' if self.warmstart else 'off'}\n"
                f"{allocation.describe(self.modules)}")


class ReallocationCallback(TrainerCallback):
    """Plugs `Plan.reallocator` into a 🤗 `Trainer`: built on train begin for the Trainer's model and its
    `max_steps`, called in `on_optimizer_step` (after the step, before gradients are cleared) with the
    Trainer's optimizer, whose parameter groups and state it updates in place (accelerate's wrapper passes
    them through). One process only: a resize would leave DistributedDataParallel's buckets stale."""

    def __init__(self, plan: Plan, *, every: int = 50, warmup: int = 50, **settings: Any) -> None:
        self.plan, self.settings = plan, dict(settings, every=every, warmup=warmup)
        self.controller: RankController | None = None

    @property
    def history(self) -> list[dict]:
        """One entry per reallocation (step, ranks, importance, params, budget, changed), the plan first."""
        return [] if self.controller is None else self.controller.history

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: PeftModel | None = None, **kwargs: Any) -> None:
        if args.world_size > 1:
            raise BaloraError(f"ReallocationCallback runs in one process, not {args.world_size}; under torchrun use "
                              "plan.reallocator in your own loop and re-wrap DDP after a resize, or balora train")
        self.controller = self.plan.reallocator(model, total_steps=state.max_steps, **self.settings)

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          model: PeftModel | None = None, optimizer: torch.optim.Optimizer | None = None,
                          **kwargs: Any) -> None:
        self.controller(model, state.global_step + 1, optimizer)  # global_step counts up after this event


def plan(model: nn.Module, data: DataLoader | Iterable[Batch], *, budget: int | None = None,
         budget_rank: float | None = None, target_modules: list[str] | None = None, count_head: bool = False,
         min_rank: int = 2, max_rank: int | None = None, num_samples: int = 1000, warmstart: bool = True,
         loss_fn: LossFn | None = None, task_type: str | None = "auto", modules_to_save: list[str] | None = None,
         seed: int = 42, **options: Any) -> Plan:
    """Importance and allocation on `model` from a sample of `data`; no training, the model is unchanged.

    - `data`: a `DataLoader` or an iterable of batches (module docstring: how the sample is drawn). A batch is
      a dict the model's forward takes, with `labels`, or anything `loss_fn(model, batch) -> loss` takes
      (a tuple `(x, y)`, say).
    - The budget, as in the CLI: `budget` (LoRA parameters) or `budget_rank` (what uniform rank R costs on the
      targets); `count_head` pays `modules_to_save` out of it; every module gets `min_rank`..`max_rank`.
    - `target_modules`: name suffixes of Linear/Conv1D layers (default per architecture: query/value, q_proj/v_proj...).
    - `task_type`: PEFT's, from the model's class by default (None for a plain nn.Module); `modules_to_save`:
      heads trained in full, by default the model's `classifier`/`score`.
    - `options`: the CLI's allocation settings, e.g. `strategy="uniform"`, `allocation_power=0.5`,
      `importance_metric="fisher"`, `gamma=0.01`, `alpha_ratio=2`, `scaling_rule="rslora"`, or
      `warmstart_init="gora", learning_rate=2e-4` (GoRA's init: one step of your learning rate; see `OPTIONS`).
    """
    _check_arguments(model, data, num_samples, loss_fn)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BaloraError(f"balora.plan got unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    config = RunConfig.from_dict(dict(options, budget=budget, budget_rank=budget_rank, target_modules=target_modules,
                                      count_head=count_head, min_rank=min_rank, max_rank=max_rank, seed=seed,
                                      gradient_samples=num_samples, warmstart=warmstart), where="balora.plan")
    targets = models.target_modules(model, target_modules)
    heads = models.head_module_names(model) if modules_to_save is None else list(modules_to_save)
    missing = [name for name in heads if name not in dict(model.named_modules())]
    if missing:
        raise BaloraError(f"modules_to_save: no module named {', '.join(missing)} in the model; name top-level "
                          f"modules such as {', '.join(n for n, _ in model.named_children())}")
    head_params = sum(p.numel() for name in heads for p in model.get_submodule(name).parameters())
    lora_budget = allocation.lora_budget(targets, params=budget, rank=budget_rank, head_params=head_params,
                                         count_head=count_head, max_rank=max_rank)
    task = _task_type(model) if task_type == "auto" else task_type
    if config.gamma is None:
        config = replace(config, gamma=tasks.of_peft_task_type(task).warm_start_gamma)
    batches, share, size = sample_batches(data, num_samples, seed)
    meter = PhaseMeter()
    context = methods.MethodContext(config, model, targets, lora_budget, batches, 0, task, heads, meter, share, loss_fn)
    prepared = methods.ba_lora(context)
    timings = meter.timings()
    return Plan(prepared.allocation, lora_budget, task, heads, head_params, count_head, config.alpha_ratio,
                config.lora_dropout, warmstart, config.gamma, config.gamma_normalise, config.scaling_rule,
                config.warmstart_init, options.get("learning_rate"), seed,
                {"metric": config.importance_metric, "examples": size,
                 "seconds": timings.get("importance", 0.0) + timings.get("allocation", 0.0)},
                prepared.warm_start)


def _check_arguments(model: Any, data: Any, num_samples: Any, loss_fn: Any) -> None:
    """The arguments of `plan` that RunConfig does not check, as BaloraErrors rather than the TypeError or
    AttributeError they would raise deep inside."""
    if not isinstance(model, nn.Module):
        raise BaloraError(f"balora.plan: model must be a torch nn.Module (a transformers model, say), got "
                          f"{type(model).__name__}")
    if isinstance(data, Mapping):
        raise BaloraError(f"balora.plan: data got one batch, a {type(data).__name__}: pass a list of batches, "
                          "e.g. [batch], or a DataLoader")
    if not isinstance(data, Iterable) or isinstance(data, str | bytes):
        raise BaloraError(f"balora.plan: data must be a DataLoader or an iterable of batches, got {type(data).__name__}")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
        raise BaloraError(f"balora.plan: num_samples must be a positive integer, got {num_samples!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise BaloraError(f"balora.plan: loss_fn must be callable as loss_fn(model, batch) -> loss, got "
                          f"{type(loss_fn).__name__}")


def _task_type(model: nn.Module) -> str | None:
    name = type(model).__name__
    return next((task for suffix, task in TASK_TYPES.items() if name.endswith(suffix)), None)


def _process() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def sample_batches(data: DataLoader | Iterable[Batch], num_samples: int,
                   seed: int) -> tuple[Callable[[], Iterable[Batch]], int, int]:
    """This process's part of the importance sample (module docstring), as a fresh pass on each call; its
    number of examples; and the size of the whole sample (all processes) where it is known in advance."""
    rank, world = _process()
    share = num_samples // world + (rank < num_samples % world)
    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        dataset = data.dataset
        chosen = stratified_indices(_class_labels(dataset), num_samples, seed)
        mine = sorted(chosen[rank::world], key=lambda i: _length(dataset[i]))  # similar lengths batch together
        loader = DataLoader(Subset(dataset, mine), batch_size=data.batch_size or 8, collate_fn=data.collate_fn)
        return (lambda: loader), len(mine), len(chosen)
    if isinstance(data, Sequence) and not isinstance(data, Mapping):
        order = random.Random(seed).sample(range(len(data)), len(data))
        mine = [data[i] for i in order[rank::world]]
        return (lambda: mine), share, num_samples
    kept, seen = [], 0
    for batch in data:  # read once, so that every pass (importance, then activations) sees the same examples
        if seen >= share:
            break
        kept.append(batch)
        seen += examples_in(batch)
    return (lambda: kept), share, num_samples


def _length(example: Any) -> int:
    """Tokens (or characters of `text`) in an example, so the sample can be batched by length as the CLI
    batches it: padding costs as much as real tokens, and gradients do not depend on the order."""
    if isinstance(example, Mapping):
        example = example.get("input_ids", example.get("text", ()))
    else:
        example = getattr(example, "input_ids", getattr(example, "text", ()))
    return len(example) if hasattr(example, "__len__") else 0


def _class_labels(dataset: Any) -> list[Any]:
    """One class label per example, or None where an example has none (or a label per token)."""
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):  # a 🤗 Dataset: read the label column, not every example
        name = next((c for c in ("labels", "label") if c in columns), None)
        return [_as_class(v) for v in dataset[name]] if name else [None] * len(dataset)
    return [_as_class(_label_of(dataset[i])) for i in range(len(dataset))]


def _label_of(example: Any) -> Any:
    """`labels`/`label` of a dict or an object (balora's `Example`), or the last item of a tuple `(x, y)`."""
    if isinstance(example, Mapping):
        return example.get("labels", example.get("label"))
    if isinstance(example, tuple | list) and len(example) > 1:
        return example[-1]
    return getattr(example, "labels", getattr(example, "label", None))


def _as_class(label: Any) -> int | str | None:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label.item())
    if isinstance(label, bool | int | str):
        return label
    return None

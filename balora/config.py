"""The configuration of one run, PEFT-style: dataclasses with help text per field, checks in `__post_init__`.
Sweeps, the CLI and the Python API all build runs from this.

A run is stored flat (`RunConfig`, one field per setting: every stored run keeps its key), and read and shown
nested (`RunConfig.nested`, `RunConfig.from_nested`): the common fields, then one section per unit,

    method:         {name: ba_lora, strategy: proportional, ...}   the method, its options (`method_registry`)
    task:           {name: causal_lm, prompt_template: chat, ...}  the task, its options (`options.TASK_OPTIONS`)
    base_transform: {quant: nf4, quant_group_size: 64, ...}        the frozen base's (`options.QuantisedOptions`)

Each unit declares its options once, as a dataclass; `RunConfig`'s section fields are made from them, and the
sweep specs and the CLI read the same sections (`SECTIONS`).

A method registered after this module loaded (a plug-in) may bring options of its own: `RunConfig`'s fields are
fixed once it is made, so a run holds their values in one field, `method_options` (by name, only those away from
their defaults; None for none, so every other run keeps its key). They read like fields all the same: an attribute
of the config, a flag, a key under `method:` in the nested form and in sweep specs, tuned ones included
(`plugin_options`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, make_dataclass, replace
from typing import Any, NamedTuple

from balora import method_registry
from balora.errors import BaloraError
from balora.options import TASK_OPTIONS, Options, QuantisedOptions

# Validation points of a tuning run: its final one decides the selection, the half-way one tells the
# tuning appendix whether the candidate was still rising (`RunConfig.validation_steps`).
TUNING_EVALUATIONS = 2


class Section(NamedTuple):
    """One section of the nested configuration: the field that picks its unit (None: the options decide) and
    the fields of its units' options, each declared once, by its unit."""
    selector: str | None
    declared: Callable[[], tuple[type[Options], ...]]  # its units' options classes, read when used

    @property
    def options(self) -> tuple[type[Options], ...]:
        """Its units' options classes now: a method registered after this module loaded brings its own."""
        return self.declared()

    @property
    def names(self) -> tuple[str, ...]:
        """Every field of the section's options, each once, in declaration order."""
        return tuple(dict.fromkeys(name for options in self.options for name in options.names()))


def _method_options() -> tuple[type[Options], ...]:
    return tuple(dict.fromkeys(method_registry.get(name).options for name in method_registry.names()))


# The sections of the nested configuration, in order. `RunConfig`'s fields are what they declare when this module
# loads; a plug-in's options are read from `method_options` (`plugin_options`).
SECTIONS = {"method": Section("method", _method_options), "task": Section("task", lambda: tuple(TASK_OPTIONS.values())),
            "base_transform": Section(None, lambda: (QuantisedOptions,))}


def _section_fields() -> list[tuple[str, Any, Any]]:
    """`RunConfig`'s fields made from the sections' options: their types, defaults and help text."""
    owners = {f.name: f for section in SECTIONS.values() for options in section.options for f in fields(options)}
    return [(name, f.type, field(default=f.default, metadata=f.metadata)) for name, f in owners.items()]


# The options' fields as a dataclass of their own, for RunConfig to inherit: declared once, by their units.
_SectionFields = make_dataclass("_SectionFields", _section_fields())


@dataclass
class RunConfig(_SectionFields):
    """One run's settings, flat: the common fields below, and each section's options (`SECTIONS`), inherited.
    `nested()` shows them by section; `from_nested` reads that form back."""

    method: str = field(default="ba_lora", metadata={"help": "Method name from balora.methods.METHODS."})
    model: str = field(default="minilm", metadata={"help": "Embedded model, local folder or hub name."})
    dataset: str = field(default="rotten_tomatoes", metadata={"help": "Embedded dataset, local file/folder or hub name."})
    task: str = field(default="auto", metadata={
        "help": "auto (causal LM: causal_lm, image model: image, else classification), classification, causal_lm, image."})
    eval_examples: int | None = field(default=None, metadata={"help": "Evaluate on the first N validation and test examples (for CPUs)."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Module suffixes to adapt, or all-linear; default per architecture."})
    shots: int | None = field(default=None, metadata={"help": "Training examples per class (few-shot); None = no k-shot sampling."})
    train_size: int | None = field(default=None, metadata={"help": "Random training subset of the pool; None = whole pool."})
    rank: int | None = field(default=None, metadata={"help": "Fixed LoRA rank (method lora); defaults to the budget's rank-equivalent."})
    budget: int | None = field(default=None, metadata={"help": "LoRA parameter budget as a count."})
    budget_rank: float | None = field(default=None, metadata={"help": "Budget as the cost of uniform rank R on the same targets."})
    count_head: bool = field(default=False, metadata={"help": "Pay the classification head out of the budget."})
    min_rank: int = field(default=2, metadata={"help": "Smallest rank an adapted module gets."})
    max_rank: int | None = field(default=None, metadata={"help": "Largest rank a module may get; default min(d_in, d_out)."})
    gradient_samples: int = field(default=500, metadata={"help": "Importance pass: stratified random sample; see benchmarks/overhead.py."})
    head_probe_steps: int = field(default=0, metadata={"help": "Probe steps fitting the head first (every method); 0 = off."})
    gamma: float | None = field(default=None, metadata={"help": "Warm-start step: ‖scaling·B·A‖ = gamma·‖G/RMS(G)‖ per module; "
                                                        "default per task: 0.005, or 1e-4 for a causal LM."})
    epochs: int | None = field(default=None, metadata={"help": "Training epochs; default 5 few-shot, 3 otherwise."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps with linear warm-up."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    alpha_ratio: float = field(default=2.0, metadata={"help": "lora_alpha = alpha_ratio × rank, per module."})
    max_length: int = field(default=128, metadata={"help": "Tokens kept per text (batches pad to their longest, "
                                                           "see pad_to_multiple_of)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size for validation and test."})
    evaluations: int = field(default=8, metadata={"help": "Validation points along training (a tuning run: at most "
                                                          "TUNING_EVALUATIONS, see `validation_steps`)."})
    seed: int = field(default=42, metadata={"help": "Seed of sampling, head init, LoRA init and shuffling."})
    tuned: list[str] | None = field(default=None, metadata={"help": "Fields whose values were selected on validation "
                                                            "by tuning runs (a sweep's `tune:` block)."})
    tuning: bool = field(default=False, metadata={"help": "A tuning run: scored on validation only, never on test."})
    # Fields added after runs were stored: part of `key()` only when not at their default (KEYED_WHEN_SET).
    precision: str = field(default="fp32", metadata={
        "help": "Training and evaluation forward passes: fp32, or bf16 autocast (weights and optimizer stay fp32; "
                "faster on GPUs and CPUs with AVX512-BF16 or AMX, slower on older CPUs)."})
    pad_to_multiple_of: int = field(default=1, metadata={
        "help": "Pad each batch up to a multiple of this many tokens (1: to its longest text). Fewer distinct batch "
                "lengths mean fewer matmul shapes: on CPU, oneDNN builds a kernel per new shape, for every LoRA "
                "rank, so uneven ranks pay more for varying lengths."})
    scaling_rule: str = field(default="constant", metadata={
        "help": "LoRA scaling across unequal ranks, each module's alpha/r: constant (alpha_ratio at every rank), "
                "rslora (alpha_ratio·√(R/r)) or standard (a fixed alpha: alpha_ratio·R/r); R is the budget's "
                "rank-equivalent, where every rule gives alpha_ratio."})
    loraplus_ratio: float = field(default=1.0, metadata={
        "help": "LoRA+: every B trains at this × the learning rate (A and the head at the learning rate); 1 = off."})
    method_options: dict[str, Any] | None = field(default=None, metadata={
        "help": "The options of a method registered after balora.config loaded (a plug-in), by name, those away "
                "from their defaults; None: none. Read as attributes, flags and method: keys (`plugin_options`)."})

    def __getattr__(self, name: str) -> Any:
        """A plug-in's option (`plugin_options`): its value in `method_options`, else its default. Python asks
        here only for a name that is no field or attribute."""
        plugin = plugin_options()
        if name not in plugin:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return (self.__dict__.get("method_options") or {}).get(name, plugin[name].default)

    def __post_init__(self) -> None:
        for f in fields(self):
            check_finite(f.name, getattr(self, f.name))
        self._check_method_options()
        positive = ["batch_size", "learning_rate", "gradient_samples", "max_length", "eval_batch_size",
                    "evaluations", "alpha_ratio", "pad_to_multiple_of"]
        positive_or_none = ["shots", "train_size", "rank", "budget", "budget_rank", "epochs", "max_rank", "eval_examples"]
        for name in positive + positive_or_none:
            value = getattr(self, name)
            if (value is not None or name in positive) and (not isinstance(value, int | float) or value <= 0):
                raise BaloraError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "warmup_ratio", "lora_dropout", "gamma", "min_rank", "head_probe_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise BaloraError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.warmup_ratio >= 1 or self.lora_dropout >= 1:
            raise BaloraError("warmup_ratio and lora_dropout must be below 1")
        if self.shots is not None and self.train_size is not None:
            raise BaloraError("give --shots or --train-size, not both")
        if self.budget is not None and self.budget_rank is not None:
            raise BaloraError("give --budget or --budget-rank, not both")
        if self.rank is not None and self.budget_rank is not None and self.rank != self.budget_rank:
            raise BaloraError(f"--rank {self.rank} conflicts with --budget-rank {self.budget_rank:g}: "
                              "give one of them, or the same value")
        for name in self.tuned or []:
            if name not in tunable():
                raise BaloraError(f"tuned: '{name}' cannot be tuned; tunable fields: {', '.join(sorted(tunable()))}")
        for section in SECTIONS.values():  # each unit checks its options, whichever unit the run picks
            for options in section.options:
                options.of(self)
        if self.precision not in PRECISIONS:
            raise BaloraError(f"unknown --precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        self._check_method_settings()
        self._check_across_sections()

    def _check_method_options(self) -> None:
        """`method_options` holds plug-in options only, each of its field's type; one at its default is dropped,
        so that giving a default changes no key (as for a field in KEYED_WHEN_SET)."""
        if self.method_options is None:
            return
        plugin = plugin_options()
        for name, value in self.method_options.items():
            if name not in plugin:
                raise BaloraError(f"method_options: '{name}' is no plug-in method's option"
                                  f"{'; give it as a field' if name in DEFAULTS else ''}")
            _check_type(name, value, plugin[name].type, "method_options")
        self.method_options = {n: v for n, v in self.method_options.items() if v != plugin[n].default} or None

    def _check_method_settings(self) -> None:
        """Refuse a setting the method does not read (`method_settings`) given away from its default: ignored, it
        would still change the run's key and put an identical run in a report row of its own."""
        settings, defaults = method_settings(), option_defaults()
        ignored = [name for name, readers in settings.items()
                   if self.method not in readers and getattr(self, name) != defaults[name]]
        if not ignored:
            return
        named = [f"--{name.replace('_', '-')} (read only by {', '.join(settings[name])})" for name in ignored]
        listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
        them = "it" if len(named) == 1 else "them"
        raise BaloraError(f"method {self.method} ignores {listed}; leave {them} out, or use a method that reads {them}")

    def _check_across_sections(self) -> None:
        """What a method cannot do with the common options or the quantised base."""
        if self.scaling_rule not in SCALING_RULES:
            raise BaloraError(f"unknown --scaling-rule '{self.scaling_rule}'; choose one of {', '.join(SCALING_RULES)}")
        if not self.loraplus_ratio > 0:
            raise BaloraError(f"--loraplus-ratio must be positive (1 = plain LoRA), got {self.loraplus_ratio!r}")
        method = method_registry.find(self.method)
        if method is None:
            return
        if self.qa_lora and method.own_parametrisation:
            raise BaloraError(f"--qa-lora pools LoRA's A; method {self.method} has its own parametrisation: "
                              "use lora, ba_lora or a heuristic")
        if method.fixed_scaling and self.scaling_rule != "constant":
            raise BaloraError(f"--scaling-rule {self.scaling_rule}: {self.method} scales by its fixed initial rank "
                              "whatever it prunes; use --scaling-rule constant")
        if method.full_precision_base and self.quant is not None:
            raise BaloraError(f"method {self.method} initialises from or normalises by the full-precision base weights "
                              "that --quant replaces; use lora or ba_lora with --quant")

    def validation_steps(self, steps: int) -> list[int]:
        """The steps at which a run of `steps` training steps scores validation, in order. An evaluation
        run: step 0 and `evaluations` evenly spaced points, the learning curve whose end the report
        checks for flatness. A tuning run: at most TUNING_EVALUATIONS evenly spaced points and no step 0,
        since selection reads only its final point; that point's metrics are the same either way
        (validation draws no random numbers), so fewer passes lose nothing selection uses."""
        count = min(self.evaluations, TUNING_EVALUATIONS) if self.tuning else self.evaluations
        along = sorted({round(steps * (i + 1) / count) for i in range(count)})
        return along if self.tuning else [0, *along]

    @property
    def train_epochs(self) -> int:
        return self.epochs or default_epochs(self.shots)

    def to_dict(self) -> dict[str, Any]:
        """`dataclasses.asdict`'s dict (containers copied), built without its recursion into every scalar: a sweep's
        plan and a report make ~10,000 of these, and asdict took 3 s of planning the paper preset."""
        return {f.name: copy.deepcopy(v) if isinstance(v := getattr(self, f.name), (list, dict)) else v
                for f in _FIELDS}

    def key(self) -> str:
        """Stable hash of everything that defines the run: same key, same experiment. Fields added later
        (KEYED_WHEN_SET) count only when set away from their default, so older runs keep their keys."""
        values = {k: v for k, v in self.to_dict().items() if k not in KEYED_WHEN_SET or v != DEFAULTS[k]}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def protocol(self) -> dict[str, Any]:
        """Everything that defines the run except its seed: runs of one protocol are replicates."""
        return protocol(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> RunConfig:
        """A config from its flat form, checked; a plug-in's options (`plugin_options`) go to `method_options`."""
        for name, value in values.items():
            check_field(name, value, where)
        return cls(**_as_fields(values))

    def with_values(self, **values: Any) -> RunConfig:
        """This config with `values` changed (`dataclasses.replace`), a plug-in's options among them."""
        return replace(self, **_as_fields(values, self.method_options))

    def nested(self) -> dict[str, Any]:
        """The run by section (module docstring): the common fields, then each section with its unit's name
        (`name`) and that unit's options; a section's other fields only where set away from their defaults
        (the checks allow none). `from_nested` reads it back to an equal config."""
        values, defaults = {**self.to_dict(), **{name: getattr(self, name) for name in plugin_options()}}, option_defaults()
        view = {name: values[name] for name in COMMON}
        for section_name, section in SECTIONS.items():
            shown = set(_unit_options(section_name, values)) | {n for n in section.names if values[n] != defaults[n]}
            view[section_name] = ({"name": values[section.selector]} if section.selector else {}) | {
                name: values[name] for name in section.names if name in shown}
        return view

    @classmethod
    def from_nested(cls, values: Mapping[str, Any], where: str = "config") -> RunConfig:
        """A config from its nested form (`nested`), checked; the flat form is read too."""
        return cls.from_dict(flatten(values, lambda *_: where)[0], where)


def _as_fields(values: Mapping[str, Any], method_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`values` as `RunConfig`'s keyword arguments: a plug-in's options (`plugin_options`) joined to
    `method_options` (`values`' own, else the one given)."""
    plugin = plugin_options()
    fields_given = {name: value for name, value in values.items() if name not in plugin}
    given = {name: value for name, value in values.items() if name in plugin}
    if given:
        fields_given["method_options"] = {**(fields_given.get("method_options", method_options) or {}), **given}
    return fields_given


def _unit_options(section: str, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The options of the unit a config picks in `section`: its method's, its task's (every task's while the
    task is auto), the quantised base's (only `quant` for a full-precision base)."""
    if section == "method":
        method = method_registry.find(values["method"])
        return method.settings if method is not None else ()
    if section == "task":
        return TASK_OPTIONS[values["task"]].names() if values["task"] in TASK_OPTIONS else SECTIONS["task"].names
    return QuantisedOptions.names() if values["quant"] is not None else ("quant",)


def section_of(name: str) -> str | None:
    """The section a field is written in, nested (None: a common field)."""
    return next((s for s, section in SECTIONS.items() if name in section.names), None)


def flat_name(section: str, key: str) -> str:
    """The field that `key`, written in `section`, is: an option of the section's units, or `name`, its unit."""
    selector, names = SECTIONS[section].selector, SECTIONS[section].names
    if key == "name" and selector is not None:
        return selector
    if key in names:
        return key
    right = section_of(key)
    if right is not None or key in DEFAULTS:
        place = f"in section {right}" if right is not None else "at the top level (a common field)"
        raise BaloraError(f"'{key}' is not in section {section}: write it {place}")
    keys = ("name", *names) if selector is not None else names
    raise BaloraError(f"unknown key '{key}' in section {section}; it has {', '.join(keys)}")


def flatten(values: Mapping[str, Any], locate: Callable[..., str]) -> tuple[dict[str, Any], dict[str, tuple]]:
    """A config's flat form from its nested form (a section is a mapping under its name; flat fields pass), with
    the keys each field is written under; an error names where, `locate(*keys)` (a sweep spec: its line)."""
    flat: dict[str, Any] = {}
    written: dict[str, tuple] = {}
    for key, value in values.items():
        # a section without a selector is always nested; `method: lora` and `task: auto` are the flat form
        nested = key in SECTIONS and (SECTIONS[key].selector is None or isinstance(value, Mapping))
        for path, one in [((key, k), v) for k, v in _section(key, value, locate).items()] if nested else [((key,), value)]:
            try:
                name = flat_name(key, path[1]) if nested else key
            except BaloraError as err:
                raise BaloraError(f"{locate(*path)}: {err}") from None
            if name in flat:
                raise BaloraError(f"{locate(*path)}: {name} is given twice; give it once")
            flat[name], written[name] = one, path
    return flat, written


def _section(name: str, value: Any, locate: Callable[..., str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BaloraError(f"{locate(name)}: section {name} is a mapping of its options, e.g. "
                          f"{name}: {{{SECTIONS[name].names[0]}: ...}}")
    return value


def default_epochs(shots: int | None) -> int:
    """The default epochs (the original protocol's): 5 few-shot, 3 otherwise."""
    return 5 if shots is not None else 3


def protocol(config: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol of a config dict, stored or new: the config without its seed, where a field it
    leaves out has RunConfig's default and `epochs` is the number the run trains for (None means
    the default for its data), so that configs that train alike have one protocol. A plug-in's options
    (`method_options`) read as fields there, each at its default where the config leaves it out."""
    values = {**DEFAULTS, **config}  # RunConfig()'s dict, without making one: a report asks ~10,000 times
    values.pop("seed")
    values.update({**{name: f.default for name, f in plugin_options().items()}, **(values.pop("method_options") or {})})
    for f in fields(RunConfig):  # 8 and 8.0 are one learning rate or budget
        if f.type.startswith("float") and isinstance(values[f.name], int) and not isinstance(values[f.name], bool):
            values[f.name] = float(values[f.name])
    if values["epochs"] is None:
        values["epochs"] = default_epochs(values["shots"])
    return values


def protocol_key(config: Mapping[str, Any]) -> str:
    """A protocol as a string, to group runs by (equal strings, equal protocols)."""
    return json.dumps(protocol(config), sort_keys=True, default=str)


# The fields of the first stored runs, always part of `key()`. Every other field, one added since (a new
# method's option too), counts only when set away from its default (KEYED_WHEN_SET), so every stored run keeps
# its key. This list never grows.
KEYED_ALWAYS = frozenset({
    "adalora_init_ratio", "allocation_power", "alpha_ratio", "base_rank", "batch_size", "budget", "budget_rank",
    "count_head", "dataset", "decay_direction", "epochs", "eva_rho", "eval_batch_size", "eval_examples", "evaluations",
    "gamma", "gamma_normalise", "gradient_samples", "head_probe_steps", "heuristic_ratio", "importance_metric",
    "instruction_columns", "label_column", "learning_rate", "lora_dropout", "max_length", "max_rank", "method",
    "min_rank", "model", "prompt_template", "rank", "seed", "shots", "strategy", "target_modules", "task",
    "text_column", "threshold", "top_k", "train_on_prompt", "train_size", "warmstart", "warmup_ratio", "weight_decay"})
KEYED_WHEN_SET = frozenset(f.name for f in fields(RunConfig)) - KEYED_ALWAYS
DEFAULTS = {f.name: f.default for f in fields(RunConfig)}
_FIELDS = fields(RunConfig)  # read once: to_dict needs them for every config


def _per_registry_revision(build: Callable[[], dict]) -> Callable[[], dict]:
    """`build`, read from the method registry once per change of it (`method_registry.revision`, its cache key;
    every RunConfig checks these: planning a sweep asks thousands of times); each call returns a copy, so that a
    caller's change stays its own."""
    at_revision = functools.lru_cache(maxsize=1)(lambda revision: build())

    @functools.wraps(build)
    def read() -> dict:
        return dict(at_revision(method_registry.revision()))
    return read


@_per_registry_revision
def plugin_options() -> dict[str, Field]:
    """The options of the methods registered after this module loaded (plug-ins) that `RunConfig` has no field
    for, by name (the first method to declare a name declares it): a run holds their values in `method_options`."""
    return {f.name: f for options in SECTIONS["method"].options for f in fields(options) if f.name not in DEFAULTS}


def option_defaults() -> dict[str, Any]:
    """Every setting's default: `RunConfig`'s fields' and the plug-in options'."""
    return {**DEFAULTS, **{name: f.default for name, f in plugin_options().items()}}


def tunable() -> set[str]:
    """What a sweep may select on validation: TUNABLE and the plug-in options."""
    return TUNABLE | set(plugin_options())


@_per_registry_revision
def method_settings() -> dict[str, tuple[str, ...]]:
    """The settings only some methods read, in field order (then the plug-in options), each with the methods that
    read it (each method's `balora.method_registry.Method.settings`); the other methods ignore it, so `RunConfig`
    refuses it away from its default. A method registered later is in it (like `plugin_options`)."""
    readers = method_registry.readers()
    return {name: readers[name] for name in option_defaults() if name in readers}


def full_precision_base() -> tuple[str, ...]:
    """The methods that initialise from, or normalise by, the full-precision base weights: no --quant."""
    return tuple(name for name in method_registry.names() if method_registry.get(name).full_precision_base)


# The fields outside every section, in RunConfig's order (`nested`); `method_options` is shown under `method:`.
COMMON = tuple(f.name for f in fields(RunConfig)
               if section_of(f.name) is None and f.name not in ("method", "task", "method_options"))
# What a sweep may select on validation: not the run's identity (method, seed) or the tuning marks (`tunable`).
TUNABLE = {f.name for f in fields(RunConfig)} - {"method", "model", "dataset", "seed", "tuned", "tuning", "method_options"}
# How each module's LoRA scaling follows its rank (`allocation.lora_alpha`).
SCALING_RULES = ("constant", "rslora", "standard")
# Forward-pass precisions (balora.training.autocast): fp32 everywhere, or bfloat16 autocast over fp32 weights.
PRECISIONS = ("fp32", "bf16")


def check_field(name: str, value: Any, where: str = "config") -> None:
    """A clear error for an unknown field or a value of the wrong type, prefixed by `where`."""
    types = {f.name: f.type for f in [*fields(RunConfig), *plugin_options().values()]}
    if name not in types:
        raise BaloraError(f"{where}: unknown key(s) {name}; known keys: {', '.join(sorted(types))}")
    _check_type(name, value, types[name], where)


def check_finite(name: str, value: Any, where: str = "") -> None:
    """nan and inf are floats, but no setting means anything with them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BaloraError(f"{where + ': ' if where else ''}{name} must be a finite number, got {value!r}")


def _check_type(name: str, value: Any, annotation: str, where: str) -> None:
    allowed = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list[str]": (list,),
               "dict[str, Any]": (dict,)}
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in kinds:
        return
    ok = any(isinstance(value, allowed[k]) and not (k in ("int", "float") and isinstance(value, bool))
             for k in kinds if k in allowed)
    if kinds == ["list[str]", "None"] and isinstance(value, list):
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        raise BaloraError(f"{where}: {name} must be {annotation.replace(' | None', ' or null')}, got {value!r}")
    check_finite(name, value, where)

"""The configuration of one run, PEFT-style: one dataclass, help text per field, checks in
`__post_init__`. Sweeps, the CLI and the Python API all build runs from this."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from balora import method_registry
from balora.errors import BaloraError

# Validation points of a tuning run: its final one decides the selection, the half-way one tells the
# tuning appendix whether the candidate was still rising (`RunConfig.validation_steps`).
TUNING_EVALUATIONS = 2


@dataclass
class RunConfig:
    method: str = field(default="ba_lora", metadata={"help": "Method name from balora.methods.METHODS."})
    model: str = field(default="minilm", metadata={"help": "Embedded model, local folder or hub name."})
    dataset: str = field(default="rotten_tomatoes", metadata={"help": "Embedded dataset, local file/folder or hub name."})
    task: str = field(default="auto", metadata={
        "help": "auto (causal LM: causal_lm, image model: image, else classification), classification, causal_lm, image."})
    instruction_columns: list[str] | None = field(
        default=None, metadata={"help": "Instruction data: INSTRUCTION [INPUT] RESPONSE columns; default Alpaca's or Dolly's."})
    prompt_template: str = field(default="alpaca", metadata={"help": "Causal LM prompt: alpaca, or chat (the model's chat template)."})
    train_on_prompt: bool = field(default=False, metadata={"help": "Causal LM: learn the prompt tokens too (default: only the response)."})
    eval_examples: int | None = field(default=None, metadata={"help": "Evaluate on the first N validation and test examples (for CPUs)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column of a local or hub dataset."})
    label_column: str = field(default="label", metadata={"help": "Label column of a local or hub dataset."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Module suffixes to adapt, or all-linear; default per architecture."})
    shots: int | None = field(default=None, metadata={"help": "Training examples per class (few-shot); None = no k-shot sampling."})
    train_size: int | None = field(default=None, metadata={"help": "Random training subset of the pool; None = whole pool."})
    rank: int | None = field(default=None, metadata={"help": "Fixed LoRA rank (method lora); defaults to the budget's rank-equivalent."})
    budget: int | None = field(default=None, metadata={"help": "LoRA parameter budget as a count."})
    budget_rank: float | None = field(default=None, metadata={"help": "Budget as the cost of uniform rank R on the same targets."})
    count_head: bool = field(default=False, metadata={"help": "Pay the classification head out of the budget."})
    strategy: str = field(default="proportional", metadata={
        "help": "Allocation: proportional, minmax (old name: seed000), threshold, top_k, uniform."})
    allocation_power: float = field(default=1.0, metadata={"help": "Ranks ∝ importance^power (proportional, threshold, top_k)."})
    importance_metric: str = field(default="sensitivity", metadata={"help": "sensitivity, grad_norm, fisher, magnitude, activation."})
    base_rank: int | None = field(default=None, metadata={"help": "Seed 000's base rank; default the budget's rank-equivalent."})
    min_rank: int = field(default=2, metadata={"help": "Smallest rank an adapted module gets."})
    max_rank: int | None = field(default=None, metadata={"help": "Largest rank a module may get; default min(d_in, d_out)."})
    threshold: float = field(default=0.5, metadata={"help": "Strategy threshold: share of the top score a module needs."})
    top_k: int | None = field(default=None, metadata={"help": "Strategy top_k: modules that get a rank (default half)."})
    gradient_samples: int = field(default=500, metadata={"help": "Importance pass: stratified random sample; see benchmarks/overhead.py."})
    head_probe_steps: int = field(default=0, metadata={"help": "Probe steps fitting the head first (every method); 0 = off."})
    warmstart: bool = field(default=True, metadata={"help": "Initialise B from the mean gradient (ba_lora)."})
    gamma: float | None = field(default=None, metadata={"help": "Warm-start step: ‖scaling·B·A‖ = gamma·‖G/RMS(G)‖ per module; "
                                                        "default per task: 0.005, or 1e-4 for a causal LM."})
    gamma_normalise: bool = field(default=True, metadata={"help": "Divide G by its RMS first; off: gamma is a raw learning rate."})
    decay_direction: str = field(default="decreasing", metadata={"help": "linear_decay: rank 'decreasing' or 'increasing' with depth."})
    heuristic_ratio: float = field(default=2.0, metadata={"help": "linear_decay: top/bottom rank ratio; attention_heavy: attention/FFN."})
    adalora_init_ratio: float = field(default=1.5, metadata={"help": "AdaLoRA starts at this × its target rank."})
    eva_rho: float = field(default=2.0, metadata={"help": "EVA's rho: the largest rank is rho × the budget rank."})
    realloc_every: int = field(default=50, metadata={"help": "ba_lora_dynamic: optimizer steps between reallocations."})
    realloc_warmup: int = field(default=50, metadata={"help": "ba_lora_dynamic: steps before the first reallocation."})
    realloc_final: float = field(default=0.2, metadata={"help": "ba_lora_dynamic: no reallocation in this last share of training."})
    realloc_strategy: str = field(default="proportional", metadata={"help": "ba_lora_dynamic: proportional, threshold or top_k."})
    realloc_ema: float = field(default=0.85, metadata={"help": "ba_lora_dynamic: EMA coefficient of the scores."})
    realloc_uncertainty: bool = field(default=False, metadata={"help": "ba_lora_dynamic: times AdaLoRA's uncertainty term."})
    epochs: int | None = field(default=None, metadata={"help": "Training epochs; default 5 few-shot, 3 otherwise (seed 000)."})
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
    quant: str | None = field(default=None, metadata={"help": "Quantise the frozen base weights: nf4, fp4, int4 or int8."})
    quant_group_size: int = field(default=64, metadata={"help": "Input columns per quantisation group; 0 = one per row."})
    quant_modules: str = field(default="targets", metadata={"help": "Quantise the adapted 'targets' or 'all' linear layers."})
    double_quant: bool = field(default=False, metadata={"help": "Store the quantisation scales as int8 too."})
    qa_lora: bool = field(default=False, metadata={"help": "QA-LoRA: A sees the input average-pooled per quantisation group."})
    quant_schedule: str = field(default="constant", metadata={"help": "Full precision → quantised: constant, linear, cosine."})
    grad_scale: float = field(default=1.0, metadata={"help": "Multiply the adapter's gradients by this factor."})
    quant_backend: str = field(default="torch", metadata={
        "help": "Quantised layers: balora's own pure-torch ones (torch), or bitsandbytes' Linear4bit (nf4/fp4 only)."})
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
    warmstart_init: str = field(default="balora", metadata={
        "help": "Warm start of the warm-starting methods: balora (scaling·B·A = −gamma·‖Ĝ‖/‖Ĝ·P_A‖·Ĝ·P_A, Ĝ = G/RMS(G)) or "
                "gora (GoRA's: B = G·pinv(A) times −learning_rate·√(d_in/r)/scaling, i.e. one SGD step on the "
                "unnormalised mean gradient G projected onto A's rows; --gamma and --gamma-normalise are then not used)."})

    def __post_init__(self) -> None:
        for f in fields(self):
            check_finite(f.name, getattr(self, f.name))
        positive = ["batch_size", "learning_rate", "gradient_samples", "max_length", "eval_batch_size",
                    "evaluations", "alpha_ratio", "heuristic_ratio", "eva_rho", "allocation_power", "realloc_every",
                    "pad_to_multiple_of"]
        positive_or_none = ["shots", "train_size", "rank", "budget", "budget_rank", "epochs", "base_rank", "top_k", "max_rank",
                             "eval_examples"]
        for name in positive + positive_or_none:
            value = getattr(self, name)
            if (value is not None or name in positive) and (not isinstance(value, int | float) or value <= 0):
                raise BaloraError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "warmup_ratio", "lora_dropout", "gamma", "min_rank", "head_probe_steps",
                     "realloc_warmup", "realloc_final", "realloc_ema"):
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
        if self.decay_direction not in ("decreasing", "increasing"):
            raise BaloraError(f"decay_direction must be 'decreasing' or 'increasing', got {self.decay_direction!r}")
        for name in self.tuned or []:
            if name not in TUNABLE:
                raise BaloraError(f"tuned: '{name}' cannot be tuned; tunable fields: {', '.join(sorted(TUNABLE))}")
        self._check_quantisation()
        if self.prompt_template not in ("alpaca", "chat"):
            raise BaloraError(f"prompt_template must be 'alpaca' or 'chat', got {self.prompt_template!r}")
        if self.precision not in PRECISIONS:
            raise BaloraError(f"unknown --precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if self.adalora_init_ratio < 1:
            raise BaloraError(f"adalora_init_ratio must be at least 1, got {self.adalora_init_ratio}")
        if self.warmstart_init not in WARMSTART_INITS:
            raise BaloraError(f"warmstart_init must be one of {', '.join(WARMSTART_INITS)}, got {self.warmstart_init!r}")
        self._check_method_settings()
        self._check_peft_options()

    def _check_method_settings(self) -> None:
        """Refuse a setting the method does not read (`method_settings`) given away from its default: ignored, it
        would still change the run's key and put an identical run in a report row of its own."""
        settings = method_settings()
        ignored = [name for name, readers in settings.items()
                   if self.method not in readers and getattr(self, name) != DEFAULTS[name]]
        if not ignored:
            return
        named = [f"--{name.replace('_', '-')} (read only by {', '.join(settings[name])})" for name in ignored]
        listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
        them = "it" if len(named) == 1 else "them"
        raise BaloraError(f"method {self.method} ignores {listed}; leave {them} out, or use a method that reads {them}")

    def _check_quantisation(self) -> None:
        if self.quant is not None and self.quant not in QUANT_FORMATS:
            raise BaloraError(f"unknown --quant '{self.quant}'; choose one of {', '.join(QUANT_FORMATS)}")
        if self.quant_schedule not in QUANT_SCHEDULES:
            raise BaloraError(f"unknown --quant-schedule '{self.quant_schedule}'; choose one of {', '.join(QUANT_SCHEDULES)}")
        if self.quant_modules not in ("targets", "all"):
            raise BaloraError(f"--quant-modules must be 'targets' or 'all', got {self.quant_modules!r}")
        if self.quant_group_size < 0:
            raise BaloraError(f"--quant-group-size must be positive (or 0: one group per row), got {self.quant_group_size}")
        if not self.grad_scale > 0 or self.grad_scale == float("inf"):
            raise BaloraError(f"--grad-scale must be a positive finite number, got {self.grad_scale!r}")
        needs_quant = [flag for flag, on in (("--qa-lora", self.qa_lora), ("--double-quant", self.double_quant),
                                             ("--quant-schedule", self.quant_schedule != "constant"),
                                             ("--quant-modules", self.quant_modules != "targets"),
                                             ("--quant-backend", self.quant_backend != "torch"),
                                             ("--grad-scale", self.grad_scale != 1.0)) if on]
        if self.quant is None and needs_quant:
            raise BaloraError(f"{', '.join(needs_quant)} need(s) a quantised base: add --quant nf4|fp4|int4|int8")
        if self.quant_backend not in QUANT_BACKENDS:
            raise BaloraError(f"unknown --quant-backend '{self.quant_backend}'; choose one of {', '.join(QUANT_BACKENDS)}")
        if self.quant is not None and self.quant_backend == "bitsandbytes":
            self._check_bitsandbytes()
        method = method_registry.find(self.method)
        if self.qa_lora and method is not None and method.own_parametrisation:
            raise BaloraError(f"--qa-lora pools LoRA's A; method {self.method} has its own parametrisation: "
                              "use lora, ba_lora or a heuristic")

    def _check_peft_options(self) -> None:
        if self.scaling_rule not in SCALING_RULES:
            raise BaloraError(f"unknown --scaling-rule '{self.scaling_rule}'; choose one of {', '.join(SCALING_RULES)}")
        if not self.loraplus_ratio > 0:
            raise BaloraError(f"--loraplus-ratio must be positive (1 = plain LoRA), got {self.loraplus_ratio!r}")
        method = method_registry.find(self.method)
        if method is not None and method.fixed_scaling and self.scaling_rule != "constant":
            raise BaloraError(f"--scaling-rule {self.scaling_rule}: {self.method} scales by its fixed initial rank "
                              "whatever it prunes; use --scaling-rule constant")
        if method is not None and method.full_precision_base and self.quant is not None:
            raise BaloraError(f"method {self.method} initialises from or normalises by the full-precision base weights "
                              "that --quant replaces; use lora or ba_lora with --quant")

    def _check_bitsandbytes(self) -> None:
        """What bitsandbytes' Linear4bit cannot store or do: balora's own layers do it (--quant-backend torch)."""
        unsupported = [
            (self.quant not in ("nf4", "fp4"), f"--quant {self.quant}: its 4-bit layers are NF4 and FP4 only (its int8 "
                                               "is LLM.int8, symmetric per row, not balora's asymmetric group-wise INT)"),
            (self.quant_group_size not in BNB_BLOCKSIZES, f"--quant-group-size {self.quant_group_size}: its blocks are "
                                                          f"{', '.join(map(str, BNB_BLOCKSIZES))} weights"),
            (self.qa_lora, "--qa-lora: its layers have no zero-point to fold the pooled adapter into"),
            (self.quant_schedule != "constant", f"--quant-schedule {self.quant_schedule}: its layers keep no "
                                                "full-precision residual to blend with")]
        reasons = [reason for bad, reason in unsupported if bad]
        if reasons:
            raise BaloraError(f"--quant-backend bitsandbytes cannot do {'; '.join(reasons)}; use --quant-backend torch")

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
        return asdict(self)

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
        for name, value in values.items():
            check_field(name, value, where)
        return cls(**values)


def default_epochs(shots: int | None) -> int:
    """Seed 000's epochs: 5 few-shot, 3 otherwise."""
    return 5 if shots is not None else 3


def protocol(config: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol of a config dict, stored or new: the config without its seed, where a field it
    leaves out has RunConfig's default and `epochs` is the number the run trains for (None means
    the default for its data), so that configs that train alike have one protocol."""
    values = {**RunConfig().to_dict(), **config}
    values.pop("seed")
    for f in fields(RunConfig):  # 8 and 8.0 are one learning rate or budget
        if f.type.startswith("float") and isinstance(values[f.name], int) and not isinstance(values[f.name], bool):
            values[f.name] = float(values[f.name])
    if values["epochs"] is None:
        values["epochs"] = default_epochs(values["shots"])
    return values


def protocol_key(config: Mapping[str, Any]) -> str:
    """A protocol as a string, to group runs by (equal strings, equal protocols)."""
    return json.dumps(protocol(config), sort_keys=True, default=str)


# Fields added after runs were first stored: part of `key()` only when not at their default. (The task and
# causal-LM fields are always keyed: every committed run file's key includes them.)
KEYED_WHEN_SET = frozenset({"tuned", "tuning", "quant", "quant_group_size", "quant_modules", "double_quant", "qa_lora",
                            "quant_schedule", "grad_scale", "quant_backend", "realloc_every", "realloc_warmup", "realloc_final",
                            "realloc_strategy", "realloc_ema", "realloc_uncertainty", "precision",
                            "pad_to_multiple_of", "scaling_rule", "loraplus_ratio", "warmstart_init"})
DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


def method_settings() -> dict[str, tuple[str, ...]]:
    """The settings only some methods read, in field order, each with the methods that read it (each method's
    `balora.method_registry.Method.settings`); the other methods ignore it, so `RunConfig` refuses it away
    from its default. Read from the registry on every call, so a method registered later is in it."""
    readers = method_registry.readers()
    unknown = set(readers) - set(DEFAULTS)
    if unknown:
        raise BaloraError(f"a registered method reads {', '.join(sorted(unknown))}, which RunConfig does not have")
    return {name: readers[name] for name in DEFAULTS if name in readers}


def full_precision_base() -> tuple[str, ...]:
    """The methods that initialise from, or normalise by, the full-precision base weights: no --quant."""
    return tuple(name for name in method_registry.names() if method_registry.get(name).full_precision_base)
# What a sweep may select on validation: not the run's identity (method, seed) or the tuning marks.
TUNABLE = {f.name for f in fields(RunConfig)} - {"method", "model", "dataset", "seed", "tuned", "tuning"}
# Quantised base formats and schedules (implemented in balora.quantisation), here so configs validate them.
QUANT_FORMATS = ("nf4", "fp4", "int4", "int8")
QUANT_SCHEDULES = ("constant", "linear", "cosine")
QUANT_BACKENDS = ("torch", "bitsandbytes")
# How each module's LoRA scaling follows its rank (`allocation.lora_alpha`).
SCALING_RULES = ("constant", "rslora", "standard")
# Warm starts of the warm-starting methods (balora.initialisation): BA-LoRA's, or GoRA's exact one.
WARMSTART_INITS = ("balora", "gora")
# Forward-pass precisions (balora.training.autocast): fp32 everywhere, or bfloat16 autocast over fp32 weights.
PRECISIONS = ("fp32", "bf16")
BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # bitsandbytes' `quantize_4bit` accepts these


def check_field(name: str, value: Any, where: str = "config") -> None:
    """A clear error for an unknown field or a value of the wrong type, prefixed by `where`."""
    types = {f.name: f.type for f in fields(RunConfig)}
    if name not in types:
        raise BaloraError(f"{where}: unknown key(s) {name}; known keys: {', '.join(sorted(types))}")
    _check_type(name, value, types[name], where)


def check_finite(name: str, value: Any, where: str = "") -> None:
    """nan and inf are floats, but no setting means anything with them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BaloraError(f"{where + ': ' if where else ''}{name} must be a finite number, got {value!r}")


def _check_type(name: str, value: Any, annotation: str, where: str) -> None:
    allowed = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list[str]": (list,)}
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

"""Options, PEFT-style: one frozen dataclass per unit (a method, a task, the quantised base), each field with its
help text, checks in `__post_init__`. A unit declares its options class; `RunConfig` (balora.config) stores a
run flat, one field per option, and shows it nested by section (`RunConfig.nested`).

This module holds what every options class shares (`Options`, `option`, the checks) and the options of the
tasks and of the quantised base. Those units (`balora.tasks`, `balora.base_transform`) import torch, and
`config` must not, so their options live here, below `config`, and each unit names its class
(`Task.options`, `Quantised.options`). The methods' options sit beside their records in
`balora.method_registry`, for the same reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from balora.errors import BaloraError


def option(default: Any, help: str) -> Any:
    """A field of an options class: its default and its help text (the CLI's, and the docs')."""
    return field(default=default, metadata={"help": help})


def flag(name: str) -> str:
    """The command-line flag of option `name`."""
    return f"--{name.replace('_', '-')}"


def check_positive(options: Any, *names: str, optional: bool = False) -> None:
    """Each of `names` a positive number (or None, where `optional`)."""
    for name in names:
        value = getattr(options, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise BaloraError(f"{name} must be a positive number, got {value!r}")


def check_not_negative(options: Any, *names: str) -> None:
    for name in names:
        if getattr(options, name) < 0:
            raise BaloraError(f"{name} must not be negative, got {getattr(options, name)!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BaloraError(f"unknown {flag(name)} '{value}'; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class Options:
    """A unit's options (module docstring). Subclasses may combine others (inheritance); each `__post_init__`
    checks its own fields and calls `super().__post_init__()`, so a combination checks every field once."""

    def __post_init__(self) -> None:
        """No fields, nothing to check."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, values: Any) -> Options:
        """The options read from anything with one attribute per option (a `RunConfig`): checks them."""
        return cls(**{name: getattr(values, name) for name in cls.names()})


# --- Tasks -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelledOptions(Options):
    """A classifier's data: where the labels are."""

    label_column: str = option("label", "Label column of a local or hub dataset.")


@dataclass(frozen=True)
class TextClassificationOptions(LabelledOptions):
    text_column: str | None = option(None, "Text column of a local or hub dataset.")


PROMPT_TEMPLATES = ("alpaca", "chat")


@dataclass(frozen=True)
class CausalLMOptions(Options):
    """Instruction tuning: the data's columns, the prompt, and which tokens are learnt."""

    instruction_columns: list[str] | None = option(
        None, "Instruction data: INSTRUCTION [INPUT] RESPONSE columns; default Alpaca's or Dolly's.")
    prompt_template: str = option("alpaca", "Causal LM prompt: alpaca, or chat (the model's chat template).")
    train_on_prompt: bool = option(False, "Causal LM: learn the prompt tokens too (default: only the response).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise BaloraError(f"prompt_template must be 'alpaca' or 'chat', got {self.prompt_template!r}")


# Each task's options by its name (`Task.options` names the same class; a test checks they agree).
TASK_OPTIONS: dict[str, type[Options]] = {"classification": TextClassificationOptions, "causal_lm": CausalLMOptions,
                                          "image": LabelledOptions}

# --- The quantised base (balora.base_transform.Quantised, implemented in balora.quantisation) ----------------

QUANT_FORMATS = ("nf4", "fp4", "int4", "int8")
QUANT_SCHEDULES = ("constant", "linear", "cosine")
QUANT_BACKENDS = ("torch", "bitsandbytes")
BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # bitsandbytes' `quantize_4bit` accepts these


@dataclass(frozen=True)
class QuantisedOptions(Options):
    """`--quant` and what it takes: a frozen base stored in 4 or 8 bits, the adapter trained on top."""

    quant: str | None = option(None, "Quantise the frozen base weights: nf4, fp4, int4 or int8.")
    quant_group_size: int = option(64, "Input columns per quantisation group; 0 = one per row.")
    quant_modules: str = option("targets", "Quantise the adapted 'targets' or 'all' linear layers.")
    double_quant: bool = option(False, "Store the quantisation scales as int8 too.")
    qa_lora: bool = option(False, "QA-LoRA: A sees the input average-pooled per quantisation group.")
    quant_schedule: str = option("constant", "Full precision → quantised: constant, linear, cosine.")
    grad_scale: float = option(1.0, "Multiply the adapter's gradients by this factor.")
    quant_backend: str = option(
        "torch", "Quantised layers: balora's own pure-torch ones (torch), or bitsandbytes' Linear4bit (nf4/fp4 only).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quant is not None:
            check_choice("quant", self.quant, QUANT_FORMATS)
        check_choice("quant_schedule", self.quant_schedule, QUANT_SCHEDULES)
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
        check_choice("quant_backend", self.quant_backend, QUANT_BACKENDS)
        if self.quant is not None and self.quant_backend == "bitsandbytes":
            self._check_bitsandbytes()

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

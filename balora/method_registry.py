"""What every method is, in one record per method: the one place a method is registered.

A `Method` names its build function (`balora.methods`, `(MethodContext) -> Prepared`) and declares what the
rest of balora needs to know about it: the settings it reads (`RunConfig` refuses the others away from their
defaults), whether it makes a gradient pass before training (the dry run's estimate), whether it needs the
full-precision base (no `--quant`), and what the report shows (label, group, colour, line and marker). Every
table that used to be kept by hand (config's settings per method, the estimate's methods without an
importance pass, the report's method lists, labels and figure styles) is derived from these records, so a
new method is its build function, its one `register(Method(...))` call and its test.

This module is light (the standard library only) and low in the layers, below `config`, because `config`
validates runs against it and the report and the dry run read it without importing torch or PEFT. That is
why a record names its build function as a dotted path (`"balora.methods.lora:lora"`), which
`balora.methods.get_method` imports when a run builds the adapter; a method defined elsewhere (a plug-in,
a test) may pass the function itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from balora.errors import BaloraError

GROUPS = ("main", "heuristic", "ablation")  # the report's order: main methods, heuristics, ablations
# Okabe-Ito colour names (balora.report.figures.OKABE_ITO), safe for the common colour-vision deficiencies
COLOURS = ("black", "orange", "sky", "green", "yellow", "blue", "vermillion", "purple", "grey")


class Style(NamedTuple):
    """A method's look in the report's figures: an Okabe-Ito colour name, a matplotlib line style and marker."""
    colour: str
    line: str
    marker: str


@dataclass(frozen=True)
class Method:
    """One method: how it is built and what the rest of balora needs to know about it."""
    name: str  # --method
    build: str | Callable[..., Any]  # (MethodContext) -> Prepared, or its "module:function" path (imported when built)
    label: str  # the report's name
    group: str  # one of GROUPS: where the report puts it
    style: Style  # its lines and markers in the figures
    settings: tuple[str, ...] = ()  # the RunConfig fields only some methods read that this one reads
    importance_pass: bool = True  # a gradient pass over the importance sample before training (balora.estimate)
    full_precision_base: bool = False  # initialises from, or normalises by, the full-precision base: no --quant
    own_parametrisation: bool = False  # not LoRA's A and B (AdaLoRA's SVD form, EVA's ranks): no --qa-lora
    fixed_scaling: bool = False  # scales by a fixed rank, whatever it prunes: --scaling-rule constant only
    extra_params: str = ""  # what it trains besides A and B, if anything (`balora allocate` says so)

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise BaloraError(f"method {self.name}: group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        if self.style.colour not in COLOURS:
            raise BaloraError(f"method {self.name}: colour must be one of {', '.join(COLOURS)}, got {self.style.colour!r}")
        if isinstance(self.build, str) and ":" not in self.build:
            raise BaloraError(f"method {self.name}: build must be a function or 'module:function', got {self.build!r}")


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make `method` known everywhere: `--method`, sweep specs, `RunConfig`'s checks, the dry run, the report."""
    if method.name in _REGISTRY:
        raise BaloraError(f"method {method.name} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Forget a registered method (for tests and plug-ins that registered their own)."""
    return _REGISTRY.pop(name)


def find(name: str) -> Method | None:
    return _REGISTRY.get(name)


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise BaloraError(f"unknown method '{name}'; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every method, in the order they were registered."""
    return tuple(_REGISTRY)


def group(name: str) -> tuple[str, ...]:
    """The methods of one of GROUPS, in registration order."""
    return tuple(m.name for m in _REGISTRY.values() if m.group == name)


def report_order() -> tuple[str, ...]:
    """The report's order: the main methods, then the heuristics, then the ablations."""
    return tuple(name for g in GROUPS for name in group(g))


def readers() -> dict[str, tuple[str, ...]]:
    """Each setting some method reads, with the methods that read it (registration order)."""
    found: dict[str, list[str]] = {}
    for method in _REGISTRY.values():
        for setting in method.settings:
            found.setdefault(setting, []).append(method.name)
    return {setting: tuple(methods) for setting, methods in found.items()}


# Settings shared by families: the allocators by `--strategy` (threshold, top_k and base_rank reach every
# allocation, but only these strategies use them; base_rank also the no-budget ablation's seed 000 ranks),
# the warm start (gamma too, but every config's task default sets it, so it is left out), the reallocation.
ALLOCATES = ("strategy", "threshold", "top_k", "base_rank", "importance_metric", "allocation_power")
WARM_STARTS = ("gamma_normalise", "warmstart_init")
REALLOCATES = ("realloc_every", "realloc_warmup", "realloc_final", "realloc_strategy", "realloc_ema",
               "realloc_uncertainty")
_BA_LORA = (*ALLOCATES, "warmstart", *WARM_STARTS)

# The built-in methods, in --method's order (balora.methods.<module> holds each build function).
for _method in (
    Method("lora", "balora.methods.lora:lora", "LoRA", "main", Style("black", "-", "o"), importance_pass=False),
    Method("ba_lora", "balora.methods.ba_lora:ba_lora", "BA-LoRA", "main", Style("vermillion", "-", "s"), _BA_LORA),
    Method("ba_lora_dynamic", "balora.methods.dynamic:ba_lora_dynamic", "BA-LoRA dynamic", "main",
           Style("orange", "-", "d"), (*_BA_LORA, *REALLOCATES)),
    Method("ba_lora_no_warmstart", "balora.methods.ba_lora:ba_lora_no_warmstart", "BA-LoRA w/o warm-start",
           "ablation", Style("vermillion", "--", "x"), ALLOCATES),
    Method("ba_lora_uniform", "balora.methods.ba_lora:ba_lora_uniform", "BA-LoRA uniform ranks", "ablation",
           Style("vermillion", ":", "+"), WARM_STARTS),
    Method("ba_lora_no_budget", "balora.methods.ba_lora:ba_lora_no_budget", "BA-LoRA w/o budget", "ablation",
           Style("vermillion", "-.", "*"), ("base_rank", "importance_metric", *WARM_STARTS)),
    Method("ba_lora_shuffled", "balora.methods.ba_lora:ba_lora_shuffled", "BA-LoRA shuffled ranks", "ablation",
           Style("grey", ":", "s"), _BA_LORA),
    Method("adalora", "balora.methods.adalora:adalora", "AdaLoRA", "main", Style("blue", "-", "^"),
           ("adalora_init_ratio",), importance_pass=False, own_parametrisation=True, fixed_scaling=True,
           extra_params="AdaLoRA's singular values, beside a budget counted in ranks"),
    Method("eva", "balora.methods.eva:eva", "EVA", "main", Style("green", "-", "D"), ("eva_rho",),
           own_parametrisation=True),
    Method("pissa", "balora.methods.peers:pissa", "PiSSA", "main", Style("sky", "-.", "P"), importance_pass=False,
           full_precision_base=True),
    Method("olora", "balora.methods.peers:olora", "OLoRA", "main", Style("purple", "-.", "h"), importance_pass=False,
           full_precision_base=True),
    Method("lora_ga", "balora.methods.peers:lora_ga", "LoRA-GA", "main", Style("green", "-.", "X"),
           full_precision_base=True),
    Method("dora", "balora.methods.peers:dora", "DoRA", "main", Style("blue", "-.", "8"), importance_pass=False,
           full_precision_base=True, extra_params="DoRA's magnitude vectors, paid from the budget"),
    Method("linear_decay", "balora.methods.heuristics:linear_decay", "linear decay", "heuristic",
           Style("orange", "--", "v"), ("decay_direction", "heuristic_ratio"), importance_pass=False),
    Method("attention_heavy", "balora.methods.heuristics:attention_heavy", "attention-heavy", "heuristic",
           Style("sky", "--", "<"), ("heuristic_ratio",), importance_pass=False),
    Method("magnitude", "balora.methods.heuristics:magnitude", "magnitude", "heuristic", Style("purple", "--", ">"),
           ("allocation_power",)),
    Method("activation", "balora.methods.heuristics:activation", "activation", "heuristic",
           Style("grey", "--", "p"), ("allocation_power",)),
):
    register(_method)
del _method

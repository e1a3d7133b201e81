"""What every method is, in one record per method: the one place a method is registered.

A `Method` names its build function (`balora.methods`, `(MethodContext) -> Prepared`) and declares what the
rest of balora needs to know about it: its options (a frozen dataclass of `balora.options.Options`, each field
with its help text, checked in `__post_init__`; `RunConfig` stores them flat, refuses another method's away
from their defaults, and shows them under `method:` in its nested view), whether it makes a gradient pass
before training (the dry run's estimate), whether it needs the full-precision base (no `--quant`), and what
the report shows (label, group, colour, line and marker). Every table that used to be kept by hand (config's
settings per method, the estimate's methods without an importance pass, the report's method lists, labels
and figure styles) is derived from these records, so a new method is its build function, its options class
(if it has options), its one `register(Method(...))` call and its test. Options shared by a family are one
class the family's classes inherit from.

This module is light (the standard library and `balora.options` only) and low in the layers, below `config`,
because `config` validates runs against it and the report and the dry run read it without importing torch or
PEFT. That is why a record names its build function as a dotted path (`"balora.methods.lora:lora"`), which
`balora.methods.get_method` imports when a run builds the adapter; a method defined elsewhere (a plug-in,
a test) may pass the function itself, and its options class may declare options of its own: `RunConfig`'s
fields are made when `balora.config` loads, so a run keeps those in `method_options` (`config.plugin_options`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from balora.errors import BaloraError
from balora.options import Options, check_not_negative, check_positive, option

GROUPS = ("main", "heuristic", "ablation")  # the report's order: main methods, heuristics, ablations
# Okabe-Ito colour names (balora.report.figures.OKABE_ITO), safe for the common colour-vision deficiencies
RANKS = ("uniform", "allocated", "shuffled")  # the same rank everywhere; by importance; the allocation's ranks permuted
INITS = ("zero", "warm-start")  # B = 0; B from the mean gradient (`warmstart_init` says whose formula)
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
    options: type[Options] = Options  # its options (none: Options itself)
    importance_pass: bool = True  # a gradient pass over the importance sample before training (balora.estimate)
    full_precision_base: bool = False  # initialises from, or normalises by, the full-precision base: no --quant
    own_parametrisation: bool = False  # not LoRA's A and B (AdaLoRA's SVD form, EVA's ranks): no --qa-lora
    fixed_scaling: bool = False  # scales by a fixed rank, whatever it prunes: --scaling-rule constant only
    extra_params: str = ""  # what it trains besides A and B, if anything (`balora allocate` says so)
    # Its place in the report's one-lever-at-a-time table (`balora.report.analysis.levers_rows`), which pairs arms
    # that differ in one of these alone: how its ranks are chosen (one of RANKS) and how B starts (one of INITS).
    # "" keeps it out of that table (a peer, a heuristic, dynamic reallocation: more than one of them differs).
    ranks: str = ""
    init: str = ""

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise BaloraError(f"method {self.name}: group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        if self.style.colour not in COLOURS:
            raise BaloraError(f"method {self.name}: colour must be one of {', '.join(COLOURS)}, got {self.style.colour!r}")
        if self.ranks not in ("", *RANKS) or self.init not in ("", *INITS):
            raise BaloraError(f"method {self.name}: ranks must be one of {', '.join(RANKS)} and init one of "
                              f"{', '.join(INITS)} (or both empty), got {self.ranks!r} and {self.init!r}")
        if isinstance(self.build, str) and ":" not in self.build:
            raise BaloraError(f"method {self.name}: build must be a function or 'module:function', got {self.build!r}")

    @property
    def settings(self) -> tuple[str, ...]:
        """The names of its options: the run settings it reads that not every method does."""
        return self.options.names()


_REGISTRY: dict[str, Method] = {}
_revision = 0  # counts the registry's changes, so that what is derived from it may be cached until the next one


def register(method: Method) -> Method:
    """Make `method` known everywhere: `--method`, sweep specs, `RunConfig`'s checks, the dry run, the report."""
    global _revision
    if method.name in _REGISTRY:
        raise BaloraError(f"method {method.name} is already registered")
    _REGISTRY[method.name] = method
    _revision += 1
    return method


def unregister(name: str) -> Method:
    """Forget a registered method (for tests and plug-ins that registered their own)."""
    global _revision
    method = _REGISTRY.pop(name)
    _revision += 1
    return method


def revision() -> int:
    """A number that changes whenever a method is registered or forgotten: a cache of something read from the
    registry (`config.plugin_options`) is stale once this differs from the number it was made at."""
    return _revision


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


# The options of the built-in methods, shared by families through inheritance. The allocators choose ranks by
# importance (importance_metric, base_rank: the minmax strategy's and the no-budget ablation's base rank) under
# `--strategy`; the warm start sets B from the mean gradient (gamma too, but every config's task default sets
# it, so it is a common field); dynamic BA-LoRA reallocates during training.
WARMSTART_INITS = ("balora", "gora")  # BA-LoRA's warm start, or GoRA's exact one (balora.initialisation)


@dataclass(frozen=True)
class ImportanceOptions(Options):
    importance_metric: str = option("sensitivity", "sensitivity, grad_norm, fisher, magnitude, activation.")
    base_rank: int | None = option(None, "Base rank of the minmax strategy and of the no-budget ablation; default "
                                         "the budget's rank-equivalent.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "base_rank", optional=True)


@dataclass(frozen=True)
class PowerOptions(Options):
    allocation_power: float = option(1.0, "Ranks ∝ importance^power (proportional, threshold, top_k).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "allocation_power")


@dataclass(frozen=True)
class AllocationOptions(ImportanceOptions, PowerOptions):
    strategy: str = option("proportional", "Allocation: proportional, minmax (old name: seed000), threshold, top_k, "
                                           "uniform.")
    threshold: float = option(0.5, "Strategy threshold: share of the top score a module needs.")
    top_k: int | None = option(None, "Strategy top_k: modules that get a rank (default half).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "top_k", optional=True)


@dataclass(frozen=True)
class WarmStartOptions(Options):
    gamma_normalise: bool = option(True, "Divide G by its RMS first; off: gamma is a raw learning rate.")
    warmstart_init: str = option("balora", "Warm start of the warm-starting methods: balora (scaling·B·A = "
                                           "−gamma·‖Ĝ‖/‖Ĝ·P_A‖·Ĝ·P_A, Ĝ = G/RMS(G)) or gora (GoRA's: B = G·pinv(A) times "
                                           "−learning_rate·√(d_in/r)/scaling, i.e. one SGD step on the unnormalised "
                                           "mean gradient G projected onto A's rows; --gamma and --gamma-normalise "
                                           "are then not used).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmstart_init not in WARMSTART_INITS:
            raise BaloraError(f"warmstart_init must be one of {', '.join(WARMSTART_INITS)}, got {self.warmstart_init!r}")


@dataclass(frozen=True)
class BALoRAOptions(AllocationOptions, WarmStartOptions):
    warmstart: bool = option(True, "Initialise B from the mean gradient (ba_lora).")


@dataclass(frozen=True)
class NoBudgetOptions(ImportanceOptions, WarmStartOptions):
    """The no-budget ablation: importance and the warm start, no strategy."""


@dataclass(frozen=True)
class DynamicOptions(BALoRAOptions):
    realloc_every: int = option(50, "ba_lora_dynamic: optimizer steps between reallocations.")
    realloc_warmup: int = option(50, "ba_lora_dynamic: steps before the first reallocation.")
    realloc_final: float = option(0.2, "ba_lora_dynamic: no reallocation in this last share of training.")
    realloc_strategy: str = option("proportional", "ba_lora_dynamic: proportional, threshold or top_k.")
    realloc_ema: float = option(0.85, "ba_lora_dynamic: EMA coefficient of the scores.")
    realloc_uncertainty: bool = option(False, "ba_lora_dynamic: times AdaLoRA's uncertainty term.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "realloc_every")
        check_not_negative(self, "realloc_warmup", "realloc_final", "realloc_ema")


@dataclass(frozen=True)
class AdaLoRAOptions(Options):
    adalora_init_ratio: float = option(1.5, "AdaLoRA starts at this × its target rank.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adalora_init_ratio < 1:
            raise BaloraError(f"adalora_init_ratio must be at least 1, got {self.adalora_init_ratio}")


@dataclass(frozen=True)
class EVAOptions(Options):
    eva_rho: float = option(2.0, "EVA's rho: the largest rank is rho × the budget rank.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "eva_rho")


@dataclass(frozen=True)
class HeuristicOptions(Options):
    heuristic_ratio: float = option(2.0, "linear_decay: top/bottom rank ratio; attention_heavy: attention/FFN.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "heuristic_ratio")


@dataclass(frozen=True)
class LinearDecayOptions(HeuristicOptions):
    decay_direction: str = option("decreasing", "linear_decay: rank 'decreasing' or 'increasing' with depth.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decay_direction not in ("decreasing", "increasing"):
            raise BaloraError(f"decay_direction must be 'decreasing' or 'increasing', got {self.decay_direction!r}")


# The built-in methods, in --method's order (balora.methods.<module> holds each build function).
for _method in (
    Method("lora", "balora.methods.lora:lora", "LoRA", "main", Style("black", "-", "o"), importance_pass=False,
           ranks="uniform", init="zero"),
    Method("ba_lora", "balora.methods.ba_lora:ba_lora", "BA-LoRA", "main", Style("vermillion", "-", "s"), BALoRAOptions,
           ranks="allocated", init="warm-start"),
    Method("ba_lora_dynamic", "balora.methods.dynamic:ba_lora_dynamic", "BA-LoRA dynamic", "main",
           Style("orange", "-", "d"), DynamicOptions),
    Method("ba_lora_no_warmstart", "balora.methods.ba_lora:ba_lora_no_warmstart", "BA-LoRA w/o warm-start",
           "ablation", Style("vermillion", "--", "x"), AllocationOptions, ranks="allocated", init="zero"),
    Method("ba_lora_uniform", "balora.methods.ba_lora:ba_lora_uniform", "BA-LoRA uniform ranks", "ablation",
           Style("vermillion", ":", "+"), WarmStartOptions, ranks="uniform", init="warm-start"),
    Method("ba_lora_no_budget", "balora.methods.ba_lora:ba_lora_no_budget", "BA-LoRA w/o budget", "ablation",
           Style("vermillion", "-.", "*"), NoBudgetOptions),
    Method("ba_lora_shuffled", "balora.methods.ba_lora:ba_lora_shuffled", "BA-LoRA shuffled ranks", "ablation",
           Style("grey", ":", "s"), BALoRAOptions, ranks="shuffled", init="warm-start"),
    Method("adalora", "balora.methods.adalora:adalora", "AdaLoRA", "main", Style("blue", "-", "^"),
           AdaLoRAOptions, importance_pass=False, own_parametrisation=True, fixed_scaling=True,
           extra_params="AdaLoRA's singular values, beside a budget counted in ranks"),
    Method("eva", "balora.methods.eva:eva", "EVA", "main", Style("green", "-", "D"), EVAOptions,
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
           Style("orange", "--", "v"), LinearDecayOptions, importance_pass=False),
    Method("attention_heavy", "balora.methods.heuristics:attention_heavy", "attention-heavy", "heuristic",
           Style("sky", "--", "<"), HeuristicOptions, importance_pass=False),
    Method("magnitude", "balora.methods.heuristics:magnitude", "magnitude", "heuristic", Style("purple", "--", ">"),
           PowerOptions),
    Method("activation", "balora.methods.heuristics:activation", "activation", "heuristic",
           Style("grey", "--", "p"), PowerOptions),
):
    register(_method)
del _method

"""The methods: how each one turns a base model and a budget into a PEFT adapter.

One module per method or close family holds its build function, `(MethodContext) -> Prepared`: `lora`,
`ba_lora` (BA-LoRA, its ablations and the shuffled control), `dynamic` (dynamic BA-LoRA), `adalora`, `eva`,
`heuristics` and `peers` (PiSSA, OLoRA, LoRA-GA, DoRA); `base` holds what they share (`MethodContext`,
`Prepared`, `lora_config`, the importance pass and allocation helpers, `save_adapter`).

What a method *is* (its options class, its report label, group and style, whether it needs an importance pass or
the full-precision base) is declared once, in its `balora.method_registry.Method` record, registered by one
`register` call. The records live in that light module, below `config`, not here: `RunConfig` validates runs
against them, and the report and the dry run read them, none of which may import this package (it sits above
`config` in the layers, and imports torch and PEFT). A record names its build function by a dotted path;
`get_method` imports it when a run builds the adapter, and `METHODS` maps every registered name to its build
function, registrations made after import included.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping

from balora import method_registry
from balora.method_registry import Method, register
from balora.methods.adalora import adalora
from balora.methods.ba_lora import ba_lora, ba_lora_no_budget, ba_lora_no_warmstart, ba_lora_shuffled, ba_lora_uniform
from balora.methods.base import MethodContext, Prepared, StepHook, initial_state, lora_config, save_adapter
from balora.methods.dynamic import ba_lora_dynamic
from balora.methods.eva import eva
from balora.methods.heuristics import activation, attention_heavy, linear_decay, magnitude
from balora.methods.lora import lora
from balora.methods.peers import PISSA_INIT, dora, dora_rank, lora_ga, olora, pissa

Build = Callable[[MethodContext], Prepared]


def build_function(method: Method) -> Build:
    """A registered method's build function, imported from its "module:function" path if need be."""
    if callable(method.build):
        return method.build
    module, _, name = method.build.partition(":")
    return getattr(importlib.import_module(module), name)


def get_method(name: str) -> Build:
    """The build function of the registered method `name`; an unknown name is a BaloraError listing the known."""
    return build_function(method_registry.get(name))


class _Builds(Mapping[str, Build]):
    """Every registered method's build function by name, in registration order; read from the registry on
    every access, so a method registered later is in it."""

    def __getitem__(self, name: str) -> Build:
        if method_registry.find(name) is None:
            raise KeyError(name)
        return get_method(name)

    def __iter__(self) -> Iterator[str]:
        return iter(method_registry.names())

    def __len__(self) -> int:
        return len(method_registry.names())

    def __repr__(self) -> str:
        return f"METHODS({', '.join(self)})"


METHODS: Mapping[str, Build] = _Builds()

__all__ = [
    "METHODS", "PISSA_INIT", "Method", "MethodContext", "Prepared", "StepHook", "activation", "adalora",
    "attention_heavy", "ba_lora", "ba_lora_dynamic", "ba_lora_no_budget", "ba_lora_no_warmstart", "ba_lora_shuffled",
    "ba_lora_uniform", "build_function", "dora", "dora_rank", "eva", "get_method", "initial_state", "linear_decay",
    "lora", "lora_config", "lora_ga", "magnitude", "olora", "pissa", "register", "save_adapter",
]

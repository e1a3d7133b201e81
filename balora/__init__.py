"""balora: budget-aware adaptive LoRA on Hugging Face PEFT.

Data flows one way: assets → models/data → importance → allocation → initialisation → methods → api
→ training → run → store → sweeps → report.

The public surface for your own training code (imported on first use, so `import balora` stays light):

    plan(model, dataloader, budget_rank=8, ...) -> Plan     importance + allocation, no training
    Plan: apply(model), lora_config(), to_dict()/from_dict(), save()/load()
    Plan.reallocator(peft_model, total_steps=...)            ranks that move during training, for a plain loop
    ReallocationCallback(plan, every=..., warmup=...)        the same for a 🤗 Trainer
    rank_budget, lora_budget, rank_equivalent               the budget helpers
    target_modules                                          adaptable modules with their true shapes
    BaloraError                                             every user-facing error
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "plan": "balora.api",
    "Plan": "balora.api",
    "ReallocationCallback": "balora.api",
    "rank_budget": "balora.allocation",
    "lora_budget": "balora.allocation",
    "rank_equivalent": "balora.allocation",
    "target_modules": "balora.models",
    "BaloraError": "balora.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'balora' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)

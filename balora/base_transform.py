"""What a run does to its frozen base model, as hooks the run calls unconditionally, in this order:

    prepare(model, targets, meter)        setup, once the model and its targets are loaded (quantise the base)
    importance_context(model)             a context around the method's build: importance, allocation, warm-start
    adapter_created(model)                right after `get_peft_model`, before the method's `initialise`
    before_training(model, steps)         after the method's `initialise`, before the first step
    on_validation(model)                  at each validation point, step 0 included (timed with the validation)
    after_step(model, step)               after each optimizer step, before the method's own `after_step`
    parameters_replaced(model)            when the method's `after_step` replaced adapter parameters (a resize)
    before_evaluation(model)              once training is over, before the test metrics
    finalise(model, result)               before the adapter is saved: adds to `result`, leaves a plain adapter

`FullPrecision` (no `--quant`) does nothing at any of them. `Quantised` is `--quant` and its options:
`prepare` replaces the targets (or every linear layer) by quantised layers; the importance pass runs on a
dense float Ŵ (`quantisation.dense_weights`); QA-LoRA's A is pooled per group; `--grad-scale` hooks the
adapter's gradients (again after a resize: new parameters); `--quant-schedule` sets λ at every step and 1
before evaluation; the balance ‖scaling·B·A‖/‖W − Ŵ‖ is kept at each validation point; `finalise` writes
`result["quantisation"]` and expands pooled As so the saved adapter loads without balora.
`base_transform(config)` picks one.

After the run, `merge_run` (`balora merge`) is the quantised base's last step, outside any run: it rebuilds a
QA-LoRA run's INT base, folds the saved adapter into its zero-points and saves the still quantised model.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from peft import PeftModel
from peft.utils import ModulesToSaveWrapper
from torch import nn

from balora import bitsandbytes_backend, quantisation
from balora.config import RunConfig
from balora.errors import BaloraError, output_folder
from balora.measure import PhaseMeter
from balora.models import TargetModule, head_module_names, target_modules
from balora.options import Options, QuantisedOptions
from balora.tasks import of_result


class BaseTransform:
    """The hooks (module docstring); each does nothing here."""

    options: ClassVar[type[Options]] = Options  # its options: the `base_transform:` section of a nested config

    def prepare(self, model: nn.Module, targets: list[TargetModule], meter: PhaseMeter) -> None:
        """Change the loaded base model in place, before budget, importance or any method sees it."""

    def importance_context(self, model: nn.Module) -> AbstractContextManager[Any]:
        """Entered around the method's build (importance needs weight gradients)."""
        return nullcontext()

    def adapter_created(self, model: nn.Module) -> None:
        """The PEFT model was just built (its adapter freshly initialised by PEFT)."""

    def before_training(self, model: nn.Module, steps: int) -> None:
        """The adapter is initialised and counted; training will take `steps` optimizer steps."""

    def on_validation(self, model: nn.Module) -> None:
        """A validation point (before its metrics)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Optimizer step `step` (1-based) is done."""

    def parameters_replaced(self, model: nn.Module) -> None:
        """The method's step hook replaced adapter parameters by new ones."""

    def before_evaluation(self, model: nn.Module) -> None:
        """Training is over; the test metrics come next."""

    def finalise(self, model: nn.Module, result: dict[str, Any]) -> None:
        """The result is complete but not written, the adapter not saved."""


class FullPrecision(BaseTransform):
    """No `--quant`: the base stays as loaded."""


def quantise_base(model: nn.Module, config: RunConfig, targets: list[TargetModule], keep_residual: bool = False) -> None:
    """Quantise the run's `--quant-modules` (the targets, or every linear layer but the head) in place."""
    names = ([t.name for t in targets] if config.quant_modules == "targets"
             else quantisation.linear_module_names(model, tuple(head_module_names(model))))
    quantisation.quantise_model(model, names, config.quant, config.quant_group_size, config.double_quant, keep_residual,
                                config.quant_backend)


class Quantised(BaseTransform):
    """`--quant` with its format, group size, double quantisation, QA-LoRA, schedule, gradient scale and backend."""

    options = QuantisedOptions

    def __init__(self, config: RunConfig) -> None:
        if config.quant_backend == "bitsandbytes":
            bitsandbytes_backend.require()  # fail fast on a missing optional package, before anything loads
        self.config = config
        self.steps = 0
        self.balance: list[dict[str, float]] = []  # per validation point

    def prepare(self, model: nn.Module, targets: list[TargetModule], meter: PhaseMeter) -> None:
        with meter.phase("quantise"):
            quantise_base(model, self.config, targets, keep_residual=self.config.quant_schedule != "constant")

    def importance_context(self, model: nn.Module) -> AbstractContextManager[Any]:
        return quantisation.dense_weights(model)  # a float Ŵ for the importance pass

    def adapter_created(self, model: nn.Module) -> None:
        if self.config.qa_lora:
            quantisation.pool_adapters(model)

    def _scale_gradients(self, model: nn.Module) -> None:
        if self.config.grad_scale != 1.0:
            quantisation.scale_adapter_gradients(model, self.config.grad_scale)

    def before_training(self, model: nn.Module, steps: int) -> None:
        self.steps = steps
        self._scale_gradients(model)
        quantisation.set_blend(model, quantisation.blend_at(self.config.quant_schedule, 0, steps))

    def on_validation(self, model: nn.Module) -> None:
        self.balance.append(quantisation.balance(model))

    def after_step(self, model: nn.Module, step: int) -> None:
        quantisation.set_blend(model, quantisation.blend_at(self.config.quant_schedule, step, self.steps))

    def parameters_replaced(self, model: nn.Module) -> None:
        self._scale_gradients(model)  # ba_lora_dynamic's resized modules have new, unscaled parameters

    def before_evaluation(self, model: nn.Module) -> None:
        quantisation.set_blend(model, 1.0)  # whatever the schedule, the model is evaluated on the quantised weights

    def finalise(self, model: nn.Module, result: dict[str, Any]) -> None:
        result["quantisation"] = self.summary(model, result["curves"]["validation"])
        quantisation.expand_adapters(model)  # the saved adapter is a plain PEFT LoRA adapter

    def summary(self, model: nn.Module, validation: list) -> dict[str, Any]:
        """Format, stored bytes against fp32, and the balance measure at each validation point."""
        config = self.config
        curve = [[step, {"mean": float(np.mean(list(r.values()))), "min": min(r.values()), "max": max(r.values())}]
                 for (step, _), r in zip(validation, self.balance, strict=True) if r]
        return {"format": config.quant, "group_size": config.quant_group_size, "double_quant": config.double_quant,
                "qa_lora": config.qa_lora, "schedule": config.quant_schedule, "grad_scale": config.grad_scale,
                "memory": quantisation.memory_report(quantisation.quantised_layers(model)),
                "balance": curve, "balance_final": quantisation.balance(model)}


def base_transform(config: RunConfig) -> BaseTransform:
    """The run's transform of its base: `Quantised` with `--quant`, else `FullPrecision`."""
    return FullPrecision() if config.quant is None else Quantised(config)


def merge_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """`balora merge`: fold a QA-LoRA run's adapter into its INT base's zero-points and save the merged,
    still group-quantised model (with the trained head and the tokenizer or image processor) to `out_dir`."""
    # checked first: save_quantised would write into a full folder, the run's own adapter/ even
    run_dir, out_dir = Path(run_dir), output_folder(out_dir, "--out", empty=True)
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError) as err:
        raise BaloraError(f"{run_dir} is not a finished run folder (result.json: {err}); give a folder "
                          "`balora train --out` wrote") from None
    config = RunConfig.from_dict(result["config"], where=str(run_dir / "result.json"))
    if config.quant not in ("int4", "int8") or not config.qa_lora:
        raise BaloraError(f"{run_dir} was trained with --quant {config.quant}{' --qa-lora' if config.qa_lora else ''}; "
                          "merge needs --quant int4 or int8 with --qa-lora (an update folds only into INT zero-points, "
                          "group by group)")
    task = of_result(result)
    model = task.load_model(config, result["data"]["labels"])
    quantise_base(model, config, target_modules(model, config.target_modules))
    peft_model = PeftModel.from_pretrained(model, run_dir / "adapter")
    quantisation.fold_into_zero_points(peft_model)
    merged = unload_keeping_trained_heads(peft_model)
    quantisation.save_quantised(merged, out_dir, task.name)
    task.load_processor(config).save_pretrained(out_dir)
    return quantisation.memory_report(quantisation.quantised_layers(merged))


def unload_keeping_trained_heads(peft_model: PeftModel) -> nn.Module:
    """The base model without its LoRA layers (`merge_run` has folded them into the zero-points) and with each
    module PEFT trained and saved whole (`modules_to_save`: the classification head) as trained. PEFT's `unload`
    gives back the module as it was before training (from 0.22.0; 0.21 copied the trained weights into it)."""
    trained = {name: module.modules_to_save[module.active_adapters[0]]
               for name, module in peft_model.base_model.model.named_modules()
               if isinstance(module, ModulesToSaveWrapper) and module.active_adapters}
    merged = peft_model.unload()
    for name, module in trained.items():
        quantisation.replace_module(merged, name, module)
    return merged

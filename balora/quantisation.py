"""Quantised frozen base weights (seed 003's QA-LoRA track), in pure torch: CPU and GPU alike.

`QuantLinear` replaces a frozen `nn.Linear`/`Conv1D` by group-wise codes. Each row of the weight
`(d_out, d_in)` is cut into groups of `group_size` consecutive input columns (group size 0 = one
group per row); every group has its own scale, and INT formats also a zero-point:

    nf4, fp4   Ŵ = s · T[q]        T: bitsandbytes' 16-value codebook, s: the group's absmax
    int4, int8 Ŵ = s · (q − z)     asymmetric min–max: s = (max − min)/(2^b − 1), z = round(−min/s)

4-bit codes are packed two per byte (even column in the low nibble, odd column in the high one),
8-bit codes one per byte. Scales are stored as float16 (rounded up, so no weight falls outside the
grid) and zero-points as float16 integers; a QA-LoRA merge makes zero-points real-valued and stores
them as float32. `double_quant` stores the scales themselves as int8 (minus their mean, one float32
absmax per block of 256), like bitsandbytes' nested quantisation but with a linear int8 grid where
bitsandbytes uses its dynamic 8-bit map. The weight is dequantised inside
the forward and again in the backward (`_QuantisedMatmul` saves nothing weight-sized), so no float
copy of the base weight outlives one layer's computation.

QA-LoRA (Xu et al., arXiv 2309.14717; repository yuhuixu1993/qa-lora): the adapter's A sees the input
average-pooled over each quantisation group (`GroupPooledLinear`, A is `r × d_in/group_size`). Its
update is then constant over each group's columns, so it is exactly a shift of that group's
zero-point (`fold_into_zero_points`): the merged model is still group-quantised.

Schedule (seed 003's constant/linear/cosine): while training, a layer uses
`W_λ = Ŵ + (1 − λ)·(W − Ŵ)`: λ = 0 is the full-precision weight, λ = 1 the quantised one. λ(t) at
optimizer step t of T is 1 (constant), t/T (linear) or (1 − cos(πt/T))/2 (cosine). Until λ reaches 1
the float residual W − Ŵ is kept (memory of a full-precision weight); at λ = 1 it is freed, and
evaluation always uses the quantised weight.

`--quant-backend bitsandbytes` builds bitsandbytes' `Linear4bit` layers instead (`balora.bitsandbytes_backend`,
NF4/FP4, constant schedule, no QA-LoRA); the functions below that read a model's quantised layers handle both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from balora import bitsandbytes_backend, tasks
from balora.errors import BaloraError
from balora.options import QUANT_FORMATS as FORMATS
from balora.options import QUANT_SCHEDULES as SCHEDULES

# bitsandbytes `functional.py`, `get_4bit_type` (bitsandbytes-foundation/bitsandbytes): NF4 from
# `create_normal_map(offset=0.9677083, use_extra_value=True)`; FP4 is the raw table divided by 12
# (its absmax). Code i means entry i, as in bitsandbytes.
NF4_VALUES = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)
FP4_VALUES = tuple(v / 12 for v in (0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0,
                                    -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0))
CODEBOOKS = {"nf4": NF4_VALUES, "fp4": FP4_VALUES}
BITS = {"nf4": 4, "fp4": 4, "int4": 4, "int8": 8}
DOUBLE_QUANT_BLOCK = 256


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """`(rows, cols)` codes in 0..15 → `(rows, cols/2)` bytes: even column low nibble, odd column high."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`."""
    return torch.stack((packed & 0x0F, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def _round_up_half(values: torch.Tensor) -> torch.Tensor:
    """float16 values ≥ `values` (the nearest, else one step up), zero mapped to 1 (an empty group)."""
    values = torch.where(values > 0, values, torch.ones_like(values)).clamp(min=2.0 ** -14)  # no subnormals
    half = values.to(torch.float16).float()
    return torch.where(half < values, half * (1 + 2.0 ** -10), half).to(torch.float16)


def check_groups(in_features: int, group: int, bits: int) -> None:
    """A layer's inputs must split into whole groups (and, at 4 bits, whole bytes)."""
    if in_features % group or (bits == 4 and in_features % 2):
        raise BaloraError(f"a layer with {in_features} inputs cannot be cut into groups of {group} columns; "
                          f"pick a --quant-group-size that divides it (or 0: one group per row)")


def float_weight(module: nn.Module) -> torch.Tensor:
    """The `(d_out, d_in)` float32 weight of an `nn.Linear` or GPT-2 `Conv1D` (whose weight is stored transposed)."""
    return (module.weight.T if isinstance(module, Conv1D) else module.weight).detach().float()


class QuantLinear(nn.Linear):
    """A frozen linear layer stored as group-wise codes; dequantised on the fly.

    It is an `nn.Linear` to PEFT (which wraps it with its LoRA layer as usual); `weight` is the
    dequantised weight, computed when read. Build one with `QuantLinear.from_linear`."""

    def __init__(self, in_features: int, out_features: int, fmt: str, group_size: int, bias: bool = True,
                 double_quant: bool = False) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: there is no float weight
        if fmt not in BITS:
            raise BaloraError(f"unknown quantisation format '{fmt}'; choose one of {', '.join(FORMATS)}")
        group = group_size or in_features
        check_groups(in_features, group, BITS[fmt])
        self.in_features, self.out_features, self.fmt, self.group_size = in_features, out_features, fmt, group
        self.double_quant = double_quant
        groups = (out_features, in_features // group)
        width = in_features // 2 if BITS[fmt] == 4 else in_features
        self.register_buffer("codes", torch.zeros(out_features, width, dtype=torch.uint8))
        if double_quant:
            blocks = -(-groups[0] * groups[1] // DOUBLE_QUANT_BLOCK)
            self.register_buffer("scale_codes", torch.zeros(groups, dtype=torch.int8))
            self.register_buffer("scale_absmax", torch.ones(blocks))
            self.register_buffer("scale_mean", torch.zeros(()))
        else:
            self.register_buffer("scales", torch.ones(groups, dtype=torch.float16))
        self.register_buffer("zeros", torch.zeros(groups, dtype=torch.float16) if fmt.startswith("int") else None)
        table = torch.tensor(CODEBOOKS[fmt]) if fmt in CODEBOOKS else None
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("residual", None)  # W − Ŵ while a schedule blends towards Ŵ
        self.blend = 1.0
        self.register_parameter("dense", None)  # a float copy only inside `dense_weights`
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None)
        self.quant_error = 0.0  # ‖W − Ŵ‖_F at quantisation

    @classmethod
    @torch.no_grad()
    def from_linear(cls, module: nn.Module, fmt: str, group_size: int, double_quant: bool = False,
                    keep_residual: bool = False) -> QuantLinear:
        """Quantise an `nn.Linear` or GPT-2 `Conv1D`."""
        weight = float_weight(module)
        layer = cls(weight.shape[1], weight.shape[0], fmt, group_size, module.bias is not None, double_quant)
        layer.to(weight.device)
        layer._quantise(weight)
        if module.bias is not None:
            layer.bias.copy_(module.bias.detach().float())
        error = weight - layer.dequantise()
        layer.quant_error = float(torch.linalg.matrix_norm(error))
        if keep_residual:
            layer.residual = error
        return layer

    def _grouped(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(self.out_features, -1, self.group_size)

    def _quantise(self, weight: torch.Tensor) -> None:
        grouped = self._grouped(weight)
        levels = (1 << BITS[self.fmt]) - 1
        if self.fmt in CODEBOOKS:
            self._store_scales(_round_up_half(grouped.abs().amax(-1)))
            values, order = self.table.sort()
            normalised = (grouped / self.group_scales()[..., None]).clamp(-1, 1)
            codes = order[torch.bucketize(normalised, (values[1:] + values[:-1]) / 2)]  # nearest entry
        else:
            low, high = grouped.amin(-1).clamp(max=0), grouped.amax(-1).clamp(min=0)
            self._store_scales(_round_up_half((high - low) / levels))
            scales = self.group_scales()
            self.zeros.copy_(torch.round(-low / scales).clamp(0, levels))
            codes = torch.round(grouped / scales[..., None] + self.zeros.float()[..., None]).clamp(0, levels)
        codes = codes.reshape(self.out_features, self.in_features)
        self.codes.copy_(pack_nibbles(codes) if BITS[self.fmt] == 4 else codes.to(torch.uint8))

    def _store_scales(self, scales: torch.Tensor) -> None:
        if not self.double_quant:
            self.scales.copy_(scales)
            return
        flat = scales.float().flatten()
        mean = flat.mean()
        centred = flat - mean
        padded = F.pad(centred, (0, self.scale_absmax.numel() * DOUBLE_QUANT_BLOCK - flat.numel()))
        absmax = padded.reshape(-1, DOUBLE_QUANT_BLOCK).abs().amax(-1).clamp(min=1e-12)
        codes = torch.round(padded.reshape(-1, DOUBLE_QUANT_BLOCK) / absmax[:, None] * 127)
        self.scale_mean.copy_(mean)
        self.scale_absmax.copy_(absmax)
        self.scale_codes.copy_(codes.flatten()[:flat.numel()].reshape(scales.shape).to(torch.int8))

    def group_scales(self) -> torch.Tensor:
        """The `(d_out, groups)` scales as float32 (decoded from int8 under double quantisation)."""
        if not self.double_quant:
            return self.scales.float()
        expanded = self.scale_absmax.repeat_interleave(DOUBLE_QUANT_BLOCK)[:self.scale_codes.numel()]
        return self.scale_codes.float() * expanded.reshape(self.scale_codes.shape) / 127 + self.scale_mean

    def dequantise(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ŵ `(d_out, d_in)`, blended with the residual while a schedule is below 1."""
        codes = unpack_nibbles(self.codes) if BITS[self.fmt] == 4 else self.codes
        grouped = self._grouped(codes)
        scales = self.group_scales()[..., None]
        if self.fmt in CODEBOOKS:
            weight = self.table[grouped.long()] * scales
        else:
            weight = (grouped.float() - self.zeros.float()[..., None]) * scales
        weight = weight.reshape(self.out_features, self.in_features)
        if self.residual is not None and self.blend < 1:
            weight = weight + (1 - self.blend) * self.residual
        return weight.to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        return self.dense if self.dense is not None else self.dequantise()

    def set_blend(self, blend: float) -> None:
        """Schedule position λ; at 1 the full-precision residual is dropped for good."""
        self.blend = blend
        if blend >= 1:
            self.residual = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            return F.linear(x, self.dense, self.bias)
        out = _QuantisedMatmul.apply(x, self)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def stored_bytes(self) -> int:
        """Bytes of what stands for the weight: codes, scales, zero-points (and a schedule's residual)."""
        names = ("codes", "scales", "zeros", "scale_codes", "scale_absmax", "scale_mean", "residual")
        return sum(b.numel() * b.element_size() for n in names if (b := getattr(self, n, None)) is not None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt}, "
                f"group_size={self.group_size}, double_quant={self.double_quant}")


class _QuantisedMatmul(torch.autograd.Function):
    """x·Ŵᵀ whose backward dequantises Ŵ again instead of keeping it: the base weight is frozen,
    so only the input gradient is needed, and nothing weight-sized stays alive between the passes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QuantLinear) -> torch.Tensor:
        ctx.layer = layer
        return x @ layer.dequantise(x.dtype).T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad @ ctx.layer.dequantise(grad.dtype), None


def quantise_model(model: nn.Module, names: list[str], fmt: str, group_size: int, double_quant: bool = False,
                   keep_residual: bool = False, backend: str = "torch") -> dict[str, nn.Module]:
    """Replace the named Linear/Conv1D modules of `model` by `QuantLinear`s (or, with the bitsandbytes
    backend, by its `Linear4bit`s, group size as block size), in place."""
    layers = {}
    for name in names:
        module = model.get_submodule(name)
        if backend == "bitsandbytes":
            weight = float_weight(module)
            check_groups(weight.shape[1], group_size or weight.shape[1], BITS[fmt])  # 0 is refused below
            layer = bitsandbytes_backend.linear4bit(weight, module.bias, fmt, group_size, double_quant)
        else:
            layer = QuantLinear.from_linear(module, fmt, group_size, double_quant, keep_residual)
        replace_module(model, name, layer)
        layers[name] = layer
    if backend == "bitsandbytes":
        model.is_loaded_in_4bit = True  # PEFT wraps Linear4bit with its bnb LoRA layers only on a model marked so
    return layers


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` in `model` at the dotted `name`."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def linear_module_names(model: nn.Module, exclude: tuple[str, ...]) -> list[str]:
    """Every Linear/Conv1D module outside the top-level modules `exclude` (the trained heads)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear | Conv1D) and name.split(".")[0] not in exclude]


def is_quantised(module: nn.Module) -> bool:
    """A quantised base layer: balora's `QuantLinear` or bitsandbytes' `Linear4bit`."""
    return isinstance(module, (QuantLinear, *bitsandbytes_backend.layer_types()))


def quantised_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if is_quantised(m)}


def stored_bytes(layer: nn.Module) -> int:
    return layer.stored_bytes() if isinstance(layer, QuantLinear) else bitsandbytes_backend.stored_bytes(layer)


def memory_report(layers: dict[str, nn.Module]) -> dict[str, float]:
    """Stored bytes of the quantised base weights against the float32 weights they replace."""
    stored = sum(stored_bytes(layer) for layer in layers.values())
    fp32 = sum(4 * layer.in_features * layer.out_features for layer in layers.values())
    return {"modules": len(layers), "fp32_bytes": fp32, "stored_bytes": stored,
            "ratio": fp32 / stored if stored else float("nan")}


@contextmanager
def dense_weights(model: nn.Module) -> Iterator[None]:
    """Give every `QuantLinear` a float Parameter `weight` = Ŵ for the duration (the importance pass
    needs weight gradients); the forward then uses it, with the same values. A bitsandbytes `Linear4bit`
    is swapped for an `nn.Linear` holding its Ŵ instead, and put back. Freed on exit."""
    layers = quantised_layers(model)
    own = [layer for layer in layers.values() if isinstance(layer, QuantLinear)]
    swapped = {name: layer for name, layer in layers.items() if not isinstance(layer, QuantLinear)}
    try:
        for layer in own:
            layer.dense = nn.Parameter(layer.dequantise(), requires_grad=False)
        for name, layer in swapped.items():
            replace_module(model, name, bitsandbytes_backend.dense_copy(layer))
        yield
    finally:
        for layer in own:
            layer.dense = None
        for name, layer in swapped.items():
            replace_module(model, name, layer)


def blend_at(schedule: str, step: int, total: int) -> float:
    """λ at optimizer step `step` of `total` (module docstring)."""
    progress = min(1.0, step / total) if total > 0 else 1.0
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return progress
    if schedule == "cosine":
        return (1 - math.cos(math.pi * progress)) / 2
    raise BaloraError(f"unknown quantisation schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}")


def set_blend(model: nn.Module, blend: float) -> None:
    for layer in quantised_layers(model).values():
        if isinstance(layer, QuantLinear):  # bitsandbytes layers are constant-schedule only
            layer.set_blend(blend)


class GroupPooledLinear(nn.Linear):
    """QA-LoRA's A: average-pools the input over each group of `group_size` columns, then maps the
    `d_in/group_size` means to the rank (the paper's AvgPool1d, mean not sum)."""

    def __init__(self, in_features: int, rank: int, group_size: int) -> None:
        super().__init__(in_features // group_size, rank, bias=False)
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.reshape(*x.shape[:-1], -1, self.group_size).mean(-1)
        return F.linear(pooled, self.weight)

    def expanded_weight(self) -> torch.Tensor:
        """The ordinary `(r, d_in)` A with the same output: each pooled column spread over its group / size."""
        return self.weight.repeat_interleave(self.group_size, dim=1) / self.group_size


def effective_lora_a(module: nn.Module) -> torch.Tensor:
    """A LoRA A as an `(r, d_in)` matrix, whether ordinary or group-pooled."""
    return module.expanded_weight() if isinstance(module, GroupPooledLinear) else module.weight


def _lora_layers(model: nn.Module, adapter: str) -> Iterator[nn.Module]:
    for module in model.modules():
        if isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and adapter in module.lora_A:
            yield module


@torch.no_grad()
def pool_adapters(model: nn.Module, adapter: str = "default") -> None:
    """Turn every LoRA A on a `QuantLinear` into QA-LoRA's group-pooled A (freshly initialised as PEFT's A is)."""
    for module in _lora_layers(model, adapter):
        base = module.get_base_layer()
        if not isinstance(base, QuantLinear):
            continue
        old = module.lora_A[adapter]
        pooled = GroupPooledLinear(base.in_features, old.out_features, base.group_size).to(old.weight.device)
        nn.init.kaiming_uniform_(pooled.weight, a=math.sqrt(5))  # PEFT's default init for A
        module.lora_A[adapter] = pooled


@torch.no_grad()
def expand_adapters(model: nn.Module, adapter: str = "default") -> None:
    """Replace every group-pooled A by the ordinary A with the same output, so the saved adapter is a
    plain PEFT LoRA adapter (`lora_A` is `r × d_in`) that loads without balora."""
    for module in _lora_layers(model, adapter):
        pooled = module.lora_A[adapter]
        if isinstance(pooled, GroupPooledLinear):
            plain = nn.Linear(pooled.in_features * pooled.group_size, pooled.out_features, bias=False)
            plain.weight.copy_(pooled.expanded_weight())
            module.lora_A[adapter] = plain.to(pooled.weight.device)


def adapter_delta(module: nn.Module, adapter: str = "default") -> torch.Tensor:
    """scaling·B·A of one LoRA layer, `(d_out, d_in)`."""
    a = effective_lora_a(module.lora_A[adapter]).float()
    return module.scaling[adapter] * module.lora_B[adapter].weight.float() @ a


@torch.no_grad()
def balance(model: nn.Module, adapter: str = "default") -> dict[str, float]:
    """Per quantised adapted module: ‖scaling·B·A‖_F / ‖W − Ŵ‖_F, the adapter's update against the
    quantisation error of its base weight (above 1: the adapter moves the weight more than quantising did)."""
    ratios = {}
    for name, module in model.named_modules():
        if not isinstance(getattr(module, "lora_A", None), nn.ModuleDict) or adapter not in module.lora_A:
            continue
        base = module.get_base_layer()
        if is_quantised(base) and base.quant_error > 0:
            ratios[name] = float(torch.linalg.matrix_norm(adapter_delta(module, adapter))) / base.quant_error
    return ratios


def scale_adapter_gradients(model: nn.Module, factor: float) -> None:
    """Multiply the gradient of every LoRA parameter by `factor` (seed 003's gradient scaling).

    The hook belongs to the parameter object, and a reallocation's resize replaces a module's parameters
    by new ones: call this again after it. Parameters already hooked are marked and skipped, so each new
    one is scaled once and the others are not scaled twice."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and "lora_" in name and not hasattr(parameter, "balora_grad_scale"):
            parameter.register_hook(lambda grad: grad * factor)
            parameter.balora_grad_scale = factor


@torch.no_grad()
def fold_into_zero_points(model: nn.Module, adapter: str = "default", tolerance: float = 1e-5) -> int:
    """QA-LoRA's merge: each LoRA layer on an INT `QuantLinear` whose update is constant over every
    quantisation group is folded into the zero-points, z' = z − ΔW_group / s (yuhuixu1993/qa-lora
    `merge.py`). Zero-points become real-valued (float32); codes and scales are untouched. Returns
    the number of layers folded; the LoRA layers stay (call PEFT's `unload()` to drop them)."""
    folded = 0
    for module in _lora_layers(model, adapter):
        base = module.get_base_layer()
        if not isinstance(base, QuantLinear) or base.zeros is None:
            raise BaloraError("merge folds the adapter into INT zero-points; this base is "
                              f"{getattr(base, 'fmt', 'not quantised')}: train with --quant int4 or int8 --qa-lora")
        delta = adapter_delta(module, adapter)
        grouped = base._grouped(delta)
        per_group = grouped[..., 0]
        if (grouped - per_group[..., None]).abs().max() > tolerance * max(1.0, float(per_group.abs().max())):
            raise BaloraError("the adapter's update is not constant over each quantisation group: it was not "
                              f"trained with --qa-lora at group size {base.group_size}")
        base.zeros = base.zeros.float() - per_group / base.group_scales()
        folded += 1
    return folded


def save_quantised(model: nn.Module, out_dir: Path, task: str) -> None:
    """A transformers model of `task` (a `balora.tasks` name) with `QuantLinear` layers: its
    config, `model.safetensors` (codes, scales, zero-points, every other weight; tied weights stored
    once) and `quantisation.json` naming the task and each quantised layer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out_dir)
    layers = {name: {"in_features": m.in_features, "out_features": m.out_features, "format": m.fmt,
                     "group_size": m.group_size, "double_quant": m.double_quant, "bias": m.bias is not None}
              for name, m in quantised_layers(model).items()}
    (out_dir / "quantisation.json").write_text(json.dumps({"task": task, "layers": layers}, indent=2))
    # `save_model`, not `save_file`: a causal LM's head may share its tensor with the token embeddings
    save_model(model, out_dir / "model.safetensors")


def load_quantised(folder: str | Path) -> nn.Module:
    """The model `save_quantised` wrote, its layers still quantised, with its task's head."""
    from transformers import AutoConfig

    folder = Path(folder)
    if not (folder / "quantisation.json").exists():
        raise BaloraError(f"{folder} holds no quantised model (no quantisation.json); write one with balora merge")
    spec = json.loads((folder / "quantisation.json").read_text())
    task = tasks.of_result(spec)  # merges written before the task was recorded were all classifiers
    model = task.model_class.from_config(AutoConfig.from_pretrained(folder))
    weights = folder / "model.safetensors"
    with safe_open(weights, framework="pt") as stored:
        for name, layer_spec in spec["layers"].items():
            layer = QuantLinear(layer_spec["in_features"], layer_spec["out_features"], layer_spec["format"],
                                layer_spec["group_size"], layer_spec["bias"], layer_spec["double_quant"])
            if layer.zeros is not None:  # merged zero-points are float32
                layer.zeros = torch.empty_like(stored.get_tensor(f"{name}.zeros"))
            replace_module(model, name, layer)
    load_model(model, weights, strict=True)  # tied weights: the one stored tensor fills both names
    return model.eval()

"""`--quant-backend bitsandbytes`: NF4/FP4 frozen base weights as bitsandbytes' `Linear4bit` layers, so its
kernels do the 4-bit matmul (CUDA; elsewhere its CPU backend) and PEFT wraps them with its own bnb LoRA layers
(peft/tuners/lora/bnb.py). balora's pure-torch `QuantLinear` stays the default.

balora's settings map onto bitsandbytes' (bitsandbytes-foundation/bitsandbytes, `functional.quantize_4bit`,
`nn.modules.Params4bit`): the format is its `quant_type`; the group size its `blocksize` (it cuts the row-major
flattened weight into blocks, so a block size that divides d_in gives exactly balora's groups of consecutive
input columns); `--double-quant` its `compress_statistics` (the absmax minus their mean, coded with its dynamic
8-bit map per 256). Unlike balora, it keeps each block's absmax as float32 and packs the even column into the
high nibble; the codes themselves are the same (tests/test_bitsandbytes_backend.py checks this against it).

bitsandbytes is optional: it is imported only when this backend is asked for.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch
from torch import nn

from balora.errors import BaloraError
from balora.options import BNB_BLOCKSIZES
from balora.quiet import allow


def require() -> ModuleType:
    """The bitsandbytes package, or one clear error saying how to get it."""
    try:
        bitsandbytes = allow("bitsandbytes")
    except ImportError as err:
        raise BaloraError(f"--quant-backend bitsandbytes needs the bitsandbytes package ({err}): "
                          "pip install bitsandbytes, or use --quant-backend torch") from None
    return bitsandbytes


def layer_types() -> tuple[type, ...]:
    """bitsandbytes' 4-bit layer class; none where bitsandbytes was never imported (then no such layer exists)."""
    bitsandbytes = sys.modules.get("bitsandbytes")
    return (bitsandbytes.nn.Linear4bit,) if bitsandbytes is not None else ()


@torch.no_grad()
def linear4bit(weight: torch.Tensor, bias: torch.Tensor | None, fmt: str, block_size: int,
               double_quant: bool = False) -> nn.Module:
    """A frozen `Linear4bit` holding `weight` `(d_out, d_in)`, quantised on the weight's device (bitsandbytes
    quantises when a `Params4bit` moves to a device), with `quant_error` = ‖W − Ŵ‖_F as balora's layers have."""
    bnb = require()
    if block_size not in BNB_BLOCKSIZES:
        raise BaloraError(f"bitsandbytes' block size must be one of {', '.join(map(str, BNB_BLOCKSIZES))}, got {block_size}")
    d_out, d_in = weight.shape
    layer = bnb.nn.Linear4bit(d_in, d_out, bias=bias is not None, compute_dtype=weight.dtype,
                              compress_statistics=double_quant, quant_type=fmt, device="meta")
    layer.weight = bnb.nn.Params4bit(weight.contiguous(), requires_grad=False, blocksize=block_size,
                                     compress_statistics=double_quant, quant_type=fmt, module=layer).to(weight.device)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().to(weight.dtype).clone(), requires_grad=False)
    # On a CPU with AVX512-BF16, bitsandbytes repacks the weight in place into an inference-only layout the
    # first time the layer runs in eval mode without gradients; training forwards after that fail ("N must
    # be divisible by block_n", or an in-place op on a leaf's view). A run validates between training steps,
    # so the layer keeps the one layout that serves both.
    layer.support_avx512bf16_for_cpu = False
    layer.quant_error = float(torch.linalg.matrix_norm(weight - dequantise(layer)))
    return layer


def dequantise(layer: nn.Module) -> torch.Tensor:
    """Ŵ `(d_out, d_in)` of a `Linear4bit`, float32, by bitsandbytes' own `dequantize_4bit`."""
    bnb = require()
    return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()


def stored_bytes(layer: nn.Module) -> int:
    """Bytes of what stands for the weight, counted as balora counts its own: packed codes and absmax (with
    double quantisation: the 8-bit absmax, their float32 absmax and the mean). The 16- and 256-entry code
    tables are constants and left out, as balora's codebook is."""
    state = layer.weight.quant_state
    tensors = [layer.weight.data, state.absmax]
    if state.nested:
        tensors += [state.state2.absmax, state.offset]
    return sum(t.numel() * t.element_size() for t in tensors)


def dense_copy(layer: nn.Module) -> nn.Linear:
    """An `nn.Linear` whose float weight is the layer's Ŵ (sharing its bias), for passes that need weight gradients."""
    dense = nn.Linear(layer.in_features, layer.out_features, bias=False, device="meta")
    dense.weight = nn.Parameter(dequantise(layer), requires_grad=False)
    dense.bias = layer.bias
    return dense

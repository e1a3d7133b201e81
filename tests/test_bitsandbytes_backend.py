"""`--quant-backend bitsandbytes`: bitsandbytes' Linear4bit layers under PEFT's bnb LoRA layers, on CPU.

Tests that need the package skip where it is absent; the refusals and the missing-package error do not."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from conftest import tiny_bert, tiny_gpt2
from test_run import tiny_config
from torch import nn

from balora import bitsandbytes_backend, quiet
from balora import quantisation as q
from balora.cli import main
from balora.config import KEYED_WHEN_SET, RunConfig, full_precision_base
from balora.errors import BaloraError
from balora.methods import METHODS
from balora.run import run_experiment

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="bitsandbytes is not installed (pip install bitsandbytes)")
QV = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]


def power_of_two_groups(d_out: int = 24, d_in: int = 128, group: int = 32, seed: int = 0) -> torch.Tensor:
    """A random weight whose every group's absmax is a power of two: float16 scales (balora) and float32
    absmax (bitsandbytes) then hold the same number, and dividing by it is exact in both."""
    torch.manual_seed(seed)
    grouped = torch.randn(d_out, d_in // group, group)
    exponents = torch.randint(-6, 3, grouped.shape[:2]).float()
    grouped = grouped / grouped.abs().amax(-1, keepdim=True) * torch.pow(2.0, exponents)[..., None]
    return grouped.reshape(d_out, d_in)


@needs_bnb
@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_codebooks_are_the_library_tables(fmt):
    import bitsandbytes.functional as bnbf

    assert torch.equal(torch.tensor(q.CODEBOOKS[fmt], dtype=torch.float32), bnbf.get_4bit_type(fmt, device="cpu"))


@needs_bnb
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_codes_and_scales_equal_bitsandbytes_quantize_4bit(fmt, group):
    import bitsandbytes.functional as bnbf

    weight = power_of_two_groups(group=group)
    layer = nn.Linear(128, 24, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    ours = q.QuantLinear.from_linear(layer, fmt, group)
    packed, state = bnbf.quantize_4bit(weight, blocksize=group, quant_type=fmt)
    packed = packed.flatten()
    theirs = torch.stack((packed >> 4, packed & 0x0F), dim=-1).reshape(24, 128)  # even column in the high nibble
    assert torch.equal(q.unpack_nibbles(ours.codes), theirs)
    assert torch.equal(ours.group_scales().flatten(), state.absmax)
    assert torch.equal(ours.dequantise(), bnbf.dequantize_4bit(packed[:, None], state))


@needs_bnb
@pytest.mark.parametrize("double", [False, True])
def test_layers_are_linear4bit_with_our_settings_and_the_same_weights(double):
    import bitsandbytes as bnb

    model, reference = tiny_bert(), tiny_bert()
    layers = q.quantise_model(model, QV, "nf4", 32, double, backend="bitsandbytes")
    own = q.quantise_model(reference, QV, "nf4", 32, double)
    assert getattr(model, "is_loaded_in_4bit", False) and q.quantised_layers(model).keys() == set(QV)
    for name, layer in layers.items():
        assert isinstance(layer, bnb.nn.Linear4bit) and not any(p.requires_grad for p in layer.parameters())
        state = layer.weight.quant_state
        assert (state.blocksize, state.quant_type, state.nested) == (32, "nf4", double)
        dequantised = bitsandbytes_backend.dequantise(layer)
        # the scales differ (float16 rounded up here, float32 there), so a few codes round to the next entry
        difference, scales = (dequantised - own[name].dequantise()).abs(), own[name].group_scales()
        assert (difference < 0.02 * scales).float().mean() > 0.95  # the same code: NF4's smallest gap is 0.08·scale
        assert torch.all(difference <= 0.31 * scales)  # else the next one: its largest gap is −1 to −0.6962
        assert layer.quant_error == pytest.approx(own[name].quant_error, rel=0.1)
        x = torch.randn(3, 32, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        with torch.no_grad():  # validation first (eval mode, no gradients), then training: both still work
            layer.eval()(x.detach())
        layer.train()(x).square().sum().backward()
        torch.nn.functional.linear(x_ref, dequantised, layer.bias).square().sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    per_layer = 32 * 32 // 2 + (32 + 4 + 4 if double else 4 * 32)  # codes; absmax (8-bit + nested absmax + mean)
    assert q.memory_report(layers)["stored_bytes"] == 4 * per_layer


@needs_bnb
def test_gpt2_conv1d_is_quantised_in_its_true_orientation():
    model = tiny_gpt2()
    conv = model.transformer.h[0].attn.c_attn
    weight = conv.weight.detach().T.clone()  # Conv1D stores (d_in, d_out)
    layer = q.quantise_model(model, ["transformer.h.0.attn.c_attn"], "fp4", 32, backend="bitsandbytes")[
        "transformer.h.0.attn.c_attn"]
    assert (layer.in_features, layer.out_features) == (32, 96)
    assert (bitsandbytes_backend.dequantise(layer) - weight).abs().max() < 0.2 * weight.abs().max()


@needs_bnb
def test_dense_weights_swap_in_a_float_linear_and_back():
    model = tiny_bert()
    layer = q.quantise_model(model, QV[:1], "fp4", 32, backend="bitsandbytes")[QV[0]]
    with q.dense_weights(model):
        dense = model.get_submodule(QV[0])
        assert type(dense) is nn.Linear and dense.bias is layer.bias and not dense.weight.requires_grad
        assert torch.equal(dense.weight, bitsandbytes_backend.dequantise(layer))
    assert model.get_submodule(QV[0]) is layer


@needs_bnb
def test_ba_lora_trains_on_bitsandbytes_layers_wrapped_by_peft(tmp_path, tiny_model_dir, tiny_csv):
    from peft.tuners.lora.bnb import Linear4bit as PeftLinear4bit

    out = tmp_path / "bnb"
    config = tiny_config(tiny_model_dir, tiny_csv, method="ba_lora", quant="nf4", quant_group_size=32,
                         quant_backend="bitsandbytes", double_quant=True, epochs=1)
    output = run_experiment(config, out, progress=False)
    result = json.loads((out / "result.json").read_text())
    wrapped = [m for m in output.model.modules() if hasattr(m, "lora_A")]
    assert wrapped and all(isinstance(m, PeftLinear4bit) for m in wrapped)  # PEFT's own bnb LoRA layer
    assert result["quantisation"]["memory"]["modules"] == 4 and result["quantisation"]["balance_final"]
    assert all(m["importance"] > 0 for m in result["allocation"])  # the gradient pass ran on the dequantised weights
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert not any(p.requires_grad for m in q.quantised_layers(output.model).values() for p in m.parameters())


@needs_bnb
@pytest.mark.parametrize("method", sorted(set(METHODS) - set(full_precision_base())))  # those refuse --quant
def test_every_method_trains_on_bitsandbytes_layers(method, tiny_model_dir, tiny_csv):
    config = tiny_config(tiny_model_dir, tiny_csv, method=method, quant="fp4", quant_group_size=32, epochs=1,
                         quant_backend="bitsandbytes",
                         target_modules=["query", "value", "intermediate.dense"] if method == "attention_heavy" else None)
    output = run_experiment(config, progress=False)
    wrapped = {type(m).__module__ for m in output.model.modules() if hasattr(m, "lora_A")}
    assert wrapped in ({"peft.tuners.lora.bnb"}, {"peft.tuners.adalora.bnb"})  # PEFT's bnb layers, LoRA's or AdaLoRA's
    assert output.result["quantisation"]["memory"]["modules"] >= 4


def test_key_is_unchanged_at_the_default_backend():
    assert "quant_backend" in KEYED_WHEN_SET
    assert RunConfig(quant="nf4").key() == RunConfig(quant="nf4", quant_backend="torch").key()
    assert RunConfig(quant="nf4").key() != RunConfig(quant="nf4", quant_backend="bitsandbytes").key()


@pytest.mark.parametrize(("values", "message"), [
    ({"quant": "int4"}, "--quant int4: its 4-bit layers are NF4 and FP4 only"),
    ({"quant": "int8", "quant_group_size": 0}, "--quant int8"),
    ({"quant": "nf4", "quant_group_size": 0}, "--quant-group-size 0: its blocks are 32, 64"),
    ({"quant": "fp4", "quant_group_size": 48}, "--quant-group-size 48"),
    ({"quant": "nf4", "qa_lora": True}, "--qa-lora"),
    ({"quant": "nf4", "quant_schedule": "cosine"}, "--quant-schedule cosine"),
    ({"quant": None}, "--quant-backend need.* a quantised base"),
])
def test_what_bitsandbytes_cannot_do_is_refused(values, message):
    with pytest.raises(BaloraError, match=message):
        RunConfig(**{"quant_backend": "bitsandbytes", **values})
    with pytest.raises(BaloraError, match="unknown --quant-backend 'gptq'"):
        RunConfig(quant="nf4", quant_backend="gptq")


@pytest.mark.parametrize("flags", [["--quant", "int8"], ["--quant", "nf4"]])
def test_cli_errors_in_one_line(flags, tiny_model_dir, tiny_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setattr(quiet, "_hidden", set())  # and not merely hidden from PEFT by an earlier silence()
    argv = ["train", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--shots", "4", "--epochs", "1",
            "--out", str(tmp_path / "x"), "--quiet", "--quant-backend", "bitsandbytes", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("balora: error: --quant-backend bitsandbytes ")
    assert ("pip install bitsandbytes" in err[0]) == (flags[1] == "nf4")
    assert not (tmp_path / "x").exists()

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_vit, tiny_bert, tiny_gpt2, tiny_gpt2_lm, tiny_llama_lm, tiny_lm_tokenizer
from peft import LoraConfig, PeftModel, get_peft_model
from test_run import lm_config, tiny_config
from torch import nn

from balora import quantisation as q
from balora.cli import main
from balora.config import KEYED_WHEN_SET, RunConfig, full_precision_base
from balora.errors import BaloraError
from balora.methods import METHODS
from balora.run import run_experiment

BATCH = {"input_ids": torch.tensor([[2, 5, 9, 3], [2, 12, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}


def linear(d_in: int = 128, d_out: int = 24, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.1, 3.0, d_out)[:, None])  # rows of very different ranges
    return layer


def test_codebooks_are_bitsandbytes_tables():
    assert len(q.NF4_VALUES) == len(q.FP4_VALUES) == 16
    assert q.NF4_VALUES[0] == -1.0 and q.NF4_VALUES[7] == 0.0 and q.NF4_VALUES[15] == 1.0
    assert q.NF4_VALUES[8] == 0.07958029955625534
    assert [round(v * 12, 4) for v in q.FP4_VALUES[:8]] == [0, 0.0625, 8, 12, 4, 6, 2, 3]
    assert max(abs(v) for v in q.FP4_VALUES) == 1.0


def test_packing_layout_and_inverse():
    codes = torch.tensor([[1, 2, 3, 4], [15, 0, 0, 15]])
    packed = q.pack_nibbles(codes)
    assert packed.dtype == torch.uint8 and packed.tolist() == [[0x21, 0x43], [0x0F, 0xF0]]
    random_codes = torch.randint(0, 16, (7, 30))
    assert torch.equal(q.unpack_nibbles(q.pack_nibbles(random_codes)), random_codes.to(torch.uint8))


def test_known_values_are_coded_exactly():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -2.0, 0.0, 1.0]]))
    nf4 = q.QuantLinear.from_linear(layer, "nf4", 0)
    assert q.unpack_nibbles(nf4.codes).tolist() == [[15, 0, 7, 12]]  # 1.0/2 = 0.5 is nearest NF4 entry 12, 0.4407
    assert nf4.group_scales().tolist() == [[2.0]]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0, -2.5, 0.0, 1.0]]))  # range 7.5: scale 7.5/15 = 0.5, zero 2.5/0.5
    int4 = q.QuantLinear.from_linear(layer, "int4", 0)
    assert int4.group_scales().tolist() == [[0.5]] and int4.zeros.tolist() == [[5.0]]
    assert q.unpack_nibbles(int4.codes).tolist() == [[15, 0, 5, 7]]
    assert torch.equal(int4.dequantise(), layer.weight.detach())


def _half_gap(values: tuple[float, ...]) -> float:
    ordered = sorted(set(values))
    return max(b - a for a, b in zip(ordered, ordered[1:], strict=False)) / 2


@pytest.mark.parametrize("fmt", q.FORMATS)
@pytest.mark.parametrize("group_size", [0, 16, 64])
def test_round_trip_error_within_the_format_bound(fmt, group_size):
    source = linear()
    layer = q.QuantLinear.from_linear(source, fmt, group_size)
    error = (source.weight - layer.dequantise()).abs().reshape(24, -1, layer.group_size)
    scales = layer.group_scales()[..., None]
    bound = scales * (_half_gap(q.CODEBOOKS[fmt]) if fmt in q.CODEBOOKS else 0.5)
    assert (error <= bound * (1 + 1e-5) + 1e-7).all()
    assert error.max() > 0.3 * bound.min()  # the bound is not vacuous
    assert layer.quant_error == pytest.approx(float(torch.linalg.matrix_norm(source.weight.detach() - layer.dequantise())))


def test_smaller_groups_give_smaller_errors():
    errors = [q.QuantLinear.from_linear(linear(), "nf4", g).quant_error for g in (0, 64, 16)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize(("fmt", "at_least"), [("nf4", 6.5), ("fp4", 6.5), ("int4", 6.5), ("int8", 3.5)])
def test_stored_bytes_really_shrink(fmt, at_least):
    source = linear(384, 384)
    layer = q.QuantLinear.from_linear(source, fmt, 64)
    held = sum(t.numel() * t.element_size() for n, t in list(layer.named_buffers()) + list(layer.named_parameters())
               if n not in ("bias", "table"))
    assert held == layer.stored_bytes()  # nothing float and weight-sized hides in the module
    assert 4 * 384 * 384 / layer.stored_bytes() >= at_least
    assert q.memory_report({"x": layer})["ratio"] == pytest.approx(4 * 384 * 384 / layer.stored_bytes())


def test_double_quantisation_shrinks_scales_and_keeps_the_error():
    single, double = (q.QuantLinear.from_linear(linear(), "nf4", 16, dq) for dq in (False, True))
    assert double.stored_bytes() < single.stored_bytes()
    assert double.quant_error < 1.05 * single.quant_error


@pytest.mark.parametrize("fmt", q.FORMATS)
def test_forward_and_input_gradient_match_the_dequantised_weight(fmt):
    source = linear()
    layer = q.QuantLinear.from_linear(source, fmt, 32)
    x = torch.randn(3, 5, 128, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    layer(x).square().sum().backward()
    torch.nn.functional.linear(x_ref, layer.dequantise(), layer.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert not any(p.requires_grad for p in layer.parameters())


def test_bad_group_size_names_the_fix():
    with pytest.raises(BaloraError, match="--quant-group-size"):
        q.QuantLinear.from_linear(linear(100), "nf4", 64)


def test_gpt2_conv1d_is_quantised_in_its_true_orientation():
    model = tiny_gpt2().eval()
    with torch.no_grad():
        reference = model(**BATCH).logits
    q.quantise_model(model, ["transformer.h.0.attn.c_attn"], "int8", 16)
    assert model.transformer.h[0].attn.c_attn.weight.shape == (96, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(**BATCH).logits, reference, atol=5e-3, rtol=0)


def test_schedules_blend_from_full_precision_to_quantised():
    assert q.blend_at("constant", 0, 10) == 1.0
    assert [q.blend_at("linear", t, 4) for t in range(5)] == [0, 0.25, 0.5, 0.75, 1]
    assert q.blend_at("cosine", 5, 10) == pytest.approx(0.5) and q.blend_at("cosine", 1, 10) < 0.1
    source = linear()
    layer = q.QuantLinear.from_linear(source, "int4", 32, keep_residual=True)
    layer.set_blend(0.0)
    torch.testing.assert_close(layer.dequantise(), source.weight.detach())
    layer.set_blend(1.0)
    assert layer.residual is None and layer.dequantise().sub(source.weight).abs().max() > 0


def test_dense_weights_exist_only_inside_the_context():
    model = tiny_bert()
    layers = q.quantise_model(model, ["bert.encoder.layer.0.attention.self.query"], "nf4", 16)
    layer = layers["bert.encoder.layer.0.attention.self.query"]
    with q.dense_weights(model):
        assert any(p is layer.weight for p in model.parameters())
        torch.testing.assert_close(layer.weight.detach(), layer.dequantise())
    assert layer.dense is None and all(p is not layer.weight for p in model.parameters())


def _quantised_peft(fmt: str = "int4", group: int = 8, seed: int = 0) -> PeftModel:
    model = tiny_bert()
    names = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
    q.quantise_model(model, names, fmt, group)
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]))
    q.pool_adapters(peft_model)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return peft_model.eval()


def test_pooled_adapter_expands_to_an_ordinary_one_with_the_same_output():
    model = _quantised_peft()
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert layer.lora_A["default"].weight.shape == (4, 32 // 8)
    with torch.no_grad():
        pooled = model(**BATCH).logits
        q.expand_adapters(model)
        expanded = model(**BATCH).logits
    assert layer.lora_A["default"].weight.shape == (4, 32)
    torch.testing.assert_close(expanded, pooled)


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_merge_into_zero_points_is_exact_and_stays_quantised(fmt, tmp_path):
    model = _quantised_peft(fmt)
    with torch.no_grad():
        expected = model(**BATCH).logits
        q.expand_adapters(model)
        assert q.fold_into_zero_points(model) == 4
        merged = model.unload()
        got = merged(**BATCH).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    layer = merged.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer, q.QuantLinear) and layer.zeros.dtype == torch.float32 and layer.codes.dtype == torch.uint8
    q.save_quantised(merged, tmp_path / "merged", "classification")
    reloaded = q.load_quantised(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**BATCH).logits, got)
    spec = tmp_path / "merged" / "quantisation.json"
    assert json.loads(spec.read_text()).pop("task") == "classification"
    spec.write_text(json.dumps({"layers": json.loads(spec.read_text())["layers"]}))  # as merges wrote it before the task
    with torch.no_grad():
        torch.testing.assert_close(q.load_quantised(tmp_path / "merged")(**BATCH).logits, got)


def test_merge_refuses_what_cannot_fold():
    with pytest.raises(BaloraError, match="INT zero-points"):
        q.fold_into_zero_points(_quantised_peft("nf4"))
    plain = tiny_bert()
    q.quantise_model(plain, ["bert.encoder.layer.0.attention.self.query"], "int4", 8)
    model = get_peft_model(plain, LoraConfig(r=2, target_modules=["query"], init_lora_weights=False))
    with pytest.raises(BaloraError, match="not constant over each quantisation group"):
        q.fold_into_zero_points(model)


def test_gradient_scaling_multiplies_adapter_gradients():
    grads = []
    for factor in (1.0, 2.5):
        model = _quantised_peft(seed=1)
        model.train()
        if factor != 1.0:
            q.scale_adapter_gradients(model, factor)
            q.scale_adapter_gradients(model, factor)  # again, as after a reallocation: no parameter is scaled twice
        model(**BATCH, labels=torch.tensor([0, 1])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n})
    assert all(torch.allclose(grads[1][n], 2.5 * g) for n, g in grads[0].items())


def test_balance_is_adapter_norm_over_quantisation_error():
    model = _quantised_peft()
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    ratio = q.balance(model)["base_model.model.bert.encoder.layer.0.attention.self.query"]
    assert ratio == pytest.approx(float(torch.linalg.matrix_norm(q.adapter_delta(layer))) / layer.base_layer.quant_error)


def test_key_ignores_new_fields_at_their_default():
    config = RunConfig()
    assert config.key() == RunConfig(quant=None, grad_scale=1.0).key()
    assert config.key() != RunConfig(quant="nf4").key() != RunConfig(quant="nf4", quant_group_size=32).key()
    stored_before = {k: v for k, v in config.to_dict().items() if k not in KEYED_WHEN_SET}  # a run stored earlier
    assert config.key() == hashlib.sha256(json.dumps(stored_before, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("values", "message"), [
    ({"quant": "int3"}, "unknown --quant"),
    ({"qa_lora": True}, "need.* a quantised base"),
    ({"quant": "nf4", "quant_schedule": "step"}, "unknown --quant-schedule"),
    ({"quant": "nf4", "grad_scale": 0.0}, "--grad-scale"),
    ({"quant": "nf4", "grad_scale": math.nan}, "grad_scale must be a finite number"),
    ({"quant": "nf4", "quant_group_size": -1}, "--quant-group-size"),
    ({"quant": "int4", "qa_lora": True, "method": "adalora"}, "--qa-lora pools"),
])
def test_bad_quantisation_settings(values, message):
    with pytest.raises(BaloraError, match=message):
        RunConfig(**values)


def test_qa_lora_run_saves_a_plain_adapter_and_merges(tmp_path, tiny_model_dir, tiny_csv, capsys):
    out = tmp_path / "qa"
    config = tiny_config(tiny_model_dir, tiny_csv, method="ba_lora", quant="int4", quant_group_size=8, qa_lora=True,
                         quant_schedule="linear", grad_scale=1.5, epochs=1)
    output = run_experiment(config, out, progress=False)
    result = json.loads((out / "result.json").read_text())
    memory = result["quantisation"]["memory"]
    assert memory["modules"] == 4 and memory["stored_bytes"] == memory["fp32_bytes"] / 4  # group 8: 4 bits + 4 B per 8
    assert len(result["quantisation"]["balance"]) == len(result["curves"]["validation"])
    assert result["params"]["lora"] < result["budget"]["lora_budget"]  # A is r × d_in/8
    model = output.model.eval()
    assert not any(isinstance(m, q.GroupPooledLinear) for m in model.modules())
    with torch.no_grad():
        expected = model(**BATCH).logits
    plain = subprocess.run([sys.executable, "-c", "import sys; from transformers import AutoModelForSequenceClassification as M;"
                            "from peft import PeftModel; PeftModel.from_pretrained(M.from_pretrained(sys.argv[1], num_labels=2),"
                            " sys.argv[2]); assert 'balora' not in sys.modules",
                            str(tiny_model_dir), str(out / "adapter")], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert main(["merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    assert "group-quantised layers" in capsys.readouterr().out
    with torch.no_grad():
        torch.testing.assert_close(q.load_quantised(tmp_path / "merged")(**BATCH).logits, expected, atol=1e-5, rtol=1e-5)


RELOAD_MERGED = """
import sys, torch
from balora.quantisation import load_quantised
model = load_quantised(sys.argv[1])
with torch.no_grad():
    torch.save(model(**torch.load(sys.argv[2])).logits, sys.argv[3])
"""


def _causal_lm_run(folder: Path, instructions: Path, make, **quant) -> tuple[RunConfig, dict]:
    tiny_lm_tokenizer().save_pretrained(folder)
    make().save_pretrained(folder)
    return lm_config(folder, instructions, train_size=16, epochs=1, gradient_samples=8, eval_examples=8, **quant), BATCH


def _image_run(folder: Path, _instructions: Path, **quant) -> tuple[RunConfig, dict]:
    save_tiny_vit(folder)
    config = RunConfig(model=str(folder), dataset="digits", shots=4, budget_rank=2, epochs=1, batch_size=8,
                       gradient_samples=8, evaluations=2, eval_examples=16, seed=3, **quant)
    return config, {"pixel_values": torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))}


# The tasks besides classification (`test_qa_lora_run_saves_a_plain_adapter_and_merges`); GPT-2 ties its LM
# head to the token embeddings, as SmolLM2 does.
MERGE_RUNS = {"llama-lm": partial(_causal_lm_run, make=tiny_llama_lm, quant="int4"),
              "gpt2-lm": partial(_causal_lm_run, make=tiny_gpt2_lm, quant="int4"),
              "vit": partial(_image_run, quant="int8")}


@pytest.mark.parametrize("model", sorted(MERGE_RUNS))
def test_merged_causal_lm_and_image_models_reload_in_a_fresh_process(model, tmp_path, tiny_alpaca):
    # a tuning run: no test evaluation or greedy generation, which this test does not need
    config, batch = MERGE_RUNS[model](tmp_path / "model", tiny_alpaca, method="lora", quant_group_size=8, qa_lora=True,
                                      tuning=True)
    output = run_experiment(config, tmp_path / "run", progress=False)
    with torch.no_grad():
        expected = output.model.eval()(**batch).logits
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 0
    torch.save(batch, tmp_path / "batch.pt")
    # a fresh process that imports this checkout's balora: nothing of the training process helps the reload
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    reload = subprocess.run([sys.executable, "-c", RELOAD_MERGED, str(tmp_path / "merged"), str(tmp_path / "batch.pt"),
                             str(tmp_path / "logits.pt")], capture_output=True, text=True, env=env)
    assert reload.returncode == 0, reload.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, atol=1e-5, rtol=0)


def test_plain_adapter_on_a_quantised_base_and_merge_errors(tmp_path, tiny_model_dir, tiny_csv, capsys):
    out = tmp_path / "nf4"
    run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="lora", quant="nf4", quant_group_size=16,
                               quant_modules="all", double_quant=True, epochs=1), out, progress=False)
    result = json.loads((out / "result.json").read_text())
    assert result["quantisation"]["memory"]["modules"] == 2 * 6 + 1  # every Linear of both layers and the pooler, not the head
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert main(["merge", str(out), "--out", str(tmp_path / "m")]) == 2
    assert main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "int4 or int8 with --qa-lora" in errors[0] and "not a finished run" in errors[1]


@pytest.mark.parametrize("flags", [["--quant", "int3"], ["--qa-lora"], ["--quant", "nf4", "--quant-group-size", "7"]])
def test_cli_rejects_bad_quantisation_flags(flags, tiny_model_dir, tiny_csv, tmp_path, capsys):
    argv = ["train", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--shots", "4", "--epochs", "1",
            "--out", str(tmp_path / "x"), "--quiet", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("balora: error: ")


@pytest.mark.parametrize("method", sorted(set(METHODS) - set(full_precision_base())))  # those refuse --quant
def test_every_method_trains_on_a_quantised_base(method, tiny_model_dir, tiny_csv):
    config = tiny_config(tiny_model_dir, tiny_csv, method=method, quant="nf4", quant_group_size=16, epochs=1,
                         target_modules=["query", "value", "intermediate.dense"] if method == "attention_heavy" else None)
    output = run_experiment(config, progress=False)
    assert output.result["quantisation"]["memory"]["modules"] >= 4
    assert all(isinstance(m.get_base_layer(), q.QuantLinear) for m in output.model.modules() if hasattr(m, "lora_A"))
    assert not any(p.requires_grad for m in q.quantised_layers(output.model).values() for p in m.parameters())


class RecordingTransform:
    """Wraps the run's own transform and records which hook the run called, in order."""

    HOOKS = ("prepare", "importance_context", "adapter_created", "before_training", "on_validation", "after_step",
             "parameters_replaced", "before_evaluation", "finalise")

    def __init__(self, inner, calls: list) -> None:
        self.inner, self.calls = inner, calls

    def __getattr__(self, name):
        hook = getattr(self.inner, name)
        if name not in self.HOOKS:
            return hook

        def record(*args, **kwargs):
            self.calls.append((name, args[1]) if name == "after_step" else name)
            return hook(*args, **kwargs)
        return record


@pytest.mark.parametrize("quant", [None, "int4"])
def test_the_run_calls_every_base_transform_hook_in_order_quantised_or_not(quant, tiny_model_dir, tiny_csv, monkeypatch):
    import balora.run

    calls: list = []
    factory = balora.run.base_transform
    monkeypatch.setattr(balora.run, "base_transform", lambda config: RecordingTransform(factory(config), calls))
    extra = {} if quant is None else dict(quant=quant, quant_group_size=8, quant_schedule="linear")
    result = run_experiment(tiny_config(tiny_model_dir, tiny_csv, epochs=1, **extra), progress=False).result
    steps, points = result["steps"], len(result["curves"]["validation"])
    assert calls[:5] == ["prepare", "importance_context", "adapter_created", "before_training", "on_validation"]
    assert calls[-2:] == ["before_evaluation", "finalise"]
    middle = calls[5:-2]
    assert [c for c in middle if c != "on_validation"] == [("after_step", s) for s in range(1, steps + 1)]
    assert middle.count("on_validation") == points - 1 and middle[-1] == "on_validation"  # the last step validates
    assert ("quantisation" in result) == (quant is not None)  # what `finalise` adds

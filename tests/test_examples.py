"""The scripts in examples/ run end to end with tiny settings, and what they save reloads with plain PEFT."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from peft import PeftModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["hf_trainer", "accelerate_loop", "trl_sft"])
def test_example_trains_a_plan_and_its_adapter_reloads(name, tmp_path, tiny_model_dir, tiny_csv):
    if name == "trl_sft":
        pytest.importorskip("trl")
    out = tmp_path / name
    args = ["--dataset", str(tiny_csv), "--steps", "3", "--samples", "16", "--budget-rank", "2", "--out", str(out)]
    if name == "trl_sft":  # a tiny random Llama over the tiny tokenizer
        args += ["--tokenizer", str(tiny_model_dir), "--texts", "48"]
    else:
        args += ["--model", str(tiny_model_dir), "--shots", "16"] + (["--test-size", "8"] if name == "hf_trainer" else [])
    result = load_example(name).main(args)
    trained = result.pop("model").eval()
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())
    base = copy.deepcopy(trained).unload()  # the base weights, without the adapter
    reloaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    batch = {"input_ids": torch.tensor([[2, 1, 4, 1, 3], [2, 4, 1, 3, 0]]),  # ids every tiny vocabulary has
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained(**batch).logits)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in reloaded.named_parameters())

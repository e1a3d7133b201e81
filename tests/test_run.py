from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from balora.config import RunConfig, method_settings
from balora.errors import BaloraError
from balora.methods import METHODS
from balora.run import run_experiment


def tiny_config(model_dir, csv, **overrides) -> RunConfig:
    values = dict(model=str(model_dir), dataset=str(csv), shots=20, budget_rank=4, epochs=2, batch_size=8,
                  learning_rate=5e-3, gradient_samples=40, evaluations=2, min_rank=1, seed=3)
    values.update(overrides)
    return RunConfig(**values)


RELOAD = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification
from peft import PeftModel
base = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], num_labels=2)
model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
batch = torch.load(sys.argv[3])
with torch.no_grad():
    logits = model(**batch).logits
assert "balora" not in sys.modules
torch.save(logits, sys.argv[4])
print(json.dumps(model.peft_config["default"].rank_pattern))
"""


def test_one_run_writes_result_and_an_adapter_plain_peft_reloads(tmp_path, tiny_model_dir, tiny_csv):
    out = tmp_path / "run"
    output = run_experiment(tiny_config(tiny_model_dir, tiny_csv), out, progress=False)
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= {"config", "environment", "allocation", "metrics", "timings", "memory", "params", "curves"}
    assert result["environment"]["cpu"]  # the processor's name: run times compare only on the same machine
    assert {"accuracy", "f1", "precision", "recall", "majority_rate"} <= set(result["metrics"])
    assert {"load", "importance", "allocation", "init", "train", "eval", "total"} <= set(result["timings"])
    assert result["params"]["lora"] == sum(m["params"] for m in result["allocation"]) <= result["budget"]["lora_budget"]
    assert result["params"]["head"] == 32 * 2 + 2
    assert all(set(m) >= {"name", "shape", "importance", "rank", "params"} for m in result["allocation"])
    assert result["curves"]["validation"][0][0] == 0 and len(result["curves"]["train_loss"]) == result["steps"]

    batch = {"input_ids": torch.tensor([[2, 5, 9, 3], [2, 12, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    torch.save(batch, tmp_path / "batch.pt")
    model = output.model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    reload = subprocess.run([sys.executable, "-c", RELOAD, str(tiny_model_dir), str(out / "adapter"), str(tmp_path / "batch.pt"),
                             str(tmp_path / "logits.pt")], capture_output=True, text=True)
    assert reload.returncode == 0, reload.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-5, atol=1e-6)
    pattern = json.loads(reload.stdout.strip().splitlines()[-1])
    assert pattern == {name.replace(".", "\\."): m["rank"] for m in result["allocation"] for name in [m["name"]]}
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert all(config["alpha_pattern"][k] == 2 * r for k, r in config["rank_pattern"].items())


def test_same_seed_same_metrics(tiny_model_dir, tiny_csv):
    config = tiny_config(tiny_model_dir, tiny_csv)
    first = run_experiment(config, progress=False).result
    second = run_experiment(config, progress=False).result
    assert first["metrics"] == second["metrics"] and first["curves"]["train_loss"] == second["curves"]["train_loss"]


def test_a_tuning_run_validates_twice_and_selects_on_the_same_final_point(tiny_model_dir, tiny_csv):
    evaluation = run_experiment(tiny_config(tiny_model_dir, tiny_csv, evaluations=4), progress=False).result
    tuning = run_experiment(tiny_config(tiny_model_dir, tiny_csv, evaluations=4, tuning=True), progress=False).result
    steps = evaluation["steps"]
    assert [s for s, _ in evaluation["curves"]["validation"]] == [0, *(round(steps * i / 4) for i in (1, 2, 3, 4))]
    assert [s for s, _ in tuning["curves"]["validation"]] == [round(steps / 2), steps]
    assert tuning["curves"]["validation"][-1] == evaluation["curves"]["validation"][-1]
    assert tuning["metrics"] == {"majority_rate": evaluation["metrics"]["majority_rate"]}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_within_its_budget(method, tiny_model_dir, tiny_csv):
    targets = ["query", "value", "intermediate.dense"]
    result = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method=method, target_modules=targets, epochs=3),
                            progress=False).result
    budget = result["budget"]["lora_budget"]
    if method == "ba_lora_no_budget":
        assert result["params"]["lora"] != budget  # the ablation spends what its ranks cost
    elif method == "adalora":
        # Trains at init_r (A, E, B), ends pruned to about the budget.
        assert result["params"]["lora"] > budget and result["params"]["lora_final"] <= 1.1 * budget
    else:
        assert result["params"]["lora_final"] <= budget
    assert result["params"]["head"] == 32 * 2 + 2  # nothing trains but the adapter and the classifier
    correct = result["metrics"]["accuracy"] * result["data"]["test"]  # a share of the test set, not a mean of batches
    assert correct == pytest.approx(round(correct), abs=1e-6)


# A valid value other than the default for each setting only some methods read.
SET_AWAY = {"strategy": "top_k", "threshold": 0.3, "top_k": 2, "base_rank": 4, "allocation_power": 0.5,
            "importance_metric": "fisher", "warmstart": False, "gamma_normalise": False, "decay_direction": "increasing",
            "heuristic_ratio": 3.0, "adalora_init_ratio": 2.0, "eva_rho": 1.5, "realloc_every": 10, "realloc_warmup": 10,
            "realloc_final": 0.3, "realloc_strategy": "top_k", "realloc_ema": 0.5, "realloc_uncertainty": True,
            "warmstart_init": "gora"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_setting_the_method_does_not_read_is_refused_unless_left_at_its_default(method):
    """Ignored, it would still change the run's key: an identical run in a report row of its own."""
    settings = method_settings()
    assert set(SET_AWAY) == set(settings) and {m for ms in settings.values() for m in ms} <= set(METHODS)
    defaults = RunConfig()
    for name, value in SET_AWAY.items():
        RunConfig(method=method, **{name: getattr(defaults, name)})
        if method in settings[name]:
            RunConfig(method=method, **{name: value})
        else:
            flag = "--" + name.replace("_", "-")
            with pytest.raises(BaloraError, match=f"method {method} ignores {flag} \\(read only by "
                                                  f"{', '.join(settings[name])}\\); leave it out"):
                RunConfig(method=method, **{name: value})


def test_lora_spends_a_fractional_budget_with_two_adjacent_ranks(tiny_model_dir, tiny_csv):
    result = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="lora", budget_rank=2.5, epochs=1),
                            progress=False).result
    assert sorted(m["rank"] for m in result["allocation"]) == [2, 2, 3, 3]
    assert result["params"]["lora"] == result["budget"]["lora_budget"]


def test_the_importance_pass_reads_a_random_stratified_sample(tmp_path, tiny_model_dir):
    import random

    import pandas as pd
    from conftest import sentiment_rows

    from balora.run import setup

    rows = sentiment_rows(400, seed=5)
    rng = random.Random(0)
    for row in rows:  # lengths from 1 to 12 extra words, unrelated to the label
        row["text"] += " the" * rng.randint(1, 12)
    pd.DataFrame(rows).to_csv(tmp_path / "long.csv", index=False)
    run = setup(tiny_config(tiny_model_dir, tmp_path / "long.csv", shots=None, train_size=200, gradient_samples=40))
    seen = [int(b["attention_mask"].sum()) for batch in run.method_context(1).batches() for b in [batch]]
    tokens_seen = sum(seen) / 40
    tokens_all = sum(len(e.text.split()) + 2 for e in run.train_examples) / 200
    assert abs(tokens_seen - tokens_all) < 0.15 * tokens_all
    assert sum(e.label for e in run.importance_examples) == sum(e.label for e in run.train_examples) * 40 // 200


def test_a_rank_that_conflicts_with_the_budget_is_refused(tiny_model_dir, tiny_csv):
    with pytest.raises(BaloraError, match="conflicts"):
        tiny_config(tiny_model_dir, tiny_csv, method="lora", rank=8, budget_rank=4)
    with pytest.raises(BaloraError, match="give --rank or a budget"):
        run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="lora", rank=8, budget_rank=None, budget=1000),
                       progress=False)


@pytest.mark.parametrize("method", ["lora", "ba_lora", "linear_decay"])
def test_count_head_works_the_same_for_every_budgeted_method(method, tiny_model_dir, tiny_csv):
    result = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method=method, count_head=True, budget_rank=8,
                                        epochs=1), progress=False).result
    budget = result["budget"]["lora_budget"]
    assert budget == 8 * 4 * (32 + 32) - result["params"]["head"]
    assert budget - 64 < result["params"]["lora"] <= budget  # less than one rank of a 32×32 module is left


@pytest.mark.parametrize("method", ["eva", "adalora"])
def test_methods_that_count_in_whole_ranks_refuse_other_budgets(method, tiny_model_dir, tiny_csv):
    with pytest.raises(BaloraError, match="whole ranks"):
        run_experiment(tiny_config(tiny_model_dir, tiny_csv, method=method, count_head=True), progress=False)


def test_the_probed_head_is_where_every_method_starts(tiny_model_dir, tiny_csv):
    from balora.run import setup

    heads = {}
    for method in ("lora", "ba_lora"):
        run = setup(tiny_config(tiny_model_dir, tiny_csv, method=method, head_probe_steps=50))
        heads[method] = run.model.classifier.weight.detach().clone()
        assert run.probe.loss_after < run.probe.loss_before
    unprobed = setup(tiny_config(tiny_model_dir, tiny_csv)).model.classifier.weight
    assert torch.equal(heads["lora"], heads["ba_lora"]) and not torch.equal(heads["lora"], unprobed)


def test_adalora_s_schedule_completes_its_pruning_to_the_target_rank(tiny_model_dir, tiny_csv):
    result = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="adalora", budget_rank=2, epochs=2),
                            progress=False).result
    assert {m["rank"] for m in result["allocation"]} == {3}  # trained at 1.5 × 2
    assert sum(m["final_rank"] for m in result["allocation"]) == 2 * 4  # exactly the target total rank


# Causal LMs (seed 002): the task follows the model.

def lm_config(model_dir, data, **overrides) -> RunConfig:
    values = dict(model=str(model_dir), dataset=str(data), train_size=40, budget_rank=4, epochs=2, batch_size=8,
                  learning_rate=5e-3, gradient_samples=16, evaluations=2, min_rank=1, max_length=64, seed=3)
    values.update(overrides)
    return RunConfig(**values)


RELOAD_LM = RELOAD.replace("AutoModelForSequenceClassification", "AutoModelForCausalLM").replace(", num_labels=2", "")


def test_a_causal_lm_gets_causal_lm_training_and_its_adapter_is_plain_peft(tmp_path, tiny_lm_dir, tiny_alpaca):
    out = tmp_path / "run"
    output = run_experiment(lm_config(tiny_lm_dir, tiny_alpaca), out, progress=False)
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "causal_lm" and result["data"]["labels"] is None
    assert result["config"]["gamma"] == 1e-4  # the causal-LM warm-start step, not the classifiers' 0.005
    metrics = result["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"])) and metrics["tokens"] > 0
    assert "accuracy" not in metrics and result["params"]["head"] == 0
    kinds = {m["name"].split(".")[-1] for m in result["allocation"]}
    assert kinds in ({"c_attn", "c_proj", "c_fc"}, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    assert result["params"]["lora"] == sum(m["params"] for m in result["allocation"]) == result["budget"]["lora_budget"]
    assert len(result["generations"]) == 3 and all(set(g) == {"instruction", "input", "reference", "generated"}
                                                   for g in result["generations"])
    assert result["timings"]["generate"] > 0  # timed apart from the test loss: its length is the model's
    validation = [values["loss"] for _, values in result["curves"]["validation"]]
    assert validation[-1] < validation[0]  # it learns the responses

    batch = {"input_ids": torch.tensor([[2, 5, 9, 3], [2, 12, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = output.model.eval()(**batch).logits
    reload = subprocess.run([sys.executable, "-c", RELOAD_LM, str(tiny_lm_dir), str(out / "adapter"), str(tmp_path / "batch.pt"),
                             str(tmp_path / "logits.pt")], capture_output=True, text=True)
    assert reload.returncode == 0, reload.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "linear_decay", "attention_heavy", "magnitude", "activation", "adalora"])
def test_seed_002_s_strategies_run_on_a_causal_lm_within_the_budget(method, tiny_lm_dir, tiny_alpaca):
    result = run_experiment(lm_config(tiny_lm_dir, tiny_alpaca, method=method, epochs=3), progress=False).result
    assert result["task"] == "causal_lm"
    if method == "adalora":  # it budgets ranks, not parameters: on modules of different shapes the count differs
        assert sum(m["final_rank"] for m in result["allocation"]) <= 4 * len(result["allocation"])
    else:
        assert result["params"]["lora_final"] <= result["budget"]["lora_budget"]


def test_training_holds_no_importance_gradients(tiny_model_dir, tiny_csv, monkeypatch):
    """The mean gradients (an fp32 copy of every target weight: 0.4 GB on SmolLM2) serve the allocation and
    the warm-start only; they are freed before training starts."""
    import gc
    import weakref

    import balora.importance
    import balora.run

    held, alive = [], []
    accumulate, train = balora.importance.accumulate_gradients, balora.run.train

    def recording(*args, **kwargs):
        stats = accumulate(*args, **kwargs)
        held.extend(weakref.ref(g) for g in stats.mean.values())
        return stats

    def checking(*args, **kwargs):
        gc.collect()
        alive.append(sum(ref() is not None for ref in held))
        return train(*args, **kwargs)

    monkeypatch.setattr(balora.importance, "accumulate_gradients", recording)
    monkeypatch.setattr(balora.run, "train", checking)
    run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="ba_lora"), progress=False)
    assert held and alive == [0]


def test_warm_start_lowers_a_causal_lm_s_loss_before_training(tiny_lm_dir, tiny_alpaca):
    def initial_loss(method: str) -> float:
        config = lm_config(tiny_lm_dir, tiny_alpaca, method=method, gradient_samples=40)
        return run_experiment(config, progress=False).result["curves"]["validation"][0][1]["loss"]

    assert initial_loss("ba_lora") < initial_loss("ba_lora_no_warmstart")


def test_task_follows_the_model_unless_set(tiny_lm_dir, tiny_model_dir, tiny_alpaca, tiny_csv):
    from balora.tasks import task_of

    assert task_of(str(tiny_lm_dir)).name == "causal_lm" and task_of(str(tiny_model_dir)).name == "classification"
    assert task_of(str(tiny_lm_dir), "classification").name == "classification"
    result = run_experiment(tiny_config(tiny_lm_dir, tiny_csv, task="classification", epochs=1), progress=False).result
    assert result["task"] == "classification" and "accuracy" in result["metrics"]


def test_train_on_prompt_learns_more_tokens(tiny_lm_dir, tiny_alpaca):
    masked = run_experiment(lm_config(tiny_lm_dir, tiny_alpaca, epochs=1, method="lora"), progress=False).result
    whole = run_experiment(lm_config(tiny_lm_dir, tiny_alpaca, epochs=1, method="lora", train_on_prompt=True),
                           progress=False).result
    assert whole["metrics"]["tokens"] > 3 * masked["metrics"]["tokens"]


def test_bf16_runs_a_causal_lm_close_to_fp32_and_records_it(tiny_lm_dir, tiny_alpaca):
    results = {precision: run_experiment(lm_config(tiny_lm_dir, tiny_alpaca, method="ba_lora", precision=precision),
                                         progress=False).result for precision in ("fp32", "bf16")}
    assert results["bf16"]["config"]["precision"] == "bf16"
    assert results["bf16"]["key"] != results["fp32"]["key"] == RunConfig(**results["fp32"]["config"]).key()
    assert results["bf16"]["allocation"] == results["fp32"]["allocation"]  # importance is measured in fp32
    bf16, fp32 = results["bf16"]["metrics"]["loss"], results["fp32"]["metrics"]["loss"]
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_without_native_units_warns_and_records_it(native, tiny_lm_dir, tiny_alpaca, monkeypatch, capsys):
    """On a CPU without AVX512/AMX, oneDNN emulates bf16 matrix products, about 8x slower than fp32 (an AVX2
    EPYC, 2026-12-02): a run asked for bf16 there says so in one line, and its environment records it."""
    import balora.run

    monkeypatch.setattr(balora.run, "native_bf16", lambda device: native)
    result = run_experiment(lm_config(tiny_lm_dir, tiny_alpaca, method="lora", precision="bf16"), progress=False).result
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("balora: warning:")]
    assert result["environment"]["native_bf16"] is native
    assert warned == ([] if native else [
        "balora: warning: --precision bf16 on a cpu without native bf16 matrix units (AVX512 or AMX): matrix "
        "products are emulated, several times slower than fp32 here; --precision fp32 is faster on this machine"])


def test_native_bf16_is_what_onednn_reports_on_cpu():
    from balora.training import native_bf16

    assert native_bf16(torch.device("cpu")) is torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_bf16_evaluates_and_generates_in_bf16(tiny_lm_dir, tiny_alpaca):
    from balora.run import setup

    run = setup(lm_config(tiny_lm_dir, tiny_alpaca, precision="bf16"))
    seen = []
    run.model.get_output_embeddings().register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    run.evaluator(run.data.validation)(run.model)
    run.generations(run.model)
    assert len(seen) > 3 and set(seen) == {torch.bfloat16}

"""The levers: the random-allocation control (`ba_lora_shuffled`), GoRA's initialisation as a warm-start
option (`warmstart_init: gora`), and modules left at rank 0 (`min_rank: 0`)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from conftest import random_batches, tiny_bert
from peft import LoraConfig, PeftModel, get_peft_model
from test_run import tiny_config
from transformers import AutoModelForSequenceClassification

from balora import allocation
from balora.config import RunConfig
from balora.errors import BaloraError
from balora.importance import accumulate_gradients
from balora.initialisation import gora_start, lora_layer
from balora.measure import PhaseMeter
from balora.methods import METHODS, MethodContext
from balora.models import target_modules
from balora.run import run_experiment

MIXED = ["query", "value", "intermediate.dense"]  # tiny BERT: 32 × 32 (cost 64 per rank) and 48 × 32 (cost 80)
BATCH = {"input_ids": torch.tensor([[2, 5, 9, 3], [2, 12, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}


def _context(method: str, budget_rank: float = 4, **values) -> MethodContext:
    model = tiny_bert()
    targets = target_modules(model, MIXED)
    batches = random_batches(num_batches=3, batch_size=8, seed=1)
    config = RunConfig(**{"method": method, "gamma": 0.005, "min_rank": 1, **values})
    return MethodContext(config, model, targets, allocation.rank_budget(targets, budget_rank), lambda: batches, 10,
                         "SEQ_CLS", ["classifier"], PhaseMeter(), 24)


def _ranks(prepared) -> dict[str, int]:
    return {m.name: m.rank for m in prepared.allocation}


def test_the_shuffled_control_keeps_ba_lora_s_ranks_and_exact_parameter_count_on_mixed_shapes():
    reference = METHODS["ba_lora"](_context("ba_lora"))
    cost = {m.name: m.d_in + m.d_out for m in reference.allocation}
    assert set(cost.values()) == {64, 80}  # two shapes: a shuffle across them would change the count
    assigned = set()
    for seed in range(8):
        shuffled = METHODS["ba_lora_shuffled"](_context("ba_lora_shuffled", seed=seed))
        ranks = _ranks(shuffled)
        assert [m.name for m in shuffled.allocation] == [m.name for m in reference.allocation]
        assert Counter(ranks.values()) == Counter(_ranks(reference).values())
        assert allocation.total_params(shuffled.allocation) == allocation.total_params(reference.allocation)
        for width in (64, 80):  # ranks move only between modules of one shape
            assert (Counter(r for n, r in ranks.items() if cost[n] == width)
                    == Counter(m.rank for m in reference.allocation if cost[m.name] == width))
        assert _ranks(METHODS["ba_lora_shuffled"](_context("ba_lora_shuffled", seed=seed))) == ranks  # reproducible
        assert shuffled.warm_start is not None and shuffled.initialise is not None  # B from the mean gradient
        assigned.add(tuple(sorted(ranks.items())))
    assert len(set(_ranks(reference).values())) > 1 and len(assigned) > 1  # the seed moves the ranks
    assert any(dict(a) != _ranks(reference) for a in assigned)


def test_the_shuffled_control_without_warm_start_keeps_peft_s_init():
    shuffled = METHODS["ba_lora_shuffled"](_context("ba_lora_shuffled", warmstart=False))
    assert shuffled.initialise is None and shuffled.warm_start is None


def test_a_shuffled_run_saves_an_adapter_plain_peft_reloads(tmp_path, tiny_model_dir, tiny_csv):
    out = tmp_path / "run"
    output = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="ba_lora_shuffled", target_modules=MIXED,
                                        epochs=1), out, progress=False)
    result, trained = output.result, output.model.eval()
    assert result["params"]["lora"] == sum(m["params"] for m in result["allocation"]) <= result["budget"]["lora_budget"]
    original = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    with torch.no_grad():
        expected = trained(**BATCH).logits
        reloaded = PeftModel.from_pretrained(original, out / "adapter").eval()
        torch.testing.assert_close(reloaded(**BATCH).logits, expected, rtol=1e-4, atol=1e-5)
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert saved["rank_pattern"] == {m["name"].replace(".", "\\."): m["rank"] for m in result["allocation"] if m["rank"]}


WARM_STARTING = ("ba_lora", "ba_lora_dynamic", "ba_lora_uniform", "ba_lora_no_budget", "ba_lora_shuffled")


def _check_gora_update(model, gradients: dict[str, torch.Tensor], lr: float) -> None:
    """GoRA's ΔW₀ = scaling·B·A = −lr·√(d_in/r)·G·Aᵀ(AAᵀ)⁻¹A, computed here from A and G alone; and a descent step."""
    checked = 0
    for name, grad in gradients.items():
        layer = lora_layer(model, name)
        if "default" not in getattr(layer, "lora_A", {}):
            continue
        a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        g = grad.double()
        rank, d_in = a.shape
        expected = -lr * (d_in / rank) ** 0.5 * g @ a.T @ torch.linalg.inv(a @ a.T) @ a
        update = layer.scaling["default"] * b @ a
        torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-10)
        assert float((g * update).sum()) < 0  # ⟨G, ΔW⟩ < 0: the loss goes down to first order
        checked += 1
    assert checked


@pytest.mark.parametrize("rank", [2, 8])
def test_gora_start_is_one_unnormalised_sgd_step_projected_onto_a_s_rows(rank):
    model = tiny_bert()
    targets = target_modules(model, ["query", "value", "output.dense"])  # d_in 32 and 48
    gradients = accumulate_gradients(model, random_batches(num_batches=3, batch_size=8, seed=1), targets, 24).mean
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["query", "value", "output.dense"]))
    gora_start(peft_model, gradients, 3e-3)
    _check_gora_update(peft_model, gradients, 3e-3)


@pytest.mark.parametrize("method", WARM_STARTING)
def test_every_warm_starting_method_starts_from_gora_s_init_when_asked(method):
    ctx = _context(method, warmstart_init="gora", learning_rate=2e-3)
    prepared = METHODS[method](ctx)
    model = get_peft_model(ctx.model, prepared.peft_config)
    prepared.initialise(model)
    _check_gora_update(model, prepared.warm_start, 2e-3)


def test_gora_s_init_is_validated_refused_where_nothing_warm_starts_and_keyed_only_when_set():
    with pytest.raises(BaloraError, match="warmstart_init must be one of balora, gora"):
        RunConfig(warmstart_init="loraga")
    with pytest.raises(BaloraError, match="method lora ignores --warmstart-init"):
        RunConfig(method="lora", warmstart_init="gora")
    assert RunConfig(warmstart_init="balora").key() == RunConfig().key() != RunConfig(warmstart_init="gora").key()


@pytest.mark.parametrize("strategy, power", [("proportional", 4.0), ("top_k", 1.0)])
def test_a_module_given_rank_0_is_never_adapted_and_the_budget_stays_exact(strategy, power, tmp_path, tiny_model_dir,
                                                                            tiny_csv):
    """min_rank 0 at rank-equivalent 1 on two shapes: the modules left at rank 0 are not wrapped, not saved,
    not warm-started, and cost nothing; the rest spend the budget to 99% or more, never over it."""
    values = dict(method="ba_lora", target_modules=MIXED, budget_rank=1, min_rank=0, strategy=strategy,
                  allocation_power=power, epochs=1)
    out = tmp_path / "run"
    output = run_experiment(tiny_config(tiny_model_dir, tiny_csv, **values), out, progress=False)
    result, model = output.result, output.model
    rows = result["allocation"]
    unadapted = {m["name"] for m in rows if m["rank"] == 0}
    assert unadapted and len(unadapted) < len(rows) and {m["shape"][0] for m in rows} == {32, 48}
    budget, spent = result["budget"]["lora_budget"], result["params"]["lora"]
    assert spent == sum(m["rank"] * sum(m["shape"]) for m in rows) == sum(m["params"] for m in rows)
    assert 0.99 * budget <= spent <= budget
    assert spent == sum(p.numel() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n)
    for m in rows:
        assert hasattr(lora_layer(model, m["name"]), "lora_A") == (m["rank"] > 0)
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(saved["target_modules"]) == {m["name"] for m in rows} - unadapted
    assert saved["rank_pattern"] == {m["name"].replace(".", "\\."): m["rank"] for m in rows if m["rank"]}


@pytest.mark.parametrize("init", ["balora", "gora"])
def test_the_warm_start_skips_modules_given_rank_0(init):
    ctx = _context("ba_lora", budget_rank=1, min_rank=0, allocation_power=4.0, warmstart_init=init)
    prepared = METHODS["ba_lora"](ctx)
    ranks = _ranks(prepared)
    assert 0 in ranks.values() and set(prepared.warm_start) == set(ranks)  # a gradient for every target, adapted or not
    model = get_peft_model(ctx.model, prepared.peft_config)
    prepared.initialise(model)
    for name, rank in ranks.items():
        layer = lora_layer(model, name)
        assert hasattr(layer, "lora_A") == (rank > 0)
        assert rank == 0 or bool(layer.lora_B["default"].weight.abs().sum() > 0)

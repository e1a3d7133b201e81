"""balora.plan / balora.Plan: the library entry point for users' own training loops."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch
from conftest import random_batches, tiny_bert, tiny_gpt2
from peft import PeftModel
from torch import nn
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import balora
from balora.api import sample_batches
from balora.importance import accumulate_gradients, score_modules
from balora.models import target_modules


def labelled_rows(n: int = 40, seed: int = 0) -> list[dict]:
    """Examples sorted by label (all 0s, then all 1s): the first batches of a loader are one class."""
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 64, (8,), generator=generator), "attention_mask": torch.ones(8, dtype=torch.long),
             "labels": torch.tensor(int(i >= n // 2))} for i in range(n)]


def stack(rows: list[dict]) -> dict:
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def logits_of(model: nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_the_sample_is_seeded_random_and_stratified_not_the_first_batches():
    loader = DataLoader(labelled_rows(40), batch_size=4, collate_fn=stack)
    batches, share, size = sample_batches(loader, 10, seed=1)
    labels = torch.cat([b["labels"] for b in batches()])
    assert share == size == 10 and Counter(labels.tolist()) == {0: 5, 1: 5}  # the first 10 rows are all class 0
    again, _, _ = sample_batches(loader, 10, seed=1)
    other, _, _ = sample_batches(loader, 10, seed=2)
    ids = [torch.cat([b["input_ids"] for b in f()]) for f in (batches, again, other)]
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[0], ids[2])


def test_ready_batches_are_taken_in_a_seeded_random_order():
    batches = random_batches(num_batches=8, batch_size=2)
    taken = sample_batches(batches, 4, seed=0)[0]()
    assert [id(b) for b in taken] != [id(b) for b in batches[:len(taken)]]
    assert sorted(map(id, taken)) == sorted(map(id, batches))


def test_plan_scores_like_the_importance_pass_of_the_cli():
    model, batches = tiny_bert(), random_batches(num_batches=3, batch_size=4)
    plan = balora.plan(model, batches, budget_rank=4, min_rank=1, num_samples=12)
    targets = target_modules(model, ["query", "value"])
    scores = score_modules(model, targets, "sensitivity", accumulate_gradients(model, batches, targets, 12))
    assert {m.name: m.importance for m in plan.modules} == pytest.approx(scores, rel=1e-5)
    assert plan.lora_params <= plan.budget == balora.rank_budget(targets, 4) and plan.importance["examples"] == 12
    table = str(plan)
    assert all(m.name in table for m in plan.modules) and f"{plan.lora_params:,} of a {plan.budget:,} budget" in table


@pytest.mark.parametrize("build, targets, task", [(tiny_bert, None, "SEQ_CLS"), (tiny_gpt2, None, "SEQ_CLS"),
                                                  (None, ["q_proj", "v_proj"], "CAUSAL_LM")])
def test_plan_applies_with_warm_start_on_any_architecture(build, targets, task):
    if build is None:  # a causal LM: labels are the tokens
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=2))
        batches = [dict(b, labels=b["input_ids"]) for b in random_batches()]
    else:
        model, batches = build(), random_batches()
    plan = balora.plan(model, batches, budget_rank=4, min_rank=1, target_modules=targets)
    assert plan.task_type == task and plan.lora_config().rank_pattern
    peft_model = plan.apply(model)
    for m in plan.modules:
        layer = peft_model.base_model.model.get_submodule(m.name)
        assert layer.lora_A["default"].weight.shape == (m.rank, m.d_in)
        assert layer.lora_B["default"].weight.abs().sum() > 0  # warm-started, not PEFT's B = 0
    assert sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n) == plan.lora_params


class TwoLayers(nn.Module):
    """A plain module, as in PEFT's custom-model tests; batches are (x, y) tuples scored by a loss_fn."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin0, self.lin1 = nn.Linear(10, 20), nn.Linear(20, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(torch.relu(self.lin0(x)))


def cross_entropy(model: nn.Module, batch: tuple) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def test_a_plain_module_with_tuple_batches_and_a_loss_fn_trains_in_a_plain_loop(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(10, generator=generator), torch.tensor(i % 2)) for i in range(32)]
    loader = DataLoader(data, batch_size=8, shuffle=True)
    plan = balora.plan(TwoLayers(), loader, budget=120, target_modules=["lin0", "lin1"], min_rank=1, loss_fn=cross_entropy)
    assert plan.task_type is None and plan.lora_params <= 120 and plan.importance["examples"] == 32
    model = plan.apply(TwoLayers())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for x, y in loader:  # the user's own loop
        cross_entropy(model, (x, y)).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(TwoLayers(), tmp_path / "adapter").eval()
    x = torch.randn(4, 10)
    torch.testing.assert_close(reloaded(x), model.eval()(x))


def test_bad_input_raises_one_balora_error_naming_the_fix():
    batches = random_batches()
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    with pytest.raises(balora.BaloraError, match="loss_fn"):
        balora.plan(tiny_bert(), unlabelled, budget_rank=4)
    with pytest.raises(balora.BaloraError, match="not found.*try"):
        balora.plan(TwoLayers(), batches, budget_rank=4, target_modules=["nope"], loss_fn=cross_entropy)
    with pytest.raises(balora.BaloraError, match="infeasible budget"):
        balora.plan(tiny_bert(), batches, budget=10)
    with pytest.raises(balora.BaloraError, match="exactly one budget"):
        balora.plan(tiny_bert(), batches)
    with pytest.raises(balora.BaloraError, match="modules_to_save: no module named head"):
        balora.plan(tiny_bert(), batches, budget_rank=4, modules_to_save=["head"])
    with pytest.raises(balora.BaloraError, match="unknown option"):
        balora.plan(tiny_bert(), batches, budget_rank=4, head_probe_steps=3)
    with pytest.raises(balora.BaloraError, match="not a balora plan"):
        balora.Plan.from_dict({"format": 1, "modules": [{"name": "x"}]})


@pytest.mark.parametrize("model, data, options, message", [
    (None, random_batches(), {"budget_rank": 4}, "model must be a torch nn.Module .*got NoneType"),
    ("bert", random_batches(), {"budget_rank": 4}, "model must be a torch nn.Module .*got str"),
    (tiny_bert(), 42, {"budget_rank": 4}, "data must be a DataLoader or an iterable of batches, got int"),
    (tiny_bert(), random_batches()[0], {"budget_rank": 4}, "got one batch, a dict: pass a list of batches"),
    (tiny_bert(), random_batches(), {"budget_rank": 4, "num_samples": "many"}, "num_samples must be a positive integer, got 'many'"),
    (tiny_bert(), random_batches(), {"budget_rank": 4, "loss_fn": "mse"}, "loss_fn must be callable"),
    (tiny_bert(), random_batches(), {"budget_rank": 1e9}, r"largest feasible budget \(spent to 99%\) is 8,274"),
])
def test_wrong_types_and_impossible_budgets_raise_a_balora_error(model, data, options, message):
    with pytest.raises(balora.BaloraError, match=message):
        balora.plan(model, data, **options)


def test_a_saved_plan_applies_to_a_fresh_model_exactly_as_the_original(tmp_path):
    batches = random_batches()
    plan = balora.plan(tiny_bert(), batches, budget_rank=4, min_rank=1)
    restored = balora.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert restored.ranks == plan.ranks and restored.lora_config().rank_pattern == plan.lora_config().rank_pattern
    with pytest.raises(balora.BaloraError, match="warm-start gradients"):
        restored.apply(tiny_bert())
    loaded = balora.Plan.load(plan.save(tmp_path / "plan"))
    expected = logits_of(plan.apply(tiny_bert()), batches[0])
    torch.testing.assert_close(logits_of(loaded.apply(tiny_bert()), batches[0]), expected)
    assert not torch.equal(logits_of(restored.apply(tiny_bert(), warmstart=False), batches[0]), expected)
    with pytest.raises(balora.BaloraError, match="does not match the plan"):
        plan.apply(tiny_gpt2())


@pytest.mark.parametrize("rule", ["rslora", "standard"])
def test_a_plan_follows_the_scaling_rule_and_a_saved_plan_keeps_it(rule):
    """`scaling_rule` reaches the plan's LoraConfig as the run's does: each module's alpha from
    `allocation.lora_alpha` at the budget's rank-equivalent; a plan.json written before the field existed
    loads with today's rule (constant)."""
    from balora.allocation import lora_alpha

    plan = balora.plan(tiny_bert(), random_batches(), budget_rank=4, min_rank=1, strategy="top_k", top_k=2,
                       scaling_rule=rule)
    assert len(set(plan.ranks.values())) > 1  # unequal ranks, where the rules differ
    reference = plan.budget / sum(m.d_in + m.d_out for m in plan.modules)
    config = balora.Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).lora_config()
    for module in [m for m in plan.modules if m.rank > 0]:  # top_k leaves the others out
        assert config.alpha_pattern[re.escape(module.name)] == pytest.approx(
            lora_alpha(module.rank, plan.alpha_ratio, rule, reference))
    old = {k: v for k, v in plan.to_dict().items() if k not in ("scaling_rule", "warmstart_init", "learning_rate")}
    assert balora.Plan.from_dict(old).scaling_rule == "constant"


def test_a_plan_applies_gora_s_initialisation_with_the_given_learning_rate():
    """`warmstart_init="gora"`: apply() sets scaling·B·A = −lr·√(d_in/r)·G·P_A from the plan's unnormalised mean
    gradients G; without a learning rate the plan is refused."""
    plan = balora.plan(tiny_bert(), random_batches(), budget_rank=4, min_rank=1, warmstart_init="gora",
                       learning_rate=1e-3)
    model = plan.apply(tiny_bert())
    for name, grad in plan.gradients.items():
        layer = model.base_model.model.get_submodule(name)
        a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        projection = a.T @ torch.linalg.solve(a @ a.T, a)
        expected = -1e-3 * (a.shape[1] / a.shape[0]) ** 0.5 * grad.double() @ projection
        torch.testing.assert_close(layer.scaling["default"] * b @ a, expected, rtol=1e-4, atol=1e-9)
    with pytest.raises(balora.BaloraError, match="give learning_rate="):
        balora.plan(tiny_bert(), random_batches(), budget_rank=4, warmstart_init="gora")


def test_a_hugging_face_trainer_trains_the_planned_model_and_plain_peft_reloads_it(tmp_path):
    rows = labelled_rows(32)
    plan = balora.plan(tiny_bert(), DataLoader(rows, batch_size=8, collate_fn=stack), budget_rank=4, min_rank=1,
                       num_samples=16)
    model = plan.apply(tiny_bert())
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=3, per_device_train_batch_size=8,
                             learning_rate=1e-2, save_strategy="no", report_to=[], use_cpu=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    Trainer(model=model, args=args, train_dataset=rows, data_collator=stack).train()
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_bert(), tmp_path / "adapter")
    batch = stack(rows[:4])
    torch.testing.assert_close(logits_of(reloaded, batch), logits_of(model, batch))
    assert reloaded.peft_config["default"].rank_pattern == plan.lora_config().rank_pattern


REALLOCATE = {"every": 1, "warmup": 1, "final_fraction": 0.0, "score": "grad_norm"}  # a resize on every step


def check_reallocated(model: PeftModel, plan: balora.Plan, history: list[dict], optimizer: torch.optim.Optimizer,
                      rows: list[dict], folder) -> None:
    """Ranks moved within the budget; the optimizer trains the resized parameters; plain PEFT reloads the adapter."""
    ranks = history[-1]["ranks"]
    assert len(history) > 1 and any(entry["changed"] for entry in history) and ranks != plan.ranks
    assert all(entry["params"] <= plan.budget for entry in history)
    lora = {id(p): p.numel() for n, p in model.named_parameters() if "lora_" in n}
    assert sum(lora.values()) == history[-1]["params"] <= plan.budget
    assert set(lora) <= {id(p) for group in optimizer.param_groups for p in group["params"]}
    model.save_pretrained(folder)
    reloaded = PeftModel.from_pretrained(tiny_bert(), folder)
    assert {m.name: reloaded.base_model.model.get_submodule(m.name).r["default"] for m in plan.modules} == ranks
    batch = stack(rows[:4])
    torch.testing.assert_close(logits_of(reloaded, batch), logits_of(model, batch))


def test_a_trainer_with_the_reallocation_callback_resizes_ranks_within_the_budget(tmp_path):
    rows = labelled_rows(32)
    plan = balora.plan(tiny_bert(), DataLoader(rows, batch_size=8, collate_fn=stack), budget_rank=4, num_samples=16)
    model = plan.apply(tiny_bert())
    callback = balora.ReallocationCallback(plan, **REALLOCATE)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=4, per_device_train_batch_size=8,
                             learning_rate=1e-2, save_strategy="no", report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=stack, callbacks=[callback])
    trainer.train()
    assert [entry["step"] for entry in callback.history] == [0, 1, 2, 3]  # due while step < max_steps
    check_reallocated(model, plan, callback.history, trainer.optimizer, rows, tmp_path / "adapter")


def test_the_plain_loop_hook_resizes_ranks_within_the_budget(tmp_path):
    rows = labelled_rows(32)
    loader = DataLoader(rows, batch_size=8, collate_fn=stack, shuffle=True)
    plan = balora.plan(tiny_bert(), loader, budget_rank=4, num_samples=16)
    model = plan.apply(tiny_bert())
    hook = plan.reallocator(model, total_steps=len(loader), **REALLOCATE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step, batch in enumerate(loader, start=1):
        model(**batch).loss.backward()
        optimizer.step()
        hook(model, step, optimizer)
        optimizer.zero_grad()
    check_reallocated(model, plan, hook.history, optimizer, rows, tmp_path / "adapter")
    with pytest.raises(balora.BaloraError, match="rank .* in this model"):
        plan.reallocator(model, total_steps=4)  # already resized: the plan's ranks no longer describe it
    with pytest.raises(balora.BaloraError, match="ReallocationConfig"):
        plan.reallocator(plan.apply(tiny_bert()), total_steps=4, speed=3)


def test_the_public_surface_is_exported_lazily():
    assert {"plan", "Plan", "ReallocationCallback", "rank_budget", "lora_budget", "rank_equivalent", "target_modules",
            "BaloraError"} <= set(dir(balora))
    with pytest.raises(AttributeError):
        balora.nothing_here  # noqa: B018

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_MODELS, random_batches
from torch import nn

from balora.errors import BaloraError
from balora.importance import METRICS, accumulate_gradients, input_norms, score_modules
from balora.models import TargetModule, target_modules

TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn", "c_fc"], "llama": ["q_proj", "v_proj", "down_proj"]}


@pytest.mark.parametrize("arch", list(TINY_MODELS))
def test_only_target_weights_get_gradients_and_flags_are_restored(arch):
    model = TINY_MODELS[arch]()
    targets = target_modules(model, TARGETS[arch])
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    stats = accumulate_gradients(model, random_batches(), targets, num_samples=12)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    for t in targets:
        assert stats.mean[t.name].shape == (t.d_out, t.d_in)
        assert stats.mean[t.name].abs().sum() > 0
    assert stats.num_examples == 12


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_mean_gradient_matches_autograd_in_out_by_in_orientation(arch):
    model = TINY_MODELS[arch]()
    targets = target_modules(model, TARGETS[arch])[:1]
    batches = random_batches(num_batches=2, batch_size=3)
    stats = accumulate_gradients(model, batches, targets, num_samples=6)
    model.eval()
    weight = model.get_submodule(targets[0].name).weight
    loss = sum(model(**b).loss * 3 for b in batches) / 6
    (grad,) = torch.autograd.grad(loss, weight)
    expected = grad.t() if arch == "gpt2" else grad  # Conv1D stores (d_in, d_out)
    torch.testing.assert_close(stats.mean[targets[0].name], expected, rtol=1e-4, atol=1e-7)


def test_mean_gradient_does_not_depend_on_batching():
    model = TINY_MODELS["bert"]()
    targets = target_modules(model, ["query"])
    whole = random_batches(num_batches=1, batch_size=8)
    halves = [{k: v[i:i + 4] for k, v in whole[0].items()} for i in (0, 4)]
    a = accumulate_gradients(model, whole, targets, 8).mean
    b = accumulate_gradients(model, halves, targets, 8).mean
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_is_finite_and_non_negative(metric):
    model = TINY_MODELS["llama"]()
    targets = target_modules(model, TARGETS["llama"])
    stats = accumulate_gradients(model, random_batches(), targets, 12, with_fisher=True)
    norms = input_norms(model, random_batches(), targets, 12)
    scores = score_modules(model, targets, metric, stats, norms)
    assert set(scores) == {t.name for t in targets}
    assert all(math.isfinite(v) and v >= 0 for v in scores.values())
    assert len(set(scores.values())) > 1


class WithUnusedLayer(nn.Module):
    """A classifier with a Linear layer the forward pass never touches: it gets no gradient."""

    def __init__(self):
        super().__init__()
        self.inner = TINY_MODELS["bert"]()
        self.unused = nn.Linear(32, 32)
        self.config = self.inner.config

    def forward(self, **batch):
        return self.inner(**batch)


def test_module_without_gradient_scores_zero_and_nan_becomes_zero():
    model = WithUnusedLayer()
    targets = target_modules(model, ["query", "unused"])
    stats = accumulate_gradients(model, random_batches(), targets, 12)
    scores = score_modules(model, targets, "sensitivity", stats)
    assert scores["unused"] == 0.0 and scores["inner.bert.encoder.layer.0.attention.self.query"] > 0
    stats.mean["unused"] = torch.full_like(stats.mean["unused"], float("nan"))
    assert score_modules(model, targets, "grad_norm", stats)["unused"] == 0.0


def test_bad_inputs_are_clear_errors():
    model = TINY_MODELS["bert"]()
    targets = target_modules(model, ["query"])
    with pytest.raises(BaloraError, match="unknown importance metric 'bogus'"):
        score_modules(model, targets, "bogus")
    with pytest.raises(BaloraError, match="gradient-samples must be positive"):
        accumulate_gradients(model, random_batches(), targets, 0)
    with pytest.raises(BaloraError, match="saw no examples"):
        accumulate_gradients(model, [], targets, 4)


def test_magnitude_needs_no_gradients():
    model = TINY_MODELS["bert"]()
    targets: list[TargetModule] = target_modules(model, ["query"])
    scores = score_modules(model, targets, "magnitude")
    weight = model.get_submodule(targets[0].name).weight
    assert scores[targets[0].name] == pytest.approx(float(weight.abs().mean()))


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_head_probe_fits_the_head_and_touches_nothing_else(arch):
    from balora.importance import fit_head
    from balora.models import head_module_names

    model = TINY_MODELS[arch]()
    batches = random_batches(num_batches=4, batch_size=8, seed=2)
    head = head_module_names(model)[-1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    report = fit_head(model, batches, head, steps=100)
    assert report.examples == 32 and report.loss_after < report.loss_before - 0.05
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(head + ".") for n in changed)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():  # the probe trained on exactly what the model computes (pooled position included)
        loss = sum(float(model(**b).loss) * 8 for b in batches) / 32
    assert loss == pytest.approx(report.loss_after, rel=1e-4)

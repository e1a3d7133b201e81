from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODELS, random_batches
from peft import LoraConfig, get_peft_model

from balora import tasks
from balora.importance import accumulate_gradients
from balora.initialisation import lora_layer, warm_start
from balora.models import target_modules

TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}


def _setup(arch: str, rank: int = 4):
    model = TINY_MODELS[arch]()
    targets = target_modules(model, TARGETS[arch])
    batches = random_batches(num_batches=4, batch_size=8, seed=1)
    gradients = accumulate_gradients(model, batches, targets, 32).mean
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS[arch],
                                                  fan_in_fan_out=arch == "gpt2"))
    peft_model.eval()
    return peft_model, batches, gradients


@torch.no_grad()
def _loss(model, batches) -> float:
    return sum(float(model(**b).loss) for b in batches) / len(batches)


@pytest.mark.parametrize("arch", list(TINY_MODELS))
def test_warm_start_lowers_the_loss_on_the_estimation_data(arch):
    model, batches, gradients = _setup(arch)
    before = _loss(model, batches)  # B = 0: the adapter is a no-op
    warm_start(model, gradients, tasks.get("classification").warm_start_gamma)  # the default step
    after = _loss(model, batches)
    assert after < before - 1e-6


def test_the_opposite_sign_raises_the_loss():
    # Guards the sign: GoRA's public code drops the minus and starts uphill.
    model, batches, gradients = _setup("bert")
    before = _loss(model, batches)
    warm_start(model, gradients, gamma=-0.02)
    assert _loss(model, batches) > before


def test_initial_update_is_the_projected_gradient_with_the_full_step_norm():
    model, _, gradients = _setup("bert", rank=4)
    warm_start(model, gradients, gamma=0.05, normalise=False)
    for name, grad in gradients.items():
        layer = lora_layer(model, name)
        a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        projected = grad.double() @ a.T @ torch.linalg.inv(a @ a.T) @ a
        expected = -0.05 * grad.double().norm() / projected.norm() * projected
        torch.testing.assert_close(layer.scaling["default"] * b @ a, expected, rtol=1e-3, atol=1e-9)


def test_normalised_step_is_minus_gamma_g_over_rms_at_full_rank():
    model, _, gradients = _setup("bert", rank=32)  # full rank: P_A = I, the step is exactly -γ·G/RMS(G)
    warm_start(model, gradients, gamma=0.02)
    rms = (sum(float((g ** 2).sum()) for g in gradients.values()) / sum(g.numel() for g in gradients.values())) ** 0.5
    for name, grad in gradients.items():
        layer = lora_layer(model, name)
        update = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        torch.testing.assert_close(update, -0.02 * grad / rms, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("arch", list(TINY_MODELS))
def test_step_size_does_not_depend_on_the_rank(arch):
    # γ means one thing whatever rank allocation gives a module: ‖scaling·B·A‖ = γ‖Ĝ‖ at rank 2 and 16.
    norms = {}
    for rank in (2, 16):
        model, _, gradients = _setup(arch, rank=rank)
        warm_start(model, gradients, gamma=0.02)
        rms = (sum(float((g ** 2).sum()) for g in gradients.values()) / sum(g.numel() for g in gradients.values())) ** 0.5
        for name, grad in gradients.items():
            layer = lora_layer(model, name)
            update = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
            norms[rank, name] = float(update.norm())
            assert abs(norms[rank, name] - 0.02 * float(grad.norm()) / rms) < 1e-4 * norms[rank, name]
    assert all(abs(norms[2, n] - norms[16, n]) <= 1e-4 * norms[16, n] for _, n in norms)

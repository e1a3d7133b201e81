"""Phase 3 of BA-LoRA: warm-start the adapter from the importance pass's mean gradient.

For each adapted module with mean gradient G (`d_out × d_in`), A keeps PEFT's random init, and B is
set so that the adapter's initial update is a gradient-descent step restricted to the directions the
adapter can express, with the size of the full step:

    scaling · B · A = -γ · (‖Ĝ‖ / ‖Ĝ·P_A‖) · Ĝ·P_A,    P_A = Aᵀ(AAᵀ)⁻¹A (projection onto A's rows).

Ĝ·P_A is the closest matrix to Ĝ that a rank-r adapter with this A can produce. Its norm shrinks with
the rank (for a random A, E‖Ĝ·P_A‖² = (r/d_in)‖Ĝ‖²), so without the rescaling the step would grow with
the allocated rank and comparing allocations would mix allocation with step size. With it, γ means one
thing whatever rank a module gets: the update's Frobenius norm is γ·‖Ĝ‖, the norm of a plain step of
size γ on the full weight. The minus sign matters (GoRA's public code drops it, which makes the first
step go uphill; see `../shared/NOTES.md`).

Choice of Ĝ. With `normalise=True` (the default), Ĝ = G / RMS(G), the RMS taken over the entries of
all target gradients together, so the relative size of modules' gradients is kept and γ is the RMS
size of the step per weight entry, like Adam's first step: independent of the loss scale, the number
of samples and the model width. With `normalise=False`, Ĝ = G (the mean gradient) and γ is a plain
learning rate.

γ defaults to its task's value (`Task.warm_start_gamma`, `balora.tasks`), each chosen by measurement before
any training (`benchmarks/warmstart_gamma.py`, seeds 42-44, rank-equivalent 8) as the tested step with
the lowest validation loss. Classification, MiniLM on Rotten Tomatoes 64-shot: mean loss on the
importance sample 0.6941 with B = 0, 0.6743 at γ = 0.005, 0.6771 at 0.01, 0.6941 at 0.02, 0.7066 at
0.05 and 0.7240 at 0.1; validation loss 0.6938 with B = 0 and 0.6937 at 0.005, higher at every larger
γ: 0.005. Causal LM, SmolLM2 on 200 critic_instructions examples with all 210 projections adapted:
validation loss 4.353 with B = 0, 4.217 at 3e-5, 4.137 at 1e-4, 4.346 at 3e-4, 6.509 at 1e-3 and
17.230 at 0.005: 1e-4. The classifier's step would wreck the LM.

λ = 1e-6 · trace(AAᵀ)/r keeps the inverse well-conditioned without changing well-posed solutions.

GoRA's initialisation (`gora_start`, `--warmstart-init gora`; arXiv 2502.12171, its code's
`common/lora_modules/gora.py`), kept as an option to compare against: A keeps PEFT's random init too, G is
the *unnormalised* mean gradient (d_out × d_in), B = G·pinv(A) with the pseudo-inverse regularised by
1e-8·I, B = G·Aᵀ(AAᵀ + 1e-8·I)⁻¹, and B is multiplied by −lr·√(d_in/r)/scaling (lr the run's learning rate,
r the module's rank), so that

    ΔW₀ = scaling · B · A = −lr · √(d_in/r) · G·P_A:

one SGD step of size lr·√(d_in/r) on the raw gradient, projected onto A's rows. √(d_in/r) offsets the
projection's shrinkage on average (E‖G·P_A‖² = (r/d_in)‖G‖²), so the step has about the full gradient's
norm, but unlike BA-LoRA's rescaling not exactly, and its size follows the gradient's scale (the loss, the
number of samples). We keep the descent sign, which GoRA's public code drops. γ and the RMS
normalisation are not used.

Initial output shift: unlike PiSSA or LoRA-GA we do not subtract the initial update from the frozen
weights. The shift is the intended descent step, and leaving the base weights untouched keeps the
saved adapter an ordinary PEFT adapter for the unmodified base model.
"""

from __future__ import annotations

import torch
from peft import PeftModel

from balora.quantisation import effective_lora_a


def lora_layer(model: PeftModel, name: str) -> torch.nn.Module:
    """The PEFT LoRA layer that wraps base-model module `name`."""
    return model.base_model.model.get_submodule(name)


@torch.no_grad()
def warm_start(model: PeftModel, gradients: dict[str, torch.Tensor], gamma: float, normalise: bool = True,
               adapter: str = "default") -> None:
    """Set each adapted module's B so that scaling·B·A = -γ·(‖Ĝ‖/‖Ĝ·P_A‖)·Ĝ·P_A (module docstring)."""
    if normalise:
        squares = sum(float((g.double() ** 2).sum()) for g in gradients.values())
        rms = (squares / sum(g.numel() for g in gradients.values())) ** 0.5
        if rms == 0:
            return  # no gradient signal: keep PEFT's B = 0
        gradients = {name: g / rms for name, g in gradients.items()}
    for name, grad in gradients.items():
        layer = lora_layer(model, name)
        if adapter not in getattr(layer, "lora_A", {}):
            continue  # module got rank 0 and is not adapted
        a = effective_lora_a(layer.lora_A[adapter]).double()  # (r, d_in), QA-LoRA's pooled A expanded
        g = grad.double().to(a.device)  # (d_out, d_in)
        gram = a @ a.T
        gram += torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) * 1e-6 * gram.trace() / gram.shape[0]
        b = torch.linalg.solve(gram, (g @ a.T).T).T  # b @ a = Ĝ·P_A
        projected = float(torch.linalg.matrix_norm(b @ a))
        if projected == 0:
            continue  # the gradient is orthogonal to A's rows: nothing this adapter can express
        b *= -gamma * float(torch.linalg.matrix_norm(g)) / (projected * layer.scaling[adapter])
        layer.lora_B[adapter].weight.copy_(b.to(layer.lora_B[adapter].weight.dtype))


GORA_RIDGE = 1e-8  # GoRA's regularisation of A·Aᵀ in its pseudo-inverse of A


@torch.no_grad()
def gora_start(model: PeftModel, gradients: dict[str, torch.Tensor], learning_rate: float,
               adapter: str = "default") -> None:
    """GoRA's initialisation: B = −lr·√(d_in/r)/scaling · G·Aᵀ(AAᵀ + 1e-8·I)⁻¹, so that
    scaling·B·A = −lr·√(d_in/r)·G·P_A, with G the unnormalised mean gradient (module docstring)."""
    for name, grad in gradients.items():
        layer = lora_layer(model, name)
        if adapter not in getattr(layer, "lora_A", {}):
            continue  # module got rank 0 and is not adapted
        a = effective_lora_a(layer.lora_A[adapter]).double()  # (r, d_in)
        g = grad.double().to(a.device)  # (d_out, d_in)
        rank, d_in = a.shape
        gram = a @ a.T + GORA_RIDGE * torch.eye(rank, dtype=a.dtype, device=a.device)
        b = torch.linalg.solve(gram, (g @ a.T).T).T  # G·Aᵀ(AAᵀ + 1e-8·I)⁻¹ (the Gram matrix is symmetric)
        b *= -learning_rate * (d_in / rank) ** 0.5 / layer.scaling[adapter]
        layer.lora_B[adapter].weight.copy_(b.to(layer.lora_B[adapter].weight.dtype))

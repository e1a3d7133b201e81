"""Loading models and describing the modules LoRA can adapt.

A model name is the embedded default (`minilm`), a local folder, or a Hugging Face hub name.
`target_modules` returns every adaptable module with its true `(d_out, d_in)` shape, which the
budget arithmetic needs: GPT-2's `Conv1D` stores its weight transposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import Conv1D

from balora import assets
from balora.errors import BaloraError

EMBEDDED_MODELS = {"minilm": assets.MINILM}

# LoRA targets by architecture when the user names none (seed 000: query/value projections).
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "roberta": ["query", "value"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "vit": ["query", "value"],
}

# Classification heads trained in full next to the adapter (PEFT's SEQ_CLS head names, plus
# DistilBERT's extra dense layer, which is freshly initialised too).
HEAD_MODULES = ("classifier", "score", "pre_classifier")


@dataclass(frozen=True)
class TargetModule:
    """One adaptable weight: `name` as in `model.named_modules()`, shape as `(d_out, d_in)`."""

    name: str
    d_out: int
    d_in: int

    @property
    def cost_per_rank(self) -> int:
        """LoRA parameters per unit of rank: A is r×d_in and B is d_out×r."""
        return self.d_in + self.d_out

    @property
    def max_rank(self) -> int:
        return min(self.d_in, self.d_out)


def resolve_model_path(name: str) -> str:
    """The embedded asset's folder, a local folder, or the hub name (checked to be reachable)."""
    if name in EMBEDDED_MODELS:
        return str(assets.fetch(EMBEDDED_MODELS[name]))
    if not Path(name).exists() and not assets.hub_reachable():
        raise _hub_error(name, ConnectionError("hub unreachable"))
    return name


def _hub_error(name: str, err: Exception) -> BaloraError:
    if Path(name).exists():
        return BaloraError(f"cannot load model from folder '{name}': {err}")
    return BaloraError(
        f"unknown model '{name}': not an embedded model ({', '.join(EMBEDDED_MODELS)}), not a local "
        f"folder, and not loadable from the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:80]}); "
        "offline, use "
        "--model minilm or a local model folder"
    )


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    if tokenizer.pad_token is None:  # GPT-2 and Llama ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(name: str, num_labels: int, seed: int) -> PreTrainedModel:
    """A sequence classifier whose new head is initialised reproducibly from `seed`."""
    path = resolve_model_path(name)
    torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def default_target_names(model: nn.Module) -> list[str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULT_TARGETS:
        raise BaloraError(
            f"no default LoRA targets for model type '{model_type}'; name them (--target-modules query value, "
            "or target_modules=[...] in Python)"
        )
    return DEFAULT_TARGETS[model_type]


def weight_shape(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, Conv1D):  # weight stored (d_in, d_out)
        d_in, d_out = module.weight.shape
        return d_out, d_in
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return None


def target_modules(model: nn.Module, names: list[str] | None = None) -> list[TargetModule]:
    """Every Linear/Conv1D module whose name ends with one of `names` (PEFT's suffix rule).

    Head modules are never targets: they are trained in full.
    """
    names = names or default_target_names(model)
    found: list[TargetModule] = []
    matched: set[str] = set()
    for full_name, module in model.named_modules():
        suffix = next((n for n in names if full_name == n or full_name.endswith("." + n)), None)
        if suffix is None or full_name.split(".")[0] in HEAD_MODULES:
            continue
        shape = weight_shape(module)
        if shape is None:
            continue
        found.append(TargetModule(full_name, *shape))
        matched.add(suffix)
    missing = [n for n in names if n not in matched]
    if missing:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        hint = (' '.join(DEFAULT_TARGETS[model_type]) if model_type in DEFAULT_TARGETS
                else "name suffixes of its Linear layers, e.g. " + ' '.join(_linear_suffixes(model)[:4]))
        raise BaloraError(
            f"target module(s) {', '.join(missing)} not found among the model's Linear layers; "
            f"for {model_type or type(model).__name__} try {hint}"
        )
    return found


def _linear_suffixes(model: nn.Module) -> list[str]:
    """The distinct last name parts of the model's adaptable layers, heads excluded."""
    names = [n for n, m in model.named_modules() if weight_shape(m) is not None and n.split(".")[0] not in HEAD_MODULES]
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level head modules (`classifier`, `score`, ...) that train in full beside the adapter."""
    return [name for name, _ in model.named_children() if name in HEAD_MODULES]


def head_parameter_count(model: nn.Module) -> int:
    modules = dict(model.named_children())
    return sum(p.numel() for name in head_module_names(model) for p in modules[name].parameters())

"""Loading models and describing the modules LoRA can adapt.

A model name is an embedded model (`minilm`, `smollm2`), a local folder, or a Hugging Face hub name.
`target_modules` returns every adaptable module with its true `(d_out, d_in)` shape, which the
budget arithmetic needs: GPT-2's `Conv1D` stores its weight transposed.

Which task a model is trained as (`balora.tasks.task_of`) follows its saved config (`model_config`).

`vit-fashion` is built, not downloaded: `vision_pretraining.cached_vit_fashion()` pretrains a small ViT on Fashion-MNIST
once and caches it (the offline stand-in for an ImageNet-pretrained ViT).

`smollm2` ships as a 4-bit GGUF file; on first use it is dequantised to fp32 and saved once as a plain
Hugging Face folder (safetensors) in the cache, which later runs load in about a second and which a
saved adapter names as its base, so plain PEFT can load the adapter.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor
from transformers.pytorch_utils import Conv1D

from balora import assets
from balora.errors import BaloraError, missing_local_path

EMBEDDED_MODELS = {"minilm": assets.MINILM, "smollm2": assets.SMOLLM2}


def _vit_fashion() -> Path:
    # Imported when the model is asked for: vision_pretraining imports transformers' image processors, which
    # announce at import time (before the CLI has silenced other libraries) that torchvision is missing; and
    # looked up at call time, so a stand-in for the builder replaces it everywhere.
    from balora import vision_pretraining

    return vision_pretraining.cached_vit_fashion()


# Embedded models built on first use (called only when the name is used).
BUILT_MODELS: dict[str, Callable[[], Path]] = {assets.VIT_FASHION_NAME: _vit_fashion}
# Embedded models that ship as GGUF: the file inside the asset, converted once to a plain folder.
GGUF_FILES = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf"}

# LoRA targets by architecture when the user names none (seed 000: query/value projections).
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "roberta": ["query", "value"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "vit": ["query", "value"],  # PEFT's ViT example
    "deit": ["query", "value"],
}
ALL_LINEAR = "all-linear"  # every Linear/Conv1D layer but the head, as PEFT's `target_modules="all-linear"`
# transformers 5 names ViT's and DeiT's projections like Llama's; defaults follow the installed naming.
RENAMED_TARGETS = {"query": "q_proj", "value": "v_proj"}

# A causal LM adapts every projection by default (seed 002's "all layers"): attention and MLP.
CAUSAL_LM_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],  # c_proj: both the attention output and the MLP output
    **{kind: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
       for kind in ("llama", "mistral", "qwen2")},
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


def layer_index(name: str) -> int:
    """The block a module belongs to: the first number in its name (0 if none)."""
    numbers = [int(part) for part in name.split(".") if part.isdigit()]
    return numbers[0] if numbers else 0


def is_attention(name: str) -> bool:
    """Attention projections (and their output projection) as opposed to feed-forward (MLP) layers."""
    return any(key in name for key in ("attention", "attn", "q_proj", "k_proj", "v_proj", "o_proj"))


def resolve_model_path(name: str) -> str:
    """The embedded asset's folder, a local folder, or the hub name (checked to be reachable)."""
    if name in GGUF_FILES:
        return str(plain_folder(name))
    if name in BUILT_MODELS:
        return str(BUILT_MODELS[name]())
    if name in EMBEDDED_MODELS:
        return str(assets.fetch(EMBEDDED_MODELS[name]))
    if missing_local_path(name):
        raise BaloraError(f"model folder '{name}' does not exist; check the path, or use an embedded model "
                          f"({', '.join([*EMBEDDED_MODELS, *BUILT_MODELS])})")
    if Path(name).exists() and not (Path(name) / "config.json").is_file():
        raise BaloraError(f"model folder '{name}' has no config.json; give a folder written by save_pretrained "
                          "(model and tokenizer), or --model minilm")
    if not Path(name).exists() and not assets.hub_reachable():
        raise _hub_error(name, ConnectionError("hub unreachable"))
    return name


def plain_folder(name: str) -> Path:
    """The embedded GGUF model `name` as a plain fp32 Hugging Face folder, converted on first use.

    transformers dequantises the GGUF file into a model that refuses `save_pretrained`, so its weights
    are copied into a fresh model built from the same config, which saves normally. Like `assets.fetch`,
    the folder is complete or absent: it is written to a temporary folder renamed into place.
    """
    asset = EMBEDDED_MODELS[name]
    target = assets.cache_dir() / "assets" / f"{asset.name}-{asset.version}-hf"
    if target.is_dir():
        return target
    source = assets.fetch(asset)
    with assets.building(target) as tmp:
        staging = tmp / "model"
        quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILES[name], dtype=torch.float32)
        plain = AutoModelForCausalLM.from_config(quantised.config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict())
        plain.save_pretrained(staging)
        AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILES[name]).save_pretrained(staging)
        return assets.publish(staging, target)


def model_config(name: str) -> PretrainedConfig:
    """The saved config of model `name` (an embedded model's, a local folder's or a hub model's), without its weights."""
    path = resolve_model_path(name)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None


def is_causal_lm_class(class_name: str) -> bool:
    return class_name.endswith(("ForCausalLM", "LMHeadModel"))


def _hub_error(name: str, err: Exception) -> BaloraError:
    if Path(name).exists():
        return BaloraError(f"cannot load model from folder '{name}': {err}")
    return BaloraError(
        f"unknown model '{name}': not an embedded model ({', '.join([*EMBEDDED_MODELS, *BUILT_MODELS])}), not a local "
        f"folder, and not loadable from the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:80]}); "
        "offline, use "
        "--model minilm, --model smollm2, --model vit-fashion or a local model folder"
    )


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


@lru_cache(maxsize=8)
def weights_checksums(name: str) -> dict[str, str] | None:
    """SHA-256 of each weight file of a model folder (what `sha256sum` prints), so a stored run says exactly
    which weights it used (the embedded model's, a converted copy's, ...); None for a hub model."""
    path = Path(resolve_model_path(name))
    files = sorted({f for pattern in WEIGHT_FILES for f in path.glob(pattern)}) if path.is_dir() else []
    checksums = {}
    for file in files:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        checksums[file.name] = digest.hexdigest()
    return checksums or None


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


def load_image_processor(name: str) -> BaseImageProcessor:
    """The model's image processor (resizing and normalisation as the model was pretrained with)."""
    path = resolve_model_path(name)
    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        if Path(path).is_dir():
            raise BaloraError(f"model folder '{name}' has no image processor (preprocessor_config.json); save one with "
                              "ViTImageProcessor(...).save_pretrained(folder)") from None
        raise _hub_error(name, err) from None


def load_image_classifier(name: str, label_names: list[str], seed: int) -> PreTrainedModel:
    """An image classifier for `label_names` whose head is new and initialised reproducibly from `seed`.

    A head the checkpoint already has is replaced whatever its size (`ignore_mismatched_sizes` covers
    another number of classes; with as many classes, e.g. vit-fashion's ten on digits' ten, its weights
    belong to another task): it is re-drawn as the model's own initialisation draws a new head.
    """
    path = resolve_model_path(name)
    torch.manual_seed(seed)
    try:
        model = AutoModelForImageClassification.from_pretrained(
            path, num_labels=len(label_names), ignore_mismatched_sizes=True,
            id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)})
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    torch.manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    for head in head_module_names(model):
        for module in model.get_submodule(head).modules():
            if isinstance(module, nn.Linear):  # ViT's and DeiT's `_init_weights` for a Linear layer
                nn.init.trunc_normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
    return model


def load_causal_lm(name: str) -> PreTrainedModel:
    """A causal language model in fp32 (its weights are all pretrained: nothing depends on a seed)."""
    path = resolve_model_path(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def selects_logits(model: nn.Module) -> bool:
    """Whether `model` (or a PEFT model's base) computes logits only where a boolean `logits_to_keep` mask
    says, as transformers' `slice_logits_to_keep` does (v5); older versions would misread the mask."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return False
    kept = slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[True, False]]))
    return tuple(kept.shape) == (1, 1)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch as the model's forward takes it: where it selects the labelled positions (`logits_to_keep`),
    also their next tokens as `shift_labels`, the flat targets that transformers' causal-LM loss then uses
    instead of shifting `labels` (kept in the batch, so that models still compute their loss)."""
    if "logits_to_keep" not in batch:
        return batch
    return batch | {"shift_labels": batch["labels"][:, 1:][batch["logits_to_keep"][:, :-1]]}


def default_target_names(model: nn.Module) -> list[str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if is_causal_lm_class(type(model).__name__) and model_type in CAUSAL_LM_TARGETS:
        return CAUSAL_LM_TARGETS[model_type]
    if model_type not in DEFAULT_TARGETS:
        raise BaloraError(
            f"no default LoRA targets for model type '{model_type}'; name them (--target-modules query value, "
            "or target_modules=[...] in Python)"
        )
    names = DEFAULT_TARGETS[model_type]
    if not set(names) <= set(_linear_suffixes(model)):
        names = [RENAMED_TARGETS.get(n, n) for n in names]
    return names


def weight_shape(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, Conv1D):  # weight stored (d_in, d_out)
        d_in, d_out = module.weight.shape
        return d_out, d_in
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return None


def target_modules(model: nn.Module, names: list[str] | None = None) -> list[TargetModule]:
    """Every Linear/Conv1D module whose name ends with one of `names` (PEFT's suffix rule).

    Head modules are never targets: they are trained in full. `["all-linear"]` (PEFT's keyword) names
    every such layer.
    """
    names = names or default_target_names(model)
    if names == [ALL_LINEAR]:
        names = _linear_suffixes(model)
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


def module_type(name: str) -> str:
    """A module's name within its block (`attention.q_proj`, `mlp.fc1`, `intermediate.dense`, ...): the
    parts after the block's number, so that modules of one kind in every layer share it."""
    parts = name.split(".")
    numbered = [i for i, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[numbered[0] + 1:]) if numbered else name


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

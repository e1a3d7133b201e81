"""Instruction tuning of a causal LM: instruction data, the model's own LM head, the token-weighted test loss on
response tokens (lower is better) with its perplexity, and greedy answers to the first test prompts stored with
the result."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from balora.config import RunConfig
from balora.instructions import (
    EMBEDDED_INSTRUCTIONS,
    InstructionDataset,
    InstructionExample,
    load_instruction_dataset,
    make_lm_loader,
    prompt_ids,
)
from balora.models import is_causal_lm_class, load_causal_lm, load_tokenizer, model_inputs, selects_logits
from balora.tasks.base import LOSS, Metric, Processor, Task, weights_cast_once

GENERATION_PROMPTS = 3  # test prompts answered greedily and stored with a causal-LM result
GENERATION_TOKENS = 48


@torch.no_grad()
def evaluate_causal_lm(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    """Token-weighted next-token cross-entropy over the labelled (response) tokens, and perplexity = e^loss.

    Computed here from the logits, like `classification.evaluate`, so that AdaLoRA's orthogonality penalty is
    left out (labels are not passed). Batches with `logits_to_keep` get logits at the labelled positions only."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, tokens = 0.0, 0
    with weights_cast_once(model):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            if "logits_to_keep" in batch:
                targets = model_inputs(batch)["shift_labels"]
                del batch["labels"]
                logits = model(**batch).logits
            else:
                targets = batch.pop("labels")[:, 1:]
                logits = model(**batch).logits[:, :-1]
            loss_sum += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                                targets.reshape(-1), ignore_index=-100,
                                                                reduction="sum"))
            tokens += int((targets != -100).sum())
    model.train(was_training)
    loss = loss_sum / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": float(tokens)}


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int,
                    pad_token_id: int) -> list[list[int]]:
    """Greedy continuations of each prompt (token ids), one prompt at a time so no padding is involved."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with weights_cast_once(model):
        for prompt in prompts:
            ids = torch.tensor([prompt], device=device)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                                       pad_token_id=pad_token_id)
            outputs.append(generated[0, len(prompt):].tolist())
    model.train(was_training)
    return outputs


class CausalLM(Task):
    """Instructions and responses, a causal LM trained on the response tokens."""

    name = "causal_lm"
    label = "instruction tuning"
    model_kind = "causal LM"
    embedded_models = ("smollm2",)
    embedded_datasets = EMBEDDED_INSTRUCTIONS
    # The warm-start step γ: the tested step with the lowest mean validation loss before any training
    # (`benchmarks/warmstart_gamma.py`, seeds 42-44, rank-equivalent 8). SmolLM2 on 200 critic_instructions
    # examples (all 210 projections, 64 importance samples, 64 validation examples): 4.353 with B = 0, 4.217 at
    # 3e-5, 4.137 at 1e-4, 4.346 at 3e-4, 6.509 at 1e-3 and 17.230 at 0.005 (the classifiers' step): a
    # pretrained causal LM with every projection adapted is far more sensitive to the step.
    warm_start_gamma = 1e-4
    peft_task_type = "CAUSAL_LM"
    model_class = AutoModelForCausalLM
    metric: ClassVar[Metric] = LOSS
    also_trains = ("classification",)  # a causal LM also loads as a sequence classifier (`--task classification`)
    generates = True

    def recognises(self, model_config: PretrainedConfig) -> bool:
        """A causal LM head (`...ForCausalLM`, GPT-2's `LMHeadModel`) means causal-LM training."""
        return any(is_causal_lm_class(a) for a in model_config.architectures or [])

    def read_dataset(self, config: RunConfig) -> InstructionDataset:
        return load_instruction_dataset(config.dataset, config.instruction_columns)

    def load_processor(self, config: RunConfig) -> PreTrainedTokenizerBase:
        return load_tokenizer(config.model)

    def load_model(self, config: RunConfig, labels: list[str] | None) -> PreTrainedModel:
        """The causal LM with its own head (its weights are all pretrained: nothing depends on a seed)."""
        return load_causal_lm(config.model)

    def loader(self, examples: list[InstructionExample], processor: Processor, model: nn.Module, config: RunConfig,
               batch_size: int, shuffle: bool) -> DataLoader:
        return make_lm_loader(examples, processor, batch_size, shuffle, config.seed, config.max_length,
                              config.prompt_template, config.train_on_prompt,
                              labelled_logits_only=selects_logits(model), pad_to_multiple_of=config.pad_to_multiple_of)

    def evaluate(self, model: nn.Module, loader: DataLoader, data: InstructionDataset) -> dict[str, float]:
        return evaluate_causal_lm(model, loader)

    def generate(self, model: nn.Module, data: InstructionDataset, processor: Processor,
                 config: RunConfig) -> list[dict[str, str]]:
        """Greedy responses to the first test prompts (the split is fixed, so always the same prompts)."""
        examples = data.test[:GENERATION_PROMPTS]
        prompts = [prompt_ids(e, config.prompt_template, processor) for e in examples]
        outputs = greedy_generate(model, prompts, GENERATION_TOKENS, processor.eos_token_id, processor.pad_token_id)
        return [{"instruction": e.instruction, "input": e.input, "reference": e.response,
                 "generated": processor.decode(out, skip_special_tokens=True).strip()}
                for e, out in zip(examples, outputs)]

    def headline(self, metrics: dict[str, float]) -> str:
        return f"test loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.2f}"

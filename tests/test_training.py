from __future__ import annotations

import pytest
import torch
from conftest import TINY_LMS, instruction_rows, random_batches, tiny_bert, tiny_lm_tokenizer
from peft import AdaLoraConfig, LoraConfig, get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode

from balora.instructions import InstructionExample, make_lm_loader
from balora.models import model_inputs, selects_logits
from balora.tasks.causal_lm import evaluate_causal_lm, greedy_generate
from balora.tasks.classification import evaluate
from balora.training import Distributed, TrainSettings, train


def test_evaluation_loss_is_the_task_loss_without_adalora_s_penalty():
    model = get_peft_model(tiny_bert(), AdaLoraConfig(target_modules=["query", "value"], init_r=4, target_r=2,
                                                      total_step=10, task_type="SEQ_CLS"))
    batches = random_batches(num_batches=2, batch_size=4)
    metrics = evaluate(model, batches, num_labels=2)
    model.eval()
    with torch.no_grad():
        task = sum(float(torch.nn.functional.cross_entropy(model(**{k: v for k, v in b.items() if k != "labels"}).logits,
                                                           b["labels"], reduction="sum")) for b in batches) / 8
        with_penalty = sum(float(model(**b).loss) * 4 for b in batches) / 8
    assert metrics["loss"] == pytest.approx(task, rel=1e-6)
    assert with_penalty > task + 1e-3  # what the model's own `loss` would have reported


@pytest.mark.parametrize("size", [0, 1, 32, 33, 35])
def test_even_shards_have_equal_sizes_and_cover_everything(size):
    items = list(range(size))
    shards = [Distributed(rank, 4).even_shard(items) for rank in range(4)]
    assert len({len(s) for s in shards}) == 1
    assert set().union(*shards) == set(items)


@pytest.mark.parametrize("precision, matmul_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_forward_matmuls_and_keeps_weights_and_optimizer_in_fp32(precision, matmul_dtype):
    model = get_peft_model(tiny_bert(), LoraConfig(target_modules=["query", "value"], r=4, task_type="SEQ_CLS"))
    seen = []
    model.base_model.model.bert.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda _module, _inputs, output: seen.append(output.dtype))
    log = train(model, random_batches(), TrainSettings(epochs=1, learning_rate=1e-2, progress=False, precision=precision))
    assert set(seen) == {matmul_dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in log.train_loss)


class _WeightCasts(TorchDispatchMode):
    """Counts dtype conversions whose source is one of the given tensors (by storage)."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.pointers, self.count = {t.data_ptr() for t in tensors}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.pointers:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("lm", sorted(TINY_LMS))
def test_bf16_decoding_casts_each_frozen_weight_once_and_decodes_the_same_tokens(lm):
    """Autocast caches no cast of a frozen weight: without care the whole model is cast again for every
    generated token. Greedy decoding and evaluation cast each once per autocast region, with the same result."""
    model = get_peft_model(TINY_LMS[lm](), LoraConfig(r=4, task_type="CAUSAL_LM"))
    frozen = [p for p in model.parameters() if not p.requires_grad]
    prompt, tokens = [5, 9, 14, 3], 8
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        ids = torch.tensor([prompt])
        reference = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                   min_new_tokens=tokens, do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    with torch.autocast("cpu", dtype=torch.bfloat16), _WeightCasts(frozen) as casts:
        model.generation_config.min_new_tokens = tokens  # every forward of the loop runs
        generated = greedy_generate(model, [prompt], tokens, eos_token_id=2, pad_token_id=0)[0]
    assert generated == reference and len(generated) == tokens
    assert 0 < casts.count <= len(frozen)
    assert not any(p.requires_grad for p in frozen)  # flags restored


def _lm_and_examples(lm: str) -> tuple[torch.nn.Module, list[InstructionExample]]:
    model = get_peft_model(TINY_LMS[lm](), LoraConfig(r=4, task_type="CAUSAL_LM"))
    model.eval()  # no dropout: every pass sees the same network
    return model, [InstructionExample(r["instruction"], r["input"], r["output"]) for r in instruction_rows(6)]


def _first_batch_pass(model: torch.nn.Module, loader) -> tuple[object, list[torch.Tensor], dict[str, float]]:
    """The first batch's output and the adapter's gradients from it, then the evaluation over the loader."""
    output = model(**model_inputs(next(iter(loader))))
    output.loss.backward()
    gradients = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    return output, gradients, evaluate_causal_lm(model, loader)


def _assert_same_loss_gradients_and_evaluation(first: tuple, second: tuple) -> None:
    (full, full_gradients, full_metrics), (other, other_gradients, other_metrics) = first, second
    assert float(other.loss.detach()) == pytest.approx(float(full.loss.detach()), rel=1e-5)
    for a, b in zip(full_gradients, other_gradients, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert other_metrics == pytest.approx(full_metrics, rel=1e-5)


@pytest.mark.parametrize("lm", sorted(TINY_LMS))
def test_logits_at_labelled_positions_only_give_the_same_loss_gradients_and_evaluation(lm):
    model, examples = _lm_and_examples(lm)
    assert selects_logits(model)
    loaders = [make_lm_loader(examples, tiny_lm_tokenizer(), batch_size=3, shuffle=False, labelled_logits_only=selected)
               for selected in (False, True)]
    full, selected = (_first_batch_pass(model, loader) for loader in loaders)
    batch = next(iter(loaders[1]))
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert selected[0].logits.shape[0] == labelled < full[0].logits.shape[:2].numel() / 2  # prompts are most tokens
    _assert_same_loss_gradients_and_evaluation(full, selected)


@pytest.mark.parametrize("lm", sorted(TINY_LMS))
def test_batches_padded_to_a_multiple_give_the_same_loss_gradients_and_evaluation(lm):
    """Padding up to a multiple of 16 tokens (fewer matmul shapes) is masked and unlabelled: nothing learnt changes."""
    model, examples = _lm_and_examples(lm)
    loaders = [make_lm_loader(examples, tiny_lm_tokenizer(), batch_size=3, shuffle=False, labelled_logits_only=True,
                              pad_to_multiple_of=multiple) for multiple in (1, 16)]
    lengths, padded = ([b["input_ids"].shape[1] for b in loader] for loader in loaders)
    assert all(p % 16 == 0 and p - 16 < n <= p for n, p in zip(lengths, padded)) and padded != lengths
    _assert_same_loss_gradients_and_evaluation(*(_first_batch_pass(model, loader) for loader in loaders))


def test_a_model_without_logits_to_keep_gets_all_its_logits():
    assert not selects_logits(tiny_bert())

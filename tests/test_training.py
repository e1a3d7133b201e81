from __future__ import annotations

import pytest
import torch
from conftest import random_batches, tiny_bert
from peft import AdaLoraConfig, LoraConfig, get_peft_model

from balora.training import Distributed, TrainSettings, evaluate, train


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

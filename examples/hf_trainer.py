"""A balora plan trained by the Hugging Face Trainer: MiniLM on Rotten Tomatoes (embedded, runs offline).

    python examples/hf_trainer.py --shots 64 --budget-rank 8 --steps 60 --out out/hf_trainer

`balora.plan` picks every module's rank from a sample of the training data; `plan.apply` returns an
ordinary PEFT model that the Trainer trains as it would any other; the adapter it saves loads with
`PeftModel.from_pretrained`, without balora.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

import balora
from balora.data import load_text_dataset, select_training
from balora.models import load_classifier, load_tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="embedded model, local folder or hub name")
    parser.add_argument("--dataset", default="rotten_tomatoes", help="embedded dataset, local CSV/JSONL or hub name")
    parser.add_argument("--shots", type=int, default=64, help="training examples per class")
    parser.add_argument("--budget-rank", type=float, default=8, help="budget: what uniform rank R costs")
    parser.add_argument("--samples", type=int, default=128, help="examples in the importance sample")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--test-size", type=int, default=500, help="test examples scored at the end")
    parser.add_argument("--out", default="out/hf_trainer")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    data = load_text_dataset(args.dataset)

    def tokenized(examples) -> Dataset:
        rows = Dataset.from_dict({"text": [e.text for e in examples], "label": [e.label for e in examples]})
        return rows.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True,
                        remove_columns=["text"])

    train = tokenized(select_training(data.pool, args.shots, None, seed=42))
    test = tokenized(data.test[: args.test_size])
    collator = DataCollatorWithPadding(tokenizer)
    model = load_classifier(args.model, data.num_labels, seed=42)

    plan = balora.plan(model, DataLoader(train, batch_size=args.batch_size, collate_fn=collator),
                       budget_rank=args.budget_rank, num_samples=args.samples)
    print(plan)
    peft_model = plan.apply(model)

    settings = TrainingArguments(output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                                 learning_rate=2e-3, warmup_steps=max(1, args.steps // 16), logging_steps=10,
                                 save_strategy="no", report_to=[], seed=42)
    trainer = Trainer(model=peft_model, args=settings, train_dataset=train, data_collator=collator)
    trainer.train()
    peft_model.save_pretrained(Path(args.out) / "adapter")
    predictions = trainer.predict(test)
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    print(f"test accuracy on {len(test)} examples: {accuracy:.3f}; adapter in {Path(args.out) / 'adapter'}")
    return {"model": peft_model, "accuracy": accuracy}


if __name__ == "__main__":
    main()

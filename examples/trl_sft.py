"""A balora plan trained by TRL's SFTTrainer on a causal language model.

    python examples/trl_sft.py --model HuggingFaceTB/SmolLM2-135M-Instruct --steps 100   # a real model (hub or folder)
    python examples/trl_sft.py                                                           # offline: a tiny random Llama

Offline, no causal LM ships with balora, so the default is a small randomly initialised Llama over the
embedded MiniLM tokenizer, trained on the embedded Rotten Tomatoes snippets as plain text: it shows the
mechanics, not a useful model. For a language model the labels are tokens, so the importance sample is a
plain seeded random sample (no classes to stratify by).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

import balora
from balora.data import load_text_dataset
from balora.models import load_tokenizer, resolve_model_path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="causal LM folder or hub name; default: tiny random Llama")
    parser.add_argument("--tokenizer", default="minilm", help="tokenizer of the tiny Llama (ignored with --model)")
    parser.add_argument("--dataset", default="rotten_tomatoes", help="texts to train on (its text column)")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--budget-rank", type=float, default=8)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="out/trl_sft")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model or args.tokenizer)
    if tokenizer.eos_token is None:  # a BERT tokenizer: end texts with its separator
        tokenizer.eos_token = tokenizer.sep_token
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    texts = Dataset.from_dict({"text": [e.text for e in load_text_dataset(args.dataset).pool[: args.texts]]})

    tokens = texts.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True, remove_columns=["text"])
    loader = DataLoader(tokens, batch_size=8, collate_fn=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    plan = balora.plan(model, loader, budget_rank=args.budget_rank, target_modules=["q_proj", "v_proj"],
                       num_samples=args.samples)
    print(plan)
    peft_model = plan.apply(model)

    settings = SFTConfig(output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=8, learning_rate=2e-3,
                         logging_steps=10, save_strategy="no", report_to=[], max_length=64,
                         dataset_text_field="text", seed=42,
                         bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())  # TRL's default is bf16
    trainer = SFTTrainer(model=peft_model, args=settings, train_dataset=texts, processing_class=tokenizer)
    result = trainer.train()
    peft_model.save_pretrained(Path(args.out) / "adapter")
    print(f"training loss {result.training_loss:.3f}; adapter in {Path(args.out) / 'adapter'}")
    return {"model": peft_model, "train_loss": result.training_loss}


if __name__ == "__main__":
    main()

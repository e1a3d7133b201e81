from __future__ import annotations

import json
from pathlib import Path

import pytest

from balora import vision_pretraining
from balora.cli import main


def test_allocate_json_schema(tiny_model_dir, tiny_csv, capsys):
    assert main(["allocate", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4",
                 "--shots", "10", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) >= {"budget", "total_params", "modules"}
    assert payload["total_params"] <= payload["budget"] == 4 * 4 * 64
    assert all(set(m) == {"name", "shape", "importance", "rank", "params"} for m in payload["modules"])
    assert all(m["params"] == m["rank"] * sum(m["shape"]) for m in payload["modules"])


def test_allocate_counts_dora_s_magnitudes_in_the_budget(tiny_model_dir, tiny_csv, capsys):
    """DoRA pays a magnitude per output feature from the budget: `allocate` shows them beside A and B, and the
    two together fit the budget (rank lowered until they do)."""
    assert main(["allocate", "--method", "dora", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv),
                 "--budget-rank", "4", "--shots", "10", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    magnitudes = sum(m["shape"][0] for m in payload["modules"])
    assert payload["extra_params"] == magnitudes > 0
    assert payload["total_params"] + payload["extra_params"] <= payload["budget"] < payload["total_params"] + magnitudes + \
        sum(sum(m["shape"]) for m in payload["modules"])  # one more rank would not fit
    assert main(["allocate", "--method", "dora", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv),
                 "--budget-rank", "4", "--shots", "10"]) == 0
    assert f"{magnitudes:,} more besides A and B (DoRA's magnitude vectors" in capsys.readouterr().out


def test_seed000_flag_aliases(tiny_model_dir, tiny_csv, tmp_path):
    assert main(["train", "--peft_method", "ba_lora", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv),
                 "--param_budget", "512", "--ba_lora_base_rank", "4", "--ba_lora_gradient_samples", "20",
                 "--ba_lora_use_warmstart", "--epochs", "1", "--batch_size", "8", "--learning_rate", "1e-3",
                 "--seed", "1", "--shots", "10", "--quiet", "--out", str(tmp_path / "r")]) == 0
    config = json.loads((tmp_path / "r" / "result.json").read_text())["config"]
    assert (config["budget"], config["base_rank"], config["gradient_samples"], config["warmstart"]) == (512, 4, 20, True)


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--model", "no/such-model-xyz"], "unknown model 'no/such-model-xyz'"),
    (["--dataset", "no_such_dataset_xyz"], "unknown dataset 'no_such_dataset_xyz'"),
    (["--target-modules", "q_lin"], "q_lin not found"),
    (["--budget", "10"], "infeasible budget"),
    (["--budget-rank", "-3"], "must be a positive number"),
    (["--shots", "0"], "must be a positive number"),
    (["--shots", "500"], "--shots 500 is larger than class"),
    (["--method", "ba_lora_dynamic", "--realloc-strategy", "minmax"], "unknown reallocation strategy 'minmax'"),
    (["--method", "ba_lora_dynamic", "--importance-metric", "activation"], "cannot be measured during training"),
    (["--method", "ba_lora_dynamic", "--realloc-final", "1.5"], "--realloc-final must be in [0, 1)"),
    (["--realloc-every", "0"], "realloc_every must be a positive number"),
    (["--pad-to-multiple-of", "0"], "pad_to_multiple_of must be a positive number"),
    (["--precision", "fp16"], "unknown --precision 'fp16'; choose one of fp32, bf16"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tiny_model_dir, tiny_csv, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    base = {"--model": str(tiny_model_dir), "--dataset": str(tiny_csv)}
    for flag in args[::2]:
        base.pop(flag, None)
    assert main(["allocate", *[x for kv in base.items() for x in kv], *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_allocate_prints_how_far_the_allocation_is_from_uniform(tiny_model_dir, tiny_csv, capsys):
    assert main(["allocate", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4",
                 "--shots", "10", "--strategy", "uniform"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ranks min 4 / median 4 / max 4, Gini 0.000")
    assert main(["allocate", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4",
                 "--shots", "10", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["summary"]) == {"min", "median", "max", "gini"}


def _bad_files(folder: Path, model_dir: Path, csv: Path) -> dict[str, list[str]]:
    """Command lines that each hold one malformed input, by name; the files they name are written here."""
    spec = "name: s\nbase:\n  model: m\n  dataset: d.csv\ngrids:\n  - method: [lora]\n"
    files = {
        "empty.yaml": "", "bad.yaml": "grids: [\n", "nan.yaml": spec.replace("base:\n", "base:\n  learning_rate: .nan\n"),
        "inf.yaml": spec.replace("[lora]", "[lora]\n    gamma: [0.01, .inf]"), "colour.yaml": spec + "colour: red\n",
        "empty.csv": "", "one_class.csv": "text,label\n" + "".join(f"good film {i},1\n" for i in range(40)),
        "broken.jsonl": '{"text": "good", "label": 1}\n{"text": \n', "locked.yaml": spec,
        # specs that load (an embedded model's task is known without it) to be refused after
        "spec.yaml": spec.replace("model: m", "model: minilm"),
        "twice.yaml": spec.replace("model: m", "model: minilm").replace("  - method: [lora]\n",
                                                                        "  - {name: a, method: [lora]}\n" * 2),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (folder / "latin1.csv").write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    (folder / "no_splits").mkdir()
    (folder / "no_model").mkdir()
    data = ["--model", str(model_dir), "--dataset", str(csv)]
    allocate = ["allocate", "--model", str(model_dir), "--shots", "10", "--dataset"]
    return {
        "no command": [], "unknown command": ["frobnicate"], "unknown flag": ["allocate", "--colour", "red"],
        "missing value": ["train", "--seed"], "not a number": ["allocate", "--learning-rate", "fast"],
        "nan flag": ["allocate", *data, "--learning-rate", "nan"], "inf flag": ["allocate", *data, "--budget-rank", "inf"],
        "-inf flag": ["train", *data, "--gamma=-inf"], "nan workers": ["sweep", "quick", "--workers", "nan"],
        "zero workers": ["sweep", "quick", "--workers", "0", "--dry-run"], "bad choice": ["runs", "--status", "lost"],
        "missing spec": ["sweep", str(folder / "nope.yaml")], "directory spec": ["sweep", str(folder)],
        "empty spec": ["sweep", str(folder / "empty.yaml")], "malformed YAML": ["sweep", str(folder / "bad.yaml")],
        "non-UTF-8 spec": ["sweep", str(folder / "latin1.yaml")], "nan in spec": ["sweep", str(folder / "nan.yaml")],
        "inf in a grid": ["sweep", str(folder / "inf.yaml")], "unknown spec key": ["sweep", str(folder / "colour.yaml")],
        "unreadable spec": ["sweep", str(folder / "locked.yaml")], "bad --only": ["sweep", "quick", "--only", "seed"],
        "empty data": [*allocate, str(folder / "empty.csv")], "one-class data": [*allocate, str(folder / "one_class.csv")],
        "non-UTF-8 data": [*allocate, str(folder / "latin1.csv")], "malformed JSONL": [*allocate, str(folder / "broken.jsonl")],
        "folder without splits": [*allocate, str(folder / "no_splits")],
        "one-class draw": ["allocate", *data, "--train-size", "1"],
        "model folder without a model": ["allocate", "--model", str(folder / "no_model"), "--dataset", str(csv)],
        "missing database": ["report", "--db", str(folder / "typo.db")],
        "database is a folder": ["export", "--db", str(folder)],
        "output is a file": ["train", *data, "--shots", "10", "--out", str(folder / "empty.csv")],
        "budget above full rank": ["allocate", *data, "--shots", "10", "--budget-rank", "1e9"],
        "training budget above full rank": ["train", *data, "--shots", "10", "--method", "lora", "--budget-rank", "1e9",
                                            "--out", str(folder / "run")],
        "image model, text data": ["allocate", "--model", "vit-fashion", "--dataset", "rotten_tomatoes"],
        "text model, instruction data": ["allocate", "--model", "minilm", "--dataset", "critic_instructions"],
        "text model, image data": ["allocate", "--model", "minilm", "--dataset", "digits"],
        "missing model folder": ["allocate", "--model", "/nonexistent/dir", "--dataset", str(csv)],
        "missing data file": ["allocate", "--model", str(model_dir), "--dataset", "/nonexistent/file.csv"],
        "another method's options": ["allocate", *data, "--method", "lora", "--realloc-every", "10",
                                     "--realloc-strategy", "top_k"],
        "merge into a file": ["merge", str(folder / "run"), "--out", str(folder / "empty.csv")],
        "merge into a full folder": ["merge", str(folder / "run"), "--out", str(folder)],
        "report of an empty run folder": ["report", "--runs", str(folder / "no_splits")],
        "runs of a missing database": ["runs", "--db", str(folder / "missing" / "x.db")],
        "results folder is a file": ["sweep", str(folder / "spec.yaml"), "--results-dir", str(folder / "empty.csv"),
                                     "--dry-run"],
        "one grid twice": ["sweep", str(folder / "twice.yaml"), "--dry-run"],
    }


BAD_INPUT = {  # what the one line must say
    "no command": "required: command", "unknown command": "invalid choice: 'frobnicate'",
    "unknown flag": "unrecognized arguments: --colour red", "missing value": "--seed: expected one argument",
    "not a number": "expected a number, got 'fast'", "nan flag": "expected a finite number, got 'nan'",
    "inf flag": "expected a finite number, got 'inf'", "-inf flag": "expected a finite number, got '-inf'",
    "nan workers": "expected an integer, got 'nan'", "zero workers": "--workers must be at least 1",
    "bad choice": "invalid choice: 'lost'", "missing spec": "no sweep spec", "directory spec": "no sweep spec",
    "empty spec": "a sweep spec is a mapping", "malformed YAML": "not valid YAML", "non-UTF-8 spec": "is not UTF-8",
    "nan in spec": "learning_rate must be a finite number", "inf in a grid": "gamma must be a finite number",
    "unknown spec key": "unknown key 'colour'", "unreadable spec": "cannot read sweep spec",
    "bad --only": "--only takes KEY=VALUE", "empty data": "is empty", "one-class data": "one class only",
    "non-UTF-8 data": "cannot read", "malformed JSONL": "cannot read", "folder without splits": "needs train.* and test.*",
    "one-class draw": "the training set has only class", "model folder without a model": "no_model' has no config.json",
    "missing database": "no results database", "database is a folder": "is a directory",
    "output is a file": "empty.csv is a file",
    # tiny BERT's query and value (4 modules of 32x32) cost 8,192 at full rank: 8,274 is spent to 99%
    "budget above full rank": "the largest feasible budget (spent to 99%) is 8,274",
    "training budget above full rank": "the largest feasible budget (spent to 99%) is 8,274",
    "image model, text data": "model 'vit-fashion' (image classification) and dataset 'rotten_tomatoes' (text "
                              "classification) belong to different tasks; for rotten_tomatoes use --model minilm",
    "text model, instruction data": "belong to different tasks; for critic_instructions use --model smollm2",
    "text model, image data": "belong to different tasks; for digits use --model vit-fashion",
    "missing model folder": "model folder '/nonexistent/dir' does not exist",
    "missing data file": "dataset '/nonexistent/file.csv' does not exist",
    "another method's options": "method lora ignores --realloc-every (read only by ba_lora_dynamic) and "
                                "--realloc-strategy (read only by ba_lora_dynamic)",
    "merge into a file": "empty.csv is a file; give a new or empty folder",
    "merge into a full folder": "already holds files; give a new or empty folder",
    "report of an empty run folder": "no run files in",
    "runs of a missing database": "no results database at",
    "results folder is a file": "empty.csv is a file",
    "one grid twice": "grid a plans the run",
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_every_malformed_input_is_one_line_and_exit_2(case, tmp_path, tiny_model_dir, tiny_csv, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    argv = _bad_files(tmp_path, tiny_model_dir, tiny_csv)[case]
    locked = tmp_path / "locked.yaml"
    real_read_text = Path.read_text

    def read_text(path: Path, *args, **kwargs) -> str:  # root reads any file, so unreadable is simulated
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    # no bad input may get as far as pretraining the vision model (minutes, the first time)
    monkeypatch.setattr(vision_pretraining, "cached_vit_fashion", lambda: pytest.fail("vit-fashion was built"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("balora: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert BAD_INPUT[case] in err and "Traceback" not in out + err


@pytest.mark.parametrize("command", ["runs", "export"])
def test_reading_a_missing_database_creates_nothing(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where export would write
    assert main([command, "--db", str(tmp_path / "missing" / "x.db")]) == 2
    assert "no results database at" in capsys.readouterr().err and not (tmp_path / "missing").exists()


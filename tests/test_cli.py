from __future__ import annotations

import json
import subprocess
import sys

import pytest

from balora.cli import main


def balora(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "balora.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"} | _home())


def _home() -> dict:
    import os

    return {k: os.environ[k] for k in ("HOME", "BALORA_CACHE") if k in os.environ}


def test_allocate_json_schema(tiny_model_dir, tiny_csv, capsys):
    assert main(["allocate", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4",
                 "--shots", "10", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) >= {"budget", "total_params", "modules"}
    assert payload["total_params"] <= payload["budget"] == 4 * 4 * 64
    assert all(set(m) == {"name", "shape", "importance", "rank", "params"} for m in payload["modules"])
    assert all(m["params"] == m["rank"] * sum(m["shape"]) for m in payload["modules"])


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
    (["--method", "ba_lora_dynamic", "--realloc-strategy", "seed000"], "unknown reallocation strategy 'seed000'"),
    (["--method", "ba_lora_dynamic", "--importance-metric", "activation"], "cannot be measured during training"),
    (["--method", "ba_lora_dynamic", "--realloc-final", "1.5"], "--realloc-final must be in [0, 1)"),
    (["--realloc-every", "0"], "realloc_every must be a positive number"),
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


def test_a_real_process_exits_2_without_traceback():
    done = balora("train", "--method", "nope")
    assert done.returncode == 2 and done.stderr.startswith("balora: error: unknown method") and "Traceback" not in done.stderr


def test_allocate_prints_how_far_the_allocation_is_from_uniform(tiny_model_dir, tiny_csv, capsys):
    assert main(["allocate", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4",
                 "--shots", "10", "--strategy", "uniform"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ranks min 4 / median 4 / max 4, Gini 0.000")
    assert main(["allocate", "--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4",
                 "--shots", "10", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["summary"]) == {"min", "median", "max", "gini"}

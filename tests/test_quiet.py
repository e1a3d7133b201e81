"""Only balora speaks on stderr: every subcommand's error path, and a chain of short successful ones (sweep
workers and the optional bitsandbytes back-end included), each chain in a fresh process, where libraries print
as they are imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from balora import quiet

MARK = "@@ case "
DRIVER = f"""
import json, sys
from balora.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    print({MARK!r} + argv[0], file=sys.stderr, flush=True)
    codes.append(main(argv))
print(json.dumps(codes))
"""
PROGRESS = re.compile(r"\[\d\d:\d\d[<,]")  # tqdm's "[00:01<00:02, ..." or "[00:01, ...": a progress bar


def run_cases(cases: list[list[str]], cwd: Path) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """Run the CLI on each argv in one fresh process: exit codes, and each case's stderr lines."""
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    env |= {k: os.environ[k] for k in ("HOME", "BALORA_CACHE", "PYTHONPATH") if k in os.environ}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sections = [s for s in re.split(r"[\r\n]+", done.stderr) if s.strip()]
    assert sections and sections[0].startswith(MARK), f"printed before any command ran: {sections[:3]}"
    per_case: list[tuple[str, list[str]]] = []
    for line in sections:
        if line.startswith(MARK):
            per_case.append((line[len(MARK):], []))
        else:
            per_case[-1][1].append(line)
    return json.loads(done.stdout.strip().splitlines()[-1]), per_case


def not_balora(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("balora: ") and not PROGRESS.search(line)]


def test_every_subcommand_s_error_is_its_one_line(tmp_path):
    (tmp_path / "folder").mkdir()
    cases = {  # what the one line must say
        ("allocate", "--method", "nope"): "unknown method 'nope'",
        ("train", "--method", "nope"): "unknown method 'nope'",
        ("train", "--method", "nope", "--learning-rate", "nan"): "expected a finite number",
        ("train", "--method", "nope", "--frobnicate"): "unrecognized arguments",
        ("merge", str(tmp_path / "folder"), "--out", str(tmp_path / "merged")): "not a finished run folder",
        ("sweep", str(tmp_path / "no_such_spec.yaml")): "no sweep spec",
        ("runs", "--db", str(tmp_path / "missing.db")): "no results database",
        ("export", "--db", str(tmp_path / "folder")): "is a directory",
        ("import", str(tmp_path / "no_such_folder")): "no_such_folder",
        ("report", "--db", str(tmp_path / "typo.db")): "no results database",
        ("run", "--workers", "0"): "--workers must be at least 1",
    }
    codes, per_case = run_cases([list(argv) for argv in cases], tmp_path)
    assert [name for name, _ in per_case] == [argv[0] for argv in cases]
    for (argv, message), (_, lines), code in zip(cases.items(), per_case, codes, strict=True):
        assert code == 2 and len(lines) == 1 and lines[0].startswith("balora: error: ") and message in lines[0], (argv, lines)


@pytest.mark.parametrize("backend", ["torch", "bitsandbytes"])
def test_a_chain_of_successful_commands_prints_nothing_of_other_libraries(backend, tmp_path, tiny_model_dir, tiny_csv):
    if backend == "bitsandbytes":
        pytest.importorskip("bitsandbytes")
    data = ["--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--shots", "10", "--budget-rank", "4",
            "--batch-size", "8", "--gradient-samples", "20", "--evaluations", "1"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: tiny\nbase:\n  model: {tiny_model_dir}\n  dataset: {tiny_csv}\n  shots: 10\n  budget_rank: 4\n"
                    "  epochs: 1\n  batch_size: 8\n  gradient_samples: 20\n  evaluations: 1\n"
                    "grids:\n  - method: [lora, ba_lora]\n")
    quant = (["--quant", "int4", "--quant-group-size", "8", "--qa-lora"] if backend == "torch"
             else ["--quant", "nf4", "--quant-group-size", "32", "--quant-backend", "bitsandbytes"])
    cases = [
        ["train", *data, *quant, "--method", "ba_lora", "--epochs", "1", "--out", "run"],  # with its progress bar
        ["allocate", *data],
        ["sweep", str(spec), "--workers", "2", "--db", "r.db", "--results-dir", "results"],
        ["runs", "--db", "r.db"],
        ["export", "--db", "r.db", "--out", "runs.csv"],
        ["import", "results", "--db", "again.db"],
        ["report", "--runs", "results", "--paper-dir", "paper"],
    ]
    if backend == "torch":
        cases.insert(1, ["merge", "run", "--out", "merged"])
    else:  # bitsandbytes, hidden from PEFT by the CLI, is let in for this run only: the rest is as for torch
        cases = cases[:1]
    codes, per_case = run_cases(cases, tmp_path)
    assert codes == [0] * len(cases), per_case
    assert {name: not_balora(lines) for name, lines in per_case if not_balora(lines)} == {}
    assert (tmp_path / "run" / "result.json").is_file()
    if backend == "torch":  # the sweep's two runs, one per worker process
        assert len(list((tmp_path / "results").glob("*.json"))) == 2


def test_what_libraries_say_is_kept_in_the_run_folder(tmp_path):
    """In a fresh process (pytest itself records warnings): other libraries' log records and Python warnings
    reach neither stdout nor stderr, and the run folder's library.log keeps them."""
    script = ("import logging, sys, warnings\nfrom pathlib import Path\nfrom balora import quiet\nquiet.silence()\n"
              "logging.getLogger('some_library').warning('a kernel was not found')\n"
              "warnings.warn('deprecated', DeprecationWarning, stacklevel=1)\n"
              "quiet.write_library_log(Path(sys.argv[1]))\nquiet.write_library_log(Path(sys.argv[1]) / 'nowhere')\n")
    done = subprocess.run([sys.executable, "-W", "always", "-c", script, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 0 and done.stdout == done.stderr == "", done.stderr
    log = (tmp_path / quiet.LIBRARY_LOG).read_text()
    assert "WARNING some_library: a kernel was not found" in log and "DeprecationWarning: deprecated" in log
    assert not (tmp_path / "nowhere").exists()  # drained: a second call has nothing to write

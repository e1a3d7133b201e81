"""Data-parallel runs: 2 CPU processes on the gloo backend."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp
from conftest import random_batches, tiny_bert
from torch.utils.data import DataLoader

import balora
from balora.allocation import allocate, rank_budget
from balora.api import sample_batches
from balora.importance import accumulate_gradients, score_modules
from balora.models import target_modules


def free_port() -> str:
    """A port no one listens on now: a fixed one fails when another suite (or anything) holds it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])

def _labelled_loader() -> DataLoader:
    rows = [dict(input_ids=b["input_ids"][i], attention_mask=b["attention_mask"][i], labels=b["labels"][i])
            for b in random_batches(num_batches=6, batch_size=4) for i in range(4)]
    return DataLoader(rows, batch_size=3, collate_fn=lambda items: {k: torch.stack([r[k] for r in items]) for k in items[0]})


def _shard_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = tiny_bert()
    targets = target_modules(model, ["query", "value"])
    batches = random_batches(num_batches=4, batch_size=4)[rank::world]  # each process sees half the data
    stats = accumulate_gradients(model, batches, targets, num_samples=8)
    scores = score_modules(model, targets, "sensitivity", stats)
    ranks = [r.rank for r in allocate(scores, targets, rank_budget(targets, 4), min_rank=1)]
    plan = balora.plan(tiny_bert(), _labelled_loader(), budget_rank=4, min_rank=1, num_samples=15)
    torch.save({"mean": stats.mean, "ranks": ranks, "examples": stats.num_examples,
                "plan": {"ranks": plan.ranks, "gradients": plan.gradients,
                         "share": sample_batches(_labelled_loader(), 15, seed=42)[1]}}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_importance_and_plan_are_all_reduced_so_every_process_allocates_the_same_ranks(tmp_path):
    out = str(tmp_path / "shard")
    mp.spawn(_shard_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    first, second = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert first["ranks"] == second["ranks"] and first["examples"] == 16
    model = tiny_bert()
    targets = target_modules(model, ["query", "value"])
    whole = accumulate_gradients(model, random_batches(num_batches=4, batch_size=4), targets, num_samples=16)
    for name, mean in whole.mean.items():  # the same mean gradient as one process over all the data
        torch.testing.assert_close(first["mean"][name], mean, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(second["mean"][name], mean, rtol=1e-4, atol=1e-7)
    # balora.plan splits its one sample between the processes (8 + 7 examples here) and all-reduces, so both
    # get the plan that one process makes from all 15
    alone = balora.plan(tiny_bert(), _labelled_loader(), budget_rank=4, min_rank=1, num_samples=15)
    assert (first["plan"]["share"], second["plan"]["share"]) == (8, 7)
    assert first["plan"]["ranks"] == second["plan"]["ranks"] == alone.ranks
    for name, mean in alone.gradients.items():
        torch.testing.assert_close(first["plan"]["gradients"][name], mean, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(second["plan"]["gradients"][name], mean, rtol=1e-4, atol=1e-7)


def test_a_run_under_torchrun_trains_on_two_processes_and_writes_once(tmp_path, tiny_model_dir, tiny_csv):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
               "-m", "balora.cli", "train", "--method", "ba_lora", "--model", str(tiny_model_dir), "--dataset",
               str(tiny_csv), "--shots", "16", "--budget-rank", "4", "--min-rank", "1", "--epochs", "1",
               "--batch-size", "4", "--evaluations", "1", "--quiet", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["environment"]["world_size"] == 2
    assert result["steps"] == 4  # 32 examples, 16 per process, batch 4
    assert done.stdout.count("wrote ") == 1


def test_uneven_data_gives_every_process_the_same_batches_and_adalora_schedule(tmp_path, tiny_model_dir, tiny_csv):
    # 33 examples over 2 processes: 17 and 16 before padding, i.e. 5 and 4 batches of 4. Unequal counts
    # hang DDP's gradient all-reduce and give AdaLoRA two different total_step values.
    out = tmp_path / "uneven"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
               "-m", "balora.cli", "train", "--method", "adalora", "--model", str(tiny_model_dir), "--dataset",
               str(tiny_csv), "--train-size", "33", "--budget-rank", "2", "--epochs", "2", "--batch-size", "4",
               "--evaluations", "1", "--quiet", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 10  # 17 examples per process after padding: 5 batches, 2 epochs

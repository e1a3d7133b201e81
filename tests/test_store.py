"""The results database: round trips, resume, export, bad paths, SIGKILL safety and two concurrent writers."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from balora.errors import BaloraError
from balora.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]


def config(seed: int = 0, method: str = "ba_lora") -> dict:
    return {"method": method, "model": "minilm", "dataset": "sst2", "shots": 16, "train_size": None,
            "budget": None, "budget_rank": 8.0, "rank": None, "seed": seed}


def result(key: str, seed: int = 0, accuracy: float = 0.8, modules: int = 3) -> dict:
    return {"key": key, "config": config(seed),
            "metrics": {"accuracy": accuracy, "f1": accuracy - 0.1, "precision": 0.7, "recall": 0.6, "loss": 0.5,
                        "majority_rate": 0.5},
            "params": {"lora": 1000 + seed, "lora_final": 900, "head": 50, "total_trainable": 1050 + seed},
            "timings": {"load": 1.0, "train": 2.0, "total": 3.5},
            "memory": {"peak_rss_mib": {"load": 100.0, "train": 250.0}, "peak_cuda_mib": {}},
            "allocation": [{"name": f"layer.{i}.query", "shape": [384, 384], "importance": 0.1 * i, "rank": 4,
                            "params": 3072, "final_rank": 4} for i in range(modules)],
            "curves": {"train_loss": [[1, 0.7], [2, 0.6]], "validation": [[0, {"accuracy": 0.5}]]},
            "adapter": f"/runs/{key}/adapter"}


def spawn(script: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, text=True)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "balora.db"
    with ResultsStore(path) as store:
        assert path.is_file()
        assert store.status("a") is None
        assert store.claim("a", config(1), "sweep1")
        assert store.status("a") == "running"
        running = store.runs(status="running")[0]
        assert (running.key, running.method, running.budget_rank, running.seed) == ("a", "ba_lora", 8.0, 1)
        assert running.pid == os.getpid() and running.attempts == 1
        store.finish("a", result("a", seed=1, accuracy=np.float32(0.75)), result_path="/runs/a/result.json")
        assert store.status("a") == "done"
        assert not store.claim("a", config(1), "sweep1")  # done: a re-run skips it
        assert not store.claim("a", config(1), "sweep1", rerun_failed=True)
    with ResultsStore(path) as store:  # persisted across connections
        [record] = store.runs()
        assert (record.status, record.sweep, record.accuracy, record.dataset) == ("done", "sweep1", 0.75, "sst2")
        assert record.f1 == pytest.approx(0.65)
        assert record.timings["total"] == 3.5 and record.allocation[2]["name"] == "layer.2.query"
        assert record.result_path == "/runs/a/result.json" and record.adapter_path == "/runs/a/adapter"
        assert record.created and record.started and record.finished
        [full] = store.results("sweep1")
        assert full["key"] == "a" and full["sweep"] == "sweep1" and full["params"]["lora"] == 1001
        assert full["curves"]["train_loss"] == [[1, 0.7], [2, 0.6]]
        assert store.results("other") == [] and store.runs(status="failed") == []


def test_failed_needs_rerun_failed(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.claim("b", config(), "s")
        store.fail("b", "CUDA out of memory")
        record = store.get("b")
        assert record is not None and (record.status, record.error) == ("failed", "CUDA out of memory")
        assert not store.claim("b", config(), "s")
        assert store.status("b") == "failed"
        assert store.claim("b", config(), "s", rerun_failed=True)
        record = store.get("b")
        assert record is not None and (record.status, record.error, record.attempts) == ("running", None, 2)
        store.finish("b", result("b"))
        assert store.status("b") == "done"


def test_running_in_live_process_is_not_claimable(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as first, ResultsStore(tmp_path / "r.db") as second:
        assert first.claim("c", config(), "s")
        assert not second.claim("c", config(), "s")  # this very process is alive and may still be running it


def test_running_in_dead_process_is_claimable(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    child = spawn("import os, signal, sys\nfrom balora.store import ResultsStore\n"
                  "ResultsStore(sys.argv[1]).claim('d', {'seed': 0}, 's')\nos.kill(os.getpid(), signal.SIGKILL)",
                  str(db))
    child.wait(timeout=20)
    assert child.returncode == -signal.SIGKILL
    with ResultsStore(db) as store:
        assert store.status("d") == "running"
        assert store.claim("d", config(), "s")
        assert store.get("d").pid == os.getpid()


def test_running_in_killed_unreaped_process_is_claimable(tmp_path: Path) -> None:
    """A killed child its parent has not waited for yet is a zombie: its pid exists but it runs nothing."""
    db = tmp_path / "r.db"
    child = spawn("import os, signal, sys\nfrom balora.store import ResultsStore\n"
                  "ResultsStore(sys.argv[1]).claim('z', {'seed': 0}, 's')\nos.kill(os.getpid(), signal.SIGKILL)",
                  str(db))
    deadline = time.monotonic() + 20
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        with ResultsStore(db) as store:
            assert store.status("z") == "running"
            assert store.claim("z", config(), "s")
    finally:
        child.wait(timeout=20)


def test_reused_pid_and_other_host(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        store.claim("p", config(), "s")
        store.claim("q", config(), "s")
    with sqlite3.connect(db) as raw:
        # p: our pid, but a process started long before us held it, so the claimer is dead and the pid reused.
        raw.execute("UPDATE runs SET pid_started = pid_started - 1000 WHERE key = 'p'")
        raw.execute("UPDATE runs SET host = 'some-other-machine' WHERE key = 'q'")  # cannot be checked: live
    with ResultsStore(db) as store:
        assert store.claim("p", config(), "s")
        assert not store.claim("q", config(), "s")
        assert store.release() == ["p", "q"]
        assert store.claim("q", config(), "s")


def test_release_forgets_running_claims(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        store.claim("e", config(), "s")
        store.claim("f", config(), "t")
        assert store.release("s") == ["e"]
        assert store.status("e") is None and store.status("f") == "running"


def test_sweep_membership_includes_runs_done_by_another_sweep(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        store.claim("g", config(), "first")
        store.finish("g", result("g"))
        assert not store.claim("g", config(), "second")
        assert [r["sweep"] for r in store.results("second")] == ["second"]
        assert [r.sweep for r in store.runs("second")] == ["first"]  # the sweep that ran it


def test_export_csv_and_json(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        for i, key in enumerate(["k1", "k2"]):
            store.claim(key, config(i), "s")
            store.finish(key, result(key, seed=i, accuracy=0.6 + 0.1 * i))
        store.claim("k3", config(3), "s")
        store.fail("k3", "boom")
        csv_path = store.export("csv", tmp_path / "out" / "runs.csv")
        json_path = store.export("json", tmp_path / "runs.json")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["key"] for r in rows] == ["k1", "k2", "k3"]
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert float(rows[1]["accuracy"]) == pytest.approx(0.7) and float(rows[0]["recall"]) == 0.6
    assert rows[1]["params_lora"] == "1001" and rows[0]["params_head"] == "50" and rows[0]["time_total"] == "3.5"
    assert rows[0]["peak_rss_mib"] == "250.0" and rows[0]["seed"] == "0" and rows[0]["method"] == "ba_lora"
    assert rows[2]["error"] == "boom" and rows[2]["accuracy"] == ""
    records = json.loads(json_path.read_text())
    assert [r["key"] for r in records] == ["k1", "k2", "k3"]
    assert records[0]["result"]["allocation"][1]["importance"] == 0.1
    assert records[1]["metrics"]["accuracy"] == pytest.approx(0.7) and records[2]["result"] is None


def test_export_bad_format(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store, pytest.raises(BaloraError, match="use 'csv' or 'json'"):
        store.export("xlsx", tmp_path / "runs.xlsx")
    assert not (tmp_path / "runs.xlsx").exists()


def test_bad_status_filter(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store, pytest.raises(BaloraError, match="running, done, failed"):
        store.runs(status="finished")


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(BaloraError, match="is a directory"):
        ResultsStore(tmp_path)


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("key,accuracy\na,0.5\n" * 10)
    with pytest.raises(BaloraError, match="not a SQLite database"):
        ResultsStore(path)
    assert path.read_text().startswith("key,accuracy")  # left untouched


def test_unserialisable_result_changes_nothing(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        store.claim("h", config(), "s")
        with pytest.raises(TypeError):
            store.finish("h", dict(result("h"), extra=object()))
        assert store.status("h") == "running"


CRASH_WORKER = """
import sys, time
from balora.store import ResultsStore
sys.path.insert(0, sys.argv[2])
from test_store import config, result
store = ResultsStore(sys.argv[1])
print("ready", flush=True)
for i in range(100000):
    key = f"k{i:05d}"
    if store.claim(key, config(i), "crash"):
        time.sleep(0.002)  # the run in flight, where most kills land
        store.finish(key, result(key, seed=i, modules=200))
"""


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(0)
    for _ in range(5):
        worker = spawn(CRASH_WORKER, str(db), str(Path(__file__).parent))
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=20) == -signal.SIGKILL
    assert integrity(db) == "ok"
    with ResultsStore(db) as store:
        done = store.runs(status="done")
        assert len(done) > 5
        for record in done:
            i = int(record.key[1:])
            assert record.result == result(record.key, seed=i, modules=200)
            assert record.seed == i and record.accuracy == 0.8 and len(record.allocation) == 200
        running = store.runs(status="running")
        assert len(running) <= 1  # each worker resumes the previous one's run: at most the last is left
        for record in running:
            assert store.claim(record.key, config(), "crash")
        # The keys form a prefix: nothing finished was lost and nothing was skipped.
        keys = sorted(r.key for r in store.runs())
        assert keys == [f"k{i:05d}" for i in range(len(keys))]


CONCURRENT_WORKER = """
import os, random, sys, time
from balora.store import ResultsStore
path, start, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
while not os.path.exists(start):
    time.sleep(0.001)
store = ResultsStore(path)
keys = [f"k{i:02d}" for i in range(50)]
random.Random(seed).shuffle(keys)
for key in keys:
    if store.claim(key, {"seed": int(key[1:])}, f"sweep{seed}"):
        print(key, flush=True)
        time.sleep(0.001)
        store.finish(key, {"key": key, "config": {"seed": int(key[1:])}, "metrics": {"accuracy": 0.5},
                           "pid": os.getpid()})
"""


def test_two_concurrent_writers(tmp_path: Path) -> None:
    db, start = tmp_path / "shared.db", tmp_path / "start"
    workers = [spawn(CONCURRENT_WORKER, str(db), str(start), str(seed)) for seed in (1, 2)]
    time.sleep(0.3)
    start.touch()  # both open the fresh database and start claiming at the same moment
    outputs = [w.communicate(timeout=25)[0].split() for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    claimed = [set(out) for out in outputs]
    assert sum(map(len, outputs)) == 50 and claimed[0] | claimed[1] == {f"k{i:02d}" for i in range(50)}
    assert not claimed[0] & claimed[1]
    assert integrity(db) == "ok"
    with ResultsStore(db) as store:
        records = store.runs()
        assert len(records) == 50 and {r.status for r in records} == {"done"}
        assert all(r.attempts == 1 for r in records)
        by_pid = {w.pid: c for w, c in zip(workers, claimed)}
        assert all(r.key in by_pid[r.result["pid"]] for r in records)
        assert len(store.runs("sweep1")) == len(store.runs("sweep2")) == 50

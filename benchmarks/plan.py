"""`balora.plan` against the same importance pass inside `run_experiment` (issue 12; not a timed test).

Both sides: MiniLM, the same Rotten Tomatoes training set, the same 512-example stratified sample (same
seed), budget rank-equivalent 8 on query/value. The baseline is the importance + allocation phases that
`run.plan_allocation` (what `balora allocate` and `run_experiment` run) times itself; the API side is the
wall time of the whole `balora.plan(model, loader, ...)` call on a user's shuffled DataLoader over those
examples, sample drawing included. Rounds alternate A/B so that load on a shared machine hits both alike.
Prints each time, the ratio (target ≤ 1.05: no extra passes, no copies), and whether both chose the same
ranks from the same scores.

Usage: python benchmarks/plan.py [--train-size 2000] [--samples 512] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import balora
from balora.config import RunConfig
from balora.data import make_loader
from balora.models import load_classifier
from balora.run import plan_allocation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = RunConfig(method="ba_lora", model="minilm", dataset="rotten_tomatoes", train_size=args.train_size,
                       gradient_samples=args.samples, budget_rank=8, seed=42)
    inside, api, plans = [], [], []
    for _ in range(args.rounds):
        setup, prepared = plan_allocation(config)
        rows = prepared.allocation
        timings = setup.meter.timings()
        inside.append(timings["importance"] + timings["allocation"])
        model = load_classifier("minilm", setup.data.num_labels, config.seed)
        loader = make_loader(setup.train_examples, setup.tokenizer, config.batch_size, shuffle=True, seed=config.seed)
        start = time.perf_counter()
        plan = balora.plan(model, loader, budget_rank=8, num_samples=args.samples, seed=config.seed)
        api.append(time.perf_counter() - start)
        plans.append((rows, plan))
    rows, plan = plans[-1]
    largest = max(abs(a.importance - b.importance) / max(a.importance, 1e-30) for a, b in zip(rows, plan.modules))
    print(plan)
    print(f"importance + allocation inside run_experiment: {', '.join(f'{t:.2f}' for t in inside)} s "
          f"(median {statistics.median(inside):.2f})")
    print(f"balora.plan, whole call:                        {', '.join(f'{t:.2f}' for t in api)} s "
          f"(median {statistics.median(api):.2f})")
    print(f"ratio balora.plan / inside run_experiment: {statistics.median(api) / statistics.median(inside):.3f} "
          f"(target <= 1.05); same ranks: {[r.rank for r in rows] == list(plan.ranks.values())}; "
          f"largest relative difference in importance: {largest:.1e}")


if __name__ == "__main__":
    main()

"""Sweep bookkeeping (database, spawning, config) as a share of wall time (issue 3's benchmark).

Runs a preset (default `quick`) into a fresh database in one process and prints the sweep's wall
time, the time spent inside the runs' own phases (load, importance, allocation, init, train,
eval: the baseline, measured in the same invocation), and their ratio. Target: bookkeeping ≤ 2%.

Usage: python benchmarks/sweep_bookkeeping.py [--preset quick] [--only method=lora]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from balora.quiet import silence
from balora.specs import load_spec
from balora.sweeps import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    silence()
    with tempfile.TemporaryDirectory() as tmp:
        counts = run_sweep(load_spec(args.preset, args.only), db=str(Path(tmp) / "b.db"), runs_dir=str(Path(tmp) / "runs"))
    wall = counts["wall_seconds"]
    share = counts["bookkeeping_share"]
    print(f"wall {wall:.1f} s, inside runs {wall * (1 - share):.1f} s, "
          f"bookkeeping/wall ratio {share:.4f} ({100 * share:.2f}%; target ≤ 2%)")


if __name__ == "__main__":
    main()

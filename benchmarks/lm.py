"""BA-LoRA on a causal LM: throughput, memory and wall-time ratios (issue 9's benchmark; not a timed test).

On the embedded `smollm2` model and `critic_instructions` data (or `--model`/`--dataset`), prints three
ratios, each against a baseline measured in the same invocation:

1. Training tokens per second of balora's loop / a bare PEFT + torch loop on the same pre-built batches
   (rank 8 on every projection, both loops from the same initial weights with the same AdamW and linear
   schedule, timed in turns, see `loops.py`; target ≥ 0.95). Tokens are the non-padding tokens of the
   batches; SmolLM2's absolute tokens per second are printed too.
2. Peak RSS of BA-LoRA's importance pass / peak RSS of LoRA's training phase (two `balora train` runs,
   each in a fresh process; target ≤ 1.1).
3. BA-LoRA's total wall time / LoRA's, same data, steps and evaluation (target ≤ 1.05): `--repeats` pairs of
   runs in turns (LoRA first, then BA-LoRA first, ...), the median of the per-pair ratios. Each run's CPU
   time (user + system of the child process) is printed too: on a machine shared with other work it moves
   less than wall time, so a wall-time ratio that its CPU-time ratio does not repeat is load, not BA-LoRA.
   The same ratio without the `generate` phase is printed beside it: the greedy answers to 3 test prompts
   stop at EOS, so their cost is set by what each trained model writes, not by the method's overhead.
   `--ba-pad-to-multiple-of M` runs BA-LoRA with `--pad-to-multiple-of M` and LoRA as it is fastest, with
   batches padded to their longest (on CPU uneven ranks gain from fewer batch shapes, uniform rank loses
   the padded tokens): what a user who sets it pays for BA-LoRA. Padding changes no loss or gradient.

The defaults are a small check that fits a loaded 2-core CPU (a few steps, a few importance samples,
short sequences); the lm preset's size is `--steps 50 --batch-size 8 --max-length 96 --gradient-samples 64
--eval-examples 200 --evaluations 4 --eval-batch-size 16 --precision fp32` (its 200 examples × 2 epochs are
50 steps; here 400 examples × 1 epoch).

Usage: python benchmarks/lm.py [--model smollm2] [--dataset critic_instructions] [--steps 4]
                               [--batch-size 4] [--max-length 48] [--gradient-samples 8]
                               [--eval-examples 8] [--evaluations 1] [--eval-batch-size 64]
                               [--precision fp32] [--ba-pad-to-multiple-of 1] [--repeats 2] [--part all]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(method: str, args: argparse.Namespace, out: Path) -> dict:
    """One `balora train` run of `method` at the rank-8 budget (γ as in the lm preset); its result with
    the child's CPU seconds added as `cpu_seconds`."""
    command = [sys.executable, "-m", "balora.cli", "train", "--method", method, "--budget-rank", "8",
               "--model", args.model, "--dataset", args.dataset, "--train-size", str(args.steps * args.batch_size),
               "--epochs", "1", "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--learning-rate", "3e-4", "--gamma", "1e-4", "--gradient-samples", str(args.gradient_samples),
               "--eval-examples", str(args.eval_examples), "--evaluations", str(args.evaluations),
               "--eval-batch-size", str(args.eval_batch_size), "--precision", args.precision,
               "--pad-to-multiple-of", str(args.ba_pad_to_multiple_of if method == "ba_lora" else 1),
               "--seed", "42", "--quiet",
               "--out", str(out)]
    before = _children_cpu()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "result.json").read_text()) | {"cpu_seconds": _children_cpu() - before}


def paired_runs(args: argparse.Namespace) -> list[tuple[dict, dict]]:
    """`args.repeats` (LoRA, BA-LoRA) pairs, alternating which runs first so that drifting load falls on both."""
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = ("lora", "ba_lora") if repeat % 2 == 0 else ("ba_lora", "lora")
            done = {method: run(method, args, Path(tmp) / f"{method}-{repeat}") for method in order}
            pairs.append((done["lora"], done["ba_lora"]))
    return pairs


def _without_answers(result: dict) -> float:
    return result["timings"]["total"] - result["timings"].get("generate", 0.0)


def _phases(result: dict) -> str:
    return json.dumps({k: round(v, 1) for k, v in result["timings"].items()})


def throughput(args: argparse.Namespace) -> tuple[list[float], list[float], int]:
    """Tokens per second of balora's `train` and of a bare loop, each timed `args.repeats` times in turns."""
    import torch
    from loops import compare_loops
    from peft import LoraConfig, get_peft_model

    from balora.instructions import load_instruction_dataset, make_lm_loader
    from balora.models import default_target_names, load_causal_lm, load_tokenizer

    examples = load_instruction_dataset(args.dataset).pool[:args.steps * args.batch_size]
    batches = list(make_lm_loader(examples, load_tokenizer(args.model), args.batch_size, shuffle=True, seed=42,
                                  max_length=args.max_length))
    targets = default_target_names(load_causal_lm(args.model))

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(42)
        config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.1, target_modules=targets)
        return get_peft_model(load_causal_lm(args.model), config)

    tokens = int(sum(b["attention_mask"].sum() for b in batches))
    ours, bare = compare_loops(fresh_model, batches, args.repeats, args.precision)
    return [tokens / t for t in ours], [tokens / t for t in bare], tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="critic_instructions")
    parser.add_argument("--steps", type=int, default=4, help="training steps (train size = steps × batch size)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--gradient-samples", type=int, default=8, help="BA-LoRA's importance samples")
    parser.add_argument("--eval-examples", type=int, default=8, help="validation and test examples of each run")
    parser.add_argument("--evaluations", type=int, default=1, help="validation passes during each run's training")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="forward passes of both loops")
    parser.add_argument("--ba-pad-to-multiple-of", type=int, default=1, help="BA-LoRA's batch lengths (LoRA's: 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each loop, and pairs of runs")
    parser.add_argument("--part", choices=["all", "loops", "runs"], default="all",
                        help="loops: ratio 1 only; runs: ratios 2 and 3 only (the preset's size takes an hour for both)")
    args = parser.parse_args()
    from balora.quiet import silence

    silence()
    setting = (f"setting: {args.model} · {args.dataset}, {args.steps} steps of batch {args.batch_size}, max_length "
               f"{args.max_length}, rank-equivalent 8 on every projection, {args.gradient_samples} importance samples, "
               f"{args.eval_examples} eval examples ({args.evaluations} validation passes, batch {args.eval_batch_size}), "
               f"{args.precision}, BA-LoRA's batches padded to a multiple of {args.ba_pad_to_multiple_of}")
    print(setting, flush=True)
    if args.part in ("all", "loops"):
        ours, bare, tokens = throughput(args)
        ours_median, bare_median = statistics.median(ours), statistics.median(bare)
        print(f"balora loop tokens/s {', '.join(f'{t:.1f}' for t in ours)}; bare loop "
              f"{', '.join(f'{t:.1f}' for t in bare)} ({tokens} tokens per pass)")
        print(f"ratio 1  balora loop / bare PEFT loop tokens per s: {ours_median / bare_median:.3f} "
              f"({ours_median:.1f} / {bare_median:.1f} tokens/s, medians of {args.repeats})", flush=True)
    if args.part in ("all", "runs"):
        pairs = paired_runs(args)
        importance_peak = statistics.median(ba["memory"]["peak_rss_mib"]["importance"] for _, ba in pairs)
        train_peak = statistics.median(lora["memory"]["peak_rss_mib"]["train"] for lora, _ in pairs)
        wall = [ba["timings"]["total"] / lora["timings"]["total"] for lora, ba in pairs]
        unanswered = [_without_answers(ba) / _without_answers(lora) for lora, ba in pairs]
        cpu = [ba["cpu_seconds"] / lora["cpu_seconds"] for lora, ba in pairs]
        for repeat, (lora, ba) in enumerate(pairs):
            for name, result in (("LoRA   ", lora), ("BA-LoRA", ba)):
                # greedy answers stop at EOS: their length is the model's, not overhead
                written = [len(g["generated"]) for g in result.get("generations") or []]
                print(f"pair {repeat}: {name} total {result['timings']['total']:.1f} s, CPU {result['cpu_seconds']:.1f} s"
                      f"  {_phases(result)}  answers of {written} characters")
        print(f"ratio 2  importance-pass / LoRA-train peak RSS:     {importance_peak / train_peak:.3f} "
              f"({importance_peak:.0f} / {train_peak:.0f} MiB)")
        print(f"ratio 3  BA-LoRA / LoRA wall time:                  {statistics.median(wall):.3f} "
              f"(median of {len(wall)} pairs: {', '.join(f'{r:.3f}' for r in wall)}); CPU time "
              f"{statistics.median(cpu):.3f} ({', '.join(f'{r:.3f}' for r in cpu)})")
        print(f"         the same without the greedy answers:       {statistics.median(unanswered):.3f} "
              f"({', '.join(f'{r:.3f}' for r in unanswered)})")

if __name__ == "__main__":
    main()

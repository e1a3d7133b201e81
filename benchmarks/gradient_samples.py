"""How many gradient samples an allocation needs: allocations from samples of each size against the whole
training set's (how the `lm` preset's `gradient_samples: 64` was checked).

The training set is dealt into chunks of `--chunk` examples, each stratified like the importance sample
(`balora.data.importance_sample`), and one gradient pass sums each chunk's gradient. A sample of n examples
is a random union of n / chunk chunks, so one pass over the training set serves every size and draw. For
each draw we print how much of the budget its allocation places differently from the whole set's
(Σ|params − params_full| / 2·budget; uniform ranks give the scale), the Spearman correlation of its
importance scores with the whole set's, and the mean over modules of the cosine between its mean gradient
and the whole set's (what the warm-start follows). The cost of a sample is the pass's time per example.

    python benchmarks/gradient_samples.py      # SmolLM2, the lm preset's 200 critic_instructions examples
    python benchmarks/gradient_samples.py --model minilm --dataset rotten_tomatoes --shots 256 --max-length 64 \\
        --sizes 32 64 128 256 --chunk 32
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from scipy.stats import spearmanr

from balora.allocation import allocate
from balora.config import RunConfig
from balora.data import Example
from balora.importance import GradientStats, accumulate_gradients, score_modules
from balora.run import Setup, setup

Gradients = dict[str, torch.Tensor]


def stratified_chunks(examples: list[Example], chunk: int, seed: int) -> list[list[Example]]:
    """Whole chunks of `chunk` examples, each class spread evenly over them (a leftover partial chunk is dropped
    from the draws but kept in the reference)."""
    rng = random.Random(seed)
    by_class: dict[object, list[Example]] = {}
    for example in examples:
        by_class.setdefault(example.label, []).append(example)
    keyed = []
    for members in by_class.values():
        rng.shuffle(members)
        keyed += [((i + 0.5) / len(members), rng.random(), e) for i, e in enumerate(members)]
    dealt = [e for *_, e in sorted(keyed, key=lambda k: k[:2])]
    return [dealt[i:i + chunk] for i in range(0, len(dealt), chunk)]


def chunk_sums(run: Setup, chunks: list[list[Example]]) -> tuple[list[Gradients], float]:
    """Each chunk's summed gradient, and the pass's seconds per example."""
    started, sums = time.perf_counter(), []
    for examples in chunks:
        mean = accumulate_gradients(run.model, run.loader(examples, shuffle=False), run.targets, len(examples)).mean
        sums.append({name: g * len(examples) for name, g in mean.items()})
    return sums, (time.perf_counter() - started) / sum(len(c) for c in chunks)


def allocation_of(run: Setup, sums: list[Gradients], examples: int) -> tuple[dict[str, float], list[int], Gradients]:
    """Importance scores, per-module LoRA parameters and mean gradient of the union of `sums`."""
    mean = {t.name: sum(s[t.name] for s in sums) / examples for t in run.targets}
    scores = score_modules(run.model, run.targets, run.config.importance_metric, GradientStats(mean, {}, examples, 0))
    ranks = allocate(scores, run.targets, run.budget, min_rank=run.config.min_rank, max_rank=run.config.max_rank,
                     power=run.config.allocation_power)
    return scores, [r.params for r in ranks], mean


def moved(params: list[int], reference: list[int], budget: int) -> float:
    """Share of the budget placed differently."""
    return sum(abs(a - b) for a, b in zip(params, reference)) / (2 * budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="critic_instructions")
    parser.add_argument("--shots", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None, help="default 200 unless --shots")
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--budget-rank", type=float, default=8)
    parser.add_argument("--seed", type=int, default=42, help="the run seed that draws the training set")
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--draws", type=int, default=6)
    args = parser.parse_args()
    if any(n % args.chunk for n in args.sizes):
        parser.error(f"every size must be a multiple of --chunk {args.chunk}")
    train_size = args.train_size if args.train_size is not None or args.shots is not None else 200
    config = RunConfig(method="ba_lora", model=args.model, dataset=args.dataset, shots=args.shots, train_size=train_size,
                       max_length=args.max_length, batch_size=args.batch_size, budget_rank=args.budget_rank,
                       seed=args.seed)
    run = setup(config)
    chunks = stratified_chunks(run.train_examples, args.chunk, args.seed)
    whole = [c for c in chunks if len(c) == args.chunk]
    if max(args.sizes) > len(whole) * args.chunk:
        parser.error(f"the largest size needs {max(args.sizes) // args.chunk} whole chunks; the training set has {len(whole)}")
    sums, per_example = chunk_sums(run, chunks)
    reference_scores, reference, reference_mean = allocation_of(run, sums, len(run.train_examples))
    uniform = [r.params for r in allocate({}, run.targets, run.budget, strategy="uniform", min_rank=config.min_rank)]
    names = [t.name for t in run.targets]
    print(f"{args.model}, {args.dataset}: {len(run.train_examples)} training examples, {len(names)} modules, budget "
          f"{run.budget:,} (rank-equivalent {args.budget_rank:g}); gradient pass {per_example:.2f} s per example on "
          f"{torch.get_num_threads()} thread(s). Uniform ranks place {moved(uniform, reference, run.budget):.1%} of the "
          f"budget differently from the whole set's allocation.")
    print(f"{'samples':>7}  {'budget moved (mean, range)':>27}  {'Spearman of scores':>18}  {'gradient cosine':>15}")
    rng = random.Random(0)
    for size in args.sizes:
        rows = []
        for _ in range(args.draws):
            scores, params, mean = allocation_of(run, [sums[i] for i in rng.sample(range(len(whole)), size // args.chunk)],
                                                 size)
            cosines = [float(torch.nn.functional.cosine_similarity(mean[n].flatten(), reference_mean[n].flatten(), dim=0))
                       for n in names]
            rows.append((moved(params, reference, run.budget),
                         spearmanr([scores[n] for n in names], [reference_scores[n] for n in names]).statistic,
                         statistics.mean(cosines)))
        share, rho, cosine = (list(column) for column in zip(*rows))
        print(f"{size:>7}  {statistics.mean(share):>8.1%} ({min(share):.1%}-{max(share):.1%})       "
              f"{statistics.mean(rho):>18.4f}  {statistics.mean(cosine):>15.3f}")


if __name__ == "__main__":
    main()

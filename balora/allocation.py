"""Phase 2 of BA-LoRA: turn importance scores into per-module ranks under a parameter budget.

A module with weight `d_out × d_in` and rank r costs r·(d_in + d_out) LoRA parameters. Every
strategy proposes ranks, then `fit_to_budget` trims and fills them so that

- the total never exceeds the budget, and
- afterwards no module can take one more rank without exceeding it, so the unused remainder is
  smaller than the cheapest module's per-rank cost; a final exchange step then moves ranks
  between modules of unequal width to spend that remainder too where integer ranks allow it
  (a rank-equivalent budget is spent to at least 99%, usually exactly).

A budget below `min_rank` on every module is infeasible and raises `BaloraError`; so, in `lora_budget`, does
one that every module at its largest rank could not spend to 99%.

The default strategy, `proportional`, gives module i a rank proportional to sᵢ^p (its importance
score to the power `power`, default 1), exactly: rᵢ* = clip(λ·sᵢ^p, lowᵢ, highᵢ) with λ solved so that
Σ rᵢ*·costᵢ equals the budget, then integer ranks by largest remainder. So scores that differ only by
noise give a near-uniform allocation (the same rank everywhere when scores are equal, whatever the
shapes), multiplying every score by a constant changes nothing, and a module with twice the score of
another gets 2^p times its rank unless a bound stops it. `power` < 1 tempers outliers, > 1 sharpens.
The min-max strategy (`minmax`; `seed000`, its old name, is still accepted and allocates identically)
is the original BA-LoRA proposal's procedure: it only uses the scores' order after min-max
normalisation and fills the lowest ranks first, which leaves most modules at one rank: kept for
reproducing that proposal.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from balora.errors import BaloraError
from balora.models import TargetModule

STRATEGIES = ("proportional", "minmax", "threshold", "top_k", "uniform")
# Old names still accepted by `allocate` (stored configs keep them, and with them their run keys).
STRATEGY_ALIASES = {"seed000": "minmax"}


@dataclass(frozen=True)
class ModuleRank:
    """One row of an allocation, as written to `result.json` and printed by `balora allocate`."""

    name: str
    d_out: int
    d_in: int
    importance: float
    rank: int

    @property
    def params(self) -> int:
        return self.rank * (self.d_in + self.d_out)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": [self.d_out, self.d_in], "importance": self.importance,
                "rank": self.rank, "params": self.params}


def rank_budget(targets: list[TargetModule], rank: float) -> int:
    """Parameters that uniform rank `rank` costs on `targets` (a "rank-equivalent" budget)."""
    return int(round(rank * sum(t.cost_per_rank for t in targets)))


def rank_equivalent(targets: list[TargetModule], params: int) -> float:
    return params / sum(t.cost_per_rank for t in targets)


def nearest_rank(targets: list[TargetModule], params: int) -> int:
    """The whole rank (at least 1) whose uniform cost is closest to `params`: seed 000's base rank."""
    return max(1, round(rank_equivalent(targets, params)))


def lora_alpha(rank: int, alpha_ratio: float, rule: str = "constant", reference_rank: float | None = None) -> float:
    """The lora_alpha of a module of rank `rank`, so that its scaling alpha/rank follows `rule` across the
    unequal ranks of an allocation, every rule giving `alpha_ratio` at `reference_rank` (the budget's
    rank-equivalent), so that a uniform allocation trains alike under all three:

    - `constant`: scaling = alpha_ratio whatever the rank (alpha ∝ rank, as EVA keeps it);
    - `rslora`: scaling = alpha_ratio·√(reference/rank) (rsLoRA's alpha/√r, with its alpha fixed);
    - `standard`: scaling = alpha_ratio·reference/rank (LoRA's alpha/r with one alpha for every module).

    rsLoRA is expressed as an alpha too, not as PEFT's `use_rslora`: PEFT refuses to convert a PiSSA, OLoRA
    or LoRA-GA adapter that combines `use_rslora` with rank or alpha patterns, and an alpha is all a plain
    `LoraConfig` needs to reload any of them."""
    if rule == "constant":
        return alpha_ratio * rank
    if rule not in ("rslora", "standard") or reference_rank is None:
        raise ValueError(f"scaling rule {rule!r}: expected constant, or rslora or standard with a reference rank")
    return alpha_ratio * (math.sqrt(reference_rank * rank) if rule == "rslora" else reference_rank)


def lora_budget(targets: list[TargetModule], *, params: int | None = None, rank: float | None = None,
                head_params: int = 0, count_head: bool = False, max_rank: int | None = None) -> int:
    """LoRA parameters available, from a parameter count or a rank-equivalent.

    With `count_head`, the classification head's parameters are paid out of the same budget. A budget that
    could not be spent to 99% even with every module at its largest rank (full rank, or `max_rank`) is an
    error naming the largest one that could: runs "at a budget" would otherwise compare budgets never spent.
    """
    if (params is None) == (rank is None):
        raise BaloraError("give exactly one budget: --budget PARAMS or --budget-rank R (budget= or budget_rank= in Python)")
    if params is not None and params <= 0:
        raise BaloraError(f"--budget must be a positive parameter count, got {params}")
    if rank is not None and rank <= 0:
        raise BaloraError(f"--budget-rank must be positive, got {rank}")
    total = params if params is not None else rank_budget(targets, rank)
    available = total - head_params if count_head else total
    if available <= 0:
        raise BaloraError(
            f"budget {total:,} does not even cover the classification head ({head_params:,} parameters); "
            "raise the budget or drop --count-head"
        )
    capacity = sum(min(t.max_rank, max_rank or t.max_rank) * t.cost_per_rank for t in targets)
    if 99 * available > 100 * capacity:
        largest = capacity * 100 // 99 + (head_params if count_head else 0)
        ranks = "full rank" if max_rank is None else f"full rank up to --max-rank {max_rank}"
        raise BaloraError(
            f"budget {total:,} is more than the targets can take: {ranks} on all {len(targets)} target modules costs "
            f"{capacity:,} LoRA parameters (rank-equivalent {rank_equivalent(targets, capacity):.2f}); the largest "
            f"feasible budget (spent to 99%) is {largest:,}; give a smaller --budget or --budget-rank "
            "(budget= or budget_rank= in Python)"
        )
    return available


def _bounds(targets: list[TargetModule], min_rank: int, max_rank: int | None) -> tuple[list[int], list[int]]:
    lows = [min(min_rank, t.max_rank) for t in targets]
    highs = [t.max_rank if max_rank is None else min(max_rank, t.max_rank) for t in targets]
    return lows, highs


RankOrder = Callable[[int, list[int]], tuple]


def fit_to_budget(ranks: list[int], targets: list[TargetModule], budget: int, lows: list[int], highs: list[int],
                  trim_order: RankOrder, fill_order: RankOrder) -> list[int]:
    """Trim one rank at a time (first in `trim_order`) until within budget, then add one rank at a
    time (first in `fill_order`) while any module can take one more. Orders see the current ranks."""
    costs = [t.cost_per_rank for t in targets]
    minimum = sum(lo * c for lo, c in zip(lows, costs))
    if minimum > budget:
        raise BaloraError(
            f"infeasible budget: {budget:,} LoRA parameters is below the minimum of {minimum:,} "
            f"(rank {max(lows)} on each of {len(targets)} modules); raise the budget or lower --min-rank"
        )
    ranks = [min(max(r, lo), hi) for r, lo, hi in zip(ranks, lows, highs)]
    total = sum(r * c for r, c in zip(ranks, costs))
    while total > budget:
        i = min((j for j in range(len(ranks)) if ranks[j] > lows[j]), key=lambda j: trim_order(j, ranks))
        ranks[i] -= 1
        total -= costs[i]
    while True:
        room = [j for j in range(len(ranks)) if ranks[j] < highs[j] and costs[j] <= budget - total]
        if not room:
            return _close_gap(ranks, costs, budget - total, lows, highs, trim_order, fill_order)
        i = min(room, key=lambda j: fill_order(j, ranks))
        ranks[i] += 1
        total += costs[i]


def _close_gap(ranks: list[int], costs: list[int], left: int, lows: list[int], highs: list[int],
               trim_order: RankOrder, fill_order: RankOrder) -> list[int]:
    """Spend what greedy filling stranded (less than one rank's cost) when widths differ.

    Only the rank *sum* per distinct cost matters to the total, so we search small per-cost changes
    (every cost but the last within a window; the last one solved directly), keep the one that
    spends most (ties: fewest rank moves), and apply it in the strategy's own trim/fill order.
    """
    if left <= 0:
        return ranks
    classes = sorted(set(costs))
    members = {c: [j for j, k in enumerate(costs) if k == c] for c in classes}
    down = {c: sum(ranks[j] - lows[j] for j in members[c]) for c in classes}
    up = {c: sum(highs[j] - ranks[j] for j in members[c]) for c in classes}
    *free, last = classes
    searched = free[:9]  # real models have few distinct shapes; keep the search to ~20k points
    window = max(1, int(20_000 ** (1 / max(1, len(searched))) - 1) // 2)
    best: tuple[int, int, tuple[int, ...], int] = (0, 0, (), 0)
    ranges = [range(-min(window, down[c]), min(window, up[c]) + 1) for c in searched]
    for deltas in itertools.product(*ranges):
        spent = sum(d * c for d, c in zip(deltas, searched))
        d_last = min(up[last], (left - spent) // last)
        gain = spent + d_last * last
        moves = sum(map(abs, deltas)) + abs(d_last)
        if d_last >= -down[last] and 0 < gain <= left and (gain, -moves) > (best[0], -best[1]):
            best = (gain, moves, deltas, d_last)
    if best[0] == 0:
        return ranks
    ranks = ranks[:]
    changes = dict(zip(searched, best[2])) | {last: best[3]}
    for cost, delta in changes.items():
        for _ in range(abs(delta)):
            if delta < 0:
                j = min((j for j in members[cost] if ranks[j] > lows[j]), key=lambda j: trim_order(j, ranks))
                ranks[j] -= 1
            else:
                j = min((j for j in members[cost] if ranks[j] < highs[j]), key=lambda j: fill_order(j, ranks))
                ranks[j] += 1
    return ranks


def _ideal_ranks(weights: list[float], targets: list[TargetModule], budget: int, lows: list[int],
                 highs: list[int]) -> list[float]:
    """Real-valued ranks clip(λ·wᵢ, lowᵢ, highᵢ) whose cost is the budget (λ by bisection; the cost is
    non-decreasing in λ). All-zero weights mean no preference: equal weights."""
    costs = [t.cost_per_rank for t in targets]
    if not any(w > 0 for w in weights):
        weights = [1.0] * len(weights)

    def ranks(scale: float) -> list[float]:
        return [min(max(scale * w, lo), hi) for w, lo, hi in zip(weights, lows, highs)]

    def cost(scale: float) -> float:
        return sum(r * c for r, c in zip(ranks(scale), costs))

    low, high = 0.0, max(hi / w for w, hi in zip(weights, highs) if w > 0)
    if cost(high) <= budget:
        return ranks(high)
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if cost(middle) <= budget else (low, middle)
    return ranks(low)


def _proportional(weights: list[float], targets: list[TargetModule], budget: int, lows: list[int],
                  highs: list[int]) -> list[int]:
    """Ranks proportional to `weights` within bounds, spending the budget; integers by largest remainder."""
    ideal = _ideal_ranks(weights, targets, budget, lows, highs)
    return fit_to_budget([int(x) for x in ideal], targets, budget, lows, highs,
                         trim_order=lambda j, r: (ideal[j] - r[j], j),
                         fill_order=lambda j, r: (r[j] - ideal[j], j))


def _minmax_proposal(scores: list[float], base_rank: int) -> list[int]:
    """The original proposal: min-max normalise importance to [0.5, 2] × base rank, floored (equal scores: 1.25×)."""
    top, bottom = max(scores), min(scores)
    spread = [(s - bottom) / (top - bottom) if top > bottom else 0.5 for s in scores]
    return [int(base_rank * (0.5 + 1.5 * x)) for x in spread]


def allocate(importance: dict[str, float], targets: list[TargetModule], budget: int, *,
             strategy: str = "proportional", base_rank: int | None = None, min_rank: int = 2,
             max_rank: int | None = None, threshold: float = 0.5, top_k: int | None = None,
             power: float = 1.0, rest_rank: int = 0) -> list[ModuleRank]:
    """Ranks for `targets` within `budget` LoRA parameters.

    - `minmax` (old name `seed000`, still accepted): the original BA-LoRA proposal's procedure.
      Importance is normalised to [0.5, 2] × `base_rank`
      (default: the budget's rank-equivalent), floored and kept ≥ `min_rank`; then the highest
      rank is trimmed and the lowest rank filled until the budget is met.
    - `proportional` (the default): rank ∝ importance^`power`, exactly within the bounds (module
      docstring), rounded by largest remainder.
    - `threshold`: modules scoring ≥ `threshold` × the top score get ranks ∝ importance^`power`;
      the rest keep `min_rank`.
    - `top_k`: the `top_k` highest-scoring modules (default half) get ranks ∝ importance^`power`;
      the rest get `rest_rank` (default 0: not adapted; dynamic reallocation keeps them at its minimum).
    - `uniform`: the same rank everywhere (importance ignored), the remainder by largest remainder.
    """
    strategy = STRATEGY_ALIASES.get(strategy, strategy)
    if strategy not in STRATEGIES:
        raise BaloraError(f"unknown allocation strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if min_rank < 0 or (max_rank is not None and max_rank < max(min_rank, 1)):
        raise BaloraError(f"need 0 <= min_rank <= max_rank, got min_rank={min_rank}, max_rank={max_rank}")
    if not targets:
        raise BaloraError("no target modules to allocate ranks to")
    if not (power > 0 and math.isfinite(power)):
        raise BaloraError(f"allocation power must be a positive number, got {power}")
    scores = [max(float(importance.get(t.name, 0.0)), 0.0) for t in targets]
    weights = [s ** power for s in scores]
    lows, highs = _bounds(targets, min_rank, max_rank)

    if strategy == "minmax":
        base = base_rank or nearest_rank(targets, budget)
        ranks = fit_to_budget(_minmax_proposal(scores, base), targets, budget, lows, highs,
                              trim_order=lambda j, r: (-r[j], scores[j], j),
                              fill_order=lambda j, r: (r[j], -scores[j], j))
    elif strategy == "proportional":
        ranks = _proportional(weights, targets, budget, lows, highs)
    elif strategy == "uniform":
        ranks = _proportional([1.0] * len(targets), targets, budget, lows, highs)
    elif strategy == "threshold":
        cut = threshold * max(scores)
        highs = [hi if s >= cut else lo for hi, lo, s in zip(highs, lows, scores)]
        ranks = _proportional([w if s >= cut else 0.0 for w, s in zip(weights, scores)], targets, budget, lows, highs)
    else:  # top_k
        keep = set(sorted(range(len(targets)), key=lambda j: (-scores[j], j))[: top_k or max(1, len(targets) // 2)])
        rest = [min(rest_rank, lo) for lo in lows]
        lows = [lo if j in keep else rest[j] for j, lo in enumerate(lows)]
        highs = [hi if j in keep else rest[j] for j, hi in enumerate(highs)]
        ranks = _proportional(weights, targets, budget, lows, highs)
    return [ModuleRank(t.name, t.d_out, t.d_in, s, r) for t, s, r in zip(targets, scores, ranks)]


def unbudgeted_minmax(importance: dict[str, float], targets: list[TargetModule], base_rank: int,
                      min_rank: int = 2) -> list[ModuleRank]:
    """The `minmax` normalisation without trimming or filling: the `ba_lora_no_budget` ablation,
    which spends whatever the normalised ranks cost."""
    scores = [max(float(importance.get(t.name, 0.0)), 0.0) for t in targets]
    return [ModuleRank(t.name, t.d_out, t.d_in, s, min(max(min_rank, r), t.max_rank))
            for t, s, r in zip(targets, scores, _minmax_proposal(scores, base_rank))]


def shuffled(allocation: list[ModuleRank], seed: int) -> list[ModuleRank]:
    """The same ranks moved between modules at random (`random.Random(seed)`): the `ba_lora_shuffled` control.

    Ranks move only between modules of one shape up to transposition, i.e. of equal cost per rank
    d_in + d_out and equal largest rank min(d_in, d_out). Moving a rank between modules of unequal cost
    would change the parameter count, and the control must spend exactly what its allocation spent: the
    multiset of ranks and the total are both kept, whatever mix of shapes the targets have. (Equal cost
    with unequal largest rank, e.g. 16 × 80 and 48 × 48, is kept apart too, so that no rank lands above
    its module's bound.) Each module keeps its own importance score; only its rank is drawn."""
    rng = random.Random(seed)
    ranks = [m.rank for m in allocation]
    groups: dict[tuple[int, int], list[int]] = {}
    for j, m in enumerate(allocation):
        groups.setdefault((m.d_in + m.d_out, min(m.d_in, m.d_out)), []).append(j)
    for members in groups.values():  # in order of first appearance: reproducible for one seed
        drawn = [ranks[j] for j in members]
        rng.shuffle(drawn)
        for j, rank in zip(members, drawn):
            ranks[j] = rank
    return [dataclasses.replace(m, rank=r) for m, r in zip(allocation, ranks)]


def total_params(allocation: list[ModuleRank]) -> int:
    return sum(m.params for m in allocation)


def summary(allocation: list[ModuleRank]) -> dict[str, float]:
    """How far an allocation is from uniform: its ranks' min, median and max, and their Gini
    coefficient (0 when every module has the same rank; (n-1)/n when one module has them all)."""
    ranks = sorted(m.rank for m in allocation)
    n, total = len(ranks), sum(ranks)
    gini = sum((2 * i - n + 1) * r for i, r in enumerate(ranks)) / (n * total) if total else 0.0
    return {"min": ranks[0], "median": statistics.median(ranks), "max": ranks[-1], "gini": gini}


def table(allocation: list[ModuleRank]) -> str:
    """One line per module: name, shape, importance, rank, parameters (`balora allocate`, `print(plan)`)."""
    width = max(len("module"), *(len(m.name) for m in allocation))
    lines = [f"{'module':<{width}}  {'shape':>11}  {'importance':>11}  {'rank':>4}  {'params':>9}"]
    lines += [f"{m.name:<{width}}  {f'{m.d_out}x{m.d_in}':>11}  {m.importance:>11.4g}  {m.rank:>4}  {m.params:>9,}"
              for m in allocation]
    return "\n".join(lines)


def describe(allocation: list[ModuleRank]) -> str:
    """One line for `balora allocate` and the logs: ranks min/median/max and Gini."""
    s = summary(allocation)
    return (f"ranks min {s['min']} / median {s['median']:g} / max {s['max']}, Gini {s['gini']:.3f} "
            "(0 = uniform)")

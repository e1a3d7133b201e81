"""Seed 002's instruction-tuning study (causal-LM runs): strategy table, two figures, stored generations.

Each strategy (method, placement, fixed rank, decay direction) is run at every learning rate of the
sweep's grid; its rate is the one with the lowest mean final validation loss over seeds, and only those
runs enter the table and figures (test loss is never used to choose). Δ is the paired per-seed
difference in test loss against LoRA r=8 on all layers; negative is better.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from balora.report import figures, stats
from balora.report.document import Block, Bullets, Figure, Heading, Paragraph, Table, slug
from balora.report.runs import by_seed, method_name
from balora.report.tables import p_value

ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj", "c_attn"}
NOTE = ("Learning rate: the grid value with the lowest mean final validation loss over seeds (selected per strategy). "
        "Eval loss: token-weighted test cross-entropy on response tokens, mean ± std over seeds; perplexity = "
        "e^loss of the mean. Reduction: 1 − LoRA params / the largest in the table. Δ loss: mean per-seed "
        "difference against LoRA r=8 on all layers with its paired-t 95% CI (negative: lower loss); p (Holm): "
        "paired t-test, Holm-adjusted over the table; n<3 where fewer than 3 seeds match.")


def strategy_label(config: dict) -> str:
    """Seed 002's name of a run's strategy: fixed rank, placement, or allocation method."""
    targets = config.get("target_modules")
    if config["method"] == "lora":
        rank = config.get("rank") or config.get("budget_rank") or 8
        placement = ""
        if targets:
            placement = " attention only" if set(targets) <= ATTENTION else (
                " MLP only" if not set(targets) & ATTENTION else f" on {'+'.join(targets)}")
        return f"LoRA r={rank:g}{placement}"
    name = method_name(config["method"])
    if config["method"] == "linear_decay":
        name += f" ({config.get('decay_direction', 'decreasing')})"
    return name + ("" if targets is None else f" on {'+'.join(targets)}")


def _final_validation_loss(result: dict) -> float:
    points = result.get("curves", {}).get("validation") or []
    return float(points[-1][1]["loss"]) if points else math.nan


def selected_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Each strategy's runs at its learning rate chosen on validation loss, with `strategy` and `lr` columns."""
    frame = frame.assign(strategy=[strategy_label(r["config"]) for r in frame["result"]],
                         lr=[float(r["config"]["learning_rate"]) for r in frame["result"]],
                         validation_loss=[_final_validation_loss(r) for r in frame["result"]])
    chosen = []
    for _, runs in frame.groupby(["model", "dataset", "strategy"], sort=False):
        best = runs.groupby("lr")["validation_loss"].mean().idxmin()
        chosen.append(runs[runs["lr"] == best])
    return pd.concat(chosen).assign(arm=lambda f: f["strategy"], arm_label=lambda f: f["strategy"])


def strategy_table(runs: pd.DataFrame, setting: str) -> Table:
    reference = by_seed(runs[runs["strategy"] == "LoRA r=8"], "loss")
    largest = runs.groupby("strategy")["lora_params"].mean().max()
    groups = list(runs.groupby("strategy", sort=False))
    # losses negated: the comparison's "better" (a positive difference) then means a lower loss
    comparisons = [stats.paired_comparison({s: -v for s, v in by_seed(g, "loss").items()},
                                           {s: -v for s, v in reference.items()}) for _, g in groups]
    comparisons = stats.holm_adjust(comparisons)
    rows = []
    for (name, group), c in zip(groups, comparisons):
        loss = stats.summarize(list(by_seed(group, "loss").values()))
        params = group["lora_params"].mean()
        is_reference = name == "LoRA r=8"
        delta = "—" if is_reference or not c.n_pairs else (
            f"{-c.delta:+.4f} [{-c.ci_high:+.4f}, {-c.ci_low:+.4f}]" if c.n_pairs > 1 else f"{-c.delta:+.4f}")
        rows.append([name, f"{group['lr'].iloc[0]:g}", str(loss.n),
                     f"{loss.mean:.4f}" + ("" if math.isnan(loss.std) else f" ± {loss.std:.4f}"),
                     f"{math.exp(loss.mean):.2f}", f"{params:,.0f}", f"{100 * (1 - params / largest):.1f}", delta,
                     "—" if is_reference else (f"n<3 (n={c.n_pairs})" if c.p_holm is None else p_value(c.p_holm)),
                     "—" if is_reference else stats.SHORT_VERDICT.get(c.verdict, c.verdict)])
    columns = ["Strategy", "lr", "n", "Eval loss", "Perplexity", "LoRA params", "Reduction (%)",
               "Δ loss vs LoRA r=8 [95% CI]", "p (Holm)", "Verdict"]
    return Table(f"lm_strategy_{slug(setting)}", f"Instruction tuning: strategy comparison — {setting}", columns, rows,
                 [NOTE])


def _generations(runs: pd.DataFrame) -> list[str]:
    """The stored greedy responses of the first seed's LoRA r=8 and BA-LoRA runs."""
    lines = []
    for name in ("LoRA r=8", "BA-LoRA"):
        chosen = runs[runs["strategy"] == name].sort_values("seed")
        if chosen.empty:
            continue
        result = chosen["result"].iloc[0]
        for g in result.get("generations", [])[:2]:
            lines.append(f"{name}, seed {result['config']['seed']}: “{g['instruction']}” → “{g['generated']}” "
                         f"(reference: “{g['reference']}”)")
    return lines


def lm_section(frame: pd.DataFrame, out: Path, missing: list[str]) -> list[Block]:
    """Heading, table, figures and generations for every (model, dataset) of causal-LM runs in `frame`."""
    blocks: list[Block] = [Heading(2, "Instruction tuning (seed 002)"), Paragraph(
        "Causal-LM fine-tuning on instruction data: fixed ranks, attention-only and MLP-only placements, and the "
        "adaptive strategies at the budget of fixed rank 8 on all layers, by evaluation loss and perplexity.")]
    for (model, dataset), runs in selected_runs(frame).groupby(["model", "dataset"], sort=False):
        setting = f"{model} · {dataset}"
        figs: list[Figure] = figures.params_loss_bars(runs, setting, out) + figures.rank_per_layer(runs, setting, out)
        if len(figs) < 2:
            missing.append(f"Rank-per-layer figure, {setting}: no allocations recorded.")
        blocks += [strategy_table(runs, setting), *figs]
        if generations := _generations(runs):
            blocks += [Paragraph("Greedy responses to fixed test prompts, stored with each run:"), Bullets(generations)]
    return blocks

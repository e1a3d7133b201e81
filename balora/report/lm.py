"""Seed 002's instruction-tuning study (causal-LM runs): what is its own (strategy labels, the learning rate chosen on
validation loss, perplexity, the cost per phase, stored generations) around the comparisons every table makes.

Each strategy (method, placement, fixed rank, decay direction) enters the table and figures at one
learning rate, chosen on validation loss, never on test loss: a tuned sweep (the `lm` preset) selected
it on its tuning seeds (`balora.tuning`), so its evaluation runs have that rate only; runs of a sweep
that ran every rate of a grid on every seed are narrowed here to the rate with the lowest mean final
validation loss over those seeds. The comparison with LoRA r=8 on all layers is the one every table makes
(`analysis.group_rows`, `stats.paired_comparison`) over the task's metric, test loss: Δ is the paired per-seed
difference in nats, and the verdict reads its direction from the metric (negative is better). The table's
comparison cells are the shared ones (`tables`), and the claims word each comparison by its verdict with the
shared phrases (`claims`): better ("significantly lower loss") only where the Holm-adjusted paired test says so,
worse where the loss is higher, equivalent within the margin (±0.01 nats unless the runs' spec declares another)
where the equivalence test shows a tie, and otherwise inconclusive with the minimum detectable effect; they go
into the report and, LaTeX-escaped, into the paper's `lm.tex`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from balora.report import figures, stats
from balora.report.analysis import Row, group_rows, holm_rows
from balora.report.claims import counted, evidence, margin_text, mdes_text, p_text, strategy_verdicts, verdict_phrase
from balora.report.document import Block, Bullets, Figure, Heading, Paragraph, Table, slug
from balora.report.runs import budget_label, by_seed, method_name, setting_words
from balora.report.stats import LOSS
from balora.report.tables import (
    CI_LEVEL,
    CI_RULE,
    COST_NOTE,
    MDE_NOTE,
    REFERENCE_CELL,
    TOST_NOTE,
    ci_levels,
    compared,
    cost_cells,
    cost_notes,
    delta_text,
    margin_note,
    marked,
    mde_cell,
    p_value,
    reduced,
    reduction,
    render,
    timed_phases,
    verdict_cell,
)
from balora.tuning import cell_key

BUDGET_RANK = 8  # the strategies' budget: LoRA r=8's on every projection
REFERENCE, PROPOSED = f"LoRA r={BUDGET_RANK}", "BA-LoRA"
ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj", "c_attn"}
COLUMN_NOTES = {  # what each column of the strategy table means, shown while the column is
    "lr": "Learning rate: selected per strategy on final validation loss (the lowest mean over the tuning seeds, "
          "see the appendix; for runs of an untuned grid, over the seeds shown).",
    "Eval loss": "Eval loss: token-weighted test cross-entropy on response tokens, mean ± std over seeds.",
    "Perplexity": "Perplexity = e^loss of the mean.",
    "LoRA params": "LoRA params: trained; where the final count differs (AdaLoRA prunes its ranks during training), "
                   "it follows in brackets.",
    "Reduction (%)": "Reduction: 1 − LoRA params / the largest in the table.",
    "Δ loss vs LoRA r=8 [CI]": "Δ loss: mean per-seed difference against LoRA r=8 on all layers (negative: lower "
                               "loss).",
    "p (Holm)": "p (Holm): paired t-test, Holm-adjusted over the table; n<3 where fewer than 3 seeds match.",
    "p (TOST, Holm)": TOST_NOTE,
    "MDE (nats)": MDE_NOTE.replace("MDE:", "MDE (nats):"),
}
# how to read the interval and the verdict: the report's caption says it, the paper's protocol once for every table
# (so without the p columns' names, which the paper's table does not show)
LEGEND = (f"Δ loss's interval: {CI_RULE}. Verdict at α = 0.05: better or worse where the Holm-adjusted paired t-test "
          "rejects no difference (the direction from Δ); else equivalent within ±margin where the Holm-adjusted "
          "equivalence test rejects a difference as large as the margin; else inconclusive, with the MDE. Better "
          "means a significantly lower test loss.")
COST_PHASES = ("importance", "train", "eval", "generate")


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


def study_name(model: str, dataset: str) -> str:
    """A study's setting as its tables name it: its model and data (the strategies differ in their targets)."""
    return f"{model} · {dataset}"


def tuning_strategies(frame: pd.DataFrame) -> dict[str, str]:
    """{tuning cell: its strategy (`strategy_label`)} for the causal-LM evaluation runs of `frame`: the selection
    table names a cell as the strategy table names its runs."""
    return {cell_key(r["config"]): strategy_label(r["config"]) for r in frame["result"]}


def tuning_studies(frame: pd.DataFrame) -> dict[str, str]:
    """{tuning cell: its study (`study_name`)} for the causal-LM evaluation runs of `frame`."""
    return {cell_key(r["config"]): study_name(model, dataset)
            for r, model, dataset in zip(frame["result"], frame["model"], frame["dataset"])}


def _final_validation_loss(result: dict) -> float:
    points = result.get("curves", {}).get("validation") or []
    return float(points[-1][1][LOSS.name]) if points else math.nan


def selected_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Each strategy's runs at its learning rate chosen on validation loss, with `strategy` and `lr` columns."""
    frame = frame.assign(strategy=[strategy_label(r["config"]) for r in frame["result"]],
                         lr=[float(r["config"]["learning_rate"]) for r in frame["result"]],
                         validation_loss=[_final_validation_loss(r) for r in frame["result"]])
    chosen = []
    for _, runs in frame.groupby(["model", "dataset", "strategy"], sort=False):
        best = runs.groupby("lr")["validation_loss"].mean().idxmin()
        chosen.append(runs[runs["lr"] == best])
    chosen = pd.concat(chosen)
    return chosen.assign(arm=[_arm(r["config"]) for r in chosen["result"]], arm_label=chosen["strategy"])


def _arm(config: dict) -> str:
    """A run's arm in the figures: its method where the strategy is the method's plain one (LoRA r=8 on all
    layers, BA-LoRA, ...), else the method with the strategy, so that every strategy keeps its method's
    colour and another strategy of the same method gets its own dash pattern (`figures.arm_style`)."""
    strategy = strategy_label(config)
    return config["method"] if strategy == strategy_label({"method": config["method"]}) else \
        f"{config['method']} ({strategy})"


def compare_with_lora(runs: pd.DataFrame) -> list[Row]:
    """Each strategy's runs as a row, from the lowest mean test loss (the order of the tables' rows and the claims'
    lists), compared with LoRA r=8's in test loss on matched seeds as every table compares (`analysis.group_rows`:
    Δ = strategy − LoRA r=8, better is lower by the loss's direction) and Holm-adjusted over the table; one group,
    the strategies' budget (a hypothesis's case, `criteria`). Only LoRA r=8 on all layers is the reference: without
    it nothing is compared with LoRA."""
    reference = _arm({"method": "lora"}) if (runs["strategy"] == REFERENCE).any() else None
    rows = holm_rows(group_rows(budget_label(BUDGET_RANK), runs, reference, LOSS))
    return sorted(rows, key=lambda r: r.runs[LOSS.name].mean())


def lm_comparisons(frame: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, list[Row]]]:
    """{setting: (its runs, each strategy at its learning rate chosen on validation loss (`selected_runs`); those
    compared with LoRA r=8 (`compare_with_lora`))} for every (model, dataset) of the causal-LM runs in `frame`."""
    return {study_name(model, dataset): (runs, compare_with_lora(runs))
            for (model, dataset), runs in selected_runs(frame).groupby(["model", "dataset"], sort=False)}


def _compared_with_lora(rows: list[Row]) -> dict[str, stats.Comparison]:
    """{strategy: its comparison with LoRA r=8} for every strategy but LoRA r=8 itself."""
    return {r.label: r.comparison for r in rows if r.comparison is not None}


def _has_reference(rows: list[Row]) -> bool:
    return any(r.comparison is None for r in rows)


STRATEGY_COLUMNS = ["Method", "lr", "n", "Eval loss", "Perplexity", "LoRA params", "Reduction (%)",
                    "Δ loss vs LoRA r=8 [CI]", "p (Holm)", "p (TOST, Holm)", "MDE (nats)", "Verdict"]


def strategy_table(rows: list[Row], setting: str) -> Table:
    """The strategy comparison, its comparison cells those of every table (`tables.COLUMNS`), in nats of test loss."""
    extra = {"lr": lambda r: f"{r.runs['lr'].iloc[0]:g}",
             "Perplexity": lambda r: f"{math.exp(r.runs[LOSS.name].mean()):.2f}",
             "LoRA params": _lora_params, **reduction(rows),
             "Δ loss vs LoRA r=8 [CI]": compared(delta_text, REFERENCE_CELL),
             "p (Holm)": compared(marked(lambda c: c.p_holm), "—"),
             "p (TOST, Holm)": compared(lambda c: p_value(c.p_tost_holm), "—"), "MDE (nats)": compared(mde_cell, "—"),
             "Verdict": compared(verdict_cell, REFERENCE_CELL)}
    runs = pd.concat([r.runs for r in rows])
    columns = reduced(STRATEGY_COLUMNS, extra)
    return Table(f"lm_strategy_{slug(setting)}", f"Instruction tuning: strategy comparison — {setting}",
                 ["Strategy", *columns[1:]], render(rows, columns, extra, lead=False),
                 margin_note(_compared_with_lora(rows).values(), runs["sweep"]), LEGEND, column_notes=COLUMN_NOTES,
                 # the paper's: the interval excludes 0 exactly when p (Holm) rejects, so it is left to the report
                 compact=["Strategy", "Eval loss", "LoRA params", "Δ loss vs LoRA r=8 [CI]", "Verdict"],
                 detail={CI_LEVEL: ci_levels(rows)})


def _lora_params(row: Row) -> str:
    """Trained LoRA parameters, and the final count where it differs (AdaLoRA prunes)."""
    params, final = row.runs["lora_params"].mean(), row.runs["lora_final"].mean()
    return f"{params:,.0f}" + ("" if final == params else f" (final {final:,.0f})")


def cost_table(rows: list[Row], setting: str) -> Table:
    """Each strategy's mean seconds per phase, total time over LoRA r=8's run with the same seed and machine,
    and peak memory: the study's own measure of what BA-LoRA's importance pass adds (`benchmarks/lm.py` times
    the phases alone, on an otherwise idle machine)."""
    runs = pd.concat([r.runs for r in rows])
    reference = runs[runs["strategy"] == REFERENCE]
    phases = timed_phases(runs, COST_PHASES)
    cells = [[row.label, str(len(row.runs)), *cost_cells(row.runs, reference, phases, digits=1)] for row in rows]
    columns = ["Strategy", "Runs", *(f"{p} (s)" for p in phases), "Total (s)", f"Total / {REFERENCE} (×)",
               "Peak RSS (MiB)"]
    return Table(f"lm_cost_{slug(setting)}", f"Instruction tuning: cost — {setting}", columns, cells, [COST_NOTE],
                 compact=["Strategy", "Runs", "Total (s)", f"Total / {REFERENCE} (×)", "Peak RSS (MiB)"],
                 column_notes=cost_notes(phases, REFERENCE, "the strategy", "the same seed on the same machine",
                                         " Train includes the validation points along training, eval is the test set."))


def _loss_summary(runs: pd.DataFrame) -> str:
    loss = stats.summarize(list(by_seed(runs, LOSS.name).values()))
    spread = "" if math.isnan(loss.std) else f" ± {loss.std:.4f}"
    return (f"{loss.mean:.4f}{spread} (perplexity {math.exp(loss.mean):.2f}, n = {loss.n}, "
            f"{runs['lora_params'].mean():,.0f} LoRA parameters)")


def _verdict_words(c: stats.Comparison, name: str) -> str:
    """The verdict on a loss comparison with LoRA r=8: lower loss is better; a loss or a tie is said as such."""
    return verdict_phrase(c, name, REFERENCE, better=f"{name}'s test loss is significantly lower than {REFERENCE}'s",
                          worse=f"{name}'s test loss is significantly higher than {REFERENCE}'s: {name} does worse here")


def untrained_reference(rows: list[Row]) -> list[str]:
    """How far training moved the loss, against which a margin in nats can be read: LoRA r=8's B = 0 leaves the
    base model unchanged, so its step-0 validation point (every evaluation run scores one) is the untrained
    model's, and the drop to its final validation loss is said in nats and in equivalence margins. None without
    LoRA r=8's runs, a step-0 point in each of them, or a comparison (whose margin it is)."""
    reference = next((r for r in rows if r.comparison is None and r.label == REFERENCE), None)
    compared = list(_compared_with_lora(rows).values())
    if reference is None or not compared:
        return []
    curves = [r.get("curves", {}).get("validation") or [] for r in reference.runs["result"]]
    if not all(curve and curve[0][0] == 0 for curve in curves):
        return []
    start = sum(curve[0][1][LOSS.name] for curve in curves) / len(curves)
    end = sum(curve[-1][1][LOSS.name] for curve in curves) / len(curves)
    margin = compared[0].margin.value
    return [f"How far training moved the loss: before its first step, where B = 0 leaves the base model "
            f"unchanged, {REFERENCE} scores a validation loss of {start:.4f} nats, and {end:.4f} after training: "
            f"{start - end:.2f} nats lower, {(start - end) / margin:.0f} times the ±{margin_text(compared[0])} margin "
            "(the test loss is measured after training only)."]


def lm_claims(rows: list[Row], setting: str) -> list[str]:
    """Statistics-worded sentences: BA-LoRA against LoRA r=8 in detail, then every strategy's verdict."""
    if not _has_reference(rows):
        return [f"{setting}: there are no {REFERENCE} runs, so no strategy is compared with LoRA."]
    runs = {r.label: r.runs for r in rows}
    compared = _compared_with_lora(rows)
    sentences = []
    if (c := compared.get(PROPOSED)) is not None:
        text = (f"{setting}: {PROPOSED} reached a test loss of {_loss_summary(runs[PROPOSED])} against {REFERENCE}'s "
                f"{_loss_summary(runs[REFERENCE])}")
        sentences.append(f"{text}{evidence(c, f'Δ loss = {c.metric.signed(c.delta)}')}: {_verdict_words(c, PROPOSED)}.")
    if compared:
        best = rows[0].label  # rows run from the lowest mean test loss
        sentences.append(strategy_verdicts(
            setting, REFERENCE, list(compared.items()), "test loss",
            f"The lowest mean test loss is {best}'s: {_loss_summary(runs[best])}.",
            "better (significantly lower loss)", "worse (significantly higher loss)"))
    return sentences + untrained_reference(rows)


def _proposed_against_lora(rows: list[Row]) -> stats.Comparison | None:
    """BA-LoRA's comparison with LoRA r=8, the one the bottom line states (None without both arms)."""
    c = _compared_with_lora(rows).get(PROPOSED)
    return c if c is not None and _has_reference(rows) else None


def bottom_line(rows: list[Row], setting: str) -> list[str]:
    """The study's bottom line, for the abstract and the summary: BA-LoRA against LoRA r=8 in one sentence
    (none without both)."""
    c = _proposed_against_lora(rows)
    if c is None:
        return []
    numbers = (f" (Δ test loss {c.metric.signed(c.delta)}, {100 * c.ci_level:.1f}% CI {c.metric.signed(c.ci_low)} to "
               f"{c.metric.signed(c.ci_high)}, Holm-adjusted {p_text(c.p_holm)}, equivalence test Holm-adjusted "
               f"{p_text(c.p_tost_holm)})" if c.tested else "")
    return [f"In instruction tuning ({setting}, at the budget of LoRA r={BUDGET_RANK} on every projection), {PROPOSED} against "
            f"{REFERENCE}{numbers}: {_verdict_words(c, PROPOSED)}."]


def _study(rows: list[Row]) -> str:
    """The study's model and data in words: "smollm2 on critic instructions"."""
    first = rows[0].runs.iloc[0]
    return setting_words(first["model"], first["dataset"])


def answer(rows: list[Row]) -> list[str]:
    """`bottom_line` in plain words, for the paper's abstract and conclusion: the model and data, Δ with its CI and
    the four-word verdict (with its MDE where inconclusive), without the tests behind it (the appendix's table)."""
    c = _proposed_against_lora(rows)
    if c is None:
        return []
    if not c.tested:
        return [f"In instruction tuning of {_study(rows)}, with every projection adapted, {PROPOSED} against "
                f"{REFERENCE} at its budget: {_verdict_words(c, PROPOSED)}."]
    # a sentence, not "…, BA-LoRA against LoRA r=8 at its budget: Δ = …" (a reviewer's read, 2026-12-07)
    return [f"In instruction tuning of {_study(rows)}, with every projection adapted, {PROPOSED}'s test loss differs "
            f"from {REFERENCE}'s at its budget by {c.metric.signed(c.delta)} nats ({100 * c.ci_level:.1f}% CI "
            f"{c.metric.signed(c.ci_low)} to {c.metric.signed(c.ci_high)}): {c.verdict_label}."]


def finding(rows: list[Row]) -> list[str]:
    """The strategy comparison's finding in one sentence, for the paper, whose table has every number: BA-LoRA's
    verdict, the strategies better or worse than LoRA r=8 by name, and how many of the others are equivalent or
    inconclusive."""
    compared = _compared_with_lora(rows)
    if not compared or not _has_reference(rows):
        return []
    ours = compared.pop(PROPOSED, None)
    lead = f"{PROPOSED} is {ours.verdict_label}" if ours is not None and ours.tested else ""

    def clause(verdict: str, word: str, names_them: bool) -> tuple[int, str]:
        names = [name for name, c in compared.items() if c.verdict == verdict]
        verb = "is" if len(names) == 1 else "are"
        # an inconclusive count with its MDEs: without them it reads as a tie
        mdes = [c for c in compared.values() if c.verdict == verdict == stats.INCONCLUSIVE]
        detail = [", ".join(names)] if names_them else [mdes_text(mdes)] if mdes else []
        return len(names), f"{{}} {verb} {word}" + "".join(f" ({d})" for d in detail)

    margin = next((c for c in compared.values() if c.verdict == stats.EQUIVALENT), None)
    others = counted([clause(stats.BETTER, "better", True), clause(stats.WORSE, "worse", True),
                      clause(stats.EQUIVALENT, f"equivalent within ±{margin_text(margin)}" if margin else "", False),
                      clause(stats.INCONCLUSIVE, "inconclusive", False)])
    rest = f"of the other {len(compared)} strategies, {others}" if others else ""
    if not lead and not rest:
        return []
    return [f"In instruction tuning of {_study(rows)}, against {REFERENCE} in test loss: "
            f"{'; '.join(part for part in (lead, rest) if part)}."]


def _generations(runs: pd.DataFrame) -> list[str]:
    """The stored greedy responses of the first seed's LoRA r=8 and BA-LoRA runs."""
    lines = []
    for name in (REFERENCE, PROPOSED):
        chosen = runs[runs["strategy"] == name].sort_values("seed")
        if chosen.empty:
            continue
        result = chosen["result"].iloc[0]
        for g in result.get("generations", [])[:2]:
            lines.append(f"{name}, seed {result['config']['seed']}: “{g['instruction']}” → “{g['generated']}” "
                         f"(reference: “{g['reference']}”)")
    return lines


def lm_section(comparisons: dict[str, tuple[pd.DataFrame, list[Row]]], out: Path,
               missing: list[str]) -> tuple[list[Block], list[str], list[str]]:
    """Heading, claims, table, figures and generations for every setting of `lm_comparisons`; the claims alone
    (the paper's sentences); and each study's bottom line (`bottom_line`)."""
    blocks: list[Block] = [Heading(2, "Instruction tuning (seed 002)"), Paragraph(
        "Causal-LM fine-tuning on instruction data: fixed ranks, attention-only and MLP-only placements, and the "
        "adaptive strategies at the budget of fixed rank 8 on all layers, by evaluation loss and perplexity.")]
    sentences: list[str] = []
    bottom_lines: list[str] = []
    for setting, (runs, rows) in comparisons.items():
        claims = lm_claims(rows, setting)
        figs: list[Figure] = figures.params_loss_bars(runs, setting, out) + figures.rank_per_layer(runs, setting, out)
        if len(figs) < 2:
            missing.append(f"Rank-per-layer figure, {setting}: no allocations recorded.")
        blocks += [Bullets(claims), strategy_table(rows, setting), *figs, cost_table(rows, setting)]
        sentences += claims
        bottom_lines += bottom_line(rows, setting)
        if generations := _generations(runs):
            blocks += [Paragraph("Greedy responses to fixed test prompts, stored with each run:"), Bullets(generations)]
    return blocks, sentences, bottom_lines

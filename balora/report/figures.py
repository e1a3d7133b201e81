"""The report's figures, each saved as PNG (for HTML/Markdown) and PDF (for the paper).

matplotlib's object API only (no pyplot): no display backend, no global figure registry to leak,
and the style applies through `rc_context` instead of changing the caller's rcParams.

Colours are Okabe-Ito, safe for the common colour-vision deficiencies; BA-LoRA's ablations share
its colour and differ in line style and marker, so a figure also reads in greyscale. Legends sit
below the panels so they never cover data, and every figure is saved with a tight bounding box.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as Canvas
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from balora import method_registry
from balora.report import stats
from balora.report.document import Figure, slug
from balora.report.runs import allocation_frame, arm_order, budget_label, dynamic_runs, module_label
from balora.tasks import number

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "grey": "#7F7F7F"}
HEATMAP_ARMS = 6  # method column groups per heatmap row
# A rank heatmap is drawn at the paper's text width or narrower, so the page prints its type at the size drawn:
# cells of this size (inches) hold a rank such as "10.3" at HEATMAP_FONT points, and HEATMAP_MARGIN is the width
# of the module-type names beside them and of the colour scale
TEXT_WIDTH = 6.5  # inches: the paper's letter page less its 1 in margins
PAD = 0.05  # inches of white the saved box keeps around the drawing
DRAW_WIDTH = TEXT_WIDTH - 2 * PAD  # the widest a figure is drawn: with its padding, the text width
LEGEND_ROW = 0.2  # inches: the height of a row of the legend below the panels
HEATMAP_CELL, HEATMAP_FONT, HEATMAP_MARGIN = (0.42, 0.26), 8, 2.3
SEQUENCE = ["sky", "orange", "green", "vermillion", "blue", "purple", "black", "yellow"]  # budgets, other arms
MAJORITY_LABEL, FRONT_LABEL = "majority-class rate (test)", "Pareto front"
REFERENCE_LINES = (FRONT_LABEL, MAJORITY_LABEL)
MAJORITY_STYLE = {"color": OKABE_ITO["grey"], "linestyle": (0, (4, 2)), "linewidth": 1.2}

# Whether figures are drawn and saved. Off, each figure function still returns its Figure (name, title,
# caption, paths), so the report's text is the same: what checking a committed report's text needs.
RENDER = contextvars.ContextVar("render_figures", default=True)

STYLE = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8.5,
         "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42}  # 42: TrueType, editable PDF


def styled(draw: Callable[..., list[Figure]]) -> Callable[..., list[Figure]]:
    """Run a figure function under the report's style (sizes are read when artists are created)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> list[Figure]:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def arm_style(arm: str) -> dict:
    """Line/marker style of an arm; variants of a known method keep its colour."""
    method = _method(arm)
    known = method_registry.find(method)  # its registered style; an unknown method: a colour from its name (crc32,
    # unlike hash(), is the same in every process)
    colour, line, marker = known.style if known is not None else (
        SEQUENCE[zlib.crc32(method.encode()) % len(SEQUENCE)], "-.", "h")
    if method != arm:  # a variant: same colour, its own dash pattern
        line = (0, (1, 1, 3, 1))
    return {"color": OKABE_ITO[colour], "linestyle": line, "marker": marker}


def _save(fig: Canvas, out_dir: Path, name: str, title: str, caption: str) -> Figure:
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    if not RENDER.get():
        return Figure(name, title, caption, png, pdf, 0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Constrained layout spaces the panels; the tight box also keeps labels wider than their panel.
    # Laying out once and passing the box saves a draw per file.
    fig.draw_without_rendering()
    box = fig.get_tightbbox().padded(PAD)
    fig.set_layout_engine("none")  # frozen: the box must still fit when the files are drawn
    fig.savefig(png, dpi=150, bbox_inches=box)
    fig.savefig(pdf, bbox_inches=box)
    return Figure(name, title, caption, png, pdf, box.width)


def _grid(rows: int, cols: int, size: tuple[float, float], **options) -> tuple[Canvas, np.ndarray]:
    fig = Canvas(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **options)


def _panels(count: int, width: float = 3.9, height: float = 3.0, columns: int = 3) -> tuple[Canvas, list]:
    """`count` panels in rows of `columns`, each at most width × height and the row at most the paper's text width
    (so the page prints the figure at the size drawn, its type at the style's sizes): a full row narrows its panels
    but keeps their height, which the axis labels beside them need."""
    cols = min(count, columns)
    rows = math.ceil(count / cols)
    scale = min(1.0, DRAW_WIDTH / (width * cols))
    fig, axes = _grid(rows, cols, (width * scale * cols, height * rows))
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _legend_below(fig: Canvas, axes: list, columns: int = 4) -> None:
    """One legend for all panels, below them (labels deduplicated in first-seen order)."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    for reference in REFERENCE_LINES:  # methods first, reference lines last
        if reference in entries:
            entries[reference] = entries.pop(reference)
    if entries:
        # as many columns as fit the page, the figure widened to hold them (never past the page), and as much
        # height added as the legend's rows take, so that they do not squeeze the panels above them
        widest = max(_legend_entry_width(label) for label in entries)
        ncols = max(1, min(columns, len(entries), int(DRAW_WIDTH // widest)))
        fig.set_figwidth(max(fig.get_figwidth(), min(DRAW_WIDTH, ncols * widest)))
        fig.set_figheight(fig.get_figheight() + LEGEND_ROW * math.ceil(len(entries) / ncols))
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=ncols, frameon=False)


def _legend_entry_width(label: str) -> float:
    """About how wide (inches) a legend entry sets: its handle and gaps, and its label (a character of the font
    about half its size wide)."""
    return 0.75 + len(label) * 0.5 * STYLE["legend.fontsize"] / 72


def _budgets(frame: pd.DataFrame) -> list[tuple[float, pd.DataFrame, str]]:
    return [(b, cell, budget_label(b, int(cell["budget_params"].iloc[0]))) for b, cell in frame.groupby("budget")]


def _curve_arms(frame: pd.DataFrame) -> list[str]:
    """Curves compare the main methods; with none of them present, whatever arms there are."""
    arms = arm_order(frame["arm"])
    main = [a for a in arms if _method(a) in method_registry.group("main")]
    return main or arms


def _is_adaptive(runs: pd.DataFrame) -> bool:
    modules = allocation_frame(runs)
    return not modules.empty and modules.groupby("run")["value"].nunique().max() > 1


def _block_layout(per_row: int, blocks: int) -> str:
    """How a rank heatmap lays out its methods' blocks, as its caption says it (a caption that said "side by side"
    under blocks stacked one above another misled a reader)."""
    if blocks == 1:
        return "one block"
    if per_row == 1:
        return "the blocks stacked one above another"
    return "the blocks side by side" + ("" if per_row >= blocks else f", {per_row} to a row")


@styled
def rank_heatmaps(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    """Seed 000 Exp. 3: mean rank per module type × layer for every arm with non-uniform ranks, one figure per
    budget. Arms sit side by side in one matrix (a column group each, as many per row as fit the paper's text width
    at `HEATMAP_CELL`), so their ranks compare at a glance; module types are the rows, so their names read across
    once per row of arms. The figure is no wider than the page, so its type is printed at the size it is drawn (at
    least 8 pt). Each figure's colour scale runs from 0 to its own largest rank, so a small budget's ranks are not
    all one dark colour."""
    budgets = []
    for _, cell, label in _budgets(frame):
        arms = [a for a in arm_order(cell["arm"]) if _is_adaptive(cell[cell["arm"] == a])]
        grids = [allocation_frame(cell[cell["arm"] == a]).pivot_table("value", "kind", "layer", "mean") for a in arms]
        kept = _first_of_each(grids)
        arms, grids = [arms[i] for i in kept], [grids[i] for i in kept]
        if arms:
            budgets.append((label, _labels(cell, arms), grids, {_method(a) for a in arms}))
    figures = []
    for label, names, grids, methods in budgets:
        top = max(float(g.max().max()) for g in grids)
        kinds, layers = grids[0].shape
        per_row = max(1, min(HEATMAP_ARMS, int((TEXT_WIDTH - HEATMAP_MARGIN) // (HEATMAP_CELL[0] * layers))))
        rows = [(names[i:i + per_row], grids[i:i + per_row]) for i in range(0, len(names), per_row)]
        widths = [sum(g.shape[1] for g in row) for _, row in rows]
        fig = Canvas(figsize=(min(DRAW_WIDTH, HEATMAP_MARGIN + HEATMAP_CELL[0] * max(widths)),
                              (HEATMAP_CELL[1] * kinds + 0.7) * len(rows) + 0.3), layout="constrained")
        grid = fig.add_gridspec(len(rows), max(widths))  # one grid column per matrix column
        axes = []
        for index, ((row_names, row_grids), width) in enumerate(zip(rows, widths)):
            axes.append(fig.add_subplot(grid[index, :width]))  # a shorter last row keeps the cell width
            image = _heatmap(axes[-1], row_names, row_grids, top)
        axes[-1].set_xlabel("layer (0 = input side)")
        fig.colorbar(image, ax=axes, label="adapter rank (mean over seeds)", shrink=0.9)  # AdaLoRA's, EVA's too
        figures.append(_save(fig, out_dir, f"rank_heatmap_{slug(setting)}__{slug(label)}",
                             f"Rank allocation — {setting}, {label}",
                             "Rank per module after training" + _final_ranks(methods) + ", mean over seeds, by "
                             "module type (rows) and layer (columns); each method is a block of columns, named above "
                             f"it, {_block_layout(per_row, len(names))}; methods with uniform ranks, and arms whose ranks "
                             "repeat an earlier block's, are omitted."))
    return figures


# what "rank after training" is for a method whose ranks move while it trains, said where the figure draws it
FINAL_RANK = {"adalora": "AdaLoRA: unpruned singular values", "eva": "EVA: redistributed ranks"}


def _method(arm: str) -> str:
    """An arm's method: 'adalora (r=4)' → 'adalora'."""
    return arm.split(" (")[0]


def _final_ranks(methods: set[str]) -> str:
    said = [words for method, words in FINAL_RANK.items() if method in methods]
    return f" ({'; '.join(said)})" if said else ""


def _heatmap(ax, names: list[str], grids: list[pd.DataFrame], top: float):
    """Grids side by side in one image, white rules between them, method names on top."""
    matrix = pd.concat(grids, axis=1).to_numpy()
    image = ax.imshow(matrix, cmap="cividis", vmin=0, vmax=top, aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}", ha="center", va="center",
                fontsize=HEATMAP_FONT, color="white" if value < 0.6 * top else "black")
    ax.set_xticks(range(matrix.shape[1]), [layer for g in grids for layer in g.columns])
    ax.set_yticks(range(matrix.shape[0]), grids[0].index)
    ax.set_ylabel("module type")
    widths = np.array([g.shape[1] for g in grids])
    for edge in np.cumsum(widths)[:-1]:
        ax.axvline(edge - 0.5, color="white", linewidth=3)
    groups = ax.secondary_xaxis("top")
    # a method's name wraps to its group's width (a character of the font is about half its size wide)
    characters = int(HEATMAP_CELL[0] * widths.min() * 72 / (0.55 * HEATMAP_FONT))
    groups.set_xticks(np.cumsum(widths) - widths / 2 - 0.5, [_wrap(n, characters) for n in names],
                      fontsize=HEATMAP_FONT)
    groups.tick_params(length=0)
    return image


def _labels(frame: pd.DataFrame, arms: list[str]) -> list[str]:
    return [str(frame.loc[frame["arm"] == a, "arm_label"].iloc[0]) for a in arms]


def _wrap(text: str, width: int) -> str:
    """Break `text` into lines of at most about `width` characters, at spaces or after '=' (so that
    `(strategy=proportional)` breaks between option and value, not inside a word)."""
    lines = [""]
    for token in re.split(r"(?<==)|(?<= )", text):
        if lines[-1] and len(lines[-1].rstrip()) + len(token.rstrip()) > width:
            lines.append("")
        lines[-1] += token
    return "\n".join(line.strip() for line in lines)


@styled
def _first_of_each(tables: list[pd.DataFrame]) -> list[int]:
    """The indices of the tables that equal no earlier one: a lever that leaves an arm's ranks alone (LoRA+, a
    scaling rule) would repeat that arm's panel, and the figure would outgrow its page for nothing."""
    return [i for i, table in enumerate(tables) if not any(table.equals(tables[j]) for j in range(i))]


def importance_vs_rank(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    """Importance score against allocated rank, one panel per arm with importance scores, colour = budget;
    Spearman's ρ per run, mean ± std over runs, under each panel's title."""
    arms = [a for a in arm_order(frame["arm"])
            if (m := allocation_frame(frame[frame["arm"] == a])).shape[0] and m["importance"].nunique() > 1]
    scores = [allocation_frame(frame[frame["arm"] == a], column="rank")[["importance", "rank"]].reset_index(drop=True)
              for a in arms]
    arms = [arms[i] for i in _first_of_each(scores)]
    if not arms:
        return []
    fig, axes = _panels(len(arms), width=3.6, height=3.2, columns=2)  # two a row: room for the log axis labels
    for ax, arm in zip(axes, arms):
        runs = frame[frame["arm"] == arm]
        rhos = []
        for index, (_, cell, label) in enumerate(_budgets(runs)):
            modules = allocation_frame(cell, column="rank")
            rho = stats.summarize([stats.spearman(g["importance"].tolist(), g["rank"].tolist())
                                   for _, g in modules.groupby("run")])
            rhos.append(f"ρ = {number(rho.mean, 2)}" + ("" if math.isnan(rho.std) else f" ± {rho.std:.2f}")
                        + f" at {label.split(' (')[0]}")
            ax.scatter(modules["importance"], modules["rank"], s=14, alpha=0.6, label=label,
                       color=OKABE_ITO[SEQUENCE[index % len(SEQUENCE)]], marker="os^D"[index % 4])
        log = bool((allocation_frame(runs)["importance"] > 0).all())
        if log:  # scores span decades; label 1-2-5 steps only, so the labels never run into each other
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0e}".replace("e-0", "e-")))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("importance (unitless" + (", log scale)" if log else ")"))
        ax.set_ylabel("allocated rank")
        ax.set_title("\n".join([runs["arm_label"].iloc[0], *rhos]), fontsize=8.5)
    _legend_below(fig, axes)
    return [_save(fig, out_dir, f"importance_rank_{slug(setting)}", f"Importance vs allocated rank — {setting}",
                  "Each point is one module in one run; ρ is Spearman's rank correlation between importance and "
                  "rank per run, mean ± std over runs, per budget. An arm whose scores and ranks repeat an earlier "
                  "panel's is omitted.")]


def _mean_sd(frame: pd.DataFrame, column: str, scale: float = 100.0) -> tuple[float, float]:
    summary = stats.summarize(frame[column].tolist())
    return scale * summary.mean, 0.0 if math.isnan(summary.std) else scale * summary.std


def _majority_line(ax, frame: pd.DataFrame) -> None:
    ax.axhline(100 * frame["majority_rate"].mean(), label=MAJORITY_LABEL, **MAJORITY_STYLE)


@styled
def fewshot_curves(frame: pd.DataFrame, family: str, out_dir: Path) -> list[Figure]:
    """Seed 000 Exp. 2: accuracy against shots per class, one panel per budget, error bars = std over seeds."""
    budgets = [(b, c, lbl) for b, c, lbl in _budgets(frame) if c["shots"].nunique() >= 2]
    if not budgets:
        return []
    fig, axes = _panels(len(budgets), width=4.0, height=3.1)
    for ax, (_, cell, label) in zip(axes, budgets):
        arms = [a for a in _curve_arms(cell) if cell.loc[cell["arm"] == a, "shots"].nunique() >= 2]
        for index, arm in enumerate(arms):
            runs = cell[cell["arm"] == arm]
            points = [(k, *_mean_sd(g, "accuracy")) for k, g in runs.groupby("shots")]
            dodge = 2 ** (0.04 * (index - (len(arms) - 1) / 2))  # side by side, so error bars stay apart
            k, mean, sd = np.array(points).T
            ax.errorbar(k * dodge, mean, yerr=sd, capsize=3, markersize=4, label=runs["arm_label"].iloc[0],
                        **arm_style(arm))
        _majority_line(ax, cell)
        shots = sorted(cell["shots"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(int(k)) for k in shots])
        ax.minorticks_off()
        ax.set_xlabel("training examples per class (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(label)
    _legend_below(fig, axes)
    return [_save(fig, out_dir, f"fewshot_{slug(family)}", f"Few-shot accuracy — {family}",
                  "Mean test accuracy over seeds, with error bars of ± 1 standard deviation (points dodged horizontally).")]


@styled
def pareto(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    """Accuracy against trainable LoRA parameters across budgets, with the Pareto front of all points."""
    fig, axes = _panels(1, width=6.0, height=3.8)
    ax = axes[0]
    points, spans = [], []
    arms = arm_order(frame["arm"])
    for index, arm in enumerate(arms):
        runs = frame[frame["arm"] == arm]
        rows = [(g["lora_params"].mean(), *_mean_sd(g, "accuracy")) for _, g in runs.groupby("budget")]
        x, y, sd = np.array(rows).T
        points += list(zip(x, y))
        spans += list(zip(y - sd, y + sd))
        dodge = 2 ** (0.012 * (index - (len(arms) - 1) / 2))  # equal budgets share x: keep error bars apart
        ax.errorbar(x * dodge, y, yerr=sd, capsize=3, markersize=5, label=runs["arm_label"].iloc[0],
                    **arm_style(arm))
    ax.step(*zip(*_pareto_front(points)), where="post", color=OKABE_ITO["grey"], alpha=0.5, linewidth=4, zorder=0,
            label=FRONT_LABEL)
    # the axis spans the points, so that their differences show; the majority rate only where it falls inside
    bottom, top = data_range(spans)
    majority = 100 * frame["majority_rate"].mean()
    if bottom <= majority <= top:
        _majority_line(ax, frame)
    ax.set_ylim(bottom, top)
    ax.set_xscale("log")
    low, high = min(p[0] for p in points), max(p[0] for p in points)
    ax.set_xlim(low / 1.25, high * 1.25)  # matplotlib would widen a single point to several decades
    thousands = FuncFormatter(lambda x, _: f"{x / 1e3:g}")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 20k, 50k, 100k, ...
    ax.xaxis.set_major_formatter(thousands)
    # a narrow axis has one or no such tick: label the minor ones (30k, 40k, ...) as well
    ax.xaxis.set_minor_formatter(thousands if high / low < 4 else NullFormatter())
    ax.set_xlabel("trainable LoRA parameters at training time (thousands, log scale)")
    ax.set_ylabel("test accuracy (%)")
    _legend_below(fig, axes, columns=3)
    return [_save(fig, out_dir, f"pareto_{slug(setting)}", f"Accuracy vs trainable parameters — {setting}",
                  "Mean ± std over seeds per arm and budget (head parameters excluded; points at equal parameter "
                  "counts dodged by up to 4% horizontally); the grey step line is the Pareto front of the means; the "
                  "accuracy axis spans the data" + _majority_said(majority, bottom, top) + ".")]


def _majority_said(majority: float, bottom: float, top: float) -> str:
    """Where the majority-class rate is, when the axis that spans the data leaves it out."""
    if math.isnan(majority) or bottom <= majority <= top:
        return ""
    return f" (the majority-class rate, {majority:.2f}%, lies {'below' if majority < bottom else 'above'} it)"


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):  # at equal x only the best can be on the front
        if y > best:
            front.append((x, y))
            best = y
    return front


@styled
def params_loss_bars(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    """Seed 002's bar chart: LoRA parameters and evaluation loss per arm, one row per budget, each row as
    tall as its bars need and the axes shared down the columns, so that bar lengths compare across budgets. Where
    every arm trains the same number of parameters, bars of one length would say one number: the caption says it,
    and only the losses are drawn."""
    budgets = _budgets(frame)
    arms = arm_order(frame["arm"])
    rows = [[a for a in arms if (cell["arm"] == a).any()] for _, cell, _ in budgets]
    counts = frame.groupby(["budget", "arm"])["lora_params"].mean()
    bars = counts.nunique() > 1
    # panels as tall as their bars (a bar per unit of y), plus room for each row's title and axis labels
    fig, axes = _grid(len(budgets), 2 if bars else 1,
                      (DRAW_WIDTH if bars else 0.6 * DRAW_WIDTH, sum(0.22 * len(present) + 1.0 for present in rows)),
                      sharey="row", sharex="col", gridspec_kw={"height_ratios": [len(present) for present in rows]})
    for panels, (_, cell, label), present in zip(axes, budgets, rows):
        left, right = panels[0], panels[-1]
        y = np.arange(len(present))
        colours = [arm_style(a)["color"] for a in present]
        losses = [_mean_sd(cell[cell["arm"] == a], "loss", 1.0) for a in present]
        if bars:
            left.barh(y, [cell.loc[cell["arm"] == a, "lora_params"].mean() / 1e3 for a in present], color=colours)
        for j, ((mean, sd), colour) in enumerate(zip(losses, colours)):  # dots: the axis need not start at 0
            right.errorbar(mean, j, xerr=sd, fmt="o", color=colour, capsize=2, markersize=5)
        right.grid(axis="y", color="#e0e0e0", linewidth=0.6)
        left.set_yticks(y, [cell.loc[cell["arm"] == a, "arm_label"].iloc[0] for a in present])
        left.set_ylim(len(present) - 0.5, -0.5)  # the first arm on top
        left.set_title(label, loc="left")
    spans = [(m - s, m + s) for _, cell, _ in budgets for a in arm_order(cell["arm"])
             for m, s in [_mean_sd(cell[cell["arm"] == a], "loss", 1.0)]]
    axes[-1][-1].set_xlim(*data_range(spans))  # the rows share it: the losses' own range, not from 0
    if bars:
        axes[-1][0].set_xlabel("trainable LoRA parameters (thousands)")  # the rows share the axes below them
    axes[-1][-1].set_xlabel("evaluation loss (test cross-entropy)")
    said = "" if bars else f"Every arm trains {round(counts.iloc[0]):,} LoRA parameters. "
    return [_save(fig, out_dir, f"params_loss_{slug(setting)}",
                  f"{'Parameters and evaluation loss' if bars else 'Evaluation loss'} — {setting}",
                  f"{said}Mean over seeds (dots; the loss axis spans the data, not from 0); error bars ± 1 std.")]


def data_range(spans: list[tuple[float, float]], pad: float = 0.08) -> tuple[float, float]:
    """An axis range covering every (low, high) span with `pad` of the spread on each side: differences
    between means of nearly equal losses show, instead of disappearing on an axis from 0."""
    finite = [v for span in spans for v in span if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    margin = pad * (high - low) or 0.05 * abs(high) or 0.05
    return low - margin, high + margin


@styled
def rank_per_layer(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    """Seed 002's line chart: mean rank per module in each layer, per arm, one panel per budget; a budget whose
    ranks are one value everywhere (LoRA's alone) has no panel, the caption says its rank."""
    curves, flat = [], []
    for _, cell, label in _budgets(frame):
        lines = [(arm, modules.groupby("layer")["value"].mean()) for arm in arm_order(cell["arm"])
                 if not (modules := allocation_frame(cell[cell["arm"] == arm])).empty]
        ranks = {float(v) for _, per_layer in lines for v in per_layer}
        if len(ranks) > 1:
            curves.append((cell, label, lines))
        elif ranks:
            flat.append(f"{label.split(' (')[0]} (rank {ranks.pop():g})")
    if not curves:
        return []
    fig, axes = _panels(len(curves))
    for ax, (cell, label, lines) in zip(axes, curves):
        for arm, per_layer in lines:
            ax.plot(per_layer.index, per_layer.to_numpy(), markersize=4,
                    label=cell.loc[cell["arm"] == arm, "arm_label"].iloc[0], **arm_style(arm))
        ax.set_xlabel("layer (0 = input side)")
        ax.set_ylabel("rank per module (mean)")
        ax.set_title(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _legend_below(fig, axes)
    said = f" Budgets with one rank in every layer are not drawn: {', '.join(flat)}." if flat else ""
    return [_save(fig, out_dir, f"rank_per_layer_{slug(setting)}", f"Rank allocation per layer — {setting}",
                  "Mean rank after training over a layer's adapted modules and over seeds." + said)]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what there is), to read a noisy per-step loss."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    return (sums[1:] - sums[np.arange(values.size) + 1 - counts]) / counts


def _curves(runs: pd.DataFrame, extract: Callable[[dict], list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Steps all runs share and the (runs × steps) values there."""
    series = [dict(extract(r["curves"])) for r in runs["result"]]
    steps = sorted(set.intersection(*(set(s) for s in series)))
    return np.array(steps), np.array([[s[k] for k in steps] for s in series])


def _train_loss(curves: dict) -> list[tuple[int, float]]:
    return [(int(step), float(loss)) for step, loss in curves.get("train_loss", [])]


def _validation(curves: dict) -> list[tuple[int, float]]:
    return [(int(step), 100 * float(metrics["accuracy"])) for step, metrics in curves.get("validation", [])]


BANDED_ARMS = 4  # with more curves in a panel, std bands would hide each other: means only


def _curve_figure(frame: pd.DataFrame, extract: Callable[[dict], list[tuple[int, float]]], ylabel: str,
                  smooth: bool, every_arm: bool) -> Canvas | None:
    """Mean curve per arm (the main ones, or `every_arm`) with a ± 1 std band while a panel has at most
    BANDED_ARMS curves; one panel per budget; None when no run has the curve."""
    budgets = _budgets(frame)
    fig, axes = _panels(len(budgets))
    plotted = False
    for ax, (_, cell, label) in zip(axes, budgets):
        arms = arm_order(cell["arm"]) if every_arm else _curve_arms(cell)
        for arm in arms:
            runs = cell[cell["arm"] == arm]
            steps, values = _curves(runs, extract)
            if steps.size == 0:
                continue
            if smooth:
                values = np.array([_smooth(v, max(1, steps.size // 25)) for v in values])
            style = arm_style(arm)
            mean = values.mean(axis=0)
            ax.plot(steps, mean, color=style["color"], linestyle=style["linestyle"], label=runs["arm_label"].iloc[0])
            if len(values) > 1 and len(arms) <= BANDED_ARMS:
                sd = values.std(axis=0, ddof=1)
                ax.fill_between(steps, mean - sd, mean + sd, color=style["color"], alpha=0.15, linewidth=0)
            plotted = True
        ax.set_xlabel("optimizer step")  # short: a third of the page wide is all a panel has
        ax.set_ylabel(ylabel)
        ax.set_title(label)
        if not smooth:  # accuracy: the rate of always predicting the majority class is the floor to beat
            _majority_line(ax, cell)
    _legend_below(fig, axes)
    return fig if plotted else None


@styled
def training_loss(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    fig = _curve_figure(frame, _train_loss, "training loss (smoothed)", smooth=True, every_arm=False)
    drawn = {_method(a) for _, cell, _ in _budgets(frame) for a in _curve_arms(cell)}
    penalty = "; AdaLoRA's includes its orthogonality penalty" if "adalora" in drawn else ""
    return [] if fig is None else [_save(
        fig, out_dir, f"train_loss_{slug(setting)}", f"Training loss — {setting}",
        f"Main methods' per-step training loss (cross-entropy{penalty}), trailing moving average over 1/25 of "
        "training, mean over seeds with a ± 1 std band.")]


@styled
def validation_accuracy(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    fig = _curve_figure(frame, _validation, "validation accuracy (%)", smooth=False, every_arm=True)
    return [] if fig is None else [_save(
        fig, out_dir, f"validation_{slug(setting)}", f"Validation accuracy — {setting}",
        f"Validation accuracy during training (step 0: after initialisation) of every method, mean over seeds (with "
        f"a ± 1 std band where a panel has at most {BANDED_ARMS} methods); the dashed line is the test set's "
        "majority-class rate.")]


def _params_over_steps(ax, cell: pd.DataFrame) -> None:
    """Trainable LoRA parameters against the training step: dynamic arms from their reallocation history
    (mean over seeds), every other arm constant at what it trains (AdaLoRA: its initial rank), the budget dashed."""
    for arm in arm_order(cell["arm"]):
        runs = cell[cell["arm"] == arm]
        last = int(runs["steps"].max())
        histories = [r.get("reallocations") for r in runs["result"]]
        if all(histories):
            steps = sorted({h["step"] for history in histories for h in history} | {last})
            values = np.array([[next(h["params"] for h in reversed(history) if h["step"] <= s) for s in steps]
                               for history in histories]).mean(axis=0)
        else:
            steps, values = [0, last], np.full(2, runs["lora_params"].mean())
        style = arm_style(arm)
        ax.step(steps, values, where="post", color=style["color"], linestyle=style["linestyle"],
                label=runs["arm_label"].iloc[0])
    ax.axhline(int(cell["budget_params"].iloc[0]), label="budget", **MAJORITY_STYLE)
    ax.set_xlabel("training step")
    ax.set_ylabel("trainable LoRA parameters")
    ax.set_ylim(bottom=0)
    ax.set_title("parameters during training")


@styled
def reallocation_dynamics(frame: pd.DataFrame, setting: str, out_dir: Path) -> list[Figure]:
    """For each budget with dynamic runs: the first seed's rank per module at each reallocation (heatmap),
    its smoothed importance per module, and every arm's trainable LoRA parameters over training."""
    figures = []
    for _, cell, label in _budgets(frame):
        dynamic = dynamic_runs(cell)
        if dynamic.empty:
            continue
        run = dynamic.sort_values("seed").iloc[0]
        history = run["result"]["reallocations"]
        modules = list(history[0]["ranks"])
        fig, axes = _panels(4, width=3.4, height=3.4, columns=2)
        heat, scores, params, loss = axes
        matrix = np.array([[h["ranks"][m] for h in history] for m in modules])
        image = heat.imshow(matrix, cmap="cividis", aspect="auto", vmin=0)
        heat.set_xticks(range(len(history)), [h["step"] for h in history], rotation=90)
        heat.set_yticks(range(len(modules)), [module_label(m) for m in modules], fontsize=6)
        heat.set_xlabel("step of the reallocation (0: initial allocation)")
        heat.set_title(f"rank per module, seed {int(run['seed'])}")
        fig.colorbar(image, ax=heat, label="adapter rank", shrink=0.8)
        later = [h for h in history if h["step"] > 0]  # step 0's scores come from the base weights' gradients
        for m in modules:
            scores.plot([h["step"] for h in later], [h["importance"][m] for h in later], linewidth=0.8)
        if any(h["importance"][m] > 0 for h in later for m in modules):
            scores.set_yscale("log")
        scores.set_xlabel("training step")
        scores.set_ylabel("smoothed importance (LoRA factors)")
        scores.set_title("importance per module")
        _params_over_steps(params, cell)
        steps, values = _curves(dynamic, _train_loss)
        loss.plot(steps, np.array([_smooth(v, max(1, steps.size // 25)) for v in values]).mean(axis=0),
                  color=arm_style("ba_lora_dynamic")["color"])
        for step in sorted({h["step"] for r in dynamic["result"] for h in r["reallocations"] if h["changed"]}):
            loss.axvline(step, color=OKABE_ITO["grey"], linewidth=0.6, linestyle=":")
        loss.set_xlabel("training step (dotted: reallocations that moved ranks)")
        loss.set_ylabel("training loss (smoothed)")
        loss.set_title("loss around reallocations")
        _legend_below(fig, [params], columns=3)
        figures.append(_save(fig, out_dir, f"reallocation_{slug(setting)}__{slug(label)}",
                             f"Dynamic reallocation — {setting}, {label}",
                             "Top left: ranks of dynamic BA-LoRA's modules at each reallocation (first seed). Top right: "
                             "each module's smoothed importance from its LoRA factors' gradients at each reallocation. "
                             "Bottom left: trainable LoRA parameters over training, mean over seeds; AdaLoRA trains at "
                             "its initial rank throughout (it masks, it does not resize); the dashed line is the budget. "
                             "Bottom right: dynamic BA-LoRA's training loss (trailing mean over 1/25 of training, mean "
                             "over seeds), dotted lines at reallocations."))
    return figures

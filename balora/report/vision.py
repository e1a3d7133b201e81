"""Seed 003's layer-importance analysis for Vision Transformers (image runs).

Runs whose allocation was scored (BA-LoRA and its variants: the importance each module got before
ranks were allocated) are grouped by setting and importance metric. Within a run, importance is turned
into shares of the run's total, so that runs and seeds weigh alike; a module's share is then its mean
over the group's runs. Modules are attention projections (query, key, value, output) or MLP layers
(`models.is_attention`).

Seed 003 claims that "attention layers dominate". Each group tests it with a one-sided Mann-Whitney U
test (scipy) of the attention modules' shares against the MLP modules' (alternative: attention
greater), and the reverse direction likewise; Holm's adjustment runs over all the section's tests
(statsmodels). The effect size is U/(n_attention·n_MLP): the probability that a random attention module
outscores a random MLP module (0.5: no difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from balora.report.document import Block, Bullets, Heading, Paragraph, Table, slug
from balora.report.runs import allocation_frame
from balora.report.tables import p_value

ALPHA = 0.05
INTRO = ("Where the adaptive methods found importance in the ViT, by module type and by layer, and a test of "
         "seed 003's claim that attention layers dominate. Importance is each module's share of its run's total "
         "(mean over the runs of one metric); ranks are the allocated ones (mean over runs).")


@dataclass
class DominanceTest:
    setting: str
    metric: str
    attention: list[float]  # module shares
    mlp: list[float]
    u: float
    p_greater: float
    p_less: float
    p_greater_holm: float = math.nan
    p_less_holm: float = math.nan

    @property
    def effect(self) -> float:
        return self.u / (len(self.attention) * len(self.mlp))

    def sentence(self) -> str:
        where = f"{self.setting}, {self.metric} importance"
        numbers = (f"one-sided Mann-Whitney U = {self.u:.0f}, p (Holm) = {p_value(self.p_greater_holm)}; "
                   f"{len(self.attention)} attention and {len(self.mlp)} MLP modules; median share "
                   f"{100 * _median(self.attention):.2f}% vs {100 * _median(self.mlp):.2f}%; "
                   f"P(attention > MLP) = {self.effect:.2f}")
        if self.p_greater_holm < ALPHA:
            return f"{where}: attention modules score significantly higher than MLP modules ({numbers}): " \
                   "seed 003's claim holds here."
        if self.p_less_holm < ALPHA:
            return f"{where}: MLP modules score significantly higher than attention modules ({numbers}; reverse " \
                   f"direction p (Holm) = {p_value(self.p_less_holm)}): the opposite of seed 003's claim."
        return f"{where}: attention modules do not score significantly higher than MLP modules ({numbers}): " \
               "the data do not support seed 003's claim here."


def _median(values: list[float]) -> float:
    return float(pd.Series(values).median())


def scored_modules(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per module per scored run: layer, kind, attention, share (of the run's importance), rank."""
    from balora.models import is_attention  # deferred: models imports transformers

    modules = allocation_frame(runs, "final_rank")
    totals = modules.groupby("run")["importance"].transform("sum")
    modules = modules[totals > 0].assign(share=lambda f: f["importance"] / totals[totals > 0])
    return modules.assign(attention=modules["module"].map(is_attention))


def _metric(result: dict) -> str:
    return str(result["config"].get("importance_metric", "sensitivity"))


def groups(image: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(setting, metric, module rows) for every setting and importance metric with scored runs."""
    found = []
    image = image.assign(metric=image["result"].map(_metric))
    for (setting, metric), runs in image.groupby(["setting", "metric"], sort=False):
        modules = scored_modules(runs)
        if not modules.empty:
            found.append((setting, metric, modules))
    return found


def dominance_tests(found: list[tuple[str, str, pd.DataFrame]]) -> list[DominanceTest]:
    """A Mann-Whitney test per group with both kinds of module, Holm-adjusted over all of them."""
    tests = []
    for setting, metric, modules in found:
        per_module = modules.groupby(["module", "attention"], as_index=False)["share"].mean()
        attention = per_module.loc[per_module["attention"], "share"].tolist()
        mlp = per_module.loc[~per_module["attention"], "share"].tolist()
        if attention and mlp:
            greater = stats.mannwhitneyu(attention, mlp, alternative="greater")
            less = stats.mannwhitneyu(attention, mlp, alternative="less")
            tests.append(DominanceTest(setting, metric, attention, mlp, float(greater.statistic),
                                       float(greater.pvalue), float(less.pvalue)))
    if tests:
        adjusted = multipletests([t.p_greater for t in tests] + [t.p_less for t in tests], method="holm")[1]
        for i, test in enumerate(tests):
            test.p_greater_holm, test.p_less_holm = float(adjusted[i]), float(adjusted[len(tests) + i])
    return tests


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def type_table(setting: str, metric: str, modules: pd.DataFrame) -> Table:
    rows = []
    for kind, part in modules.groupby("kind", sort=False):
        per_module = part.groupby("module")["share"].mean()
        rows.append([kind, "attention" if part["attention"].iloc[0] else "MLP", str(per_module.size),
                     _percent(per_module.mean()), _percent(per_module.sum()), f"{part['rank'].mean():.2f}",
                     f"{part['value'].mean():.2f}"])
    return Table(f"vision_types_{slug(setting)}_{slug(metric)}", f"Importance and rank by module type: {setting}, "
                 f"{metric} importance", ["module type", "group", "modules", "share per module", "share in all",
                                          "rank (allocated)", "rank (final)"], rows,
                 [f"{modules['run'].nunique()} runs; shares of each run's total importance, averaged over runs."])


def layer_table(setting: str, metric: str, modules: pd.DataFrame) -> Table:
    rows = []
    for layer, part in modules.groupby("layer"):
        shares = part.groupby(["module", "attention"], as_index=False)["share"].mean()
        cells = [str(layer)]
        for flag in (True, False):
            chosen = part[part["attention"] == flag]
            cells += [_percent(shares.loc[shares["attention"] == flag, "share"].sum()) if not chosen.empty else "—",
                      f"{chosen['rank'].mean():.2f}" if not chosen.empty else "—"]
        rows.append(cells)
    return Table(f"vision_layers_{slug(setting)}_{slug(metric)}", f"Importance and rank by layer: {setting}, "
                 f"{metric} importance", ["layer", "attention share", "attention rank", "MLP share", "MLP rank"], rows,
                 ["Share: the layer's modules' part of the run's total importance (mean over runs); rank: mean "
                  "allocated rank of the layer's modules of that group."])


def vision_section(image: pd.DataFrame, missing: list[str]) -> list[Block]:
    """The section for image runs (`image` holds only those)."""
    blocks: list[Block] = [Heading(2, "Layer importance in Vision Transformers (seed 003)"), Paragraph(INTRO)]
    found = groups(image)
    if not found:
        missing.append("Layer importance (vision): no image run with scored modules (LoRA and AdaLoRA score none).")
        blocks.append(Paragraph("No image run scored its modules."))
        return blocks
    tests = dominance_tests(found)
    sentences = [t.sentence() for t in tests]
    tested = {(t.setting, t.metric) for t in tests}
    for setting, metric, _ in found:
        if (setting, metric) not in tested:
            sentences.append(f"{setting}, {metric} importance: every adapted module is of one group (attention or MLP), "
                             "so attention cannot be compared with MLP; adapt both (--target-modules all-linear, as "
                             "the vision preset does).")
    blocks.append(Bullets(sentences))
    for setting, metric, modules in found:
        blocks += [type_table(setting, metric, modules), layer_table(setting, metric, modules)]
    return blocks

"""Assemble the report: analysis → sections of blocks → report.md, report.html, tables/*.tex,
figures/*.png|pdf (and, on request, the paper's generated inputs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from balora import tasks
from balora.report import claims, figures, selection, tables
from balora.report.analysis import Analysis, analyse
from balora.report.anytime import anytime_section, declaring_sweeps
from balora.report.criteria import DECLARED_BY_SPEC, Criterion, criteria_summary, criteria_table, declared_hypotheses, success_criteria
from balora.report.document import (
    Block,
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
    table_latex,
)
from balora.report.lm import lm_comparisons, lm_section, tuning_strategies, tuning_studies
from balora.report.runs import dynamic_runs, load_runs, settings
from balora.report.stats import LOSS, MIN_PAIRS, MIN_WILCOXON
from balora.report.vision import vision_section
from balora.tuning import superseded

TITLE = "BA-LoRA results report"
STATISTICS = (
    f"Replicates are runs that differ only in the seed; runs of two methods with the same seed (same data sample, "
    f"head initialisation and shuffling) are paired. For each comparison with the reference (LoRA; full BA-LoRA "
    f"for the ablations) at the same setting and budget the report gives mean ± std over seeds and n, the mean "
    f"per-seed difference Δ, a paired t-test (scipy; from {MIN_PAIRS} matched seeds: fewer are marked n<3, and "
    "differences without spread, the same on every seed, are marked not testable; neither is ever called "
    f"significant), a Wilcoxon signed-rank test (from {MIN_WILCOXON} pairs), the paired Cohen's d, a paired "
    "equivalence test (TOST, statsmodels: two one-sided t-tests that the true Δ lies within ± a margin, the one "
    f"{DECLARED_BY_SPEC}, else ±1 pp of accuracy or ±0.01 nats of test loss), the minimum detectable effect (MDE) "
    "that Holm's adjusted test detects with at least 80% power, for the number of pairs and the observed spread of "
    "the differences (the power of a paired t-test, scipy's noncentral t, at Bonferroni's α/m, m the comparisons of one table, "
    "since Holm's test rejects whatever Bonferroni's does), and Holm's "
    "adjustment of the t-tests, and separately of the equivalence tests, over the comparisons of one table "
    "(statsmodels). The verdict has four words, at α = 0.05: better or worse where the Holm-adjusted t-test "
    "rejects no difference; else equivalent within ±margin where the Holm-adjusted equivalence test rejects a "
    "difference as large as the margin; else inconclusive, with the MDE: these seeds show neither a difference "
    "nor equivalence, and a true difference smaller than the MDE would likely go undetected. Δ's paired-t CI is "
    "at the confidence that matches the verdict, 1 − 0.05·p/p(Holm), so it excludes 0 exactly when the verdict is "
    "better or worse; on an equivalent comparison it is the equivalence test's, 1 − 0.1·p(TOST)/p(TOST, Holm), so "
    "it lies inside ±margin.")


# A missing-data message about one setting: "what, setting: why" (see `_per_setting`)
PER_SETTING = re.compile(r"^([^,:]+), ([^:]+): (.+)$")


@dataclass
class Report:
    """What was built: sections of blocks (in order), the analysis, and what could not be built."""

    analysis: Analysis
    criteria: list[Criterion] = field(default_factory=list)  # the hypotheses the runs' specs declare, marked
    sections: dict[str, list[Block]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    lm_claims: list[str] = field(default_factory=list)  # the instruction-tuning section's sentences
    lm_bottom_lines: list[str] = field(default_factory=list)  # its BA-LoRA verdicts, for the abstract and summary
    selection_claims: list[str] = field(default_factory=list)  # the appendix's account of selection on validation
    convergence_claims: list[str] = field(default_factory=list)  # which arms were still rising, and which were checked
    converging: list[dict[str, Any]] = field(default_factory=list)  # each arm's end of training (`rising_arms`)

    def blocks(self, kind: type) -> list:
        return [b for blocks in self.sections.values() for b in blocks if isinstance(b, kind)]

    def coverage(self) -> list[str]:
        """`missing`, a part missing for the same reason in several settings said once, naming them."""
        groups: dict[tuple[str, str], list[str]] = {}
        for message in self.missing:
            found = PER_SETTING.match(message)
            what, setting, why = found.groups() if found else (message, "", "")
            groups.setdefault((what, why), []).append(setting)
        return [what if not why else f"{what}, {places[0]}: {why}" if len(places) == 1 else
                f"{what}: {why.rstrip('.')}, in {len(places)} settings ({'; '.join(places)})."
                for (what, why), places in groups.items()]


def _per_setting(frame: pd.DataFrame, missing: list[str], out: Path, draw, what: str, why: str) -> list[Figure]:
    """`draw` for each setting; a setting it draws nothing for is noted in `missing` as `what`, `why`."""
    made = []
    for setting in settings(frame):
        figs = draw(frame[frame["setting"] == setting], setting, out)
        if not figs:
            missing.append(f"{what}, {setting}: {why}.")
        made += figs
    return made


def _section(title: str, intro: str, *parts: list) -> list[Block]:
    """Heading, intro, then each part: sentences as a bullet list, tables and figures as they are."""
    blocks: list[Block] = [Heading(2, title), Paragraph(intro)]
    for part in parts:
        if part and isinstance(part[0], str):
            blocks.append(Bullets(part))
        else:
            blocks += part
    if len(blocks) == 2:
        blocks.append(Paragraph("Nothing to show for these results; see Missing data above."))
    return blocks


def _criteria_section(criteria: list[Criterion]) -> list[Block]:
    return _section("Success criteria", "Each hypothesis declared in the runs' spec (hypotheses:), decided by a test on "
                    "the comparisons below and marked met, not met or not testable.",
                    [c.sentence for c in criteria], [criteria_table(criteria)])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def build(frame: pd.DataFrame, out: Path, results: list[dict[str, Any]] | None = None,
          stale: set[str] | None = None, owners: tuple[str, ...] = ()) -> Report:
    """All sections of the report for the runs in `frame` (and the tuning runs among `results`, for the
    appendix; `stale`: the keys of the evaluation runs left out of `frame` as superseded, counted under
    Missing data); figures are written to `out/figures`. The hypotheses checked are those the specs of the sweeps
    `owners` declare, the sweeps whose folder the runs are, else those of the runs' sweeps
    (`criteria.declared_hypotheses`).
    The runs of a task read by a loss (seed 002's causal-LM instruction tuning) have their own section; the
    others, read by accuracy, have the rest (image runs among them, whose task also asks for seed 003's
    layer-importance section)."""
    declared = declared_hypotheses(frame, owners)
    causal = frame[frame["metric"] == LOSS.name]
    frame = frame[frame["metric"] != LOSS.name].reset_index(drop=True)
    analysis = analyse(frame)
    studies = lm_comparisons(causal) if not causal.empty else {}
    analysis.lm = {setting: rows for setting, (_, rows) in studies.items()}
    report = Report(analysis, success_criteria(analysis, declared), missing=list(analysis.missing))
    if stale:
        report.missing.append(f"{len(stale)} evaluation runs left out: they ran at a value their cell no longer "
                              "selects (its grid grew past an end after they ran, or a run at that value ended at "
                              "chance on validation; see the appendix).")
    fig_dir, missing = out / "figures", report.missing
    lm_blocks = None  # built first: its bottom lines belong in the summary, its section after the others
    if studies:
        lm_blocks, report.lm_claims, report.lm_bottom_lines = lm_section(studies, fig_dir, missing)
    if not frame.empty:
        names = settings(frame)

        def each(make) -> list[str]:
            return [s for setting in names for s in make(analysis, setting)]

        report.sections["summary"] = _section(
            "Summary", f"{_count(len(frame), 'run')} in {_count(len(names), 'setting')}, "
            f"{_count(frame['arm'].nunique(), 'method')}, seeds {', '.join(map(str, sorted(frame['seed'].unique())))}.",
            [*claims.conclusion_claims(analysis), *report.lm_bottom_lines,
             *([criteria_summary(report.criteria, "the")] if report.criteria else [])])
        if report.criteria:  # only where the runs' spec declares hypotheses
            report.sections["criteria"] = _criteria_section(report.criteria)
        report.sections["coverage"] = [Heading(2, "Coverage"), tables.coverage_table(frame)]
        report.sections["budget"] = _section(
            "Budget efficiency (seed 000, Exp. 1)", "Main methods at equal LoRA budgets against LoRA.",
            each(claims.budget_claims), tables.budget_tables(analysis),
            _per_setting(frame, missing, fig_dir, figures.pareto, "Pareto figure", "no runs"))
        fewshot_figs = [f for family, part in frame[frame["shots"].notna()].groupby("family", sort=False)
                        for f in figures.fewshot_curves(part, family, fig_dir)]
        report.sections["fewshot"] = _section(
            "Few-shot (seed 000, Exp. 2)", "Main methods over shots per class at one budget; does the gap widen as "
            "data shrinks?", [s for name in analysis.fewshot for s in claims.fewshot_claims(analysis, name)],
            tables.fewshot_tables(analysis), fewshot_figs)
        report.sections["allocation"] = _section(
            "Rank allocation (seed 000, Exp. 3)", "Where the adaptive methods put their ranks.",
            [s for setting in names for s in claims.allocation_claims(frame, setting)],
            _per_setting(frame, missing, fig_dir, figures.rank_heatmaps, "Rank heatmaps",
                         "no method with non-uniform ranks"),
            _per_setting(frame, missing, fig_dir, figures.importance_vs_rank, "Importance vs rank",
                         "no method with importance scores"),
            _per_setting(frame, missing, fig_dir, figures.rank_per_layer, "Rank per layer", "no allocations recorded"))
        vision = frame[frame["task"].map(lambda t: "layer importance" in tasks.get(t).report_analyses)]
        if not vision.empty:  # only where runs of a task that asks for it exist
            report.sections["vision"] = vision_section(vision, missing)
        if not dynamic_runs(frame).empty:
            report.sections["reallocation"] = _section(
                "Dynamic reallocation (seed 003)", "BA-LoRA dynamic re-scores its modules from the LoRA factors' "
                "gradients during training and moves ranks between them under the same exact budget, resizing the "
                "matrices; AdaLoRA, for comparison, trains at its initial rank and masks.",
                [s for setting in names for s in claims.reallocation_claims(frame, setting)],
                [f for setting in names
                 for f in figures.reallocation_dynamics(frame[frame["setting"] == setting], setting, fig_dir)])
        report.sections["ablation"] = _section(
            "Ablations (seed 000, Exp. 4)", "Each ablation against full BA-LoRA at the same budget.",
            each(claims.ablation_claims), tables.ablation_tables(analysis))
        if analysis.levers:  # only where arms differ in one lever alone
            report.sections["levers"] = _section(
                "One lever at a time (issue 39)", "Arms that differ in one lever, everything else fixed but the learning "
                "rate each selects on validation: how the ranks are chosen, how B starts, or another option; each "
                "against its group's first arm on matched seeds.",
                each(claims.levers_claims), tables.levers_tables(analysis))
        report.sections["strategy"] = _section(
            "Strategy comparison (seed 002)", "Every allocation strategy: evaluation loss, parameters, accuracy.",
            each(claims.strategy_claims), tables.strategy_tables(analysis),
            _per_setting(frame, missing, fig_dir, figures.params_loss_bars, "Parameters vs loss", "no runs"))
        arms = selection.rising_arms(frame, results or [])
        report.converging, report.convergence_claims = arms, selection.convergence_claims(arms)
        if analysis.quantised:  # only where runs on quantised bases exist
            report.sections["quantised"] = _section(
                "Quantised bases (seed 003, QA-LoRA)", "LoRA on group-wise quantised frozen weights against "
                "full-precision LoRA at the same budget (see README, Quantised bases).", tables.quantised_tables(analysis))
        report.sections["dynamics"] = _section(
            "Training dynamics and convergence", "Runs that end at or below the majority-class rate have not learnt "
            "the task (see NOTES.md): they are counted here and in every accuracy table (column ≤ majority).",
            claims.majority_claims(frame),
            _per_setting(frame, missing, fig_dir, figures.training_loss, "Training-loss curves", "no curves recorded"),
            _per_setting(frame, missing, fig_dir, figures.validation_accuracy, "Validation curves", "no curves recorded"),
            report.convergence_claims, [t for t in [selection.convergence_table(arms)] if t])
        if declaring_sweeps(frame):  # only where the runs' spec asks for it (anytime: true)
            report.sections["anytime"] = anytime_section(frame, missing)
        report.sections["cost"] = _section(
            "Cost", "Wall time per phase and peak memory.",
            [s for setting in names for s in claims.cost_claims(frame, setting)], tables.cost_tables(analysis))
    elif report.criteria:  # causal-LM runs alone: their hypotheses lead
        report.sections["criteria"] = _criteria_section(report.criteria)
    if lm_blocks is not None:
        report.sections["lm"] = lm_blocks
    report.sections["statistics"] = [Heading(2, "Statistics"), Paragraph(STATISTICS)]
    # a causal LM's cells as its strategy table names them: the study, and each strategy
    labels = {**selection.arm_labels(frame), **tuning_strategies(causal)}
    places = {**selection.setting_names(frame), **tuning_studies(causal)}
    report.selection_claims, report.sections["tuning"] = _tuning_section(results or [], labels, places)
    return report


def _tuning_section(results: list[dict[str, Any]], labels: dict[str, str],
                    places: dict[str, str]) -> tuple[list[str], list[Block]]:
    """The appendix on selection on validation: its claims, and the section with the tuning table."""
    made = selection.selection_claims(results, labels, places)
    return made, _section("Appendix: selection on validation", selection.PROTOCOL, made,
                          [t for t in [selection.tuning_table(results, labels, places=places)] if t])


def write(results: list[dict[str, Any]], out_dir: str | Path, source: str, owners: tuple[str, ...] = ()) -> Report | None:
    """Write report.md, report.html, tables/*.tex and figures/*; None when there are no results. With
    `figures.RENDER` off, only the text: report.md (naming the figures it would show) and tables/*.tex.
    `owners`: the sweeps whose run folder `results` are (`build`)."""
    out = Path(out_dir)
    for stale in [*out.glob("figures/*.png"), *out.glob("figures/*.pdf"), *out.glob("tables/*.tex")]:
        stale.unlink()  # a rerun on other data must not leave old figures behind
    (out / "tables").mkdir(parents=True, exist_ok=True)
    stale = superseded(results)
    frame = load_runs(results, stale)
    if frame.empty:
        # a sweep still tuning has run files but no evaluation run: the report says where it looked, as every report does
        # (and what its tuning has selected so far)
        blocks: list[Block] = [Heading(1, TITLE), Paragraph(f"Source: {source}."),
                               Paragraph("No finished evaluation runs (tuning runs do not count): no comparison to "
                                         "report yet.")]
        if any(r["config"].get("tuning") for r in results):
            blocks += _tuning_section(results, {}, set())[1]
        _write_documents(blocks, out)
        return None
    report = build(frame, out, results, stale, owners)
    for table in report.blocks(Table):
        (out / "tables" / f"{table.name}.tex").write_text(table_latex(table, label=f"tab:{table.name}"))
    missing = Bullets(report.coverage()) if report.missing else Paragraph("Nothing is missing.")
    blocks = [Heading(1, TITLE), Paragraph(f"Source: {source}.")]
    for key, section in report.sections.items():
        blocks += section
        if key == "coverage":
            blocks += [Heading(3, "Missing data"), missing]
    _write_documents(blocks, out)
    return report


def _write_documents(blocks: list[Block], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(blocks, out))
    if figures.RENDER.get():  # the page embeds the images
        (out / "report.html").write_text(render_html(blocks, TITLE))

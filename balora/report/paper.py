"""The paper's generated inputs (`paper/generated/`) and its build (pdflatex + bibtex).

`main.tex` holds only prose that does not depend on results; every number, every result sentence,
table and figure comes from here:

- `results.tex`: `\\newcommand` macros (`MACROS`: runs, seeds, budgets, module shapes, ...);
- one file per part (`PARTS`: abstract, statistics, budget, fewshot, ...): the statistics-worded
  claims, then the part's tables (`tables/`, compact columns) and figures (`figures/`, PDF).

Per-setting parts show the primary setting (full data if there is one, else the one with the most
runs); the report has every setting. What each part says is here; the setup's numbers and Appendix A are
`paper_setup`'s, and how a part's claims, tables and figures are typeset is `paper_latex`'s.

A results folder named in `STUDIES` is a study the paper reports beside its main results: its report writes
the same parts into `generated/<study>/` (its macros prefixed, e.g. `\\LeversNumRuns`), so that writing one
source's parts never overwrites or deletes another's.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from balora.errors import BaloraError
from balora.report import anytime, claims, lm, selection, stats
from balora.report.analysis import Row
from balora.report.builder import Report
from balora.report.criteria import criteria_summary
from balora.report.document import Figure, Table, latex_text, slug
from balora.report.paper_latex import VALUES_LEAD, Cited, Output, citing, paragraph_latex, part_latex, sentences_latex, table_tex
from balora.report.paper_setup import (
    MACROS,
    config_table,
    data_sentences,
    declared,
    macros,
    macros_latex,
    primary_setting,
    statistics_latex,
)
from balora.report.runs import REFERENCE, adapted_modules, budget_label, listed, method_name, setting_words, settings, words_of
from balora.report.tables import signed

PARTS = ("abstract", "config", "data", "statistics", "selection", "tuning", "criteria", "criteria_summary",
         "budget", "budget_more", "fewshot", "fewshot_more", "allocation", "allocation_more", "ablation",
         "ablation_more", "strategy",
         "strategy_more", "levers", "levers_more", "anytime", "anytime_more", "dynamics", "cost", "lm", "instruction",
         "shapes", "shares", "limitations", "values", "arms", "arms_more")
# results folders (by name) that the paper reports as studies of their own, in generated/<name>/; a name is
# also its macros' prefix, so it holds letters only
STUDIES = ("levers", "peers")
# how the paper's prose names each source (`study_of`: "" is the main results), where a generated sentence must say
# which one it is about
SOURCE_NAMES = {"": "the main results", "levers": "the lever study", "peers": "the peers study"}


def is_source(folder: str | Path) -> bool:
    """Whether the paper reports the run folder `folder`: its main results (results/paper) or a study (`STUDIES`)."""
    return Path(folder).name in ("paper", *STUDIES)


def study_of(folder: str | Path) -> str:
    """The study a results folder's parts belong to (`STUDIES`), or "" for the paper's main results."""
    name = Path(folder).name
    return name if name in STUDIES else ""


def _in_source(sentence: str, study: str) -> str:
    """`sentence` led by the source it is about (`SOURCE_NAMES`): the appendix puts every source's side by side, and a
    sentence about one read as a contradiction of another's."""
    return f"In {SOURCE_NAMES.get(study, f'the {study} study')}, {sentence[0].lower()}{sentence[1:]}"


def settings_in_words(claim: str | Cited, frame: pd.DataFrame) -> str | Cited:
    """`claim` with each setting label of `frame` ("minilm · rotten_tomatoes · 64-shot · default targets") said in
    words (`words_of`): the paper's prose is read without the report's codes, whose tables keep them."""
    text = claim.text if isinstance(claim, Cited) else claim
    labels = sorted(settings(frame), key=len, reverse=True)  # a label that begins another is replaced after it
    leads = text.startswith(tuple(labels))
    for label in labels:
        text = text.replace(label, words_of(frame, label))
    text = text[:1].upper() + text[1:] if leads else text  # a sentence that begins with its setting ("a ViT ...")
    return replace(claim, text=text) if isinstance(claim, Cited) else text


def _verdict_word(comparisons: list[stats.Comparison], share: str = "") -> str:
    """The verdict that `comparisons` share, as a sentence without the table's numbers says it, `share` (how many,
    " in all 3") after the word: with its margin where equivalent, its MDE (or their range) where inconclusive (a
    bare "inconclusive" read as a tie)."""
    verdict = comparisons[0].verdict
    if verdict == stats.EQUIVALENT:
        return f"equivalent within {claims.margins_text(comparisons)}{share}"
    if verdict == stats.INCONCLUSIVE:
        return f"inconclusive{share} ({claims.mdes_text(comparisons)})"
    return (verdict if verdict in (stats.BETTER, stats.WORSE) else "not tested") + share


# how the body names what varies in a group of the levers table (`analysis.LEVERS`), and its groups' reference
LEVER_WORDS = {"ranks": "The ranks alone, against uniform ranks",
               "init": "The initialisation alone, against LoRA's (B = 0)",
               "options": "Another option alone, against the same arm with the defaults",
               "method": "The whole method, against LoRA"}


def _lever_words(rows: list[Row]) -> list[str]:
    """The levers table's comparisons in words (`LEVER_WORDS`), a sentence per lever: each verdict once, the most
    common one counted where more than `NAMED_COMPARISONS` got it ("inconclusive in all 4 (MDEs 2.26 to 5.15 pp)"),
    the others with the comparisons that got them, each named by the lever's value and what it holds fixed
    ("standard scaling at allocated ranks with BA-LoRA's warm-start, worse"). The table in the appendix has every
    comparison's numbers; a list of them, arm by arm, read as a configuration dump."""
    several = len({r.lever.budget for r in rows}) > 1

    def place(r: Row) -> str:
        held = r.lever.held.replace(", ", " with ")  # "allocated ranks, BA-LoRA's warm-start": one place, two values
        held = f"{held} ({r.lever.budget})" if several else held
        return f"with {held} on both sides" if r.lever.kind == "method" else f"at {held}"

    def named(group: list[Row]) -> str:
        by_place: dict[str, list[str]] = {}
        for r in group:
            value = method_name(str(r.runs["method"].iloc[0])) if r.lever.kind == "method" else r.lever.level
            by_place.setdefault(place(r), []).append(value)
        return listed([f"{listed(values)} {where}" for where, values in by_place.items()])

    sentences = []
    for lever, words in LEVER_WORDS.items():
        compared = [r for r in rows if r.lever.kind == lever and r.comparison is not None]
        by_verdict: dict[str, list[Row]] = {}
        for r in compared:
            by_verdict.setdefault(r.comparison.verdict, []).append(r)
        said = []
        for i, group in enumerate(sorted(by_verdict.values(), key=len, reverse=True)):
            comparisons = [r.comparison for r in group]
            if len(group) > NAMED_COMPARISONS and (i == 0 or len(group) == len(compared)):
                share = f" in all {len(group)}" if len(group) == len(compared) else f" in {len(group)} of {len(compared)}"
                said.append(_verdict_word(comparisons, share))
            else:
                said.append(f"{named(group)}, {'each ' if len(group) > 1 else ''}{_verdict_word(comparisons)}")
        if said:
            sentences.append(f"{words}: {'; '.join(said)}.")
    return sentences


NAMED_COMPARISONS = 2  # the most comparisons of one lever and verdict that its sentence names; past it, it counts them
LISTED_ONE_BY_ONE = 4  # the most arms a sentence gives a verdict each; past it, each verdict once with its arms


def _verdict_words(rows: list, reference: str, what: str, where: str = "") -> list[str]:
    """One sentence in words for a table's comparisons, without its numbers (the table has them): each row's
    verdict against `reference` (past `LISTED_ONE_BY_ONE` rows, each verdict once with its rows, or where all share
    one, that verdict for all), each row named with its budget where they have several; or, where every row is one
    method over `what`, how many got each verdict; led by `where` (the setting) where the part shows several."""
    compared = [r for r in rows if r.comparison is not None]
    if not compared:
        return []
    labels = {r.label for r in compared}
    if len(labels) == 1 and len(compared) > 1:
        lead = f"{where}: " if where else ""
        by_verdict: dict[str, list[stats.Comparison]] = {}
        for r in compared:
            by_verdict.setdefault(r.comparison.verdict, []).append(r.comparison)
        total = len(compared)
        verdicts = claims.counted([(len(cs), _verdict_word(cs, "{}")) for cs in by_verdict.values()],
                                  claims.share_clause(total))
        return [f"{lead}{labels.pop()} against {reference} over the {total} {what}: {verdicts}."]
    several = len({r.lead for r in compared}) > 1  # budgets: an arm is named at each

    def name(r: Row) -> str:
        return f"{r.label} at {r.lead}" if several else r.label

    by_verdict = {v: [r for r in compared if r.comparison.verdict == v] for v in claims.DECIDED}
    if len(compared) > LISTED_ONE_BY_ONE and max(map(len, by_verdict.values())) == len(compared):  # one verdict
        each = _verdict_word([r.comparison for r in compared], f" for all {len(compared)} arms")
    elif len(compared) > LISTED_ONE_BY_ONE:  # each verdict once, with the arms that got it
        each = "; ".join(f"{_verdict_word([r.comparison for r in rs])}: {', '.join(map(name, rs))}"
                         for rs in by_verdict.values() if rs)
    else:
        each = "; ".join(f"{name(r)}, {_verdict_word([r.comparison])}" for r in compared)
    return [f"{where}, against {reference}: {each}." if where else f"Against {reference}: {each}."]


def _budget_words(lead: str) -> str:
    """A budget's label in words: "r=8" is "the rank-8 budget"; any other label as it is."""
    return f"the rank-{lead.removeprefix('r=')} budget" if re.fullmatch(r"r=[\d.]+", lead) else lead


def _intervals(rows: list[Row], reference: str, named: bool = True,
               label: Callable[[Row], str] | None = None) -> list[str]:
    """One sentence for a table's tested comparisons with `reference` in plain words (model, data, shots and
    budget, unless not `named`: the prose around it says the setting): each arm's Δ with its CI and its four-word
    verdict, with the MDE where inconclusive (the abstract's form, where the table is not at hand). An arm is named
    by `label` where given, else by its label (with its budget where the rows have several)."""
    tested = [r for r in rows if r.comparison is not None and r.comparison.tested]
    if not tested:
        return []
    where, by_label = _where(tested)
    label = label or by_label
    return [(f"With {where}, against {reference}: " if named else f"Against {reference}: ") + "; ".join(
        f"{label(r)}, {_interval(r.comparison)}" for r in tested) + "."]


def _interval(c: stats.Comparison) -> str:
    """Δ with its CI and the four-word verdict, in the abstract's words: "Δ = +3.84 pp (99.3% CI +2.03 to +5.66),
    better"."""
    delta, ci = _delta_and_ci(c)
    return f"{delta} ({ci}), {c.verdict_label}"


def _delta_and_ci(c: stats.Comparison) -> tuple[str, str]:
    """("Δ = +3.84 pp", "99.3% CI +2.03 to +5.66")."""
    return f"Δ = {signed(c.delta)} pp", f"{100 * c.ci_level:.1f}% CI {signed(c.ci_low)} to {signed(c.ci_high)}"


def _where(rows: list[Row]) -> tuple[str, Callable[[Row], str]]:
    """Where the comparisons of `rows` are, in plain words (model, data, shots), with their budget where they share
    one (said once for the setting, not for each arm); and how to name an arm's row: with its budget where they
    do not."""
    budgets = list(dict.fromkeys(r.lead for r in rows))
    first = rows[0].runs.iloc[0]
    where = setting_words(first["model"], first["dataset"], first.get("shots"), first.get("train_size"),
                          first.get("protocol", ""), adapted_modules(first["result"]))
    if len(budgets) == 1:
        return f"{where} at {_budget_words(budgets[0])}", lambda r: r.label
    return where, lambda r: f"{r.label} at {_budget_words(r.lead)}"


def _arm_verdicts(rows: list[Row], reference: str) -> list[str]:
    """Every arm of a table against `reference`, in one paragraph: the four verdict words with the arms each names
    and the inconclusive ones' MDEs (`claims.verdict_lists`); then, where some are inconclusive, why that is no tie,
    with their intervals' range (each includes 0; the table has each arm's Δ, CI and MDE). For a study whose arms are
    each a question, such as PEFT's methods at one budget (results/peers)."""
    compared = [r for r in rows if r.comparison is not None]
    if not compared:
        return []
    where, label = _where(compared)
    seeds = sorted({r.comparison.n_pairs for r in compared})
    over = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    said = (f"With {where}, against {reference} over {over} matched seeds: "
            f"{claims.verdict_lists([(label(r), r.comparison) for r in compared], each_mde=False)}.")
    inconclusive = [r.comparison for r in compared if r.comparison.verdict == stats.INCONCLUSIVE]
    if inconclusive:
        low, high = min(c.ci_low for c in inconclusive), max(c.ci_high for c in inconclusive)
        said += (f" Inconclusive is not a tie: {'its interval' if len(inconclusive) == 1 else 'each interval'} of Δ "
                 f"includes 0 ({signed(low)} to {signed(high)} pp in all), and a difference smaller than an arm's MDE "
                 f"would likely go undetected.")
    return [said]


def _anytime(report: Report, pick) -> tuple[list[str | Cited], list[Table | Figure]]:
    """The anytime comparisons in words (which arms learn sooner than LoRA, and for those whose final accuracy is
    not shown to differ, what that verdict leaves open) and their tables (the validation curves are in the dynamics
    part); nothing where no sweep of the runs asks for it."""
    frame = report.analysis.frame
    if not anytime.declaring_sweeps(frame):
        return [], []
    sentences, floats = [], []
    for setting in settings(frame):
        part = frame[(frame["setting"] == setting) & frame["anytime"].notna()]
        if part.empty:
            continue
        rows, final = anytime.compare(part)
        tables = pick(f"anytime_{slug(setting)}")
        said = _verdict_words(rows, "LoRA on the anytime metric", "arms", setting)
        # one item per setting: the arms that learn sooner with no difference shown at the end, in its verdicts' item
        sooner = [f"{r.label} learns sooner; {anytime.end_words(final[(r.lead, r.arm)])}."
                  for r in anytime.speed_wins(rows, final)]
        sentences += citing([" ".join([*said, *sooner])] if said else [], tables)
        floats += tables
    return sentences, floats


def speed_columns() -> str:
    """What the anytime tables' speed columns hold (`anytime.SPEED_NOTES`), said once above those tables: in each of
    their captions, the same three notes took half the caption."""
    notes = " ".join(note.replace("this table", "its table") for name, note in anytime.SPEED_NOTES.items()
                     if name in anytime.COMPACT)
    return f"The anytime tables' last columns. {notes}"


ADVANCE = "the"  # the success criteria, as the paper names their author (the design fixed before the runs)


def _shapes(row: Row) -> int:
    """How many module shapes the arm of `row` adapted (its first run's allocation; 0 where it records none)."""
    return len({tuple(m["shape"]) for m in row.runs["result"].iloc[0].get("allocation") or []})


def _abstract(report: Report, out: Output) -> list[str]:
    """The abstract's generated sentences. A study's: BA-LoRA against tuned LoRA in every setting without a
    difference, in one sentence, each with its verdict's margin or MDE; then, where the verdict is better or worse,
    Δ with its CI, and the ranks alone at that budget
    (the levers table's comparisons with uniform ranks at each initialisation), which say whether the allocation is
    what differs. The main results': the verdicts over every comparison with tuned LoRA (`claims.main_tally`), and
    the instruction-tuning verdict with its interval and MDE."""
    analysis = report.analysis
    if not out.study:
        # the count is over the accuracy comparisons; instruction tuning (test loss) has its own sentence
        # how many adapt modules of one shape: the abstract's only word on where they are (the lever study's
        # settings have several)
        rows = claims.main_rows(analysis)
        one = sum(_shapes(r) == 1 for r in rows)
        shapes = f"; {'all' if one == len(rows) else f'{one} of {len(rows)}'} on modules of one shape" if one else ""
        tally = claims.main_tally(analysis, f"{SOURCE_NAMES['']} in classification{shapes}")
        return [*([tally] if tally else claims.summary_claims(analysis)),
                *(s for rows in analysis.lm.values() for s in lm.answer(rows))]
    decided, undecided = [], []
    for setting, rows in analysis.main.items():
        ours = [r for r in claims.proposed_rows(rows) if r.comparison.tested]
        shown = [r for r in ours if r.comparison.verdict in (stats.BETTER, stats.WORSE)]
        several = len(ours) > 1  # budgets: each is named
        words = words_of(analysis.frame, setting)
        undecided += [(f"{words} at {_budget_words(r.lead)}" if several else words, r.comparison, _steps_ratio(rows, r))
                      for r in ours if r not in shown]
        ranks = [r for r in analysis.levers.get(setting, [])
                 if r.lever.kind == "ranks" and r.lever.budget in {s.lead for s in shown}]
        decided += [*_intervals(shown, "tuned LoRA"),
                    *_intervals(ranks, "uniform ranks (the ranks alone)", named=False,
                                label=lambda r: f"{r.lever.level} at {r.lever.held}")]
    # the settings without a difference in one sentence (the abstract's length is arXiv's), the findings last, where
    # the text goes on to read them
    return ([_undecided(undecided)] if undecided else []) + decided


def _steps_ratio(rows: list[Row], row: Row) -> float:
    """How many optimizer steps the arm of `row` trained for each of its reference's (LoRA's, at the same budget):
    each arm's training length is selected on validation, so a tie may cost one arm twice the steps."""
    reference = next((r for r in rows if r.lead == row.lead and r.comparison is None), None)
    if reference is None:
        return 1.0
    ratio = pd.to_numeric(row.runs["steps"]).mean() / pd.to_numeric(reference.runs["steps"]).mean()
    return 1.0 if math.isnan(ratio) else float(ratio)


def _steps_words(ratio: float) -> str:
    """"; BA-LoRA at twice LoRA's training steps" where `ratio` (`_steps_ratio`) is not 1, else ""."""
    if round(ratio, 2) == 1:
        return ""
    times = "twice" if round(ratio, 2) == 2 else "half" if round(ratio, 2) == 0.5 else f"{ratio:.2g} times"
    return f"; {method_name(claims.PROPOSED)} at {times} {method_name(REFERENCE)}'s training steps"


def _undecided(places: list[tuple[str, stats.Comparison, float]]) -> str:
    """BA-LoRA against tuned LoRA where no difference is shown, as a sentence (not a list of settings): each verdict
    once with its settings, an equivalence with the interval that bounds it, an inconclusive verdict with each
    setting's MDE, and where an equivalent pair trained for different lengths (each selected its own on
    validation), the ratio of their steps: "… is equivalent within ±1 pp with A (Δ = …; BA-LoRA at twice LoRA's training steps), and
    inconclusive with B (MDE …) and with C (MDE …)"."""
    by_verdict: dict[str, list[str]] = {}
    for where, c, steps in places:
        if c.verdict == stats.EQUIVALENT:
            word, detail = c.verdict_label, ", ".join(_delta_and_ci(c)) + _steps_words(steps)
        else:  # the cost of a tie, not of an undecided comparison: the abstract's length is arXiv's
            word, detail = "inconclusive", f"MDE {c.metric.amount(c.mde)}"
        # a setting in words that ends in brackets ("(64 examples per class)") takes the detail inside them
        said = f"{where[:-1]}; {detail})" if where.endswith(")") else f"{where} ({detail})"
        by_verdict.setdefault(word, []).append(f"with {said}")
    ordered = sorted(by_verdict.items(), key=lambda item: item[0] == "inconclusive")  # the bounded answer first
    return "Against tuned LoRA, BA-LoRA is " + "; and ".join(f"{word} {listed(wheres)}" for word, wheres in ordered) + "."


def _parts(report: Report, out: Output) -> dict[str, str]:
    analysis, frame = report.analysis, report.analysis.frame
    primary = primary_setting(frame)
    key = slug(primary)
    named = {b.name: b for b in [*report.blocks(Figure), *report.blocks(Table)]}

    def pick(*names: str) -> list[Table | Figure]:
        return [named[n] for n in names if n in named]

    def prefixed(prefix: str) -> list[Table | Figure]:
        return [block for name, block in named.items() if name.startswith(prefix)]

    tuning = [t for t in map(_evaluated_only, pick("tuning")) if t.rows]
    if tuning:  # the tables point to it for their selected values, instead of repeating them in the appendix
        out = replace(out, selection=tuning[0].name)

    # a study (a few settings, each its own question) shows every setting's comparisons; the main results, the
    # primary setting's (the report has the others)
    shown = settings(frame) if out.study else [primary]
    fewshot_missing = [m for m in report.missing if m.startswith("Few-shot")]
    anytime_sentences, anytime_floats = _anytime(report, pick)
    heatmaps = sorted(prefixed(f"rank_heatmap_{key}__"), key=lambda f: "__r_8_" not in f.name)
    shares = {setting: said for setting in shown if (said := claims.budget_shares(frame, setting))}
    evidence = {setting: said for setting in analysis.strategy  # the discussion's, in its "shapes" part
                if (said := _verdict_words(claims.proposed_rows(analysis.main.get(setting, [])), "tuned LoRA",
                                           "budgets", setting))}
    # the other shown settings' heatmaps, which the shares part points to (a study's), after the primary's
    shared = [f for setting in shares if setting != primary for f in prefixed(f"rank_heatmap_{slug(setting)}__")]

    def part(sentences: list[str | Cited], floats: list[Table | Figure], empty: str) -> str:
        # the paper's prose names a setting in words, its tables and figures by the report's label
        return part_latex([settings_in_words(s, frame) for s in sentences], floats, out,
                     str(settings_in_words(empty, frame)))

    budget_tables = pick(*(f"budget_{slug(setting)}" for setting in shown))

    def budget(setting: str) -> list[str | Cited]:
        return citing(_verdict_words(claims.proposed_rows(analysis.main.get(setting, [])), "LoRA", "budgets",
                                     setting if len(shown) > 1 else ""), pick(f"budget_{slug(setting)}"))

    def arms(setting: str) -> list[str | Cited]:
        return citing(_arm_verdicts(analysis.main.get(setting, []), "tuned LoRA"), pick(f"budget_{slug(setting)}"))

    def fewshot(name: str) -> list[str | Cited]:
        table = f"fewshot_{slug(name)}"  # its figure is its family's, whose name the table's begins with
        drawn = [f for f in prefixed("fewshot_") if isinstance(f, Figure) and table.startswith(f.name)]
        return citing(_verdict_words(claims.proposed_rows(analysis.fewshot[name]), "LoRA", "shot counts"),
                      [*drawn, *pick(table)])

    return {
        # the abstract, one paragraph (main.tex's prose around it): a study's findings with their intervals, the main
        # results' verdict count and instruction-tuning verdict (§5 and the appendix have the rest)
        "abstract": paragraph_latex([settings_in_words(s, frame) for s in _abstract(report, out)], out)
                    or latex_text("No comparison with LoRA was possible.") + "\n",
        "config": table_tex(config_table(frame), out),
        # the setup's test sets and image sizes, in the body's text (the configuration table is in the appendix)
        "data": paragraph_latex(data_sentences(frame), out) or "\n",
        "statistics": statistics_latex(out.study),
        # the protocol in the setup; what it selected, cell by cell, in the appendix's table (not in sentences)
        "selection": latex_text(selection.PROTOCOL) + "\n",
        "tuning": part([], [*tuning, *pick("convergence")], "No tuning runs."),
        # how many of the success criteria were met, in the results section (their table is in the appendix)
        "criteria_summary": part([criteria_summary(report.criteria, ADVANCE)] if report.criteria else [], [], ""),
        "criteria": part([], [replace(c, title="Success criteria fixed before the runs",
                                      notes=[declared(note, out.study) for note in c.notes]) for c in pick("criteria")],
                         "No success criteria could be assessed."),
        # the tables give every Δ, CI, p and MDE; the text says the verdicts in words only (the abstract, its
        # findings' intervals)
        # the body's sentences refer to the tables and figures that hold their numbers: a study's budget tables in
        # the body, the main results' in the appendix (the body's pages are the lever study's, as for few shots)
        "budget": part([s for setting in shown for s in budget(setting)], budget_tables if out.study else [],
                       f"No budget comparison in {primary}."),
        # every arm's verdict against LoRA, for a study whose arms are each a question (results/peers), in the body;
        # the budget tables that hold their numbers, in the appendix (the body's pages are few)
        "arms": part([s for setting in shown for s in arms(setting)], [], f"No comparison with LoRA in {primary}."),
        "arms_more": part([], pick(*(f"budget_{slug(setting)}" for setting in shown)), ""),
        # accuracy against parameters: the table has the numbers, the appendix the picture
        "budget_more": part([], [*([] if out.study else budget_tables), *pick(f"pareto_{key}")], ""),
        # the few-shot verdicts in words in the body; their figure and tables in the appendix (the body's pages are
        # the lever study's)
        "fewshot": part([*(s for name in analysis.fewshot for s in fewshot(name)),
                         *citing(claims.trend_counts(analysis), prefixed("fewshot_trend_"))],
                        [], " ".join(["No few-shot comparison.", *fewshot_missing])),
        "fewshot_more": part([], prefixed("fewshot_"), ""),
        # where the ranks went (the importance-rank correlation, the module types with the most and the least rank),
        # pointing to every budget's heatmap (r = 8 first where there is one); then those and the importance plot
        "allocation": part(citing(claims.allocation_claims(frame, primary), heatmaps), [],
                           f"No allocation data in {primary}."),
        # how the ranks split the budget between attention and MLP, where modules differ in shape (the body's evidence
        # for the split between shapes), pointing to the setting's heatmaps
        "shares": part([s for setting, said in shares.items()
                        for s in citing(said, prefixed(f"rank_heatmap_{slug(setting)}__"))], [], ""),
        "allocation_more": part([], [*heatmaps, *shared, *pick(f"importance_rank_{key}", f"rank_per_layer_{key}")],
                                ""),
        # the ablations and strategies have their own settings (the paper preset runs them at 64 shots); the
        # ablations' verdicts in words, their tables for the appendix
        "ablation": part([s for setting in analysis.ablation
                          for s in citing(_verdict_words(analysis.ablation[setting], "full BA-LoRA", "ablations",
                                                         setting if len(analysis.ablation) > 1 else ""),
                                          pick(f"ablation_{slug(setting)}"))], [], "No ablation runs."),
        "ablation_more": part([], pick(*(f"ablation_{slug(setting)}" for setting in analysis.ablation)), ""),
        # each strategy table's verdicts led by its setting (the appendix shows other settings beside it)
        "strategy": part([s for setting in analysis.strategy
                          for s in citing(_verdict_words(analysis.strategy[setting], "LoRA", "strategies", setting),
                                          pick(f"strategy_{slug(setting)}"))],
                         pick(*(f"strategy_{slug(setting)}" for setting in analysis.strategy)), "No strategy comparison."),
        # one lever at a time: its verdicts in words in the body, an item per setting, led by the setting where there
        # are several; the table in the appendix (it has a row per arm of every group)
        "levers": part([" ".join([f"{setting}." if len(analysis.levers) > 1 else "", *_lever_words(rows)]).strip()
                        for setting, rows in analysis.levers.items()], [], ""),
        "levers_more": part([], pick(*(f"levers_{slug(setting)}" for setting in analysis.levers)), ""),
        # the discussion's evidence, a sentence that names its setting (a reviewer's read found it orphaned where
        # only the prose before it did): BA-LoRA's verdict against LoRA (the table has Δ and CI), where a strategy
        # table adapts
        # other modules than the budget tables (modules of several shapes), as that setting's budget table has it:
        # the comparison the abstract's tally counts (`claims.main_rows`; the strategy table, adjusting over its
        # heuristics too, reads it with a larger MDE); the controls' verdicts are the results section's
        "shapes": part([s for setting, said in evidence.items() for s in citing(said, pick(f"budget_{slug(setting)}"))],
                       [], f"No comparison of {method_name(claims.PROPOSED)} with LoRA among the strategies."),
        # the strategies' parameters against their loss, and the budget tables the discussion cites: detail for the
        # appendix
        "strategy_more": part([], pick(*(f"params_loss_{slug(setting)}" for setting in analysis.strategy),
                                       *(f"budget_{slug(setting)}" for setting in evidence if setting not in shown)),
                              ""),
        # the anytime verdicts in words in the body, their tables in the appendix (the body's pages are few)
        "anytime": part(anytime_sentences, [], "No anytime comparison."),
        "anytime_more": part(citing([speed_columns()], anytime_floats) if anytime_floats else [], anytime_floats, ""),
        # the exceptions only: the settings with runs that did not learn (the majority rates are in the configuration
        # table), and the arms still rising that no longer training checked (the gains are in the convergence table)
        "dynamics": part([*claims.majority_claims(frame[frame.groupby("setting")["not_learnt"].transform("any")]),
                          *citing([_in_source(sentence, out.study) for sentence in
                                   selection.convergence_claims(report.converging, detail=False)], pick("convergence"))],
                         pick(f"validation_{key}", f"train_loss_{key}"), "No training curves."),
        # the time ratios, pointing to the table, whose caption says what they measure besides the method (a reader
        # took one below 1 for a speed-up)
        "cost": part(citing(claims.cost_claims(frame, primary), pick(f"cost_{key}")), pick(f"cost_{key}"),
                     f"No timings in {primary}."),
        # the limitations' caveat on the comparisons' reference, where it had not converged
        "limitations": part(rising_references(report.converging), [], ""),
    }


def rising_references(arms: list[dict]) -> list[str]:
    """A limitation of the comparisons with LoRA (`selection.rising_arms`' `arms`): where LoRA, their reference, or
    BA-LoRA, the method they test, was still rising on validation at its last evaluation and a longer training was
    not tried for it on validation (LoRA's cut short favours BA-LoRA; BA-LoRA's, LoRA)."""
    reference, proposed = method_name(REFERENCE), method_name(claims.PROPOSED)
    named = {reference: f"{reference}, the reference,", proposed: proposed}
    late = sorted((a for a in arms if a["rising"] and not a["longer_not_better"] and a["arm"] in named),
                  key=lambda a: a["arm"] != reference)
    if not late:
        return []
    by_setting: dict[str, list[str]] = {}  # each setting said once: its words are long
    for a in late:
        by_setting.setdefault(a["setting"], []).append(f"{named[a['arm']]} at {budget_label(a['budget'])}")
    where = "; ".join(f"with {setting}, {listed(arms)}" for setting, arms in by_setting.items())
    return [f"Still rising on validation when its training ended, and not tried for longer: {where}. A longer "
            "training might change those comparisons."]


def _evaluated_only(table: Table) -> Table:
    """The selection table without the cells whose evaluation runs have not run (the report lists them; the paper
    reports what ran), nor the note on their mark."""
    at = table.columns.index("Selected")
    rows = [row for row in table.rows if not row[at].endswith(selection.PENDING)]
    return replace(table, rows=rows, notes=[note.replace(selection.PENDING_NOTE, "") for note in table.notes])


def _clear(folder: Path, study: str) -> None:
    """Empty `folder` of this source's parts before they are written again (a rerun on other data must not
    leave old ones behind); the main results' folder keeps the studies' folders inside it."""
    if study or not folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in folder.iterdir():
        if path.name in STUDIES and path.is_dir():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_generated(report: Report | None, paper_dir: Path, study: str = "") -> Path:
    """Write `paper_dir/generated/` (a study's: `paper_dir/generated/<study>/`, see `STUDIES`) for `report`
    (None: no results, every part says so). Returns the folder."""
    tex = f"generated/{study}" if study else "generated"
    out = Output(paper_dir / tex, tex, study)
    _clear(out.folder, study)
    out.folder.mkdir(parents=True, exist_ok=True)
    names = {name: study.capitalize() + name for name in MACROS}
    if report is None:
        values = dict.fromkeys(MACROS, "n/a")
        parts = dict.fromkeys(PARTS, "No results were available when this paper was generated.\n")
    elif report.analysis.frame.empty:  # causal-LM runs only
        values = dict.fromkeys(MACROS, "n/a")
        parts = dict.fromkeys(PARTS, "No classification results were available when this paper was generated.\n")
        answers = [s for rows in report.analysis.lm.values() for s in lm.answer(rows)]
        parts["abstract"] = sentences_latex(answers, out) + parts["abstract"]
    else:
        values = macros(report.analysis.frame)
        parts = _parts(report, out)
    (out.folder / "results.tex").write_text(macros_latex({names[k]: v for k, v in values.items()}))
    if report is not None:
        floats = [b for b in report.sections.get("lm", []) if isinstance(b, Table | Figure)]
        lm_runs = [row.runs for rows in report.analysis.lm.values() for row in rows]
        if lm_runs:  # what the instruction-tuning runs were configured with, as the other studies' tables say it
            floats.insert(0, config_table(pd.concat(lm_runs), "lm_config"))
        # the results section's finding (BA-LoRA's verdict, and the other strategies'), pointing to the appendix's
        # strategy table and its figure, which hold every number; the abstract has BA-LoRA's interval, the appendix
        # only the floats (each said it again, word for word)
        found = [s for rows in report.analysis.lm.values() for s in lm.finding(rows)]
        cited = [f for f in floats if f.name.startswith(("lm_strategy_", "params_loss_"))]
        parts["lm"] = part_latex([], floats, out, "No instruction-tuning (causal-LM) runs.")
        # and how far training moved the loss, against which its margin in nats reads
        untrained = [s for rows in report.analysis.lm.values() for s in lm.untrained_reference(rows)]
        parts["instruction"] = part_latex(citing(found, cited) + untrained, [], out, "No instruction-tuning (causal-LM) runs.")
        # after every table that may put its values there; nothing where none did (the selection table has them)
        parts["values"] = VALUES_LEAD + "".join(out.appendix) if out.appendix else ""
    for name, text in parts.items():
        (out.folder / f"{name}.tex").write_text(text)
    return out.folder


def build_paper(paper_dir: str | Path = "paper") -> Path:
    """pdflatex, bibtex, pdflatex ×2 on `paper_dir/main.tex`; returns main.pdf. Needs TeX Live
    (Debian: texlive-latex-base, texlive-latex-recommended, texlive-fonts-recommended)."""
    folder = Path(paper_dir)
    if shutil.which("pdflatex") is None or shutil.which("bibtex") is None:
        raise BaloraError("building the paper needs pdflatex and bibtex (e.g. apt-get install texlive-latex-base "
                          "texlive-latex-recommended texlive-fonts-recommended)")
    latex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]
    for command in (latex, ["bibtex", "main"], latex, latex):
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-25:])
            raise BaloraError(f"{command[0]} failed in {folder}:\n{tail}")
    return folder / "main.pdf"

"""The paper's generated inputs (`paper/generated/`) and its build (pdflatex + bibtex).

`main.tex` holds only prose that does not depend on results; every number, every result sentence,
table and figure comes from here:

- `results.tex`: `\\newcommand` macros (`MACROS`: runs, seeds, budgets, module shapes, ...);
- one file per part (`PARTS`: abstract, statistics, budget, fewshot, ...): the statistics-worded
  claims, then the part's tables (`tables/`, compact columns) and figures (`figures/`, PDF).

Per-setting parts show the primary setting (full data if there is one, else the one with the most
runs); the report has every setting.

A results folder named in `STUDIES` is a study the paper reports beside its main results: its report writes
the same parts into `generated/<study>/` (its macros prefixed, e.g. `\\LeversNumRuns`), so that writing one
source's parts never overwrites or deletes another's.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from balora import method_registry
from balora.assets import VIT_FASHION_IMAGE, VIT_FASHION_NAME, VIT_FASHION_PATCH
from balora.config import RunConfig
from balora.errors import BaloraError
from balora.report import anytime, claims, figures, lm, selection, stats
from balora.report.analysis import Row
from balora.report.builder import Report
from balora.report.criteria import DECLARED_BY_SPEC, criteria_summary
from balora.report.document import (
    NARROW,
    PLACEMENT,
    Figure,
    Table,
    fits_upright,
    latex_text,
    listing_latex,
    slug,
    table_latex,
)
from balora.report.runs import (
    DATASET_WORDS,
    OPTION_WORDS,
    REFERENCE,
    SHORT_NAMES,
    budget_label,
    method_name,
    named_labels,
    setting_words,
    settings,
    words_of,
)
from balora.report.tables import (
    ACCURACY_NOTES,
    CI_LEVEL,
    COST_NOTE,
    DASH,
    DIFFERENCES,
    LEVER,
    LEVERS_NOTE,
    MARGIN_NOTE,
    MARGIN_SOURCE,
    grouped,
    pct,
    signed,
)

DEFAULTS = RunConfig()  # what a config that leaves a field out ran with
MACROS = ("NumRuns", "NumSettings", "NumMethods", "NumSeeds", "SeedList", "ModelNames", "DatasetNames", "ShotCounts",
          "BudgetList", "NumTargetModules", "CostPerRank", "TargetShapes", "HeadParams", "MajorityRate", "TestSize",
          "LearningRates", "GradientSamples", "Gammas", "GammaNormalise", "AlphaRatios", "AdaLoRAInitRatios", "Devices",
          "PrimarySetting", "AllocationStrategies", "AllocationPowers", "MinRanks")
# methods whose ranks come from the configured allocation strategy (the no-budget ablation does not: it keeps
# seed 000's min-max ranks, see balora.methods.ba_lora_no_budget)
ALLOCATED = ("ba_lora", "ba_lora_no_warmstart", "ba_lora_shuffled", "ba_lora_dynamic")
CONTENTION = (f"{COST_NOTE} A time ratio thus measures the machine's load during the runs as well as the method, "
              "and one below 1 is no speed-up.")
# where a row has fewer seeds than its reference: Δ pairs seeds, the means do not
# Appendix A: the protocol, then the tables' notation, each said once; the captions say only what is their own
PROTOCOL = (
    "Replicates are runs that differ only in the seed; runs of two methods with the same seed (same data sample, head "
    "initialisation, LoRA's random A and data order) are paired. A comparison of an arm with its reference (LoRA; full "
    "BA-LoRA for the controls) at the same setting and budget reads the per-seed differences Δ (arm − reference) over "
    "their matched seeds. Two tests decide it, each Holm-adjusted over the comparisons of one table (statsmodels): a "
    "paired t-test (scipy), and a paired equivalence test (TOST, two one-sided t-tests) that the true Δ lies within ± "
    f"a margin, the one {DECLARED_BY_SPEC}, else ±1 pp of accuracy or ±0.01 nats of test loss. The verdict, at α = "
    "0.05, is better or worse where the adjusted t-test rejects no difference (the direction from Δ; in test loss, "
    "lower is better); else equivalent within ±margin where the adjusted equivalence test rejects a difference as "
    "large as the margin; else inconclusive: these seeds show neither a difference nor equivalence. An inconclusive "
    "verdict comes with its minimum detectable effect (MDE), the |Δ| that the adjusted t-test detects with at least "
    "80% power for the number of pairs and the observed std of the differences (scipy's noncentral t at Bonferroni's "
    "α/m, m the table's tested comparisons, since Holm's test rejects whatever Bonferroni's does): a true difference "
    "smaller than the MDE would likely go undetected. With fewer than 3 matched seeds (n<3), or differences that are "
    "the same on every seed (not testable), there is no test, no interval and no MDE, and no difference is called "
    "significant. Δ's interval is the paired-t confidence interval at the level that matches the verdict, "
    "1 − 0.05·p/p(Holm) (95% for a table's one test), so it excludes 0 exactly when the verdict is better or worse; "
    "on an equivalent row it is the equivalence test's, at 1 − 0.1·p(TOST)/p(TOST, Holm), which lies inside ±margin "
    "and may exclude 0.")
NOTATION = (
    ("Acc. (%), Eval loss", "test accuracy, or test cross-entropy, mean ± std over the row's seeds (n)."),
    ("LoRA params", "the LoRA parameters trained (the classification head, trained by every arm, excluded); "
                    "marked (mean) where they differ between seeds."),
    ("Δ acc. (pp) [95.0% CI]", "Δ, mean over the matched seeds, with its interval at the level in the header; where "
                               "the rows' levels differ, the header says [CI] and the column CI level gives each "
                               "row's. (reference): the row the others are compared with. Where a row has fewer "
                               "seeds (n) than its reference, Δ is over the seeds they share, so it need not equal "
                               "the difference of the two means."),
    ("p (TOST, Holm)", "the adjusted equivalence test's p."),
    ("Verdict", "better, worse, equivalent within ±margin, or inconclusive with its MDE, else why there is no test "
                "(above). Each caption states its table's margin and when it was fixed."),
    ("≤ majority", ACCURACY_NOTES["≤ majority"].removeprefix("≤ majority: ").removesuffix(".")
     + "; a table without the column says when none did."),
    ("Same in every row", "the columns whose value every row shares, said once in the caption."),
    ("Epochs", "each row's training length; the values each arm selected on validation, such as its learning rate, "
               "are in Appendix B's selection tables, to which each caption points."))
# the columns whose notes NOTATION gives, or the selection protocol just above the selection tables (Appendix B):
# the captions no longer repeat them
EXPLAINED_ONCE = ("≤ majority", "Verdict", "Selected", f"{selection.REJECTED} Not admissible")
# the paper's tables: the headers it abbreviates (said under each table that has them), the mark on a value selected
# on validation (as in the selection table), the config field that lists those, and the CI level's column
SHORT_HEADERS = {"learning_rate": "lr"}
SELECTED, TUNED, CI_LEVEL_HEADER = "*", "tuned", "CI level"
# what the appendix's tables of values say they are, where a source has any (`_with_fields`)
VALUES_LEAD = (r"\paragraph{Values the rows differ in.} Where a results table has no room for them as columns, the "
               "values its rows differ in, such as the learning rate each arm selected, are listed here.\n")
# The sources (`study_of`) whose equivalence margin was fixed after some of their runs, with the paper's words for
# when (a table note's, the full one): the main results' text and instruction-tuning runs (committed 2026-11-30 to
# 12-03) predate the equivalence test and the presets' margins (commits c1c62d8 and 6f6c668 of 2026-12-06); only
# later seeds of LoRA and BA-LoRA came after. The peers study shares its LoRA, BA-LoRA, AdaLoRA and EVA runs with
# the main results; its own arms ran after. The lever study fixed its margin before its own runs, after those it
# imports (regime (a)'s LoRA and BA-LoRA from the main results, the ViT's first seeds from results/vision).
MARGIN_AFTER_RUNS = {
    "levers": ("fixed after the runs it imports",
               "fixed before its own runs, but after those it imports: regime (a)'s LoRA and BA-LoRA runs from the main "
               "results (regime (a)'s table is the one with imported runs)"),
    "": ("fixed after most runs", "fixed before the analysis but after most of the runs"),
    "peers": ("fixed after the runs it shares with the main results",
              "fixed before the analysis and before PiSSA's, OLoRA's, LoRA-GA's and DoRA's runs, but after the LoRA, "
              "BA-LoRA, AdaLoRA and EVA runs it shares with the main results")}
TEXT_WIDTH = figures.TEXT_WIDTH  # inches: main.tex's letter paper with 1 in margins
FIGURE_HEIGHT = 0.75  # of the text height: the tallest a figure prints, its caption below it on the page
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


@dataclass(frozen=True)
class Output:
    """Where a source's parts go: `folder` on disk, and `tex`, the same folder as main.tex names it."""

    folder: Path
    tex: str
    study: str = ""
    appendix: list[str] = field(default_factory=list)  # tables for the appendix's part "values", as written
    selection: str = ""  # the name of the table of values selected on validation, where the paper shows one

    def reference(self, name: str) -> str:
        """A mark, in a table's plain-text note, that `_table` turns into a reference to table `name`."""
        return f"[[{self.label(name)}]]"

    def label(self, name: str) -> str:
        """A float's label, unique in the paper: a study's floats may share names with the main results'."""
        return f"{self.study}/{name}" if self.study else name


def primary_setting(frame: pd.DataFrame) -> str:
    """The setting the paper's per-setting parts show: full data first, then the most runs."""
    counts = frame.groupby("setting", sort=False).agg(runs=("key", "size"),
                                                      fewshot=("shots", lambda s: s.notna().all()))
    return str(counts.sort_values(["fewshot", "runs"], ascending=[True, False], kind="stable").index[0])


def _values(frame: pd.DataFrame, column: str) -> str:
    return ", ".join(str(v) for v in sorted(frame[column].dropna().unique())) or "none"


def _config_values(frame: pd.DataFrame, name: str) -> str:
    """The values of config field `name` among the runs of `frame` (RunConfig's default where left out)."""
    values = {r["config"].get(name, getattr(DEFAULTS, name)) for r in frame["result"]}
    said = {"yes" if v is True else "no" if v is False else str(v) for v in values}
    return ", ".join(sorted(said, key=_numeric_first)) or "none"


def _numeric_first(value: str) -> tuple[float, str]:
    """A sort key that orders numbers by value (8 before 30), then words."""
    try:
        return float(value), ""
    except ValueError:
        return math.inf, value


def macros(frame: pd.DataFrame) -> dict[str, str]:
    """The numbers the hand-written prose may cite (`MACROS`), as plain text."""
    modules = frame["result"].iloc[0].get("allocation", [])
    data = frame["result"].iloc[0].get("data", {})
    ba_lora = frame[frame["method"].str.startswith("ba_lora")]
    allocated = frame[frame["method"].isin(ALLOCATED)]
    return {
        "NumRuns": f"{len(frame):,}", "NumSettings": str(len(settings(frame))),
        "NumMethods": str(frame["arm"].nunique()),
        "NumSeeds": str(frame["seed"].nunique()), "SeedList": _values(frame, "seed"),
        "ModelNames": _values(frame, "model"), "DatasetNames": _values(frame, "dataset"),
        "ShotCounts": ", ".join(str(int(k)) for k in sorted(frame["shots"].dropna().unique())) or "none",
        "BudgetList": ", ".join(budget_label(b, int(c["budget_params"].iloc[0])) for b, c in frame.groupby("budget")),
        "NumTargetModules": str(len(modules)), "CostPerRank": f"{sum(sum(m['shape']) for m in modules):,}",
        "TargetShapes": ", ".join(sorted({f"{m['shape'][0]}×{m['shape'][1]}" for m in modules})) or "unknown",
        "HeadParams": ", ".join(f"{int(h):,}" for h in sorted(frame["head_params"].unique())),
        "MajorityRate": pct(frame["majority_rate"].mean()), "TestSize": f"{data['test']:,}" if "test" in data else "?",
        "LearningRates": _config_values(frame, "learning_rate"),
        "GradientSamples": _config_values(ba_lora, "gradient_samples"), "Gammas": _config_values(ba_lora, "gamma"),
        "GammaNormalise": _config_values(ba_lora, "gamma_normalise"),
        "AlphaRatios": _config_values(frame, "alpha_ratio"),
        "AdaLoRAInitRatios": _config_values(frame[frame["method"] == "adalora"], "adalora_init_ratio"),
        "Devices": ", ".join(sorted({_device_name(str(r.get("environment", {}).get("device", "?")))
                                     for r in frame["result"]})),
        "PrimarySetting": words_of(frame, primary_setting(frame)),
        "AllocationStrategies": _config_values(allocated, "strategy"),
        "AllocationPowers": _config_values(allocated, "allocation_power"),
        "MinRanks": _config_values(allocated, "min_rank"),
    }


def config_table(frame: pd.DataFrame, name: str = "config") -> Table:
    """The configuration the runs used, a row per quantity: what the method and setup sections would otherwise
    list in sentences. A quantity that differs between settings is given per setting; one no run sets (epochs left
    to the preset), or that no run has (no BA-LoRA, no accuracy), has no row."""
    values = macros(frame)
    ba_lora = frame[frame["method"].str.startswith("ba_lora")]
    rows = [["Runs", f"{values['NumRuns']} finished runs of {values['NumMethods']} methods in "
                     f"{values['NumSettings']} settings"],
            ["Seeds", values["SeedList"]]]
    if frame["shots"].notna().any():
        rows.append(["Shots per class", values["ShotCounts"]])
    rows.append(["Budgets (rank-equivalent)", values["BudgetList"]])
    if any(r["config"].get("epochs") is not None for r in frame["result"]):
        rows.append(["Epochs", _config_values(frame, "epochs")])
    rows += [["Learning rates", values["LearningRates"]],
             ["α ratio a (α = a·r)", _by_setting(frame, lambda runs: _config_values(runs, "alpha_ratio"))]]
    if not ba_lora.empty:
        rows += [["Gradient samples (importance)", _by_setting(ba_lora, _importance_sample)],
                 ["Allocation strategy, power p", f"{values['AllocationStrategies']}, p = {values['AllocationPowers']}"],
                 ["Smallest rank", values["MinRanks"]],
                 ["Warm-start step γ", _by_setting(ba_lora, lambda runs: _config_values(runs, "gamma"))
                  + f" (gradient normalised: {values['GammaNormalise']})"]]
    if (frame["method"] == "adalora").any():
        rows.append(["AdaLoRA initial rank / budget rank", values["AdaLoRAInitRatios"]])
    if frame["majority_rate"].notna().any():
        rows.append(["Test set, majority-class rate", _by_setting(
            frame, lambda runs: f"{_test_size(runs)} examples, {pct(runs['majority_rate'].mean())}%")])
    rows += _method_options(frame)
    rows += [["Image input", text] for text in _image_input(frame)]
    rows.append(["Devices", values["Devices"]])
    return Table(name, "Configuration of the runs (the values each field took across them; the setup section "
                 "says which were selected on validation)", ["Quantity", "Values"], rows)


def statistics_latex(study: str) -> str:
    """Appendix A: the protocol (the margin as fixed for the source `study`), then the tables' notation, a list."""
    # each term in braces: a "]" in it ("[95.0% CI]") would end the item's label early
    items = "".join(rf"\item[{{{latex_text(name)}}}] {latex_text(meaning)}" + "\n" for name, meaning in NOTATION)
    return (latex_text(_declared(PROTOCOL, study)) + "\n\n" + r"\paragraph{Table notation.}" + "\n"
            + r"\begin{description}\itemsep0pt" + "\n" + items + r"\end{description}" + "\n")


def _in_source(sentence: str, study: str) -> str:
    """`sentence` led by the source it is about (`SOURCE_NAMES`): the appendix puts every source's side by side, and a
    sentence about one read as a contradiction of another's."""
    return f"In {SOURCE_NAMES.get(study, f'the {study} study')}, {sentence[0].lower()}{sentence[1:]}"


def _margin_fixed(study: str, brief: bool = False) -> str:
    """When a source's equivalence margin was fixed, in the paper's words (`MARGIN_AFTER_RUNS`); `brief`: a table
    note's (the protocol and the setup say it in full)."""
    if study not in MARGIN_AFTER_RUNS:
        return "fixed before the runs"
    return MARGIN_AFTER_RUNS[study][0 if brief else 1]


def _own_runs_only(notes: list[str], study: str) -> bool:
    """Whether every run of a study's table is the study's own (its margin note names the sweeps of its runs,
    `tables.margin_note`): its margin was then fixed before them, whatever runs the study imports elsewhere."""
    source = next((note for note in notes if note.startswith(MARGIN_SOURCE)), "")
    found = re.search(r"runs are from sweeps? (.+)\)\.$", source)
    return bool(study and found) and found.group(1).split(", ") == [study]


def _declared(text: str, study: str) -> str:
    """`text` with what a spec declares said as the paper's reader knows it: the success criteria were declared before
    the runs, the margin of the source `study` when `_margin_fixed` says."""
    return text.replace(f"the one {DECLARED_BY_SPEC}", f"the one {_margin_fixed(study)}").replace(
        f"a hypothesis {DECLARED_BY_SPEC}", "a hypothesis declared before the runs")


def _by_setting(frame: pd.DataFrame, said: Callable[[pd.DataFrame], str]) -> str:
    """What `said` says of the runs of `frame`; where it differs between settings, each value with its settings."""
    by_value: dict[str, list[str]] = {}
    for setting, part in frame.groupby("setting", sort=False):
        by_value.setdefault(said(part), []).append(setting)
    if len(by_value) < 2:
        return said(frame)
    return "; ".join(f"{value} ({', '.join(named)})" for value, named in by_value.items())


def _importance_sample(runs: pd.DataFrame) -> str:
    """The training examples the importance pass read, and the number asked for where that was more than the
    training set holds (a reviewer read "1000" for 192 training examples as data LoRA never sees)."""
    used = sorted({(r.get("importance_sample") or {}).get("examples") for r in runs["result"]} - {None})
    asked = _config_values(runs, "gradient_samples")
    said = ", ".join(f"{n:,}" for n in used) or asked
    return said if not used or said == asked else f"all {said} training examples, of {asked} asked for"


def _test_size(runs: pd.DataFrame) -> str:
    sizes = sorted({r.get("data", {}).get("test") for r in runs["result"]} - {None})
    return ", ".join(f"{size:,}" for size in sizes) or "?"


def _image_input(frame: pd.DataFrame) -> list[str]:
    """How the image data meet the pretrained ViT of `vision_pretraining` (its processor resizes every image to
    its input side, which its patches tile): one line for the datasets adapted on it, none without such runs."""
    datasets = sorted(frame.loc[frame["model"] == VIT_FASHION_NAME, "dataset"].unique())
    if not datasets:
        return []
    side, patch = VIT_FASHION_IMAGE, VIT_FASHION_PATCH
    named = ", ".join(SHORT_NAMES.get(d, d) for d in datasets)
    return [f"{SHORT_NAMES[VIT_FASHION_NAME]}: {named} images resized to {side}×{side} pixels, cut into {patch}×{patch} "
            f"patches ({(side // patch) ** 2} per image)"]


def data_sentences(frame: pd.DataFrame) -> list[str]:
    """The setup's data in words: each dataset's test set with its majority-class rate, and how the images meet the
    pretrained ViT (`_image_input`'s numbers), where the runs have any."""
    sets = [f"{DATASET_WORDS.get(dataset, dataset)}, {_test_size(runs)} examples (majority-class rate "
            f"{pct(runs['majority_rate'].mean())}%)" for dataset, runs in frame.groupby("dataset", sort=False)
            if runs["majority_rate"].notna().any()]
    said = [f"The test sets: {'; '.join(sets)}."] if sets else []
    if (frame["model"] == VIT_FASHION_NAME).any():
        side, patch = VIT_FASHION_IMAGE, VIT_FASHION_PATCH
        said.append(f"Every image is resized to {side}×{side} pixels and cut into {patch}×{patch} patches "
                    f"({(side // patch) ** 2} per image).")
    return said


def _device_name(device: str) -> str:
    """A run's device as a reader names it: 'CPU', or the GPU's own name as the run recorded it."""
    return "CPU" if device == "cpu" else device


def _macro_file(values: dict[str, str]) -> str:
    return "".join(rf"\newcommand{{\{name}}}{{{latex_text(value)}}}" + "\n" for name, value in values.items())


def _figure(figure: Figure, out: Output) -> str:
    (out.folder / "figures").mkdir(exist_ok=True)
    if figures.RENDER.get():  # else only the text is being written
        shutil.copy(figure.pdf, out.folder / "figures" / figure.pdf.name)
    # natural size where it fits (so every figure's text is the same size), else shrunk to the page
    size = (rf"width={min(1.0, figure.width / TEXT_WIDTH):.3f}\linewidth,height={FIGURE_HEIGHT}\textheight,"
            "keepaspectratio")
    return "\n".join([
        rf"\begin{{figure}}[{PLACEMENT}]", r"\centering", rf"\includegraphics[{size}]{{{out.tex}/figures/{figure.pdf.name}}}",
        rf"\caption{{{latex_text(named_labels(figure.title))}. {latex_text(named_labels(figure.caption))}}}"
        rf"\label{{fig:{out.label(figure.name)}}}",
        r"\end{figure}", ""])


def _with_levels(table: Table) -> Table:
    """`table` with each row's CI level (`Table.detail`) after the interval's column, or, where every interval has
    one level, that level in the column's header; the interval's column then says, in a note, why its level is the
    one it is."""
    levels = table.detail.get(CI_LEVEL, [])
    tested = sorted({level for level in levels if level != DASH})
    interval = next((c for c in table.columns if c.endswith("[CI]")), None)
    if interval is None or not tested:
        return table
    columns, rows, column_notes = list(table.columns), [list(row) for row in table.rows], dict(table.column_notes)
    if len(tested) == 1:  # one level: the header says it
        header = f"{interval.removesuffix('[CI]')}[{tested[0]}% CI]"
        columns[columns.index(interval)] = header
        column_notes = {header if name == interval else name: note for name, note in column_notes.items()}
    else:
        after = columns.index(interval) + 1
        columns.insert(after, CI_LEVEL_HEADER)
        for row, level in zip(rows, levels):
            row.insert(after, level if level == DASH else f"{level}%")
    return replace(table, columns=columns, rows=rows, column_notes=column_notes)


def _with_fields(table: Table, out: Output) -> tuple[Table, Table | None]:
    """`table` with the fields its rows differ in (`Table.detail`) said once. Where the paper has a selection table
    (`Output.selection`): the training length, which a reader must know to compare the rows, as a column after the
    method where it fits (else in words), the values selected on validation by reference to that table (never
    repeated beside it), the others in words (`_in_words`). Else as columns after the method, each value selected on
    validation marked, and where the table would then be too wide for the page upright, the table as it is with a
    note that says where they are, with a second table of those values beside the rows' budgets and methods, for
    the appendix."""
    if out.selection:
        return _with_training_length(table, out), None
    fields, marks = _marked_selections({name: cells for name, cells in table.detail.items() if name != CI_LEVEL})
    if not fields:
        return table, None
    headers = {name: SHORT_HEADERS.get(name, name.replace("_", " ")) for name in fields}
    said = [*marks, *(f"{headers[name]}: {name.replace('_', ' ')}" for name in fields if name in SHORT_HEADERS),
            *(f"{headers[name]}: {_method_option(name)}" for name in fields if _method_option(name))]
    notes = [note for note in table.notes if not note.startswith(DIFFERENCES)]
    widened = _widened(table, fields, headers, [*said, *notes])
    if fits_upright(widened.constants_in_caption(), fit=True):
        return widened, None
    at = table.columns.index("Method") + 1
    values = Table(f"{table.name}_values", f"Values the rows differ in — {table.title}",
                   [*table.columns[:at], *headers.values()],
                   [[*row[:at], *cells] for row, cells in zip(table.rows, zip(*fields.values()))], said)
    where = f"The values its rows differ in ({', '.join(headers.values())}) are in Appendix B."
    return replace(table, notes=[*notes, where]), values


def _widened(table: Table, fields: dict[str, list[str]], headers: dict[str, str], notes: list[str]) -> Table:
    """`table` with `fields` as columns (under `headers`) after its method, and `notes`."""
    at = table.columns.index("Method") + 1
    return replace(table, columns=[*table.columns[:at], *headers.values(), *table.columns[at:]],
                   rows=[[*row[:at], *cells, *row[at:]] for row, cells in zip(table.rows, zip(*fields.values()))],
                   notes=notes)


def _with_training_length(table: Table, out: Output) -> Table:
    """`table` with a note on the fields its rows differ in (`_in_words`: the selection table, `Output.selection`, has
    the values selected on validation): the epochs in words where most rows share a value ("6 in every row (AdaLoRA
    r=16: 3)"), else as a column where it fits (a list of values with their rows read as a riddle)."""
    if not set(table.detail) - {CI_LEVEL, TUNED}:  # the rows differ in nothing the table does not show
        return table
    notes = [note for note in table.notes if not note.startswith(DIFFERENCES)]
    epochs = table.detail.get("epochs")
    if epochs is not None and not _usual(epochs):
        widened = _widened(table, {"epochs": epochs}, {"epochs": "Epochs"}, [*notes, *_in_words(table, out, ("epochs",))])
        if fits_upright(widened.constants_in_caption(), fit=True):
            return widened
    return replace(table, notes=[*notes, *_in_words(table, out)])


def _method_of(name: str) -> tuple[str, str]:
    """The method that alone reads config field `name` and what the field means, from its help
    ("ba_lora_dynamic: optimizer steps between reallocations." → ("ba_lora_dynamic", "optimizer steps between
    reallocations")); ("", "") for any other field."""
    help_text = next((f.metadata.get("help", "") for f in dataclasses.fields(RunConfig) if f.name == name), "")
    method, _, meaning = help_text.partition(": ")
    if not meaning or method_registry.find(method) is None:
        return "", ""
    return method, meaning.removesuffix(".")


def _method_option(name: str) -> str:
    """What a config field that only one method reads means ("optimizer steps between reallocations of BA-LoRA
    dynamic"): its column's header, the field's name, is that method's jargon. "" for any other field."""
    method, meaning = _method_of(name)
    return f"{meaning} of {method_name(method)}" if method else ""


def _method_options(frame: pd.DataFrame) -> list[list[str]]:
    """The configuration table's rows for the options that one method reads, where its runs set one off its default
    ("Optimizer steps between reallocations of BA-LoRA dynamic", "20"): the values a table's caption would otherwise
    list for one of its rows."""
    rows = []
    for config_field in dataclasses.fields(RunConfig):
        method, meaning = _method_of(config_field.name)
        runs = frame[frame["method"] == method]
        if runs.empty or all(r["config"].get(config_field.name, config_field.default) == config_field.default
                             for r in runs["result"]):
            continue
        rows.append([f"{meaning[:1].upper()}{meaning[1:]} of {method_name(method)}",
                     _by_setting(runs, lambda part, name=config_field.name: _config_values(part, name))])
    return rows


def _in_words(table: Table, out: Output, shown: tuple[str, ...] = ()) -> list[str]:
    """A note on the fields `table`'s rows differ in (`Table.detail`) but that it does not show (`shown`): those
    selected on validation by reference to the selection table (which lists every selected value), the training
    length, which a reader must know to compare the rows, and the fields no row selected, in words. Not the
    options an arm's name says ("BA-LoRA (rsLoRA scaling)": `OPTION_WORDS`) or one method's options, which the
    configuration table lists (`_method_options`): a caption is no place for a configuration."""
    values = {name: cells for name, cells in table.detail.items()
              if name not in (CI_LEVEL, TUNED, *shown, *OPTION_WORDS) and not _method_option(name)}
    tuned = set().union(*(cell.split(" + ") for cell in table.detail.get(TUNED, [])))
    at = table.columns.index("Method")
    leads = {row[0] for row in table.rows}
    shots = table.columns[0].startswith("Shots")  # a bare count read as a rank: "LoRA 16-shot" is its 16-shot row
    names = [row[at] if len(leads) == 1 else f"{row[at]} {row[0]}{'-shot' if shots else ''}" for row in table.rows]
    said = [_field_words(name, cells, names) for name, cells in values.items()
            if name == "epochs" or name not in tuned]
    selected = [SHORT_HEADERS.get(name, name.replace("_", " ")) for name in table.detail
                if name in tuned and name not in (CI_LEVEL, TUNED)]
    pointer = [f"The values its rows selected on validation ({', '.join(selected)}) are in "
               f"{out.reference(out.selection)}."] if selected else []
    return [*pointer, *(f"{words}." for words in said)]


def _usual(cells: list[str]) -> str | None:
    """The value most of `cells` hold, said once in a note with its exceptions; None where no value is most rows'."""
    by_value, common = grouped(cells, cells)
    return common if 2 * len(by_value[common]) > len(cells) else None


def _field_words(name: str, cells: list[str], names: list[str]) -> str:
    """One field's value per row in words: the usual value once, then its exceptions ("Epochs: 6 in every row
    (AdaLoRA r=16: 3)"), else each value with its rows."""
    by_value, common = grouped(cells, names)
    said = name.replace("_", " ")
    said = said[:1].upper() + said[1:]
    if DASH in by_value or _usual(cells) is None:
        valued = [(value, named) for value, named in by_value.items() if value != DASH]
        return f"{said}: " + "; ".join(f"{value} ({', '.join(named)})" for value, named in valued)
    return f"{said}: {common} in every row (" + "; ".join(
        f"{', '.join(named)}: {value}" for value, named in by_value.items() if value != common) + ")"


def _marked_selections(fields: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """The fields the rows differ in, each value selected on validation marked (`SELECTED`) instead of a column
    of which fields were (`TUNED`), where that is the same in every row or every field it differs in has its
    column; with the note that says what the mark means (none where nothing is marked)."""
    rest = {name: cells for name, cells in fields.items() if name != TUNED}
    if TUNED not in fields:
        return rest, []
    chosen = [set(cell.split(" + ")) for cell in fields[TUNED]]
    if not (set.union(*chosen) - set.intersection(*chosen)) <= set(rest):
        return fields, []
    marked = {name: [cell + SELECTED if name in picked else cell for cell, picked in zip(cells, chosen)]
              for name, cells in rest.items()}
    if marked == rest:
        return rest, []
    # an unmarked epochs value may have been chosen too: a sweep that lengthens tried twice as many on validation
    # and marks them tuned only where they won (Appendix B's selection table lists every try)
    said = f"{SELECTED}: selected on validation, else the preset's value"
    if "epochs" in marked:
        said += ("; an unmarked epochs value is the preset's where a longer training, if the sweep tried one on "
                 "validation, was not better")
    return marked, [said]


def _table(table: Table, out: Output) -> str:
    """The table's compact columns with its CI levels (`_with_levels`) and the fields its rows differ in
    (`_with_fields`: the appendix gets those that do not fit, `Output.appendix`), less the columns with one value
    in every row (said in the caption), without the statistics legend (the paper states it once, in
    `statistics.tex`) or where the equivalence margin comes from (the report says which spec declared it). A table
    whose rows repeat their setting is a listing: the setting a heading over its rows, on as many pages as it
    needs."""
    table = _named(table)
    table = replace(table, column_notes={name: note for name, note in table.column_notes.items()
                                         if name not in EXPLAINED_ONCE},
                    notes=[CONTENTION if note == COST_NOTE else note for note in table.notes
                           if note != LEVERS_NOTE])  # the body's "One lever at a time" says what the groups are
    # the margin itself and when it was fixed, not its spec
    fixed = "fixed before the runs" if _own_runs_only(table.notes, out.study) else _margin_fixed(out.study, brief=True)
    plain = [f"{note.removesuffix('.')}, {fixed}." if note.startswith(MARGIN_NOTE) else note
             for note in table.notes if not note.startswith(MARGIN_SOURCE)]
    short, values = _with_fields(_with_levels(replace(table.select(table.compact or table.columns), legend="",
                                                      notes=plain)), out)
    short = short.constants_in_caption()
    if "≤ majority" in short.columns and len(short.columns) > NARROW:  # a column of zeros said once, in words
        at = short.columns.index("≤ majority")
        if short.rows and all(row[at].startswith("0/") for row in short.rows):
            short = replace(short.select([c for c in short.columns if c != "≤ majority"]),
                            notes=[*short.notes, "No run in this table ended at or below the majority-class rate."])
    listed = None if values is None else _input(values, table_latex(values, label=f"tab:{out.label(values.name)}"), out)
    if listed is not None and listed not in out.appendix:  # a table two parts show (budget, arms_more) lists them once
        out.appendix.append(listed)
    grouped = short.columns[0] in ("Setting", LEVER) and len({row[0] for row in short.rows}) < len(short.rows)
    label = f"tab:{out.label(table.name)}"
    latex = listing_latex(short, label) if grouped else table_latex(short, label, fit=True)
    if out.selection:  # the note's mark (`Output.reference`), escaped as text, becomes a LaTeX reference
        latex = latex.replace(out.reference(out.selection), rf"Table~\ref{{tab:{out.label(out.selection)}}}")
    return _input(table, latex, out)


def _named(table: Table) -> Table:
    """`table` with the setting labels in its title, notes and cells said with names, not codes (`named_labels`)."""
    return replace(table, title=named_labels(table.title), rows=[[named_labels(c) for c in row] for row in table.rows],
                   notes=[named_labels(note) for note in table.notes],
                   column_notes={name: named_labels(note) for name, note in table.column_notes.items()})


def _input(table: Table, latex: str, out: Output) -> str:
    """Write a table's LaTeX to the source's `tables/`; the line that inputs it."""
    (out.folder / "tables").mkdir(exist_ok=True)
    (out.folder / "tables" / f"{table.name}.tex").write_text(latex)
    return rf"\input{{{out.tex}/tables/{table.name}.tex}}" + "\n"


@dataclass(frozen=True)
class Cited:
    """A claim with the tables and figures that hold its numbers, referred to at its end: "… (Table 3)."."""

    text: str
    floats: tuple[Table | Figure, ...]


def citing(sentences: list[str], floats: list[Table | Figure]) -> list[str | Cited]:
    """`sentences` whose last cites `floats` (the tables and figures they discuss); where there is no sentence,
    one that points to them, so that every float the body shows is referred to from its text."""
    if not floats:
        return list(sentences)
    if not sentences:
        return [Cited("", tuple(floats))]
    return [*sentences[:-1], Cited(sentences[-1], tuple(floats))]


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


def _references(floats: tuple[Table | Figure, ...], out: Output) -> str:
    """LaTeX that refers to `floats`: "Table~\\ref{…}", "Figure~\\ref{…} and Tables~\\ref{…} and~\\ref{…}"."""
    kinds: dict[str, list[str]] = {}
    for block in floats:
        kind, prefix = ("Table", "tab") if isinstance(block, Table) else ("Figure", "fig")
        kinds.setdefault(kind, []).append(rf"\ref{{{prefix}:{out.label(block.name)}}}")
    said = []
    for kind, refs in kinds.items():
        said.append(f"{kind}{'s' if len(refs) > 1 else ''}~{_listed(refs, ' and~')}")
    return " and ".join(said)


def _claim_latex(claim: str | Cited, out: Output) -> str:
    if isinstance(claim, str):
        return latex_text(claim)
    if not claim.text:
        return f"The numbers are in {_references(claim.floats, out)}."
    return f"{latex_text(claim.text.removesuffix('.'))} ({_references(claim.floats, out)})."


def _sentences(sentences: list[str | Cited], out: Output) -> str:
    """One claim as a paragraph; several as a list, easier to scan than a wall of numbers."""
    if len(sentences) < 2:
        return "".join(_claim_latex(s, out) + "\n\n" for s in sentences)
    return "\n".join([r"\begin{itemize}", *(rf"\item {_claim_latex(s, out)}" for s in sentences), r"\end{itemize}",
                      ""])


def _part(sentences: list[str | Cited], floats: list[Table | Figure], out: Output, empty: str) -> str:
    """Claims, then the floats; `empty` (what is missing) where there is neither."""
    if not sentences and not floats:
        return latex_text(empty) + "\n"
    return _sentences(sentences, out) + "".join(_table(f, out) if isinstance(f, Table) else _figure(f, out)
                                                for f in floats)


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
    """The levers table's comparisons in words (`LEVER_WORDS`), a sentence per lever: at each value held fixed
    (and budget, where the table has several), each arm's value of the lever with its verdict against the group's
    first arm."""
    several = len({r.lever.budget for r in rows}) > 1
    sentences = []
    for lever, words in LEVER_WORDS.items():
        groups: dict[str, list[str]] = {}
        for r in rows:
            if r.lever.kind == lever and r.comparison is not None:
                held = f"{r.lever.held} ({r.lever.budget})" if several else r.lever.held
                held = f"with {held} on both sides" if lever == "method" else f"at {held}"
                value = method_name(str(r.runs["method"].iloc[0])) if lever == "method" else r.lever.level
                groups.setdefault(held, []).append(f"{value} {_verdict_word([r.comparison])}")
        if groups:
            sentences.append(f"{words}: " + "; ".join(f"{held}, {', '.join(said)}" for held, said in groups.items())
                             + ".")
    return sentences


LISTED_ONE_BY_ONE = 4  # the most arms a sentence gives a verdict each; past it, each verdict once with its arms


def _verdict_words(rows: list, reference: str, what: str, where: str = "") -> list[str]:
    """One sentence in words for a table's comparisons, without its numbers (the table has them): each row's
    verdict against `reference` (past `LISTED_ONE_BY_ONE` rows, each verdict once with its rows), or, where every
    row is one method over `what`, how many got each verdict; led by `where` (the setting) where the part shows
    several."""
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
    if len(compared) > LISTED_ONE_BY_ONE:  # each verdict once, with the arms that got it
        by_verdict = {v: [r for r in compared if r.comparison.verdict == v] for v in claims.DECIDED}
        each = "; ".join(f"{_verdict_word([r.comparison for r in rs])}: {', '.join(r.label for r in rs)}"
                         for rs in by_verdict.values() if rs)
    else:
        each = "; ".join(f"{r.label}, {_verdict_word([r.comparison])}" for r in compared)
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
                          first.get("protocol", ""))
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
        undecided += [(f"{words} at {_budget_words(r.lead)}" if several else words, r.comparison)
                      for r in ours if r not in shown]
        ranks = [r for r in analysis.levers.get(setting, [])
                 if r.lever.kind == "ranks" and r.lever.budget in {s.lead for s in shown}]
        decided += [*_intervals(shown, "tuned LoRA"),
                    *_intervals(ranks, "uniform ranks (the ranks alone)", named=False,
                                label=lambda r: f"{r.lever.level} at {r.lever.held}")]
    # the settings without a difference in one sentence (the abstract's length is arXiv's), the findings last, where
    # the text goes on to read them
    return ([_undecided(undecided)] if undecided else []) + decided


def _undecided(places: list[tuple[str, stats.Comparison]]) -> str:
    """BA-LoRA against tuned LoRA where no difference is shown, as a sentence (not a list of settings): each verdict
    once with its settings, an equivalence with the interval that bounds it, an inconclusive verdict with each
    setting's MDE: "… is equivalent within ±1 pp with A (Δ = …), and inconclusive with B (MDE …) and with C (MDE …)"."""
    by_verdict: dict[str, list[str]] = {}
    for where, c in places:
        if c.verdict == stats.EQUIVALENT:
            word, detail = c.verdict_label, ", ".join(_delta_and_ci(c))
        else:
            word, detail = "inconclusive", f"MDE {c.metric.amount(c.mde)}"
        # a setting in words that ends in brackets ("(64 examples per class)") takes the detail inside them
        said = f"{where[:-1]}; {detail})" if where.endswith(")") else f"{where} ({detail})"
        by_verdict.setdefault(word, []).append(f"with {said}")
    ordered = sorted(by_verdict.items(), key=lambda item: item[0] == "inconclusive")  # the bounded answer first
    return "Against tuned LoRA, BA-LoRA is " + "; and ".join(f"{word} {_listed(wheres)}" for word, wheres in ordered) + "."


def _listed(items: list[str], last: str = " and ") -> str:
    """"a", "a and b", "a, b and c" (`last`: what joins the last two)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + last + items[-1]


def _paragraph(sentences: list[str | Cited], out: Output) -> str:
    """Claims as one paragraph, where a list would break up the text around it (the abstract); "" where none."""
    return " ".join(_claim_latex(s, out) for s in sentences) + "\n" if sentences else ""


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
                if (said := _intervals(claims.proposed_rows(analysis.main.get(setting, [])), "tuned LoRA"))}
    # the other shown settings' heatmaps, which the shares part points to (a study's), after the primary's
    shared = [f for setting in shares if setting != primary for f in prefixed(f"rank_heatmap_{slug(setting)}__")]

    def part(sentences: list[str | Cited], floats: list[Table | Figure], empty: str) -> str:
        # the paper's prose names a setting in words, its tables and figures by the report's label
        return _part([settings_in_words(s, frame) for s in sentences], floats, out,
                     str(settings_in_words(empty, frame)))

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
        "abstract": _paragraph([settings_in_words(s, frame) for s in _abstract(report, out)], out)
                    or latex_text("No comparison with LoRA was possible.") + "\n",
        "config": _table(config_table(frame), out),
        # the setup's test sets and image sizes, in the body's text (the configuration table is in the appendix)
        "data": _paragraph(data_sentences(frame), out) or "\n",
        "statistics": statistics_latex(out.study),
        # the protocol in the setup; what it selected, cell by cell, in the appendix's table (not in sentences)
        "selection": latex_text(selection.PROTOCOL) + "\n",
        "tuning": part([], [*tuning, *pick("convergence")], "No tuning runs."),
        # how many of the success criteria were met, in the results section (their table is in the appendix)
        "criteria_summary": part([criteria_summary(report.criteria, ADVANCE)] if report.criteria else [], [], ""),
        "criteria": part([], [replace(c, title="Success criteria fixed before the runs",
                                      notes=[_declared(note, out.study) for note in c.notes]) for c in pick("criteria")],
                         "No success criteria could be assessed."),
        # the tables give every Δ, CI, p and MDE; the text says the verdicts in words only (the abstract, its
        # findings' intervals)
        # the body's sentences refer to the tables and figures that hold their numbers
        "budget": part([s for setting in shown for s in budget(setting)],
                       pick(*(f"budget_{slug(setting)}" for setting in shown)),
                       f"No budget comparison in {primary}."),
        # every arm's verdict against LoRA, for a study whose arms are each a question (results/peers), in the body;
        # the budget tables that hold their numbers, in the appendix (the body's pages are few)
        "arms": part([s for setting in shown for s in arms(setting)], [], f"No comparison with LoRA in {primary}."),
        "arms_more": part([], pick(*(f"budget_{slug(setting)}" for setting in shown)), ""),
        # accuracy against parameters: the table has the numbers, the appendix the picture
        "budget_more": part([], pick(f"pareto_{key}"), ""),
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
        # only the prose before it did): BA-LoRA against LoRA, with Δ, CI and MDE, where a strategy table adapts
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
        "anytime_more": part([], anytime_floats, ""),
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
    """A limitation of the comparisons with LoRA (`selection.rising_arms`' `arms`): where LoRA, their reference, was
    still rising on validation at its last evaluation and a longer training was not tried for it on validation."""
    late = [a for a in arms if a["rising"] and not a["longer_not_better"] and a["arm"] == method_name(REFERENCE)]
    if not late:
        return []
    where = "; ".join(f"{a['setting']} at {budget_label(a['budget'])}" for a in late)
    return [f"{method_name(REFERENCE)}, the reference, was still rising on validation when its training ended, and a "
            f"longer one was not tried for it: {where}."]


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
        parts["abstract"] = _sentences(answers, out) + parts["abstract"]
    else:
        values = macros(report.analysis.frame)
        parts = _parts(report, out)
    (out.folder / "results.tex").write_text(_macro_file({names[k]: v for k, v in values.items()}))
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
        parts["lm"] = _part([], floats, out, "No instruction-tuning (causal-LM) runs.")
        # and how far training moved the loss, against which its margin in nats reads
        untrained = [s for rows in report.analysis.lm.values() for s in lm.untrained_reference(rows)]
        parts["instruction"] = _part(citing(found, cited) + untrained, [], out, "No instruction-tuning (causal-LM) runs.")
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

"""The paper's setup, as its runs recorded it: the macros the hand-written prose cites (`MACROS`), the configuration
table, the test sets in words, and Appendix A's protocol and table notation, with when each source's equivalence
margin was fixed (`MARGIN_AFTER_RUNS`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pandas as pd

from balora import method_registry
from balora.assets import VIT_FASHION_IMAGE, VIT_FASHION_NAME, VIT_FASHION_PATCH
from balora.config import RunConfig
from balora.report.criteria import DECLARED_BY_SPEC
from balora.report.document import Table, latex_text
from balora.report.runs import DATASET_WORDS, SHORT_NAMES, budget_label, method_name, settings, words_of
from balora.report.tables import ACCURACY_NOTES, pct

DEFAULTS = RunConfig()  # what a config that leaves a field out ran with
MACROS = ("NumRuns", "NumSettings", "NumMethods", "NumSeeds", "SeedList", "ModelNames", "DatasetNames", "ShotCounts",
          "BudgetList", "NumTargetModules", "CostPerRank", "TargetShapes", "HeadParams", "MajorityRate", "TestSize",
          "LearningRates", "GradientSamples", "Gammas", "GammaNormalise", "AlphaRatios", "AdaLoRAInitRatios", "Devices",
          "PrimarySetting", "AllocationStrategies", "AllocationPowers", "MinRanks")
# methods whose ranks come from the configured allocation strategy (the no-budget ablation does not: it keeps
# seed 000's min-max ranks, see balora.methods.ba_lora_no_budget)
ALLOCATED = ("ba_lora", "ba_lora_no_warmstart", "ba_lora_shuffled", "ba_lora_dynamic")
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
    return (latex_text(declared(PROTOCOL, study)) + "\n\n" + r"\paragraph{Table notation.}" + "\n"
            + r"\begin{description}\itemsep0pt" + "\n" + items + r"\end{description}" + "\n")


def margin_fixed(study: str, brief: bool = False) -> str:
    """When a source's equivalence margin was fixed, in the paper's words (`MARGIN_AFTER_RUNS`); `brief`: a table
    note's (the protocol and the setup say it in full)."""
    if study not in MARGIN_AFTER_RUNS:
        return "fixed before the runs"
    return MARGIN_AFTER_RUNS[study][0 if brief else 1]


def declared(text: str, study: str) -> str:
    """`text` with what a spec declares said as the paper's reader knows it: the success criteria were declared before
    the runs, the margin of the source `study` when `margin_fixed` says."""
    return text.replace(f"the one {DECLARED_BY_SPEC}", f"the one {margin_fixed(study)}").replace(
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
    """The setup's data in words: each dataset's test set with its majority-class rate. How the images meet the
    pretrained ViT is the configuration table's (`_image_input`): a review read it in the setup's prose as a
    configuration dump."""
    sets = [f"{DATASET_WORDS.get(dataset, dataset)}, {_test_size(runs)} examples (majority-class rate "
            f"{pct(runs['majority_rate'].mean())}%)" for dataset, runs in frame.groupby("dataset", sort=False)
            if runs["majority_rate"].notna().any()]
    return [f"The test sets: {'; '.join(sets)}."] if sets else []


def _device_name(device: str) -> str:
    """A run's device as a reader names it: 'CPU', or the GPU's own name as the run recorded it."""
    return "CPU" if device == "cpu" else device


def macros_latex(values: dict[str, str]) -> str:
    return "".join(rf"\newcommand{{\{name}}}{{{latex_text(value)}}}" + "\n" for name, value in values.items())


def method_of(name: str) -> tuple[str, str]:
    """The method that alone reads config field `name` and what the field means, from its help
    ("ba_lora_dynamic: optimizer steps between reallocations." → ("ba_lora_dynamic", "optimizer steps between
    reallocations")); ("", "") for any other field."""
    help_text = next((f.metadata.get("help", "") for f in dataclasses.fields(RunConfig) if f.name == name), "")
    method, _, meaning = help_text.partition(": ")
    if not meaning or method_registry.find(method) is None:
        return "", ""
    return method, meaning.removesuffix(".")


def method_option(name: str) -> str:
    """What a config field that only one method reads means ("optimizer steps between reallocations of BA-LoRA
    dynamic"): its column's header, the field's name, is that method's jargon. "" for any other field."""
    method, meaning = method_of(name)
    return f"{meaning} of {method_name(method)}" if method else ""


def _method_options(frame: pd.DataFrame) -> list[list[str]]:
    """The configuration table's rows for the options that one method reads, where its runs set one off its default
    ("Optimizer steps between reallocations of BA-LoRA dynamic", "20"): the values a table's caption would otherwise
    list for one of its rows."""
    rows = []
    for config_field in dataclasses.fields(RunConfig):
        method, meaning = method_of(config_field.name)
        runs = frame[frame["method"] == method]
        if runs.empty or all(r["config"].get(config_field.name, config_field.default) == config_field.default
                             for r in runs["result"]):
            continue
        rows.append([f"{meaning[:1].upper()}{meaning[1:]} of {method_name(method)}",
                     _by_setting(runs, lambda part, name=config_field.name: _config_values(part, name))])
    return rows

"""The report's account of the protocol's selection on validation: the tuning appendix (every
candidate's validation accuracy per cell, or loss for a causal LM, the selected one marked) and the
convergence check (arms whose validation accuracy was still rising at the last evaluation;
definition in `balora.tuning`)."""

from __future__ import annotations

import re
import statistics
from typing import Any

import pandas as pd

from balora import method_registry
from balora.report.document import Table
from balora.report.runs import arm_label, arm_order, budget_label, method_variants, setting_labels, settings
from balora.report.tables import DASH, pct
from balora.tuning import AT_CHANCE_TOLERANCE, RISING_TOLERANCE, CellTuning, Score, accuracy_curve, cell_key, still_rising, tuning_cells

MARK = "*"
REJECTED = "✗"
PENDING = " (evaluation pending)"  # a selection whose evaluation runs have not run yet: no test result
PENDING_NOTE = f" {PENDING.strip()}: its evaluation runs have not run yet."
LM_CRITERION = "; a causal LM's lowest mean final validation loss"


# in words a reader without the spec format knows: a sweep is what one spec declares, its tuned fields and grids are
# the spec's list of candidates, and lengthening is the spec's option to try twice the epochs
PROTOCOL = ("A sweep is the set of runs that one spec (such as a preset) declares. Where its spec lists a field to tune "
            "with a grid of candidate values, every candidate was trained on the tuning seeds and scored "
            "on the validation split, never on test: the candidate with the best mean final validation accuracy was "
            "selected (ties: the lower mean validation loss, then the smaller value), and the evaluation runs use the "
            "selected value only. A selection at an end of a numeric grid of three or more values grows that grid by "
            "one geometric step past the end (as far as the spec allows) and the cell selects again. Where the spec "
            "also asks for longer training, a selection that the grid no longer moves is final only once "
            "it was also trained for twice its epochs, at the same other values, and that was not better (or the "
            "spec's limit on doublings was reached). A candidate is "
            "admissible only if no run at it, on a tuning seed or on an evaluation seed once those have run, ended at "
            f"chance on validation (balanced accuracy within {100 * AT_CHANCE_TOLERANCE:g} pp of 1 / number of "
            "classes): such a run never left one class, and a mean over seeds that includes it measures a failure to "
            "train. Where an evaluation seed ends at chance, the cell selects its best admissible value and its "
            "evaluation seeds run there; the runs at the rejected value are left out of the comparisons. The rule "
            "reads validation only and holds for every arm and budget alike.")


# how the tables name a field selected on validation: the paper and the README read words, not config fields
FIELD_NAMES = {"learning_rate": "lr", "loraplus_ratio": "LoRA+ ratio"}


def field_name(name: str) -> str:
    """A config field as a table names it (`FIELD_NAMES`, else its words: "warmup ratio")."""
    return FIELD_NAMES.get(name, name.replace("_", " "))


def _candidate(fields: list[str], candidate: tuple) -> str:
    return ", ".join(f"{field_name(f)}={v:g}" if isinstance(v, float) else f"{field_name(f)}={v}"
                     for f, v in zip(fields, candidate))


def _budget(config: dict[str, Any]) -> str:
    budget = config.get("budget_rank") or config.get("budget") or config.get("rank") or 8
    return budget_label(float(budget)) if config.get("budget") is None else f"{budget:,} params"


def _places(cells: list[CellTuning], named: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """{cell: (setting, budget)}: the setting as `named` (from `setting_names`) gives it where the cell has
    evaluation runs, the one the comparison tables show; else named among the tuned cells as those tables would
    name it (two 64-shot settings that differ in their target modules are told apart)."""
    examples = [c.example for c in cells]
    named = named or {}
    return {c.cell: (named.get(c.cell, setting), _budget(c.example)) for c, setting in zip(cells, setting_labels(examples))}


def natural_key(text: str) -> tuple:
    """A sort key that reads the numbers in `text` by value, thousands separators included: 16-shot before
    128-shot before 2,000 examples, r=4 before r=16 (string order put 128 before 16)."""
    return tuple((0, float(part.replace(",", "")), "") if part[:1].isdigit() else (1, 0.0, part)
                 for part in re.findall(r"\d[\d,]*(?:\.\d+)?|\D+", text))


def arm_labels(frame: pd.DataFrame) -> dict[str, str]:
    """{tuning cell: the report's name for its arm}, from the evaluation runs (a method's variants, such as
    a quantised base, are separate arms with the same method name)."""
    if frame.empty:
        return {}
    return {cell_key(r["config"]): label for r, label in zip(frame["result"], frame["arm_label"])}


def setting_names(frame: pd.DataFrame) -> dict[str, str]:
    """{tuning cell: the setting its evaluation runs are reported under}: the tuning table groups a cell there,
    not under a label of its tuning runs (which may name a training length that its selection changed)."""
    if frame.empty:
        return {}
    return {cell_key(r["config"]): setting for r, setting in zip(frame["result"], frame["setting"])}


def _arms(cells: list[CellTuning], results: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """{cell: its arm's name}: `labels`' where the cell has evaluation runs, or else its method's name with
    the options that tell it from the method's other tuned cells (as the comparison tables will name it)."""
    one_run = {cell_key(r["config"]): r for r in results if r["config"].get("tuning")}
    runs = [one_run[c.cell] for c in cells]
    return {c.cell: labels.get(c.cell, arm_label(c.example["method"], variant))
            for c, variant in zip(cells, method_variants(runs))}


def tuning_table(results: list[dict[str, Any]], labels: dict[str, str],
                 evaluated: set[str] | None = None, places: dict[str, str] | None = None) -> Table | None:
    """One row per tuned cell: each candidate's mean ± sd final validation accuracy over the tuning seeds;
    `labels` (from `arm_labels`) names the cells that have evaluation runs, `places` (from `setting_names`) their
    settings; `evaluated`: the cells with evaluation runs (default: those `labels` names), the others' selection
    marked as pending. Settings and budgets are in the order of their numbers (`natural_key`)."""
    evaluated = set(labels) if evaluated is None else evaluated
    order = {m: i for i, m in enumerate(method_registry.report_order())}
    tuned = tuning_cells(results)
    places = _places(tuned, places)
    cells = sorted(tuned, key=lambda c: (*map(natural_key, places[c.cell]), order.get(c.example["method"], len(order)),
                                         c.example["method"]))
    if not cells:
        return None

    def value(cell: CellTuning, score: Score) -> str:
        if score.by_loss:
            mean = f"{score.mean_loss:.3f}" + ("" if len(score.loss) < 2 else f" ± {score.sd_loss:.3f}")
        else:
            mean = pct(score.mean) + ("" if len(score.accuracy) < 2 else f" ± {pct(score.sd)}")
        return (f"{mean}{' ' + MARK if score is cell.selected else ''}{'' if score.admissible else ' ' + REJECTED}"
                f"{' ↑' if score.rising else ''}")

    # columns in value order: a grid that grew past an end adds its values after the others were run; the
    # lengthened candidates (a selection trained for twice its epochs) share one column
    tried = {_candidate(c.grid_fields, c.on_grid(s.candidate)): (tuple(c.grid_fields), c.on_grid(s.candidate))
             for c in cells for s in c.scores if not s.lengthened}
    candidates = sorted(tried, key=tried.__getitem__)
    longer = any(s.lengthened for c in cells for s in c.scores)
    arms = _arms(cells, results, labels)
    rejecting = any(not s.admissible for c in cells for s in c.scores)  # a column naming them, kept in the paper
    rows = []
    for cell in cells:
        by_name = {_candidate(cell.grid_fields, cell.on_grid(s.candidate)): s for s in cell.scores if not s.lengthened}
        row = [*places[cell.cell], arms[cell.cell]]
        row += [value(cell, by_name[name]) if name in by_name else DASH for name in candidates]
        if longer:
            row.append("; ".join(f"{_candidate(cell.fields, s.candidate)}: {value(cell, s)}"
                                 for s in cell.scores if s.lengthened) or DASH)
        row += [str(len(cell.selected.loss)),
                _candidate(cell.fields, cell.selected.candidate) + (" (grid edge)" if cell.at_edge else "")
                + ("" if cell.cell in evaluated else PENDING)]
        if rejecting:
            row.append("; ".join(f"{_candidate(cell.fields, s.candidate)} (seed{'s' * (len(s.at_chance) > 1)} "
                                 f"{', '.join(map(str, sorted(s.at_chance)))})" for s in cell.scores if not s.admissible)
                       or DASH)
        rows.append(row)
    # each column's note shown while it is (`Table.column_notes`): the paper's version keeps only the selections
    explained = {candidates[0]: (
        f"Candidate columns: final validation accuracy (%, the last evaluation), mean ± sd over the tuning seeds (n); "
        f"{MARK}: the selected candidate; ↑: still rising at the last evaluation (the mean over seeds exceeds the best "
        f"earlier point by more than {100 * RISING_TOLERANCE:g} pp).")}
    if longer:
        explained["Longer training"] = ("Longer training: the selection, at the values shown, trained for twice its "
                                        "epochs on the tuning seeds (the sweep lengthens); it is selected only if "
                                        "better on validation.")
    explained["Selected"] = ("Selected: the candidate with the best mean final validation accuracy over the n tuning "
                             "seeds; ties go to the lower mean validation loss, then to the smaller value."
                             + (" Grid edge: the selected value is the grid's smallest or largest, so the best may lie "
                                "outside it." if any(c.at_edge for c in cells) else ""))
    if rejecting:
        explained[f"{REJECTED} Not admissible"] = (
            f"{REJECTED}: not admissible, since a run at this value (a tuning seed or an evaluation seed) ended at "
            f"chance on validation (balanced accuracy within {100 * AT_CHANCE_TOLERANCE:g} pp of 1 / number of "
            "classes): it did not learn the task. The best admissible value is selected.")
    note = "Only the selected value was run on the evaluation seeds and scored on test." + (
        PENDING_NOTE if any(c.cell not in evaluated for c in cells)
        else "")
    if any(c.selected.by_loss for c in cells):
        note += (" Causal-LM cells, which have no accuracy: final validation loss (nats per response token), the "
                 "lowest mean selected; test loss exists only at the selected values.")
    return Table("tuning", "Selection on validation (tuning runs)",
                 ["Setting", "Budget", "Method", *candidates, *(["Longer training"] if longer else []), "n", "Selected",
                  *([f"{REJECTED} Not admissible"] if rejecting else [])],
                 rows, [note], compact=["Setting", "Budget", "Method", "n", "Selected", f"{REJECTED} Not admissible"],
                 column_notes=explained)


def rising_arms(frame: pd.DataFrame, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting, budget and arm: the mean validation accuracy at the last evaluation, the best mean before
    it, whether it was still rising, and whether its tuning cell (among `results`) tried a longer training
    than its selection's and found it no better (`CellTuning.longer_not_better`)."""
    checked = {c.cell for c in tuning_cells(results) if c.longer_not_better}
    out = []
    for setting in settings(frame):
        part = frame[frame["setting"] == setting]
        for budget, cell in part.groupby("budget"):
            for arm in arm_order(cell["arm"]):
                runs = cell[cell["arm"] == arm]
                curves = [accuracy_curve(r) for r in runs["result"] if r.get("curves", {}).get("validation")]
                length = min((len(c) for c in curves), default=0)
                if length < 2:
                    continue
                means = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
                out.append({"setting": setting, "budget": budget, "arm": runs["arm_label"].iloc[0], "n": len(curves),
                            "step": curves[0][length - 1][0], "last": means[-1], "best_before": max(means[:-1]),
                            "rising": still_rising(curves),
                            "longer_not_better": cell_key(runs["result"].iloc[0]["config"]) in checked})
    return out


def convergence_table(arms: list[dict[str, Any]]) -> Table | None:
    if not arms:
        return None
    rows = [[a["setting"], budget_label(a["budget"]), a["arm"], str(a["n"]), str(a["step"]), pct(a["last"]),
             pct(a["best_before"]), "yes ↑" if a["rising"] else "no"] for a in arms]
    note = ("Validation accuracy (%), mean over the arm's seeds, at the last evaluation and the best at any earlier "
            f"one (step 0 included). Still rising: the last exceeds the best earlier by more than "
            f"{100 * RISING_TOLERANCE:g} pp; such an arm's curve was not flat at the end of training.")
    return Table("convergence", "Convergence on validation", ["Setting", "Budget", "Method", "n", "Last step",
                                                              "Last (%)", "Best before (%)", "Still rising"], rows,
                 [note])


def convergence_claims(arms: list[dict[str, Any]], detail: bool = True) -> list[str]:
    """Which arms were still rising on validation at the end of training, and for which of them a longer training
    was tried and was not better. `detail`: each arm's last gain, and the arms for which no longer training was
    tried (the report's); without it, the exceptions only (the paper's, whose convergence table names the arms
    still rising): those for which no longer training was tried, by name, the others in a clause."""
    rising = [a for a in arms if a["rising"]]
    if not arms:
        return []
    if not rising:  # the paper's table says so in every row
        return [f"No arm's validation accuracy was still rising at the last evaluation ({len(arms)} arms "
                "checked)."] if detail else []

    def names(some: list[dict[str, Any]]) -> str:
        return "; ".join(f"{a['arm']} at {budget_label(a['budget'])}, {a['setting']}"
                         + (f" (+{100 * (a['last'] - a['best_before']):.2f} pp)" if detail else "") for a in some)

    checked = [a for a in rising if a["longer_not_better"]]
    unchecked = [a for a in rising if not a["longer_not_better"]]
    if not detail:
        tried = ("Every arm still rising at the last evaluation was also trained longer at the same values on the "
                 "tuning seeds, and that was not better on validation." if not unchecked else
                 f"Of the {len(rising)} arms still rising at the last evaluation, {len(unchecked)} "
                 f"{'was' if len(unchecked) == 1 else 'were'} not trained longer, so longer training might change "
                 f"their comparison: {names(unchecked)}"
                 + (f"; for the other {len(checked)}, it was tried and was not better on validation." if checked
                    else "."))
        return [tried]
    if not checked:
        return [f"{len(rising)} of {len(arms)} arms were still rising on validation at the last evaluation, so longer "
                f"training might change their comparison: {names(rising)}."]
    claims = [f"{len(rising)} of {len(arms)} arms were still rising on validation at the last evaluation. For "
              f"{len(checked)} of them a longer training at the same values was tried on the tuning seeds and was not "
              f"better on validation: {names(checked)}."]
    if unchecked:
        claims.append(f"For the other {len(unchecked)} no longer training was tried, so longer training might change "
                      f"their comparison: {names(unchecked)}.")
    return claims


def selection_claims(results: list[dict[str, Any]], labels: dict[str, str],
                     places: dict[str, str] | None = None) -> list[str]:
    """What the selection on validation chose, in sentences: the cells and runs, the values not admissible, the
    selections at a grid's edge or at the longest training (cells named as `tuning_table` names them)."""
    cells: list[CellTuning] = tuning_cells(results)
    if not cells:
        return ["No tuning runs: every value in these results was fixed by its sweep, none selected on validation."]
    fields = sorted({f for c in cells for f in c.fields})
    claims = [f"Selected on validation: {' and '.join(fields)}, in {len(cells)} method × setting × budget cells, from "
              f"{sum(len(s.loss) for c in cells for s in c.scores)} tuning runs (best mean final validation "
              f"accuracy over the tuning seeds{LM_CRITERION if any(c.selected.by_loss for c in cells) else ''}); "
              "test accuracy exists only at the selected values."]
    places = _places(cells, places)
    arms = _arms(cells, results, labels)

    def selections(some: list[CellTuning]) -> str:
        return "; ".join(f"{arms[c.cell]}, {', '.join(places[c.cell])}: {_candidate(c.fields, c.selected.candidate)}"
                         for c in some)

    rejected = [(c, s) for c in cells for s in c.scores if not s.admissible]
    if rejected:
        names = "; ".join(f"{arms[c.cell]}, {', '.join(places[c.cell])}: {_candidate(c.fields, s.candidate)} "
                          f"(seed{'s' * (len(s.at_chance) > 1)} {', '.join(map(str, sorted(s.at_chance)))})"
                          for c, s in rejected)
        claims.append(f"{len(rejected)} candidate value{'s were' if len(rejected) > 1 else ' was'} not admissible, "
                      f"because a run at {'each' if len(rejected) > 1 else 'it'} ended at chance on validation: {names}.")
        # cells whose best mean was rejected (once each, however many of its values were)
        best_rejected = list({c.cell: c for c, s in rejected if s.objective() < c.selected.objective()}.values())
        if best_rejected:
            claims.append(f"In {len(best_rejected)} of {len(cells)} cells a value that was not admissible had the best "
                          f"mean, so the cell selected its best admissible value instead: {selections(best_rejected)}.")
        unadmitted = [c for c in cells if not c.selected.admissible]
        if unadmitted:
            claims.append(f"In {len(unadmitted)} cells no value was admissible, so the best mean was selected regardless: "
                          + "; ".join(f"{arms[c.cell]}, {', '.join(places[c.cell])}" for c in unadmitted) + ".")
    edge = [c for c in cells if c.at_edge]
    if edge:
        claims.append(f"In {len(edge)} of {len(cells)} cells the selected value is at the edge of its grid, so a wider "
                      f"grid might select otherwise: {selections(edge)}.")
    longest = [c for c in cells if c.at_longest]
    if longest:
        claims.append(f"In {len(longest)} of {len(cells)} cells the longest training tried was selected, so longer "
                      f"training might be better still: {selections(longest)}.")
    return claims

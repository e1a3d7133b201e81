"""Selection on validation (balora.tuning) and how the report shows it: the selection rule and its
tie-breaks, the "still rising" check, keys of existing runs, and the report's appendix."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from test_report import make_result

from balora.config import KEYED_WHEN_SET, RunConfig
from balora.report import build_report
from balora.report.selection import selection_claims, tuning_table
from balora.report.tables import DASH
from balora.tuning import Tune, at_chance, cell_key, choose, score, still_rising, superseded, tuning_cells


def tuning_result(lr: float, seed: int, accuracy: float, loss: float = 0.5, method: str = "lora",
                  curve: tuple[float, ...] = (0.5, 0.6), recall: float | None = None) -> dict:
    """A stored tuning run as far as selection reads it: config and validation curve (with `recall`, the
    balanced accuracy of a binary classifier at the last point)."""
    config = RunConfig(method=method, learning_rate=lr, seed=seed, tuned=["learning_rate"], tuning=True).to_dict()
    points = [[10 * i, {"accuracy": a, "loss": loss}] for i, a in enumerate((*curve, accuracy))]
    if recall is not None:
        points[-1][1]["recall"] = recall
    return {"config": config, "curves": {"validation": points}, "data": {"labels": ["negative", "positive"]}}


def test_the_best_mean_validation_accuracy_over_tuning_seeds_is_selected():
    runs = [tuning_result(1e-3, 0, 0.70), tuning_result(1e-3, 1, 0.74),  # mean 0.72
            tuning_result(2e-3, 0, 0.80), tuning_result(2e-3, 1, 0.62),  # mean 0.71: best single seed, lower mean
            tuning_result(4e-3, 0, 0.50), tuning_result(4e-3, 1, 0.52)]
    scores = score(runs)
    assert [s.candidate for s in scores] == [(1e-3,), (2e-3,), (4e-3,)]
    assert choose(scores).candidate == (1e-3,)
    assert scores[0].accuracy == {0: 0.70, 1: 0.74}


@pytest.mark.parametrize("runs, expected", [
    # equal mean accuracy (0.6 + 0.8 = 0.7 + 0.7): the lower mean validation loss wins
    ([tuning_result(1e-3, 0, 0.6, 0.40), tuning_result(1e-3, 1, 0.8, 0.40),
      tuning_result(2e-3, 0, 0.7, 0.30), tuning_result(2e-3, 1, 0.7, 0.30)], (2e-3,)),
    # equal accuracy and loss: the smaller value, whatever the order the runs come in
    ([tuning_result(4e-3, 0, 0.7), tuning_result(1e-3, 0, 0.7), tuning_result(2e-3, 0, 0.7)], (1e-3,)),
])
def test_ties_are_broken_by_validation_loss_then_by_the_smaller_value(runs, expected):
    assert choose(score(runs)).candidate == expected
    assert choose(score(list(reversed(runs)))).candidate == expected


@pytest.mark.parametrize("recall, labels, expected", [
    (0.5, 2, True), (0.5014, 2, True), (0.52, 2, True), (0.53, 2, False), (0.79, 2, False),
    (0.12, 10, True), (0.13, 10, False), (None, 2, False),  # a run without balanced accuracy: a causal LM
])
def test_a_run_is_at_chance_when_its_balanced_validation_accuracy_is_within_2_pp_of_chance(recall, labels, expected):
    result = tuning_result(1e-3, 0, 0.58, recall=recall)
    result["data"]["labels"] = [str(i) for i in range(labels)]
    assert at_chance(result) is expected


def test_a_value_at_which_a_tuning_seed_ended_at_chance_is_not_selected():
    """2e-3 has the best mean, but on seed 1 it predicted one class (balanced accuracy 0.5): not admissible."""
    runs = [tuning_result(1e-3, 0, 0.78, recall=0.78), tuning_result(1e-3, 1, 0.78, recall=0.78),
            tuning_result(2e-3, 0, 0.99, recall=0.99), tuning_result(2e-3, 1, 0.58, recall=0.5)]
    scores = score(runs)
    assert scores[1].at_chance == [1] and not scores[1].admissible
    assert choose(scores).candidate == (1e-3,)


def test_when_every_value_ended_at_chance_somewhere_the_best_mean_is_selected_regardless():
    runs = [tuning_result(1e-3, 0, 0.57, recall=0.5), tuning_result(2e-3, 0, 0.58, recall=0.51)]
    assert choose(score(runs)).candidate == (2e-3,)


def test_an_evaluation_seed_at_chance_makes_its_value_inadmissible_and_its_runs_superseded(tmp_path: Path):
    """The cell selected 8e-3 on its tuning seeds; evaluation seed 44 at 8e-3 then stayed at one class on
    validation, so 4e-3 is selected and compared, and the report says why 8e-3's runs are left out."""
    cell = make_result("lora", 8, 64, 42)["config"]
    tuning = [dict(run, config={**run["config"], **cell, "learning_rate": lr, "seed": seed, "tuning": True,
                                "tuned": ["learning_rate"]})
              for lr, accuracy in ((2e-3, 0.70), (4e-3, 0.75), (8e-3, 0.80)) for seed in (0, 1)
              for run in [tuning_result(lr, seed, accuracy, recall=accuracy)]]
    first = [dict(_selected(make_result("lora", 8, 64, s), 8e-3), key=f"first-{s}") for s in (42, 43, 44)]
    first[2]["curves"]["validation"][-1][1]["recall"] = 0.5014
    first[2]["data"]["labels"] = ["negative", "positive"]
    again = [dict(_selected(make_result("lora", 8, 64, s), 4e-3), key=f"again-{s}") for s in (42, 43, 44)]
    assert [c.selected.candidate for c in tuning_cells(tuning + first[:2])] == [(8e-3,)]
    assert [c.selected.candidate for c in tuning_cells(tuning + first)] == [(4e-3,)]
    assert superseded(tuning + first + again) == {"first-42", "first-43", "first-44"}
    build_report(tuning + first + again, tmp_path, paper_dir=tmp_path / "paper", figures_too=False)
    markdown = (tmp_path / "report.md").read_text()
    assert "a run at that value ended at chance on validation" in markdown
    assert "1 candidate value was not admissible, because a run at it ended at chance on validation: LoRA" in markdown
    assert "lr=0.008 (seed 44)" in markdown
    assert "In 1 of 1 cells a value that was not admissible had the best mean, so the cell selected its best " \
        "admissible value instead" in markdown
    appendix = markdown.split("**Selection on validation")[1].split("\n\n")[1]
    assert "| 75.00 ± 0.00 * ↑ | 80.00 ± 0.00 ✗ ↑ | 2 | lr=0.004 |" in appendix
    assert "✗: not admissible, since a run at this value" in markdown
    paper = (tmp_path / "paper" / "generated" / "selection.tex").read_text()
    assert "A candidate is admissible only if no run at it" in paper
    table = (tmp_path / "paper" / "generated" / "tables" / "tuning.tex").read_text()  # the paper's compact table
    assert r"$\times$ Not admissible" in table and "lr=0.008 (seed 44)" in table and "?" not in table


def lm_tuning_result(lr: float, seed: int, loss: float) -> dict:
    """A causal LM's tuning run: its validation points have loss and perplexity, no accuracy."""
    config = RunConfig(method="lora", model="smollm2", dataset="critic_instructions", task="causal_lm",
                       learning_rate=lr, seed=seed, tuned=["learning_rate"], tuning=True).to_dict()
    return {"config": config, "curves": {"validation": [[25, {"loss": loss + 0.2, "perplexity": 9.0}],
                                                        [50, {"loss": loss, "perplexity": 8.0}]]}}


def test_a_causal_lm_is_selected_on_the_lowest_mean_validation_loss():
    runs = [lm_tuning_result(3e-4, 0, 2.10), lm_tuning_result(3e-4, 1, 2.20),  # mean 2.15
            lm_tuning_result(1e-3, 0, 1.90), lm_tuning_result(1e-3, 1, 2.30),  # mean 2.10: the lowest
            lm_tuning_result(3e-3, 0, 1.80), lm_tuning_result(3e-3, 1, 2.60)]  # best single seed, mean 2.20
    scores = score(runs)
    assert choose(scores).candidate == (1e-3,) and all(s.by_loss and not s.rising for s in scores)
    tied = [lm_tuning_result(3e-3, 0, 2.0), lm_tuning_result(1e-3, 0, 2.0)]
    assert choose(score(tied)).candidate == (1e-3,)


def test_the_appendix_shows_a_causal_lm_s_candidates_by_validation_loss():
    runs = [lm_tuning_result(lr, seed, loss) for lr, loss in [(3e-4, 2.15), (1e-3, 2.10)] for seed in (0, 1)]
    table = tuning_table(runs, {}, {cell_key(runs[0]["config"])})  # its evaluation runs exist
    assert [row[3:] for row in table.rows] == [["2.150 ± 0.000", "2.100 ± 0.000 *", "2", "lr=0.001"]]
    assert "final validation loss (nats per response token)" in table.notes[0]
    assert "a causal LM's lowest mean final validation loss" in selection_claims(runs, {})[0]


def test_the_paper_s_selection_table_explains_only_the_columns_it_keeps():
    """The paper keeps the selections, not the candidates' accuracies: its caption must not explain columns,
    marks (*, ↑) or accuracies it does not show; the report's full table explains all of them."""
    runs = [tuning_result(lr, seed, 0.7 + lr, method=method) for method in ("lora", "ba_lora")
            for lr in (1e-3, 2e-3) for seed in (0, 1)]
    table = tuning_table(runs, {})
    full = " ".join(table.captions)
    assert "Candidate columns: final validation accuracy" in full and "↑" in full and "Selected: the candidate" in full
    paper = " ".join(table.select(table.compact).captions)
    assert "Selected: the candidate" in paper and "scored on test" in paper
    assert "Candidate columns" not in paper and "↑" not in paper and "mean ± sd" not in paper


def test_the_appendix_orders_candidate_columns_by_value_whatever_cell_tried_them_first():
    # LoRA's cell (listed first) tried {1e-3, 2e-3}; BA-LoRA's grid grew down to 5e-4 after them
    runs = [tuning_result(lr, 0, 0.7, method=method)
            for method, rates in [("lora", (2e-3, 1e-3)), ("ba_lora", (1e-3, 2e-3, 5e-4))] for lr in rates]
    table = tuning_table(runs, {})
    assert table.columns[3:6] == ["lr=0.0005", "lr=0.001", "lr=0.002"]
    assert {row[2]: row[3].split()[0] for row in table.rows} == {"LoRA": DASH, "BA-LoRA": "70.00"}


def test_the_appendix_names_settings_as_the_comparison_tables_do():
    """Two 64-shot settings that differ in their target modules: each cell's row names its own setting,
    with the placement the evaluation tables give it (not two indistinguishable "64-shot" LoRA rows)."""
    runs = [dict(run, config={**run["config"], "shots": 64, "target_modules": targets})
            for targets in (None, ["query", "value", "intermediate.dense"]) for lr in (1e-3, 2e-3)
            for run in [tuning_result(lr, 0, 0.7)]]
    table = tuning_table(runs, {})
    assert sorted(row[0] for row in table.rows) == [
        "minilm · rotten_tomatoes · 64-shot · default targets",
        "minilm · rotten_tomatoes · 64-shot · targets query+value+intermediate.dense"]
    one_setting = tuning_table(runs[:2], {})
    assert [row[0] for row in one_setting.rows] == ["minilm · rotten_tomatoes · 64-shot"]


def test_the_appendix_orders_settings_and_budgets_by_their_numbers_and_groups_cells_as_their_evaluation_runs():
    """16-shot before 128-shot before 2,000 examples, r=4 before r=16 (string order put 128 before 16 and r=16
    first); a cell with evaluation runs is grouped under their setting (the tuning runs' label named a training
    length, "128-shot · epochs=10", that its BA-LoRA row's selection had doubled)."""
    def run(lr: float, **fields) -> dict:
        base = tuning_result(lr, 0, 0.7)
        return dict(base, config={**base["config"], **fields})

    runs = [run(lr, **place) for place in ({"shots": 128, "epochs": 10}, {"shots": 16}, {"train_size": 2000},
                                           {"train_size": 2000, "budget_rank": 16}, {"train_size": 2000, "budget_rank": 4})
            for lr in (1e-3, 2e-3)]
    evaluated = cell_key(runs[0]["config"])
    table = tuning_table(runs, {evaluated: "LoRA"}, places={evaluated: "minilm · rotten_tomatoes · 128-shot"})
    assert [row[:2] for row in table.rows] == [
        ["minilm · rotten_tomatoes · 16-shot", "r=8"], ["minilm · rotten_tomatoes · 128-shot", "r=8"],
        ["minilm · rotten_tomatoes · 2,000 examples", "r=4"], ["minilm · rotten_tomatoes · 2,000 examples", "r=8"],
        ["minilm · rotten_tomatoes · 2,000 examples", "r=16"]]


def test_the_appendix_names_a_causal_lm_s_cells_as_its_strategy_table_does():
    """Review 3, N12 and review 2, item 8: the selection table listed "linear decay (decay direction=increasing)"
    under a group "targets gate proj+up proj+down proj", where the strategy table says "linear decay (increasing)"
    and "LoRA r=8 MLP only" under its study."""
    from test_report import make_lm_result

    from balora.report.lm import tuning_strategies, tuning_studies
    from balora.report.runs import load_runs

    runs = [make_lm_result("lora", 8, 1e-3, 42), make_lm_result("lora", 8, 1e-3, 42)]
    runs[1]["config"] |= {"method": "linear_decay", "decay_direction": "increasing"}
    runs[1]["key"] = "lm-decay"
    frame = load_runs(runs)
    mlp = {**runs[0]["config"], "target_modules": ["gate_proj", "up_proj", "down_proj"]}
    names = tuning_strategies(frame) | tuning_strategies(load_runs([{**runs[0], "config": mlp, "key": "lm-mlp"}]))
    assert sorted(names.values()) == ["LoRA r=8", "LoRA r=8 MLP only", "linear decay (increasing)"]
    assert set(tuning_studies(frame).values()) == {"smollm2 · critic_instructions"}


def test_the_appendix_tells_apart_cells_of_one_method_that_differ_in_an_option_before_evaluation_runs_exist():
    """Linear decay in both directions, tuned but not yet evaluated: the rows name the direction that differs
    (as the comparison tables name the arms), not two indistinguishable "linear decay" rows."""
    runs = [dict(run, config={**run["config"], "decay_direction": direction})
            for direction in ("decreasing", "increasing") for lr in (1e-3, 2e-3)
            for run in [tuning_result(lr, 0, 0.7, method="linear_decay")]]
    table = tuning_table(runs, {})
    assert sorted(row[2] for row in table.rows) == ["linear decay", "linear decay (decay_direction=increasing)"]
    assert [row[2] for row in tuning_table(runs[:2], {}).rows] == ["linear decay"]


def test_a_causal_lm_s_preset_sizes_do_not_rename_the_classifiers_cells_of_the_same_method():
    """The lm preset scores 200 test examples and the classifiers all of theirs: sizes of another task are
    not options that tell one LoRA from another (each task's cells are compared among themselves)."""
    lm_runs = [dict(run, task="causal_lm", config={**run["config"], "eval_examples": 200})
               for lr in (1e-3, 3e-3) for run in [lm_tuning_result(lr, 0, 2.1)]]
    classifier_runs = [tuning_result(lr, 0, 0.7) for lr in (1e-3, 2e-3)]
    assert [row[2] for row in tuning_table(lm_runs + classifier_runs, {}).rows] == ["LoRA", "LoRA"]


@pytest.mark.parametrize("curves, rising", [
    ([[(0, 0.5), (10, 0.6), (20, 0.7)]], True),
    ([[(0, 0.5), (10, 0.7), (20, 0.704)]], False),  # within the 0.5 pp tolerance: flat
    ([[(0, 0.5), (10, 0.7), (20, 0.65)]], False),  # falling at the end
    ([[(0, 0.5), (10, 0.6), (20, 0.7)], [(0, 0.5), (10, 0.8), (20, 0.7)]], False),  # the mean over seeds is flat
    ([[(0, 0.5), (10, 0.6), (20, 0.7)], [(0, 0.5), (10, 0.6), (20, 0.612)]], True),  # mean +5.6 pp
    ([[(0, 0.5)]], False),  # nothing earlier to compare with
])
def test_still_rising_compares_the_last_mean_with_the_best_earlier_one(curves, rising):
    assert still_rising(curves) is rising


@pytest.mark.parametrize("best, edge", [(1e-3, True), (2e-3, False), (4e-3, True)])
def test_a_selection_at_either_end_of_the_grid_is_flagged(best, edge):
    runs = [tuning_result(lr, seed, 0.75 if lr == best else 0.70) for lr in (1e-3, 2e-3, 4e-3) for seed in (0, 1)]
    (cell,) = tuning_cells(runs)
    assert cell.selected.candidate == (best,) and cell.at_edge is edge
    assert ("1 of 1 cells the selected value is at the edge of its grid" in " ".join(selection_claims(runs, {}))) is edge
    two = [r for r in runs if r["config"]["learning_rate"] != 4e-3]  # two candidates: both are ends, nothing to flag
    assert not tuning_cells(two)[0].at_edge


@pytest.mark.parametrize("best, edge", [((1e-3, 16), True), ((2e-3, 32), False), ((4e-3, 16), True)])
def test_a_grid_of_two_fields_is_flagged_where_a_field_of_three_values_is_at_its_end(best, edge):
    runs = []
    for lr, epochs, seed in itertools.product((1e-3, 2e-3, 4e-3), (16, 32), (0, 1)):
        run = tuning_result(lr, seed, 0.75 if (lr, epochs) == best else 0.70)
        run["config"].update(epochs=epochs, tuned=["learning_rate", "epochs"])
        runs.append(run)
    (cell,) = tuning_cells(runs)
    assert cell.selected.candidate == best and cell.at_edge is edge


def test_existing_run_keys_are_unchanged_and_tuning_runs_have_their_own():
    config = RunConfig(method="lora", seed=3)
    old = {k: v for k, v in asdict(config).items() if k not in KEYED_WHEN_SET}
    assert config.key() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    evaluation = RunConfig(method="lora", seed=3, tuned=["learning_rate"])
    tuning = RunConfig(method="lora", seed=3, tuned=["learning_rate"], tuning=True)
    assert len({config.key(), evaluation.key(), tuning.key()}) == 3
    # a cell is everything but the seed and the tuned values: tuning and evaluation runs share it
    other_lr = RunConfig(method="lora", seed=0, learning_rate=4e-3, tuned=["learning_rate"], tuning=True)
    assert cell_key(evaluation.to_dict()) == cell_key(tuning.to_dict()) == cell_key(other_lr.to_dict())
    assert cell_key(RunConfig(method="ba_lora", tuned=["learning_rate"]).to_dict()) != cell_key(evaluation.to_dict())


def _selected(result: dict, lr: float) -> dict:
    result = copy.deepcopy(result)
    result["config"].update(learning_rate=lr, tuned=["learning_rate"])
    return result


def test_report_compares_arms_at_their_selected_rates_and_shows_every_candidate(tmp_path: Path):
    seeds = (42, 43, 44)
    evaluation = ([_selected(make_result("lora", 8, 64, s), 1e-3) for s in seeds]
                  + [_selected(make_result("ba_lora", 8, 64, s), 2e-3) for s in seeds])
    for result in evaluation:  # BA-LoRA still climbing at its last evaluation, LoRA flat
        curve = result["curves"]["validation"]
        if result["config"]["method"] == "ba_lora":
            curve[-1][1]["accuracy"] = curve[-2][1]["accuracy"] + 0.02
        else:
            curve[-1][1]["accuracy"] = curve[-2][1]["accuracy"]
    tuning = []
    for method, best in (("lora", 1e-3), ("ba_lora", 2e-3)):
        for lr in (1e-3, 2e-3):
            for seed in (0, 1):
                run = tuning_result(lr, seed, 0.75 if lr == best else 0.70, method=method)
                config = {**run["config"], **make_result(method, 8, 64, 42)["config"]}
                config.update(learning_rate=lr, seed=seed, tuned=["learning_rate"], tuning=True)
                tuning.append(dict(run, config=config))
    assert {c.selected.candidate for c in tuning_cells(tuning)} == {(1e-3,), (2e-3,)}
    build_report(evaluation + tuning, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    budget = markdown.split("**Budget efficiency")[1].split("\n\n")[1]
    assert "BA-LoRA" in budget and "LoRA" in budget  # one setting, compared, despite different learning rates
    assert "Selected on validation: learning_rate, in 2 method × setting × budget cells, from 8 tuning runs" in markdown
    appendix = markdown.split("**Selection on validation")[1].split("\n\n")[1]
    rows = [line for line in appendix.splitlines() if line.startswith("| minilm")]
    assert len(rows) == 2 and all(row.count(" *") == 1 for row in rows)
    assert "| LoRA | 75.00 ± 0.00 * ↑ | 70.00 ± 0.00 ↑ | 2 | lr=0.001 |" in appendix
    convergence = markdown.split("**Convergence on validation")[1].split("\n\n")[1]
    assert [line.split(" | ")[-1] for line in convergence.splitlines()[2:]] == ["no |", "yes ↑ |"]
    assert "1 of 2 arms were still rising" in markdown
    assert "at the edge of its grid" not in markdown  # two candidates: no interior to compare with
    coverage = markdown.split("**Runs per setting")[1].split("\n\n")[1]
    assert "42, 43, 44" in coverage and " 0," not in coverage  # tuning runs are not evaluation runs


def test_the_appendix_names_each_cell_by_its_arm(tmp_path: Path):
    """Two arms of one method (LoRA on a full-precision and on an NF4 base) are two rows, each named as the
    report's tables name it, not twice "LoRA"."""
    evaluation, tuning = [], []
    for quant in (None, "nf4"):
        for seed in (42, 43, 44):
            result = _selected(make_result("lora", 8, 64, seed), 1e-3)
            result["config"]["quant"], result["key"] = quant, f"{result['key']}-{quant}"
            evaluation.append(result)
        for lr in (1e-3, 2e-3):
            for seed in (0, 1):
                config = {**evaluation[-1]["config"], "learning_rate": lr, "seed": seed, "tuning": True}
                tuning.append(dict(tuning_result(lr, seed, 0.75 if lr == 1e-3 else 0.70), config=config))
    build_report(evaluation + tuning, tmp_path)
    appendix = (tmp_path / "report.md").read_text().split("**Selection on validation")[1].split("\n\n")[1]
    rows = [line for line in appendix.splitlines() if line.startswith("| minilm")]
    assert [row.split(" | ")[2] for row in rows] == ["LoRA", "LoRA (quant=nf4)"]


def test_runs_stored_before_a_field_existed_share_their_cell():
    """A tuning run stored before `quant_backend` existed (its config lacks the field) is in the same cell as
    one stored after, at its default: otherwise selection splits one cell's candidates in two."""
    new = RunConfig(method="lora", seed=0, learning_rate=1e-3, tuned=["learning_rate"], tuning=True).to_dict()
    old = {k: v for k, v in new.items() if k != "quant_backend"} | {"learning_rate": 2e-3, "seed": 1}
    assert cell_key(old) == cell_key(new)
    assert len(tuning_cells([dict(tuning_result(1e-3, 0, 0.7), config=new), dict(tuning_result(2e-3, 1, 0.7), config=old)])) == 1


@pytest.mark.parametrize(("tuning", "evaluations", "steps", "expected"), [
    (False, 4, 128, [0, 32, 64, 96, 128]),
    (True, 4, 128, [64, 128]),
    (True, 1, 10, [10]),
    (False, 3, 10, [0, 3, 7, 10]),
])
def test_a_tuning_run_validates_only_half_way_and_at_the_end(tuning, evaluations, steps, expected):
    assert RunConfig(evaluations=evaluations, tuning=tuning).validation_steps(steps) == expected


GRID = Tune({"learning_rate": [5e-4, 1e-3, 2e-3, 4e-3]}, [0, 1], extend=2)


@pytest.mark.parametrize("tune, selected, grown", [
    (GRID, (5e-4,), [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]),  # the low end: one geometric step further down
    (GRID, (4e-3,), [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]),
    (GRID, (1e-3,), None),  # inside the grid: the selection is final
    (replace(GRID, values={"learning_rate": [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]}), (2.5e-4,),
     [1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]),
    (replace(GRID, values={"learning_rate": [1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]}), (1.25e-4,), None),  # 2 more
    (replace(GRID, extend=0), (5e-4,), None),  # growing is opt-in
])
def test_a_grid_grows_past_the_end_its_selection_lies_at(tune, selected, grown):
    result = tune.grown(dict(learning_rate=selected[0]), GRID, 3)
    assert (result and result.values["learning_rate"]) == grown


def test_only_a_numeric_field_of_three_values_or_more_grows():
    tune = Tune({"learning_rate": [4e-3, 8e-3, 1.6e-2], "epochs": [16, 32]}, [0], extend=1)
    grown = tune.grown({"learning_rate": 1.6e-2, "epochs": 32}, tune, 3)
    assert grown.values == {"learning_rate": [4e-3, 8e-3, 1.6e-2, 3.2e-2], "epochs": [16, 32]} and not grown.longer


LENGTHEN = Tune({"learning_rate": [1e-3, 2e-3, 4e-3]}, [0, 1], lengthen=2)


@pytest.mark.parametrize("tune, selected, longer", [
    (LENGTHEN, {"learning_rate": 2e-3}, ({"learning_rate": 2e-3, "epochs": 6},)),  # trained for 3: try 6
    (replace(LENGTHEN, longer=({"learning_rate": 2e-3, "epochs": 6},)), {"learning_rate": 2e-3, "epochs": 3},
     None),  # twice its epochs was tried and not better: final
    (replace(LENGTHEN, longer=({"learning_rate": 2e-3, "epochs": 6},)), {"learning_rate": 2e-3, "epochs": 6},
     ({"learning_rate": 2e-3, "epochs": 6}, {"learning_rate": 2e-3, "epochs": 12})),  # better: doubled again
    (replace(LENGTHEN, longer=({"learning_rate": 2e-3, "epochs": 6}, {"learning_rate": 2e-3, "epochs": 12})),
     {"learning_rate": 2e-3, "epochs": 12}, None),  # 2 doublings past 3 epochs: the limit
    (replace(LENGTHEN, longer=({"learning_rate": 2e-3, "epochs": 6},)), {"learning_rate": 1e-3, "epochs": 3},
     ({"learning_rate": 2e-3, "epochs": 6}, {"learning_rate": 1e-3, "epochs": 6})),  # a new selection: its own check
    (replace(LENGTHEN, lengthen=0), {"learning_rate": 2e-3}, None),  # lengthening is opt-in
])
def test_a_selection_is_final_once_twice_its_epochs_was_tried_and_not_better(tune, selected, longer):
    grown = tune.grown(selected, LENGTHEN, 3)
    assert (grown and grown.longer) == longer
    if grown:
        assert grown.values == LENGTHEN.values  # only the selection is lengthened, not the whole grid
        assert grown.candidates()[-1] == longer[-1]


def test_a_selection_the_grid_still_moves_is_not_lengthened_yet():
    """At the grid's top, the grid grows first; the selection is lengthened once the grid no longer moves."""
    grid = replace(LENGTHEN, extend=1)
    grown = grid.grown({"learning_rate": 4e-3}, grid, 3)
    assert grown.values["learning_rate"] == [1e-3, 2e-3, 4e-3, 8e-3] and not grown.longer
    assert grown.grown({"learning_rate": 4e-3}, grid, 3).longer == ({"learning_rate": 4e-3, "epochs": 6},)


def test_lengthening_counts_doublings_from_the_spec_s_longest_epochs():
    """AdaLoRA's spec choice of 3 or 6 epochs with one doubling: 6 may become 12, not 24."""
    grid = Tune({"learning_rate": [8e-3, 1.6e-2], "epochs": [3, 6]}, [0, 1], lengthen=1)
    grown = grid.grown({"learning_rate": 1.6e-2, "epochs": 6}, grid, 3)
    assert grown.longer == ({"learning_rate": 1.6e-2, "epochs": 12},)
    assert grown.grown({"learning_rate": 1.6e-2, "epochs": 12}, grid, 3) is None
    assert grid.grown({"learning_rate": 8e-3, "epochs": 3}, grid, 3) is None  # 6 epochs is in the grid already


def test_runs_before_lengthening_and_the_longer_ones_are_one_cell_whose_old_evaluation_runs_are_superseded(
        tmp_path: Path):
    """A cell tuned at the config's 20 epochs, then lengthened: its 40-epoch run (epochs marked tuned) wins on
    validation, so the evaluation runs at 20 epochs are left out, the appendix shows both lengths in one row,
    and the report says the longest training tried was selected."""
    cell = make_result("lora", 8, 64, 42)["config"]
    tuning = [dict(run, config={**run["config"], **cell, "learning_rate": lr, "seed": seed, "tuning": True,
                                "tuned": tuned, "epochs": epochs})
              for lr, epochs, tuned, accuracy in ((1e-3, 20, ["learning_rate"], 0.70), (2e-3, 20, ["learning_rate"], 0.72),
                                                  (2e-3, 40, ["learning_rate", "epochs"], 0.75))
              for seed in (0, 1) for run in [tuning_result(lr, seed, accuracy)]]
    old = [dict(_selected(make_result("lora", 8, 64, s), 2e-3), key=f"old-{s}") for s in (42, 43, 44)]
    new = [dict(result, key=f"new-{result['config']['seed']}") for result in copy.deepcopy(old)]
    for result in new:
        result["config"].update(epochs=40, tuned=["learning_rate", "epochs"])
    (tuned,) = tuning_cells(tuning + old + new)
    assert tuned.selected.candidate == (2e-3, 40) and tuned.at_longest and not tuned.at_edge
    assert superseded(tuning + old + new) == {"old-42", "old-43", "old-44"}
    build_report(tuning + old + new, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    appendix = markdown.split("**Selection on validation")[1].split("\n\n")[1]
    # the grid's columns as before lengthening; the longer training in a column of its own
    assert "| lr=0.001 | lr=0.002 | Longer training | n | Selected |" in appendix
    assert "| 70.00 ± 0.00 ↑ | 72.00 ± 0.00 ↑ | lr=0.002, epochs=40: 75.00 ± 0.00 * ↑ | 2 | lr=0.002, epochs=40 |" in appendix
    assert "In 1 of 1 cells the longest training tried was selected, so longer training might be better still" in markdown


@pytest.mark.parametrize("longer_accuracy, checked", [(0.70, True), (None, False)])
def test_an_arm_still_rising_whose_longer_training_was_tried_and_not_better_is_reported_as_checked(
        tmp_path: Path, longer_accuracy, checked):
    """Both arms end rising on validation. LoRA's cell also trained its selection for 40 epochs instead of 20
    (`lengthen`), which was worse: the report says its length was checked; BA-LoRA's was not (and LoRA's isn't
    either when no longer run exists)."""
    evaluation, tuning = [], []
    for method in ("lora", "ba_lora"):
        for seed in (42, 43, 44):
            result = _selected(make_result(method, 8, 64, seed), 2e-3)
            result["config"]["epochs"] = 20
            curve = result["curves"]["validation"]
            curve[-1][1]["accuracy"] = curve[-2][1]["accuracy"] + 0.02
            evaluation.append(result)
        cell = evaluation[-1]["config"]
        runs = [(1e-3, 20, 0.70), (2e-3, 20, 0.72)] + ([(2e-3, 40, longer_accuracy)] if method == "lora" and checked else [])
        tuning += [dict(run, config={**cell, "learning_rate": lr, "seed": seed, "tuning": True, "epochs": epochs,
                                     "tuned": ["learning_rate"] + (["epochs"] if epochs == 40 else [])})
                   for lr, epochs, accuracy in runs for seed in (0, 1) for run in [tuning_result(lr, seed, accuracy)]]
    build_report(evaluation + tuning, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "2 of 2 arms were still rising on validation at the last evaluation" in markdown
    if checked:
        assert ("For 1 of them a longer training at the same values was tried on the tuning seeds and was not better "
                "on validation") in markdown
        assert ("For the other 1 no longer training was tried, so longer training might change their comparison: "
                "BA-LoRA") in markdown
    else:
        assert "so longer training might change their comparison: LoRA" in markdown


def test_the_report_leaves_out_evaluation_runs_at_a_value_no_longer_selected(tmp_path: Path):
    """The grid grew after the 5e-4 runs were evaluated, and 2.5e-4 now wins: only its runs are compared."""
    cell = make_result("lora", 8, 64, 42)["config"]
    tuning = [dict(run, config={**run["config"], **cell, "learning_rate": lr, "seed": seed, "tuning": True,
                                "tuned": ["learning_rate"]})
              for lr, accuracy in ((2.5e-4, 0.80), (5e-4, 0.75), (1e-3, 0.70), (2e-3, 0.65)) for seed in (0, 1)
              for run in [tuning_result(lr, seed, accuracy)]]
    stale = [dict(_selected(make_result("lora", 8, 64, s), 5e-4), key=f"old-{s}") for s in (42, 43, 44)]
    current = [dict(_selected(make_result("lora", 8, 64, s), 2.5e-4), key=f"new-{s}") for s in (42, 43, 44)]
    assert superseded(tuning + stale + current) == {"old-42", "old-43", "old-44"}
    build_report(tuning + stale + current, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "3 evaluation runs left out: they ran at a value their cell no longer selects" in markdown
    assert "| r=8 | LoRA | 3 |" in markdown


def test_the_selection_table_explains_the_grid_edge_mark_only_where_a_row_shows_it():
    """Two values tied but for the lower one, selected at the grid's lower end of three: "grid edge" is shown and
    explained; a selection inside its grid shows no mark and the caption does not explain one."""
    inside = [tuning_result(lr, seed, 0.8 if lr == 2e-3 else 0.7) for lr in (1e-3, 2e-3, 4e-3) for seed in (0, 1)]
    edge = [tuning_result(lr, seed, 0.8 if lr == 1e-3 else 0.7) for lr in (1e-3, 2e-3, 4e-3) for seed in (0, 1)]
    for runs, marked in ((inside, False), (edge, True)):
        table = tuning_table(runs, {})
        assert ("(grid edge)" in table.rows[0][table.columns.index("Selected")]) is marked
        assert ("Grid edge:" in " ".join(table.select(table.compact).captions)) is marked


def test_a_cell_without_evaluation_runs_is_marked_pending(tmp_path: Path):
    """A tuned cell whose evaluation runs have not run yet has its selection marked "(evaluation pending)", in the
    paper's version too, and the note says why; a cell with evaluation runs has no mark."""
    runs = [tuning_result(lr, seed, 0.7, method=method) for method in ("lora", "ba_lora")
            for lr in (1e-3, 2e-3) for seed in (0, 1)]
    lora = cell_key(runs[0]["config"])
    table = tuning_table(runs, {lora: "LoRA"})
    selected = {row[2]: row[table.columns.index("Selected")] for row in table.rows}
    assert selected["BA-LoRA"].endswith("(evaluation pending)") and not selected["LoRA"].endswith("pending)")
    assert "(evaluation pending): its evaluation runs have not run yet" in " ".join(table.select(table.compact).captions)
    assert "pending" not in " ".join(tuning_table(runs[:4], {lora: "LoRA"}).captions)


def test_a_causal_lm_cell_with_evaluation_runs_is_not_pending(tmp_path: Path):
    """Causal-LM runs have their own section, not the accuracy tables: their evaluated cells count as evaluated."""
    from test_report import make_lm_result

    evaluation = [make_lm_result("lora", 8, 1e-3, s) for s in (42, 43, 44)]
    for result in evaluation:
        result["config"]["tuned"] = ["learning_rate"]
    tuning = [dict(lm_tuning_result(lr, seed, 2.0 if lr == 1e-3 else 2.2),
                   config={**evaluation[0]["config"], "learning_rate": lr, "seed": seed, "tuning": True})
              for lr in (3e-4, 1e-3) for seed in (0, 1)]
    build_report(evaluation + tuning, tmp_path, figures_too=False)
    appendix = (tmp_path / "report.md").read_text().split("**Selection on validation")[1]
    assert "| smollm2" in appendix and "pending" not in appendix

"""Hypotheses a spec declares, seed 000's success criteria among them (the paper preset's): met, not met and
not testable, each with the numbers behind the mark, recomputed here from the runs with scipy; the criteria
table in the report and the paper; a user's own spec's hypotheses, and bad ones refused."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps
from test_report import LM_LOSS, make_lm_result, make_result
from test_stats import mde_by_hand

from balora.cli import main
from balora.errors import BaloraError
from balora.report import build_report, write_runs_report
from balora.report.analysis import analyse
from balora.report.criteria import MET, NOT_MET, NOT_TESTABLE, criteria_summary, success_criteria
from balora.report.runs import load_runs
from balora.runfiles import write_run
from balora.specs import given_spec, load_spec, report_spec

SEEDS = (42, 43, 44, 45, 46)
SEED_NOISE = {42: 0.012, 43: -0.009, 44: 0.004, 45: -0.015, 46: 0.006}  # shared by both arms: cancels in pairs
EXACT = {42: 0.001, 43: -0.001, 44: 0.0005, 45: -0.0005, 46: 0.0}  # BA-LoRA's spread around an exact mean gain


def run(method: str, budget: int, seed: int, gain: float, shots: int | None = None, exact: bool = False) -> dict:
    """A run on the 2,000-example subset (Exp. 1) or at `shots` per class (Exp. 2); BA-LoRA gets `gain`,
    with random noise or, `exact`, a spread whose mean over the 5 seeds is 0."""
    result = make_result(method, budget, shots or 64, seed)
    noise = random.Random(f"{method}-{budget}-{shots}-{seed}").uniform(-0.002, 0.002)
    if exact:
        noise = EXACT[seed] if method == "ba_lora" else 0.0
    result["config"].update(shots=shots, train_size=None if shots else 2000)
    result["metrics"]["accuracy"] = 0.75 + (gain if method == "ba_lora" else 0.0) + SEED_NOISE[seed] + noise
    result["key"] = f"{method}-{budget}-{shots}-{seed}"
    result["sweep"] = "paper"  # the preset that declares seed 000's criteria
    return result


def design(budget_gain: dict[int, float], shot_gain: dict[int, float], seeds=SEEDS, exact: bool = False) -> list[dict]:
    return ([run(m, b, s, gain, exact=exact) for b, gain in budget_gain.items() for m in ("lora", "ba_lora")
             for s in seeds]
            + [run(m, 8, s, gain, k, exact) for k, gain in shot_gain.items() for m in ("lora", "ba_lora") for s in seeds])


def criteria(runs: list[dict]) -> dict[str, object]:
    found = success_criteria(analyse(load_runs(runs)))
    return {c.name.split(" (")[0]: c for c in found}


def _delta(runs: list[dict], **where) -> np.ndarray:
    def acc(method):
        return {r["config"]["seed"]: r["metrics"]["accuracy"] for r in runs if r["config"]["method"] == method
                and all(r["config"].get(k) == v for k, v in where.items())}
    ba, lora = acc("ba_lora"), acc("lora")
    return np.array([ba[s] - lora[s] for s in sorted(ba)])


def test_every_criterion_met_when_ba_lora_wins_by_the_seeds_margins():
    runs = design({4: 0.010, 8: 0.010, 16: 0.010}, {16: 0.040, 32: 0.030, 64: 0.020, 128: 0.010})
    found = criteria(runs)
    assert {c.mark for c in found.values()} == {MET}, [c.sentence for c in found.values()]
    budgets = found["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"]
    # the numbers behind the mark, recomputed: Δ per budget and Holm over the budget table's 3 comparisons
    p = [sps.ttest_1samp(_delta(runs, budget_rank=float(b), train_size=2000), 0).pvalue for b in (4, 8, 16)]
    order = np.argsort(p)
    holm = np.maximum.accumulate([min(1.0, (3 - i) * p[j]) for i, j in enumerate(order)])
    for budget, j in zip((4, 8, 16), range(3)):
        delta = 100 * _delta(runs, budget_rank=float(budget), train_size=2000).mean()
        adjusted = holm[list(order).index(j)]
        assert f"r={budget}: BA-LoRA significantly better, Δ = {delta:+.2f} pp" in budgets.numbers
        assert (f"Holm p = {adjusted:.3f}" if adjusted >= 0.001 else "Holm p < 0.001") in budgets.numbers
    trend = found["The gap widens as data shrinks"]
    x = [np.log2(k) for k in (16, 32, 64, 128) for _ in SEEDS]
    y = np.concatenate([_delta(runs, shots=k) for k in (16, 32, 64, 128)])
    fit = sps.linregress(x, y)
    assert f"slope {100 * fit.slope:+.2f} pp per doubling" in trend.numbers and "20 paired seeds" in trend.numbers
    assert "widens significantly" in trend.sentence
    assert f"Δ = {100 * _delta(runs, shots=16).mean():+.2f} pp" in found["The 16-shot improvement is ≥ 2 pp"].numbers


def test_criteria_say_plainly_when_ba_lora_loses_or_ties():
    runs = design({4: -0.010, 8: 0.0, 16: 0.003}, {16: 0.010, 32: 0.010, 64: 0.010, 128: 0.010})
    found = criteria(runs)
    budgets = found["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"]
    assert budgets.mark == NOT_MET
    assert "r=4: BA-LoRA significantly worse than LoRA" in budgets.sentence
    assert "r=8: equivalent within ±1 pp, Δ = " in budgets.sentence  # a tie the equivalence test shows
    assert found["BA-LoRA improves on LoRA at every shot count"].mark == MET
    trend = found["The gap widens as data shrinks"]
    assert trend.mark == NOT_MET and "slope inconclusive" in trend.sentence
    sixteen = found["The 16-shot improvement is ≥ 2 pp"]
    assert sixteen.mark == NOT_MET and "significantly better but by less than 2 pp" in sixteen.sentence
    losing = criteria(design({4: -0.010, 8: 0.0, 16: 0.003}, {16: -0.01, 32: -0.01, 64: -0.01, 128: -0.01}))
    assert {c.mark for c in losing.values()} == {NOT_MET}  # said once, not "4 were not met; none was met"
    assert criteria_summary(list(losing.values())) == (
        "None of seed 000's 4 success criteria was met on these runs; of the 4 not met, 3 are refuted (an interval "
        "of Δ excludes what they claim), the other is not shown either way.")


def test_missing_data_is_not_testable_and_says_why():
    partial = design({4: 0.010, 8: 0.010}, {16: 0.040, 32: 0.030})
    found = criteria(partial)
    assert {c.mark for c in found.values()} == {NOT_TESTABLE, MET}
    assert "r=16: no BA-LoRA and LoRA runs" in found["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"].sentence
    assert "no paired runs at 64, 128 shots per class" in found["The gap widens as data shrinks"].sentence
    assert found["The 16-shot improvement is ≥ 2 pp"].mark == MET  # its one case is there
    # one failing case decides a criterion over cases, even with others missing
    assert criteria(design({4: -0.010}, {}))["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"].mark == NOT_MET
    two_seeds = criteria(design({4: 0.01, 8: 0.01, 16: 0.01}, {16: 0.04, 128: 0.01}, seeds=SEEDS[:2]))
    assert "2 matched seeds, too few to test" in two_seeds["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"].sentence
    nothing = criteria([run("lora", 8, s, 0.0, 64) for s in SEEDS])
    assert {c.mark for c in nothing.values()} == {NOT_TESTABLE}
    assert criteria_summary(list(nothing.values())) == "None of seed 000's 4 success criteria could be tested on these runs."
    some = [*list(nothing.values())[:2], *list(criteria(design({4: -0.01}, {})).values())[:1]]
    assert criteria_summary(some) == ("None of seed 000's 3 success criteria was met on these runs (2 of them not "
                                      "testable); the one not met is refuted: an interval of Δ excludes what it "
                                      "claims.")
    assert "no LoRA and BA-LoRA runs at two or more shot counts" in nothing["The 16-shot improvement is ≥ 2 pp"].sentence


def test_criteria_table_in_the_report_and_the_paper(tmp_path: Path):
    runs = design({4: -0.010, 8: 0.0, 16: 0.003}, {16: 0.040, 32: 0.030, 64: 0.020, 128: 0.010})
    markdown = build_report(runs, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False).read_text()
    section = markdown.split("## Success criteria")[1].split("\n## ")[0]
    assert "| BA-LoRA beats LoRA by ≥ 0.5 pp at every budget (Exp. 1) |" in section and "| not met |" in section
    assert section.count("| met |") == 3
    # counts of zero get no clause
    assert "Of the 4 success criteria, 3 were met and 1 was not met on these runs." in markdown
    generated = tmp_path / "paper" / "generated"
    # the paper gives the criteria as a table (its sentences would repeat it), marked as the report marks them
    assert (generated / "criteria.tex").read_text() == "\\input{generated/tables/criteria.tex}\n"
    table = (generated / "tables" / "criteria.tex").read_text()
    assert "not met" in table and table.count(" met ") + table.count("met \\\\") >= 3
    # the paper places its floats where they fit: the caption points at no direction
    assert "tables below" not in table and "comparison tables of the setting under Where" in table
    # in the reader's words, not the report's (a reviewer's read, 2026-12-07: "the runs' spec declares")
    assert "spec" not in table and "a hypothesis declared before the runs" in table
    # the results section says how many were met, before its tables (the third review, N9: not in the abstract)
    assert (generated / "criteria_summary.tex").read_text() == "Of the 4 success criteria, 3 were met and 1 was not met " \
                                                               "on these runs.\n\n"
    assert "success criteria" not in (generated / "abstract.tex").read_text()
    assert (tmp_path / "report" / "tables" / "criteria.tex").is_file()


def test_a_case_the_seeds_cannot_decide_says_inconclusive_with_its_mde_and_interval():
    """No difference and no equivalence shown: the case gives its MDE and its Δ with the CI, not "no
    significant difference"."""
    offsets = {42: 0.02, 43: -0.015, 44: 0.005}
    runs = design({4: 0.0, 8: 0.0, 16: 0.0}, {}, seeds=SEEDS[:3])
    for result in runs:
        if result["config"]["method"] == "ba_lora":
            result["metrics"]["accuracy"] += offsets[result["config"]["seed"]]
    budgets = criteria(runs)["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"]
    assert budgets.mark == NOT_MET
    for budget in (4, 8, 16):
        d = _delta(runs, budget_rank=float(budget), train_size=2000)
        mde = mde_by_hand(3, d.std(ddof=1), alpha=0.05 / 3)  # Holm over the three budgets
        case = f"r={budget}: inconclusive (MDE {100 * mde:.2f} pp), Δ = {100 * d.mean():+.2f} pp ("
        assert case in budgets.numbers and "% CI " in budgets.numbers.split(case)[1].split(";")[0]
    assert "no significant difference" not in budgets.sentence


@pytest.mark.parametrize("gain, mark", [(0.0049, NOT_MET), (0.0051, MET)])
def test_the_half_point_threshold(gain: float, mark: str):
    runs = design({4: gain, 8: gain, 16: gain}, {}, exact=True)
    assert criteria(runs)["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"].mark == mark


def test_the_paper_preset_declares_seed_000s_criteria_and_a_report_checks_only_what_its_runs_specs_declare(
        tmp_path: Path):
    assert [h.name for h in report_spec("paper").hypotheses] == [
        "BA-LoRA beats LoRA by ≥ 0.5 pp at every budget (Exp. 1)", "BA-LoRA improves on LoRA at every shot count (Exp. 2)",
        "The gap widens as data shrinks (Exp. 2)", "The 16-shot improvement is ≥ 2 pp (Exp. 2)"]
    assert report_spec("paper").hypotheses == load_spec("paper").report.hypotheses
    assert report_spec("quick").hypotheses == () and report_spec("a sweep of a file, not a preset").hypotheses == ()
    runs = design({4: 0.010, 8: 0.010, 16: 0.010}, {16: 0.040, 32: 0.030, 64: 0.020, 128: 0.010})
    assert "## Success criteria" in build_report(runs, tmp_path / "paper", figures_too=False).read_text()
    for result in runs:
        result["sweep"] = "quick"  # a preset that declares no hypotheses: nothing to check, no section
    text = build_report(runs, tmp_path / "quick", figures_too=False).read_text()
    assert "Success criteria" not in text and "success criteria" not in text


def test_a_sweeps_folder_checks_its_own_spec_not_the_specs_of_runs_it_shares(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """results/peers and results/dynamic hold the paper's LoRA and BA-LoRA runs (same keys) beside their own:
    their reports check what their own preset declares (nothing), not the paper's four criteria, which the
    paper's own report checks."""
    monkeypatch.chdir(tmp_path)
    runs = design({4: 0.010, 8: 0.010, 16: 0.010}, {16: 0.040, 32: 0.030, 64: 0.020, 128: 0.010})
    for name in ("results/peers", "results/paper", "unnamed"):
        for result in runs:
            write_run(tmp_path / name, result)
    peers = write_runs_report("results/peers", "results/peers/report", figures_too=False).read_text()
    assert "uccess criteria" not in peers
    paper = write_runs_report("results/paper", "results/paper/report", figures_too=False).read_text()
    assert "## Success criteria" in paper
    # a user's spec given by file owns the folder it names as results_dir: its hypotheses, not the paper's
    spec = tmp_path / "mine.yaml"
    spec.write_text(MINE + "results_dir: results/peers\n")
    with given_spec(load_spec(str(spec))):
        mine = write_runs_report(tmp_path / "results" / "peers", "mine", figures_too=False).read_text()
    assert "BA-LoRA beats LoRA at r = 8" in mine and "Exp. 1" not in mine.split("## Coverage")[0]
    # a folder no spec names: the runs' own sweeps declare them, as before
    assert "## Success criteria" in write_runs_report("unnamed", "unnamed/report", figures_too=False).read_text()


MINE = """\
name: mine
equivalence_margin: 0.01
grids:
  - method: [lora, ba_lora, ba_lora_shuffled]
    budget_rank: 8
    train_size: 2000
    seed: [42, 43, 44, 45, 46]
hypotheses:
  - name: BA-LoRA beats LoRA at r = 8
    arm: ba_lora
    where: {budget_rank: 8, train_size: 2000}
    gain: 0.005
  - name: Shuffled ranks are as good as BA-LoRA's
    arm: ba_lora_shuffled
    reference: ba_lora
    test: equivalence
  - name: BA-LoRA beats LoRA on the ViT
    arm: ba_lora
    where: {model: vit-fashion}
"""


def shuffled_runs(offset: float) -> list[dict]:
    """Exp. 1's design at r = 8 of a user's sweep `mine`, with BA-LoRA's ranks shuffled: BA-LoRA's runs
    moved by `offset` and a spread of 0.4 pp around it."""
    runs = design({8: 0.010}, {}, exact=True)
    shuffled = [{**r, "config": {**r["config"], "method": "ba_lora_shuffled"}, "key": f"shuffled-{r['key']}",
                 "metrics": {**r["metrics"], "accuracy": r["metrics"]["accuracy"] + offset + 4 * EXACT[r["config"]["seed"]]}}
                for r in runs if r["config"]["method"] == "ba_lora"]
    return [{**r, "sweep": "mine"} for r in runs + shuffled]


@pytest.mark.parametrize("offset, mark, text", [
    (0.002, MET, "r=8: equivalent within ±1 pp, Δ = +0.20 pp"),
    (-0.03, NOT_MET, "r=8: BA-LoRA shuffled ranks significantly worse than BA-LoRA, Δ = -3.00 pp"),
])
def test_a_users_own_spec_declares_hypotheses_and_the_report_checks_them(tmp_path: Path, offset: float, mark: str,
                                                                        text: str, capsys: pytest.CaptureFixture):
    spec = tmp_path / "mine.yaml"
    spec.write_text(MINE)
    declared = load_spec(str(spec)).report.hypotheses
    runs = shuffled_runs(offset)
    found = {c.name: c for c in success_criteria(analyse(load_runs(runs)), declared)}
    assert found["BA-LoRA beats LoRA at r = 8"].mark == MET
    assert "r=8: BA-LoRA significantly better, Δ = +1.00 pp" in found["BA-LoRA beats LoRA at r = 8"].numbers
    equivalent = found["Shuffled ranks are as good as BA-LoRA's"]
    assert equivalent.mark == mark and text in equivalent.sentence
    # the table's one equivalence test (one comparison: Holm leaves it as it is), recomputed
    d = np.array([r["metrics"]["accuracy"] for r in runs if r["config"]["method"] == "ba_lora_shuffled"]) - np.array(
        [r["metrics"]["accuracy"] for r in runs if r["config"]["method"] == "ba_lora"])
    p_tost = max(sps.ttest_1samp(d, -0.01, alternative="greater").pvalue, sps.ttest_1samp(d, 0.01, alternative="less").pvalue)
    assert f"equivalence (±1 pp) Holm {'p < 0.001' if p_tost < 0.001 else f'p = {p_tost:.3f}'}" in equivalent.numbers
    vit = found["BA-LoRA beats LoRA on the ViT"]
    assert vit.mark == NOT_TESTABLE and "no table that compares BA-LoRA with LoRA (model = vit-fashion)" in vit.sentence
    # the CLI: --spec names the user's spec; without it the runs' sweep (no preset) declares nothing
    folder, out = tmp_path / "runs", tmp_path / "report"
    for result in runs:
        write_run(folder, result)
    with given_spec(load_spec(str(spec))):
        write_runs_report(folder, out, figures_too=False)
    assert "| Shuffled ranks are as good as BA-LoRA's | minilm · rotten_tomatoes · 2,000 examples | " in (
        out / "report.md").read_text()
    assert main(["report", "--runs", str(folder), "--out", str(out), "--check", "--spec", str(spec)]) == 0
    capsys.readouterr()
    assert main(["report", "--runs", str(folder), "--out", str(out), "--check"]) == 2
    assert "report.md differs" in capsys.readouterr().err


def test_a_users_spec_given_to_the_report_brings_its_equivalence_margin_too(tmp_path: Path):
    """--spec gives the report everything the user's spec declares for its runs, not only the hypotheses:
    at ±3 pp the shuffled control (Δ +0.2 pp, spread 0.4 pp) is equivalent, and the table says whose margin."""
    spec = tmp_path / "mine.yaml"
    spec.write_text(MINE.replace("equivalence_margin: 0.01", "equivalence_margin: 0.03"))
    folder, out = tmp_path / "runs", tmp_path / "report"
    for result in shuffled_runs(0.002):
        write_run(folder, result)
    assert main(["report", "--runs", str(folder), "--out", str(out), "--spec", str(spec)]) == 0
    text = (out / "report.md").read_text()
    assert "Equivalence margin: ±3 pp._\n\n_The margin is declared (equivalence_margin) by the spec of sweep mine" in text
    assert "equivalent within ±3 pp" in text


@pytest.mark.parametrize("entry, message", [
    ("{name: x, arm: nope}", "arm 'nope' is not a method; choose from lora, ba_lora"),
    ("{name: x, arm: ba_lora, reference: no_such_method}", "reference 'no_such_method' is not a method"),
    ("{name: x, arm: ba_lora, test: anova}", "test 'anova' is not a test; choose from difference, equivalence, trend"),
    ("{name: x, arm: ba_lora, gain: -0.01}", "gain is the least Δ a difference test counts, a number ≥ 0"),
    ("{name: x, arm: ba_lora, test: equivalence, gain: 0.01}", "gain is for difference tests, not equivalence"),
    ("{name: x, arm: ba_lora, alpha: 1.5}", "alpha is a significance level between 0 and 1, got 1.5"),
    ("{name: x, arm: ba_lora, test: trend, where: {budget_rank: [4, 8]}}", "a trend is the gap's slope over shots"),
    ("{name: x, arm: ba_lora, reference: adalora}", "compares every method with lora, and BA-LoRA's ablations"),
    ("{name: x, arm: linear_decay, over: shots}", "the few-shot tables compare the main methods"),
    ("{name: x, arm: ba_lora, where: {modle: minilm}}", "unknown key(s) modle"),
    ("{name: x, arm: ba_lora, where: {budget_rank: []}}", "where lists no value of budget_rank"),
    ("{name: x, arm: ba_lora, where: {shots: [16, 32], budget_rank: [4, 8]}}", "a hypothesis runs over one dimension"),
    ("{name: x, arm: ba_lora, margin: 0.01}", "unknown key 'margin'; a hypothesis has name, arm, reference, test"),
    ("{arm: ba_lora}", "each hypothesis is a mapping with a name and an arm"),
    ("{name: x, arm: ba_lora, where: {task: auto}}", "where's task 'auto' is not a task; choose from classification"),
    ("{name: x, arm: ba_lora, where: {task: [classification, causal_lm]}}", "tasks read by different metrics"),
])
def test_a_bad_hypothesis_is_one_line_naming_its_line(tmp_path: Path, capsys: pytest.CaptureFixture, entry: str,
                                                       message: str):
    spec = tmp_path / "bad.yaml"
    spec.write_text(MINE.split("hypotheses:")[0] + f"hypotheses:\n  - {{name: fine, arm: ba_lora}}\n  - {entry}\n")
    with pytest.raises(BaloraError, match="line 10: "):
        load_spec(str(spec))
    assert main(["report", "--runs", str(tmp_path), "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"balora: error: {spec}, line 10: ") and message in err and err.count("\n") == 1


LM_SPEC = """\
name: mine_lm
grids:
  - {method: [lora, ba_lora], model: smollm2, dataset: critic_instructions, budget_rank: 8, seed: [42, 43, 44]}
hypotheses:
  - {name: BA-LoRA lowers the test loss, arm: ba_lora, where: {task: causal_lm}}
  - {name: BA-LoRA lowers it by 0.1 nats, arm: ba_lora, where: {task: causal_lm, budget_rank: [8]}, gain: 0.1}
  - {name: BA-LoRA beats LoRA in accuracy, arm: ba_lora, gain: 0.005}
"""


def test_a_hypothesis_on_a_loss_task_is_checked_on_its_loss_table(tmp_path: Path):
    """A spec's hypothesis on the causal-LM task is checked on the instruction-tuning table, by the metric's direction:
    better is a lower test loss, and a gain is in nats. One that names no task is about accuracy (its gain in pp), so
    the loss table does not answer it."""
    from balora.report.builder import build

    spec = tmp_path / "mine_lm.yaml"
    spec.write_text(LM_SPEC)
    runs = [make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]
    for result in runs:  # BA-LoRA's per-seed differences from LoRA's get a spread, so that the paired test can run
        jitter = {42: 0.002, 43: -0.001, 44: 0.0}[result["config"]["seed"]] if result["config"]["method"] == "ba_lora" else 0
        result["metrics"]["loss"] += jitter
        result["sweep"] = "mine_lm"
    with given_spec(load_spec(str(spec))):
        report = build(load_runs(runs), tmp_path, runs)
    found = {c.name: c for c in report.criteria}
    assert list(report.sections)[:2] == ["criteria", "lm"]  # the report of causal-LM runs alone shows them too
    lower = found["BA-LoRA lowers the test loss"]
    assert lower.mark == MET and lower.where == "smollm2 · critic_instructions"
    assert lower.test == "at every budget (task = causal_lm): Δ < 0 and Holm p < 0.05 (paired t-test)"
    assert "r=8: BA-LoRA significantly better, Δ = -0.0497 nats" in lower.numbers
    by_much = found["BA-LoRA lowers it by 0.1 nats"]
    assert by_much.mark == NOT_MET and "Δ ≤ -0.1000 nats" in by_much.test
    assert "r=8: BA-LoRA significantly better but by less than 0.1 nats" in by_much.numbers
    assert found["BA-LoRA beats LoRA in accuracy"].mark == NOT_TESTABLE


def test_the_criteria_table_says_an_inconclusive_case_does_not_pass():
    """Review 3, N13: "not met when a tested case fails it" left "fails" undefined for a criterion whose cases are all
    inconclusive, marked not met; the note says such a case does not pass, and the criterion is then not shown."""
    from balora.report.criteria import criteria_table

    (note,) = criteria_table([]).notes
    assert "an inconclusive case does not pass" in note and "not shown, not refuted" in note


def test_criteria_not_met_say_which_are_refuted_and_which_only_not_shown():
    """A reviewer's read (2026-12-07): "None of the 4 success criteria was met" read as a refutation, though each
    failed only on inconclusive comparisons. The summary says which an interval refutes and which it leaves open."""
    from balora.report.criteria import Criterion

    unshown = [Criterion(f"c{i}", "t", "w", NOT_MET, "", "") for i in range(2)]
    assert criteria_summary(unshown, "the") == ("None of the 2 success criteria was met on these runs; no interval of Δ "
                                                "excludes what they claim, so none is refuted either.")
    refuted = [*unshown, Criterion("c2", "t", "w", NOT_MET, "", "", refuted=True)]
    assert criteria_summary(refuted, "the") == ("None of the 3 success criteria was met on these runs; of the 3 not met, "
                                                "1 is refuted (an interval of Δ excludes what it claims), the other 2 "
                                                "are not shown either way.")
    assert criteria_summary(refuted[2:], "the") == ("None of the 1 success criteria was met on these runs; it is "
                                                    "refuted: an interval of Δ excludes what it claims.")


def test_a_criterion_is_refuted_where_its_interval_excludes_the_gain_it_asks_for_whatever_the_verdict():
    """A second reviewer's read (2026-12-08): "each failed on inconclusive comparisons alone, so none is refuted" of
    "the 16-shot improvement is ≥ 2 pp", whose interval (−4.55 to +1.24) excludes a 2 pp gain. An interval that stops
    short of the gain refutes it, inconclusive or not; one that reaches it does not, even where the verdict says a
    tie (equivalent within ±1 pp does not exclude a 0.5 pp gain)."""
    from balora.report import stats
    from balora.report.criteria import Case
    from balora.specs import Hypothesis

    def case(low: float, high: float, verdict: str) -> Case:
        return Case("16", SimpleNamespace(tested=True, ci_low=low, ci_high=high, verdict=verdict, metric=stats.ACCURACY,
                                          margin=stats.Margin(0.01, "spec")))

    gain = Hypothesis("gain", "ba_lora", test="difference", gain=0.02)
    assert case(-0.0455, 0.0124, stats.INCONCLUSIVE).refutes(gain)
    assert not case(-0.0455, 0.0250, stats.INCONCLUSIVE).refutes(gain)
    half = Hypothesis("half", "ba_lora", test="difference", gain=0.005)
    assert not case(-0.004, 0.008, stats.EQUIVALENT).refutes(half)
    assert case(-0.03, -0.01, stats.WORSE).refutes(half)
    tie = Hypothesis("tie", "ba_lora", test="equivalence")
    assert case(0.012, 0.03, stats.BETTER).refutes(tie) and not case(0.002, 0.015, stats.BETTER).refutes(tie)
    losing = criteria(design({4: -0.010, 8: 0.0, 16: 0.003}, {16: -0.01, 32: -0.01, 64: -0.01, 128: -0.01}))
    assert losing["BA-LoRA beats LoRA by ≥ 0.5 pp at every budget"].refuted  # significantly worse at r=4

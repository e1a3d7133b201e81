"""The anytime metric: the area under a run's validation curve over normalised progress, the steps to reach
LoRA's final validation value, the spec's `anytime` field, and the report section it turns on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_report import MAJORITY, _markdown_tables, close_pairs, make_result

from balora.errors import BaloraError
from balora.report import build_report
from balora.report.runs import anytime_value, load_runs, steps_to_reach
from balora.specs import ReportSpec, Spec, given_spec
from balora.tasks import LOSS

TIE_AT_THE_END = (0.015, -0.012, 0.008, -0.014, 0.005)  # BA-LoRA − LoRA test accuracy: inconclusive at ±1 pp


def test_the_anytime_area_is_the_trapezoid_mean_over_normalised_progress():
    # steps 10: t = 0, 0.5, 1 → 0.5·(0.5 + 0.7)/2 + 0.5·(0.7 + 0.8)/2 = 0.3 + 0.375
    assert anytime_value([(0, 0.5), (5, 0.7), (10, 0.8)], 10) == pytest.approx(0.675)
    # uneven spacing: t = 0, 0.2, 1 → 0.2·(0.5 + 0.9)/2 + 0.8·(0.9 + 0.9)/2 = 0.14 + 0.72
    assert anytime_value([(0, 0.5), (2, 0.9), (10, 0.9)], 10) == pytest.approx(0.86)
    # a flat curve's area is its value
    assert anytime_value([(0, 0.6), (3, 0.6), (7, 0.6), (8, 0.6)], 8) == pytest.approx(0.6)
    # fewer than 3 points, no step-0 point, or a curve that stops before the last step: no area
    assert math.isnan(anytime_value([(0, 0.5), (10, 0.8)], 10))
    assert math.isnan(anytime_value([(2, 0.5), (5, 0.7), (10, 0.8)], 10))
    assert math.isnan(anytime_value([(0, 0.5), (5, 0.7), (8, 0.8)], 10))


def test_the_anytime_area_over_a_horizon_reads_the_curve_up_to_it():
    """The issue asked for the area "at matched steps": over the first H steps, the curve read linearly between
    its points up to H, divided by H; fewer than 3 points up to H is no value."""
    curve = [(0, 0.5), (5, 0.6), (10, 0.7), (20, 0.9)]
    assert anytime_value(curve, 20, 10) == pytest.approx(0.6)
    assert anytime_value(curve, 20, 15) == pytest.approx((0.55 + 0.65 + 0.75) / 3)
    assert anytime_value(curve, 20, 20) == anytime_value(curve, 20) == anytime_value(curve, 20, 40)
    assert math.isnan(anytime_value(curve, 20, 4))  # (0, 0.5) and (4, 0.58): two points


def test_arms_of_unequal_length_compare_at_matched_steps():
    """A reviewer's read (2026-12-07): regime (b)'s BA-LoRA trained 378 steps and LoRA 189, and the anytime metric,
    over normalised progress, read BA-LoRA at twice LoRA's pace ("learns sooner"). Every run of a setting and
    budget is read over the fewest steps any of them trained: the longer arm over its first half."""
    lora = [_with_curve(make_result("lora", 8, 64, s), [0.5, 0.6, 0.7, 0.75, 0.75]) for s in (42, 43)]
    ba = [make_result("ba_lora", 8, 64, s) for s in (42, 43)]
    for run in ba:
        run["steps"] = 320  # twice LoRA's 160; linear from 0.5 to 0.8 over 320 steps
        _with_curve(run, [0.5, 0.575, 0.65, 0.725, 0.8])
    frame = load_runs(lora + ba).set_index(["method", "seed"])
    assert set(frame["anytime_steps"]) == {160}
    assert frame.loc[("lora", 42), "anytime"] == pytest.approx(0.25 * (0.55 + 0.65 + 0.725 + 0.75))
    assert frame.loc[("ba_lora", 42), "anytime"] == pytest.approx(0.575)  # its first 160 steps: 0.5 to 0.65
    assert frame.loc[("ba_lora", 42), "anytime"] < frame.loc[("lora", 42), "anytime"]


def test_steps_to_reach_a_value_for_accuracy_and_for_loss():
    curve = [(0, 0.5), (10, 0.7), (20, 0.8), (30, 0.75)]
    assert steps_to_reach(curve, 0.7) == 10
    assert steps_to_reach(curve, 0.78) == 20
    assert steps_to_reach(curve, 0.9) is None
    losses = [(0, 3.0), (10, 2.5), (20, 2.2)]
    assert steps_to_reach(losses, 2.5, metric=LOSS) == 10
    assert steps_to_reach(losses, 2.0, metric=LOSS) is None


def _with_curve(result: dict, values: list[float]) -> dict:
    steps = result["steps"]
    points = [round(steps * i / (len(values) - 1)) for i in range(len(values))]
    result["curves"]["validation"] = [[s, {"accuracy": v, "loss": 0.7}] for s, v in zip(points, values)]
    return result


def test_the_run_frame_has_each_run_s_anytime_area_and_steps_to_its_lora_s_final_value():
    """LoRA (seeds 42, 43) ends at 0.75 on validation; BA-LoRA reaches 0.75 at step 40 of 160 on seed 42 and
    never on seed 43; EVA on seed 44 has no LoRA run with its seed."""
    lora = [_with_curve(make_result("lora", 8, 64, s), [0.5, 0.6, 0.7, 0.75, 0.75]) for s in (42, 43)]
    ba = [_with_curve(make_result("ba_lora", 8, 64, 42), [0.5, 0.75, 0.8, 0.8, 0.8]),
          _with_curve(make_result("ba_lora", 8, 64, 43), [0.5, 0.6, 0.7, 0.74, 0.74])]
    eva = [_with_curve(make_result("eva", 8, 64, 44), [0.5, 0.9, 0.9, 0.9, 0.9])]
    frame = load_runs(lora + ba + eva).set_index(["method", "seed"])
    assert frame.loc[("lora", 42), "anytime"] == pytest.approx(0.25 * (0.55 + 0.65 + 0.725 + 0.75))
    assert frame.loc[("ba_lora", 42), "anytime"] == pytest.approx(0.25 * (0.625 + 0.775 + 0.8 + 0.8))
    assert frame.loc[("ba_lora", 42), "steps_to_reference"] == 40
    assert frame.loc[("ba_lora", 42), "reference_final"] == pytest.approx(0.75)
    assert frame.loc[("ba_lora", 43), "steps_to_reference"] is None  # never reaches 0.75
    assert frame.loc[("lora", 43), "steps_to_reference"] == 120  # LoRA's own first step at its final value
    assert math.isnan(frame.loc[("eva", 44), "reference_final"])  # no paired LoRA run
    assert frame.loc[("eva", 44), "steps_to_reference"] is None


def faster_pairs(faster: bool = True) -> list[dict]:
    """LoRA and BA-LoRA tied on test accuracy (inconclusive at ±1 pp), their validation curves ending there.
    `faster`: BA-LoRA's curve gets to its final value a quarter into training, LoRA's rises linearly to the end;
    else both rise linearly."""
    results = close_pairs(TIE_AT_THE_END)
    for r in results:
        final = r["metrics"]["accuracy"]
        rise = (lambda i: min(1.0, i / 2)) if faster and r["config"]["method"] == "ba_lora" else (lambda i: i / 8)
        _with_curve(r, [MAJORITY + (final - MAJORITY) * rise(i) for i in range(9)])
    return results


@pytest.mark.parametrize("declared", [False, True])
def test_the_anytime_section_appears_only_where_the_spec_declares_it(declared: bool, tmp_path: Path):
    with given_spec(Spec("synthetic", "", [], report=ReportSpec(anytime=declared))):
        markdown = build_report(faster_pairs(), tmp_path / "report", figures_too=False).read_text()
    assert ("## Anytime performance" in markdown) is declared
    assert (tmp_path / "report" / "tables" / "anytime_minilm_rotten_tomatoes_64_shot.tex").exists() is declared \
        or not declared and not list((tmp_path / "report" / "tables").glob("anytime_*"))


def test_a_faster_arm_not_shown_to_differ_at_the_end_is_better_on_anytime_and_sooner(tmp_path: Path):
    with given_spec(Spec("synthetic", "", [], report=ReportSpec(anytime=True))):
        markdown = build_report(faster_pairs(), tmp_path / "report", figures_too=False).read_text()
    section = markdown.split("## Anytime performance")[1].split("\n## ")[0]
    (title, rows), = _markdown_tables(section)
    assert title.startswith("Anytime performance — minilm · rotten_tomatoes · 64-shot")
    (lora,) = [r for r in rows if r["Method"] == "LoRA"]
    (ba,) = [r for r in rows if r["Method"] == "BA-LoRA"]
    assert ba["Verdict"] == "better" and ba["Test acc. verdict"].startswith("inconclusive (MDE")
    # BA-LoRA's curve is at its final value from step 40 on, which is LoRA's or above on the 3 seeds it ends above
    assert ba["Reached"] == "3/5" and ba["Steps to LoRA's final"] == "40"
    assert lora["Reached"] == "5/5" and lora["Steps to LoRA's final"] == "160" and lora["Steps"] == "160"
    assert "faster: BA-LoRA at r=8; slower: none" in section
    # an inconclusive end is no tie (a reviewer's read, 2026-12-07)
    assert "tying" not in section and "BA-LoRA learns sooner, with no difference shown at the end" in section
    assert "Sooner with no difference shown at the end: BA-LoRA at r=8 (minilm · rotten_tomatoes · 64-shot)." in section


def test_a_spec_may_declare_anytime_true_or_false_and_nothing_else(tmp_path: Path):
    from balora.specs import load_spec, report_spec

    def spec(line: str) -> str:
        path = tmp_path / "spec.yaml"
        path.write_text(f"name: tiny\n{line}grids:\n  - method: [lora]\n    shots: 8\n")
        return str(path)

    assert load_spec(spec("anytime: true\n")).report.anytime is True
    assert load_spec(spec("")).report.anytime is False
    with pytest.raises(BaloraError, match="line 2: anytime is true or false"):
        load_spec(spec("anytime: 1\n"))
    assert report_spec("paper").anytime is False and report_spec("not a preset").anytime is False
    assert report_spec("levers").anytime is True


def test_no_arm_is_sooner_where_the_curves_rise_alike(tmp_path: Path):
    with given_spec(Spec("synthetic", "", [], report=ReportSpec(anytime=True))):
        markdown = build_report(faster_pairs(faster=False), tmp_path / "report", figures_too=False).read_text()
    section = markdown.split("## Anytime performance")[1].split("\n## ")[0]
    (_, rows), = _markdown_tables(section)
    (ba,) = [r for r in rows if r["Method"] == "BA-LoRA"]
    assert ba["Verdict"] != "better"
    assert "- No arm is sooner with no difference shown at the end (better on the anytime metric with a test-accuracy verdict " \
           "of equivalent or inconclusive) in the setting compared." in section
    assert "faster: none" in section


def test_the_anytime_table_explains_each_column_only_while_it_shows_it():
    """The paper's version has no Steps column: its caption does not define optimizer steps; the report's does."""
    from balora.report import anytime
    from balora.report.runs import settings

    frame = load_runs(faster_pairs())
    (setting,) = settings(frame)
    rows, final = anytime.compare(frame[frame["setting"] == setting])
    table = anytime.anytime_table(setting, rows, final)
    assert "Steps" not in table.compact and "Steps: optimizer steps" not in " ".join(table.select(table.compact).captions)
    assert "Steps to LoRA's final: median" in " ".join(table.select(table.compact).captions)
    assert "Steps: optimizer steps" in " ".join(table.captions)


def test_the_papers_speed_sentence_does_not_read_an_inconclusive_end_as_a_tie(tmp_path: Path):
    """A reviewer's read (2026-12-07): "learns sooner without ending higher" read an inconclusive final accuracy as not
    higher. The paper says the arm learns sooner and that whether it ends higher is not shown, with the MDE, and names
    the setting in words, not by the report's codes. The third review (N10): a setting had two items, its verdicts and
    then its faster arms; it has one, the faster arms after the verdicts."""
    with given_spec(Spec("synthetic", "", [], report=ReportSpec(anytime=True))):
        build_report(faster_pairs(), tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    text = " ".join((tmp_path / "paper" / "generated" / "anytime.tex").read_text().split())
    assert "against LoRA on the anytime metric: BA-LoRA, better. BA-LoRA learns sooner; whether it ends higher is not " \
           "shown (test accuracy inconclusive, MDE " in text
    assert r"\item" not in text  # one setting, one paragraph
    assert "MiniLM on Rotten Tomatoes snippets (64 examples per class)" in text
    assert "$\\cdot$" not in text and "rotten\\_tomatoes" not in text


def test_the_papers_anytime_tables_leave_their_speed_columns_to_one_sentence_above_them(tmp_path: Path):
    """A reviewer's read (2026-12-07): each of the appendix's four anytime captions ran to six or seven lines, half of
    them the same three column notes. The paper says those once, above the tables, which it cites; each caption keeps
    only what is its own."""
    with given_spec(Spec("synthetic", "", [], report=ReportSpec(anytime=True))):
        build_report(faster_pairs(), tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    generated = tmp_path / "paper" / "generated"
    (table,) = (generated / "tables").glob("anytime_*.tex")
    caption = table.read_text()
    assert "Steps to LoRA's final:" not in caption and "Test acc. verdict:" not in caption
    above = (generated / "anytime_more.tex").read_text()
    assert above.count("Steps to LoRA's final: median") == 1
    assert "Holm-adjusted over its table (Table~\\ref{tab:anytime_minilm_rotten_tomatoes_64_shot})." in above
    assert above.index("Steps to LoRA's final:") < above.index(r"\input{generated/tables/anytime_")
    # the paper's table has no Reached column (upright with two budgets' rows), so neither has its sentence
    assert "Reached" not in above and "Reached" not in caption

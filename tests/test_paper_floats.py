"""The paper's figures and tables as a reviewer reads them in print (second review, 2026-12-07): figures drawn at the
size they print, no panel or column that says one value, an "equivalent" row's interval inside its margin, no table
that repeats another's values, and the configuration of every study in a table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_report import LM_LOSS, SEEDS, make_lm_result, make_result, synthetic_results

ROOT = Path(__file__).parents[1]
TEXT_WIDTH, TEXT_HEIGHT = 6.5, 9.0  # inches: main.tex's letter page less its 1 in margins


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The canvases the figure functions draw, instead of saved files."""
    from balora.report import figures

    canvases: list = []
    monkeypatch.setattr(figures, "_save", lambda fig, *args: canvases.append(fig) or
                        figures.Figure(args[1], args[2], args[3], Path("x.png"), Path("x.pdf"), 0.0))
    return canvases


def _levers(prefix: str):
    from balora.report.runs import load_runs
    from balora.runfiles import read_runs

    frame = load_runs(read_runs(ROOT / "results" / "levers"))
    setting = next(s for s in frame["setting"].unique() if s.startswith(prefix))
    return frame[frame["setting"] == setting], setting


def test_every_figure_the_paper_shows_is_drawn_no_larger_than_it_prints(drawn: list, tmp_path: Path):
    """Review item 9: figures 8 in wide were shrunk to the 6.5 in text width (type ≈ 7 pt), and one taller than the
    paper's cap was shrunk to its height. Each is drawn at most the text width wide and the cap high, so LaTeX prints
    it at the size drawn and its type (at least 8 pt in the style) at that size."""
    from balora.report import figures, paper_latex
    from balora.report.lm import selected_runs
    from balora.report.runs import load_runs
    from balora.runfiles import read_runs

    vit, setting = _levers("vit-fashion")
    for draw in (figures.importance_vs_rank, figures.rank_per_layer, figures.validation_accuracy,
                 figures.training_loss, figures.pareto, figures.rank_heatmaps):
        draw(vit, setting, tmp_path)
    text = load_runs(synthetic_results())
    figures.fewshot_curves(text, "synthetic", tmp_path)
    for draw in (figures.validation_accuracy, figures.rank_per_layer, figures.params_loss_bars):
        draw(text[text["shots"] == 64], "synthetic", tmp_path)
    three = load_runs([make_result(m, b, 64, s) for m in ("lora", "ba_lora") for b in (4, 8, 16) for s in SEEDS[:3]])
    for draw in (figures.validation_accuracy, figures.training_loss, figures.rank_per_layer):  # a full row of panels
        draw(three, "three budgets", tmp_path)
    lm = selected_runs(load_runs([make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]))
    figures.params_loss_bars(lm, "lm", tmp_path)
    committed = load_runs(read_runs(ROOT / "results" / "paper"))  # ten strategies: a legend of many long labels
    figures.rank_per_layer(selected_runs(committed[committed["task"] == "causal_lm"]), "smollm2", tmp_path)
    assert len(drawn) >= 10
    assert min(v for k, v in figures.STYLE.items() if k.endswith("size")) >= 8
    for canvas in drawn:
        canvas.draw_without_rendering()
        box = canvas.get_tightbbox().padded(0.05)
        assert box.width <= TEXT_WIDTH + 0.01, (canvas.axes[0].get_title(), box.width)
        assert box.height <= paper_latex.FIGURE_HEIGHT * TEXT_HEIGHT, (canvas.axes[0].get_title(), box.height)
        # a legend below the panels takes height of its own, not theirs
        for ax in canvas.axes if canvas.legends else []:
            if ax.get_visible():
                assert ax.get_window_extent().height / canvas.dpi > 1.5, (ax.get_title(), ax.get_window_extent())


def _flat(ax) -> bool:
    """Whether a panel draws data that is all one value (its bars' lengths, or its lines' y)."""
    values = [patch.get_width() for patch in ax.patches]
    values += [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float)]
    return len(values) > 0 and len({round(v, 9) for v in values}) == 1


def test_no_figure_draws_a_panel_whose_values_are_all_equal(drawn: list, tmp_path: Path):
    """Review item 19: a bar panel of equal parameter counts and a rank panel flat at LoRA's rank carry no
    information; the count is said in the caption instead, and a budget whose ranks are all one value has no panel."""
    from balora.report import figures
    from balora.report.runs import load_runs

    equal = load_runs([make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "linear_decay") for s in SEEDS[:3]])
    (bars,) = figures.params_loss_bars(equal, "equal", tmp_path)
    assert "73,728" in bars.caption
    uniform = load_runs([*(make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]),
                         *(make_result("lora", 16, 64, s) for s in SEEDS[:3])])
    figures.rank_per_layer(uniform, "uniform", tmp_path)
    assert len(drawn) == 2
    panels = [ax for canvas in drawn for ax in canvas.axes if ax.get_visible() and (ax.patches or ax.get_lines())]
    assert panels and not [ax.get_title() for ax in panels if _flat(ax)]
    assert [ax.get_title() for ax in drawn[1].axes if ax.get_visible()] == ["r=8 (73,728 params)"]


def test_a_rank_heatmap_caption_says_how_its_methods_are_laid_out(tmp_path: Path):
    """Review item 19: 'one column group per method' read as one column of panels per method; the methods' blocks
    sit side by side in rows."""
    from balora.report import figures
    from balora.report.runs import load_runs

    frame = load_runs(synthetic_results())
    setting = frame["setting"].iloc[0]
    with figures_off():
        captions = [f.caption for f in figures.rank_heatmaps(frame[frame["setting"] == setting], setting, tmp_path)]
    assert captions and all("column group per method" not in c and "block of columns" in c for c in captions)
    # review 3 (item 19 of review 2): the blocks stacked in one column were captioned "side by side in rows"
    assert figures._block_layout(1, 3) == "the blocks stacked one above another"
    assert figures._block_layout(6, 3) == "the blocks side by side" and figures._block_layout(2, 3).endswith("2 to a row")


def figures_off():
    from balora.report import figures

    class Off:
        def __enter__(self):
            self.token = figures.RENDER.set(False)

        def __exit__(self, *exc):
            figures.RENDER.reset(self.token)

    return Off()


def test_the_pareto_axis_spans_the_data_not_down_to_the_majority_rate(drawn: list, tmp_path: Path):
    """Review item 19: the majority-class line pulled the accuracy axis down to 50%, squeezing every point into 2 pp.
    The axis spans the points (with their error bars); a majority rate below it is said in the caption."""
    from balora.report import figures
    from balora.report.runs import load_runs

    frame = load_runs([make_result(m, b, 64, s) for m in ("lora", "ba_lora") for b in (4, 8) for s in SEEDS])
    (figure,) = figures.pareto(frame, "synthetic", tmp_path)
    (ax,) = [ax for ax in drawn[0].axes if ax.get_visible()]
    low = min(100 * frame["accuracy"])
    assert ax.get_ylim()[0] > 100 * frame["majority_rate"].mean() + 5 and ax.get_ylim()[0] < low
    assert "57.80%" in figure.caption


def _equivalent_with_a_wide_t_interval():
    """One comparison, equivalent within ±1 pp (TOST at 90%) whose 95% t-interval crosses +1 pp."""
    from balora.report import stats

    z = np.array([-1.5, -1.0, -0.6, -0.3, 0.0, 0.0, 0.3, 0.6, 1.0, 1.5])
    differences = 0.003 + 0.01 * z / z.std(ddof=1)
    reference = {seed: 0.7 for seed in range(10)}
    method = {seed: 0.7 + d for seed, d in enumerate(differences)}
    (c,) = stats.holm_adjust([stats.paired_comparison(method, reference)])
    return c


def test_an_equivalent_row_shows_the_equivalence_tests_interval_inside_its_margin():
    """Review item 7: rows "equivalent within ±0.01 nats" printed the t-test's interval, which crossed the margin.
    An equivalent row prints the equivalence test's interval (90% for one test, Holm-matched), inside ±margin, with
    its level."""
    from balora.report import stats, tables

    c = _equivalent_with_a_wide_t_interval()
    assert c.verdict == stats.EQUIVALENT
    assert stats._interval(c.delta, c.stderr, c.n_pairs, 0.95)[1] > 0.01  # the t-test's 95% interval crosses it
    cell = tables.delta_text(c)
    low, high = (float(v.replace("−", "-")) for v in cell.split("[")[1].rstrip("]").split(", "))
    assert -1 < low < high < 1, cell
    row = type("R", (), {"comparison": c})()
    assert tables.ci_levels([row]) == ["90.0"]


def test_a_strategy_table_drops_a_reduction_that_is_the_same_in_every_row():
    """Review item 20: Table 25's "Reduction (%)" read 0.0 in every row (the arms train equal parameter counts);
    a column (or caption entry) that says one value in every row of a table is dropped."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "linear_decay") for s in SEEDS[:3]]
    for run in runs:
        run["config"]["strategy"] = "proportional"
    analysis = analyse(load_runs(runs))
    (table,) = tables.strategy_tables(analysis)
    assert "Reduction (%)" not in table.columns
    assert not any("Reduction" in note for note in table.captions)


def _strategy_rows(methods: list[str]) -> list[list[str]]:
    return [["r=8", m, str(3 + i), f"1.{i}888 ± 0.1171", f"{165 + i},888", f"6{i}.10 ± 1.33", f"1{i}.10 ± 1.33",
             f"+0.9{i} [−6.04, +7.84]", f"0.{i}00", f"inconclusive (MDE 1{i}.34 pp)"] for i, m in enumerate(methods)]


def _differing(table_columns: list[str], rows: list[list[str]], tmp_path: Path,
               epochs: tuple[str, ...] = ("40", "40", "40", "20")) -> str:
    """The paper's .tex of a table whose four rows differ in lr, epochs and dynamic BA-LoRA's reallocation interval."""
    from balora.report import paper_latex
    from balora.report.document import Table

    table = Table("strategy_x", "Strategy comparison — x", table_columns, rows,
                  detail={"learning_rate": ["0.0005", "0.001", "0.001", "0.0005"], "epochs": list(epochs),
                          "realloc_every": ["–", "–", "20", "–"],
                          "tuned": ["learning_rate + epochs"] * 3 + ["learning_rate"]})
    out = paper_latex.Output(tmp_path, "generated", selection="tuning")
    paper_latex.table_tex(table, out)
    assert out.appendix == []
    return (tmp_path / "tables" / "strategy_x.tex").read_text()


def test_a_paper_table_without_room_for_its_fields_points_to_the_selection_table_and_says_its_training_lengths(
        tmp_path: Path):
    """Review items 12 and 20: the appendix repeated the selection table's values in a table per results table. A
    table without room for the values its rows differ in points to the selection table for those selected on
    validation, and says the others, and the training lengths its rows mix, in words: review 3, N14, the usual
    value once with its exceptions in brackets. An option only one method reads is the configuration table's, not
    the caption's (a reviewer's read, 2026-12-07: captions of 4-6 lines of configuration)."""
    columns = ["Budget", "Method", "n", "Eval loss", "LoRA params", "Acc. (%)", "F1 (%)", "Δ acc. (pp) [CI]",
               "p (TOST, Holm)", "Verdict"]
    tex = _differing(columns, _strategy_rows(["LoRA", "BA-LoRA", "BA-LoRA dynamic", "linear decay"]), tmp_path)
    assert r"Table~\ref{tab:tuning}" in tex
    assert "Epochs: 40 in every row (linear decay: 20)." in tex
    assert "reallocation" not in tex


def test_a_paper_table_shows_its_rows_epochs_as_a_column_where_no_value_is_most_rows_and_leaves_lr_to_the_selection_table(
        tmp_path: Path):
    """Review 3, N14 and review 2, item 12: a narrow table shows each row's training length in a column (not a note
    that reads "epochs 80 for LoRA (16), BA-LoRA (32); 160 for …"), and no lr column: the selection table has
    every value selected on validation, once."""
    rows = [row[:3] + row[5:6] + row[-1:] for row in _strategy_rows(["LoRA", "BA-LoRA", "BA-LoRA dynamic", "decay"])]
    tex = _differing(["Budget", "Method", "n", "Acc. (%)", "Verdict"], rows, tmp_path, ("80", "160", "40", "20"))
    header = next(line for line in tex.splitlines() if line.startswith("Budget & Method"))
    assert "Epochs" in header and "lr" not in header
    assert "decay & 20 & " in tex and "Epochs:" not in tex
    assert r"The values its rows selected on validation (lr, epochs) are in Table~\ref{tab:tuning}." in tex
    # where most rows share one value, it is said once, with its exceptions (no column for it)
    tex = _differing(["Budget", "Method", "n", "Acc. (%)", "Verdict"], rows, tmp_path)
    assert "Epochs: 40 in every row (decay: 20)." in tex and "Epochs &" not in tex


def test_the_papers_captions_name_models_and_data_not_their_codes(tmp_path: Path):
    """Review 2, item 8: captions and group headers read "minilm · rotten_tomatoes", "vit-fashion · digits"; they
    say the names, through one mapping."""
    from balora.report import paper_latex
    from balora.report.document import Table
    from balora.report.runs import named_labels

    assert named_labels("Cost — vit-fashion · digits · 16-shot") == "Cost — ViT (Fashion-MNIST) · Digits · 16-shot"
    assert named_labels("8×8 handwritten digits") == "8×8 handwritten digits"  # a word, not a label's code
    table = Table("t", "Budget efficiency — minilm · presidential_debates · 64-shot", ["Setting", "Method", "n"],
                  [["smollm2 · critic_instructions", "LoRA", "3"], ["smollm2 · critic_instructions", "BA-LoRA", "3"],
                   ["minilm · rotten_tomatoes · 2,000 examples", "LoRA", "3"]])
    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated"))
    tex = (tmp_path / "tables" / "t.tex").read_text()
    assert r"MiniLM $\cdot$ Presidential debates" in tex and r"SmolLM2 $\cdot$ Critic instructions" in tex
    assert "minilm" not in tex and "smollm2" not in tex and "rotten" not in tex


def test_the_appendix_defines_the_tables_notation_once_and_the_captions_do_not_repeat_it(tmp_path: Path):
    """Review 2, item 13 and review 3, N10: Appendix A defined TOST, the MDE and n<3 twice each and described a
    Wilcoxon test and Cohen's d that no table shows; every caption repeated what ≤ majority and the interval's level
    mean. The appendix says each once, with the notation; a caption says only what is its own."""
    from balora.report import paper_latex, paper_setup
    from balora.report.document import Table

    said = paper_setup.statistics_latex("")
    for term in ("two one-sided", "minimum detectable effect", "n$<$3", r"$\leq$ majority", "Same in every row"):
        assert said.count(term) == 1, term
    assert "Wilcoxon" not in said and "Cohen" not in said
    assert r"\item[{$\Delta$ acc. (pp) [95.0\% CI]}]" in said  # the term's "]" does not end its label
    table = Table("t", "Few-shot accuracy — x", ["Shots/class", "Method", "n", "≤ majority", "Δ acc. (pp) [CI]",
                                                 "Verdict"],
                  [["16", "LoRA", "3", "1/3", "(reference)", "(reference)"],
                   ["16", "BA-LoRA", "3", "0/3", "+1.00 [−1.00, +3.00]", "inconclusive (MDE 3.00 pp)"],
                   ["32", "LoRA", "3", "0/3", "(reference)", "(reference)"],
                   ["32", "BA-LoRA", "3", "0/3", "+1.00 [−2.00, +4.00]", "inconclusive (MDE 4.00 pp)"]],
                  column_notes={"≤ majority": "≤ majority: runs whose accuracy is not above the majority-class rate.",
                                "Verdict": "Verdict at α = 0.05: better or worse where p (Holm) is below it."},
                  detail={"CI level (%)": ["–", "97.5", "–", "96.0"]})
    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated"))
    tex = (tmp_path / "tables" / "t.tex").read_text()
    assert r"96.0\%" in tex  # the CI level column, which the appendix explains
    assert "runs whose accuracy" not in tex and "matches Holm" not in tex and "p (Holm) is below" not in tex


def test_the_papers_selection_tables_leave_the_selection_rule_to_the_protocol_above_them(tmp_path: Path):
    """Review 3, N10: each selection table's caption restated Appendix B's rule (the best mean final validation
    accuracy, its ties, what is not admissible), three times over, and its longest table ran one row onto a page."""
    from test_tuning import tuning_result

    from balora.report import paper_latex
    from balora.report.document import latex_text
    from balora.report.selection import PROTOCOL, tuning_table

    runs = [tuning_result(lr, seed, 0.7 + lr, method=method) for method in ("lora", "ba_lora")
            for lr in (1e-3, 2e-3) for seed in (0, 1)]
    table = tuning_table(runs, {})
    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated"))
    tex = (tmp_path / "tables" / "tuning.tex").read_text()
    assert "ties go to the lower mean validation loss" not in tex and "scored on test" in tex
    assert "ties: the lower mean validation loss" in latex_text(PROTOCOL)


def test_the_papers_cost_table_shows_the_phases_its_total_adds_up_and_what_its_ratios_measure(tmp_path: Path):
    """Review 3, N18 and review 2, item 16: Table 24's total exceeded its phase columns by 33–65 s (loading and the
    test set's evaluation were not shown), and its time ratios of 0.51–0.80 had no caveat on the machine's load."""
    from balora.report import paper_latex, tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    (table,) = tables.cost_tables(analyse(load_runs(runs)))
    assert {"load (s)", "eval (s)"} <= set(table.compact)
    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated"))
    tex = (tmp_path / "tables" / f"{table.name}.tex").read_text()
    assert "one below 1 is no speed-up" in tex


def test_a_parameter_count_that_differs_between_seeds_is_marked_as_a_mean():
    """Review 3, N18: Table 8 gave "LoRA params 51,763" for w/o budget, a mean over seeds (not a multiple of 768)."""
    import pandas as pd

    from balora.report import tables

    row = type("R", (), {"runs": pd.DataFrame({"lora_params": [51_000, 52_526]})})()
    assert tables.COLUMNS["LoRA params"](row) == "51,763 (mean)"
    row.runs = pd.DataFrame({"lora_params": [73_728, 73_728]})
    assert tables.COLUMNS["LoRA params"](row) == "73,728"


def test_a_listing_that_fits_a_page_is_a_float_and_a_row_of_several_lines_stands_apart(tmp_path: Path):
    """Review 3, N15 and N18: a short listing (Table 14) split across two pages, leaving one two-thirds empty, and a
    longtable took its number before floats printed ahead of it; rows of several lines read as one."""
    from balora.report.document import Table, listing_latex, table_latex

    rows = [[f"setting {k}", "r=8", f"method {i}", "2", "lr=0.001"] for k in range(3) for i in range(5)]
    short = listing_latex(Table("t", "Selection", ["Setting", "Budget", "Method", "n", "Selected"], rows))
    assert r"\begin{table}" in short and "longtable" not in short
    long = listing_latex(Table("t", "Selection", ["Setting", "Budget", "Method", "n", "Selected"], rows * 4))
    assert long.startswith(r"\FloatBarrier") and "longtable" in long
    wrapped = table_latex(Table("t", "T", ["Method", "Verdict", "n"], [["a", "word " * 30, "1"], ["b", "c", "2"]]))
    assert r"\addlinespace" in wrapped
    # 16 rows whose cells wrap to several lines each are taller than a page: a longtable, not a float that runs off
    # the page (the lever study's table, its method names wrapped into a narrow column, did)
    tall = [[f"setting {k}", "r=8", f"method {i} " + "with a long name " * 4, "2", "inconclusive " * 8]
            for k in range(2) for i in range(8)]
    assert "longtable" in listing_latex(Table("t", "Levers", ["Setting", "Budget", "Method", "n", "Verdict"], tall))


def test_the_papers_training_dynamics_say_only_the_exceptions(tmp_path: Path):
    """Review item 12: the appendix's bullets restated the tables (every run above the majority rate, per setting;
    the arms still rising and retried). The paper says the settings with runs that did not learn, and the arms still
    rising that were not trained longer, and no more."""
    from balora.report import selection

    arms = [{"arm": "LoRA", "budget": 8.0, "setting": "s", "rising": True, "longer_not_better": True,
             "last": 0.6, "best_before": 0.58},
            {"arm": "BA-LoRA", "budget": 8.0, "setting": "s", "rising": False, "longer_not_better": False,
             "last": 0.6, "best_before": 0.6}]
    (said,) = selection.convergence_claims(arms, detail=False)
    assert "LoRA at r=8" not in said and "every arm still rising" in said.lower()
    unchecked = [{**arms[0], "longer_not_better": False}, arms[1]]
    assert "LoRA at r=8, s" in " ".join(selection.convergence_claims(unchecked, detail=False))
    # one setting has a run at the majority rate (LoRA, 16 shots, seed 43), the other none
    from balora.report import write_runs_report
    from balora.runfiles import write_run

    for run in synthetic_results():
        write_run(tmp_path / "paper", run)
    write_runs_report(tmp_path / "paper", tmp_path / "report", paper_dir=tmp_path / "tex", figures_too=False)
    dynamics = (tmp_path / "tex" / "generated" / "dynamics.tex").read_text()
    assert "(16 examples per class): 2 of 80 runs ended at or below" in dynamics and "every run ended above" not in dynamics


def test_the_papers_sentence_on_arms_still_rising_names_its_source():
    """Review 3, N8: C.6 said "Every arm still rising … was also trained longer" (the lever study's) and then "Of the 9
    arms still rising, 3 were not trained longer" (the main results'), a contradiction until each names its source."""
    from balora.report import paper

    said = "Every arm still rising at the last evaluation was also trained longer."
    assert paper._in_source(said, "levers") == "In the lever study, every arm still rising at the last evaluation " \
                                                 "was also trained longer."
    assert paper._in_source("Of the 9 arms still rising.", "").startswith("In the main results, of the 9 arms")


def test_the_config_table_of_a_study_gives_its_settings_test_sets_majority_rates_and_image_input():
    """Review item 17: the lever study's γ, α ratio and gradient samples, the digits test set's size, the debates'
    majority rate and how 8×8 digits meet the ViT's 7×7 patches were nowhere in the paper: its configuration table
    has them, per setting where they differ."""
    from balora.report import paper_setup
    from balora.report.runs import load_runs
    from balora.runfiles import read_runs

    frame = load_runs(read_runs(ROOT / "results" / "levers"))
    table = paper_setup.config_table(frame)
    cells = {row[0]: row[1] for row in table.rows}
    text = " ".join(cells.values())
    assert "γ" in " ".join(cells) and "0.005" in text
    assert "359" in text and "37.44%" in text  # the digits' test set; the debates' majority rate
    # the importance pass reads the training examples only: all 192 of the debates' where 1000 were asked for (a
    # reviewer read "1000" as data LoRA never sees)
    assert "all 192 training examples, of 1000 asked for" in cells["Gradient samples (importance)"]
    assert "28×28" in text and "7×7" in text
    # one method's options its runs set off their defaults: a row of their own, not a line of a results caption
    assert cells["Optimizer steps between reallocations of BA-LoRA dynamic"].startswith("20 (minilm")


def test_the_instruction_tuning_study_has_its_configuration_table():
    """Review item 17: the instruction-tuning runs' values (learning rates, α ratio, γ, gradient samples, epochs)
    are in a table generated from their configs."""
    from balora.report import paper_setup
    from balora.report.lm import selected_runs
    from balora.report.runs import load_runs

    results = [make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]
    for result in results:
        result["config"]["epochs"] = 2
    table = paper_setup.config_table(selected_runs(load_runs(results)))
    cells = {row[0]: row[1] for row in table.rows}
    assert cells["Epochs"] == "2" and "Learning rates" in cells and not any("majority" in c.lower() for c in cells)


def test_a_long_list_of_arms_is_said_by_verdict_each_verdict_once():
    """The lever study's ViT has 12 arms against LoRA on the anytime metric: one verdict (and MDE) per arm ran to
    eight lines of the body, which then overran its 10 pages. Past 4 arms the sentence names the arms under each
    verdict once, the inconclusive ones with their MDEs' range; a short list keeps one verdict per arm."""
    from types import SimpleNamespace

    from balora.report import paper, stats

    def row(label: str, verdict: str, mde: float, lead: str = "r=4") -> SimpleNamespace:
        return SimpleNamespace(label=label, lead=lead,
                               comparison=SimpleNamespace(verdict=verdict, mde=mde, metric=stats.ACCURACY))

    rows = [row("A", stats.BETTER, 0.02), row("B", stats.INCONCLUSIVE, 0.03), row("C", stats.BETTER, 0.02),
            row("D", stats.INCONCLUSIVE, 0.05), row("E", stats.WORSE, 0.02)]
    assert paper._verdict_words(rows, "LoRA", "arms", "The ViT") == [
        "The ViT, against LoRA: better: A, C; worse: E; inconclusive (MDEs 3.00 to 5.00 pp): B, D."]
    assert paper._verdict_words(rows[:2], "LoRA", "arms", "The ViT") == [
        "The ViT, against LoRA: A, better; B, inconclusive (MDE 3.00 pp)."]
    # one verdict for every arm: said once, for all (2026-12-08: the ViT's eleven arms were listed by name)
    alike = [row(label, stats.INCONCLUSIVE, 0.03 + i / 100) for i, label in enumerate("ABCDE")]
    assert paper._verdict_words(alike, "LoRA", "arms", "The ViT") == [
        "The ViT, against LoRA: inconclusive for all 5 arms (MDEs 3.00 to 7.00 pp)."]
    # rows at two budgets: each arm named at its budget (an arm at two budgets read as listed twice)
    budgets = [row("A", stats.WORSE, 0.02, "r=1"), row("B", stats.INCONCLUSIVE, 0.03, "r=1"),
               row("B", stats.INCONCLUSIVE, 0.04, "r=2")]
    assert paper._verdict_words(budgets, "LoRA", "arms", "Text") == [
        "Text, against LoRA: A at r=1, worse; B at r=1, inconclusive (MDE 3.00 pp); B at r=2, inconclusive (MDE 4.00 pp)."]


def test_a_study_table_whose_runs_are_all_its_own_says_its_margin_was_fixed_before_them():
    """A reviewer's read (2026-12-07): every table of the lever study read "fixed after the runs it imports", though
    only regime (a)'s imports runs. A study's table whose runs all come from its own sweep says "fixed before the
    runs"; one with imported runs, and the main results' tables, keep their source's wording."""
    from balora.report import paper_latex
    from balora.report.tables import MARGIN_SOURCE

    def notes(sweeps: str) -> list[str]:
        return ["Equivalence margin: ±1 pp.", f"{MARGIN_SOURCE}the levers spec's (this table's runs are from {sweeps})."]

    assert paper_latex._own_runs_only(notes("sweep levers"), "levers")
    assert not paper_latex._own_runs_only(notes("sweeps levers, paper"), "levers")
    assert not paper_latex._own_runs_only(notes("sweep paper"), "")  # the main results' margin: after most runs


def test_a_selected_field_is_named_in_words_not_as_its_config_field():
    """A reviewer's read (2026-12-08): Table 4's caption and the selection table said "loraplus ratio" and
    "loraplus_ratio=16"; the tables say "LoRA+ ratio", and the learning rate keeps its abbreviation "lr"."""
    from balora.report import selection

    assert selection._candidate(["learning_rate", "loraplus_ratio"], (0.003, 16.0)) == "lr=0.003, LoRA+ ratio=16"
    assert selection.field_name("warmup_ratio") == "warmup ratio"

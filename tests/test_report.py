"""The report built from synthetic result dicts (no training): its files, a check that every number in
the Markdown tables equals the value computed directly from the results, the store path, and the paper
build where pdflatex is installed. The statistics themselves are tested in test_stats.py."""

from __future__ import annotations

import copy
import math
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from test_stats import mde_by_hand, tost_by_hand

from balora.report import build_report
from balora.report.runs import budget_label, load_runs, method_name, setting_label, setting_words, words_of

LAYERS, KINDS, HIDDEN = 6, ("query", "value"), 384
SEEDS = (42, 43, 44, 45, 46)
METHODS = ("lora", "ba_lora", "adalora", "eva", "linear_decay", "ba_lora_no_warmstart", "ba_lora_uniform",
           "ba_lora_no_budget")
EFFECT = {"lora": 0.0, "ba_lora": 0.04, "adalora": -0.02, "eva": 0.01, "linear_decay": 0.0,
          "ba_lora_no_warmstart": 0.02, "ba_lora_uniform": 0.03, "ba_lora_no_budget": 0.035, "ba_lora_shuffled": 0.04,
          "dora": 0.0, "pissa": 0.0}
MAJORITY = 0.578


def _ranks(method: str, budget: int, rng: random.Random) -> tuple[list[float], list[int], list[int]]:
    """Importance, allocated rank and final rank per module (layer-major, query then value)."""
    modules = [(layer, kind) for layer in range(LAYERS) for kind in KINDS]
    importance = [(1 + layer) * (1.5 if kind == "value" else 1.0) * rng.uniform(0.8, 1.2) * 1e-4
                  for layer, kind in modules]
    if method in ("ba_lora", "ba_lora_no_warmstart", "ba_lora_no_budget"):
        total = budget * len(modules) + (6 if method == "ba_lora_no_budget" else 0)
        ranks = [max(2, round(total * s / sum(importance))) for s in importance]
        ranks[-1] += total - sum(ranks)
        return importance, ranks, ranks
    if method == "linear_decay":
        ranks = [budget + 2 - layer // 2 if layer < 3 else budget - 2 + (5 - layer) // 2 for layer, _ in modules]
        ranks[0] += budget * len(modules) - sum(ranks)
        return [0.0] * len(modules), ranks, ranks
    if method == "adalora":
        initial = round(1.5 * budget)
        final = [max(0, budget + rng.choice((-2, -1, 0, 1, 2))) for _ in modules]
        return [0.0] * len(modules), [initial] * len(modules), final
    if method == "eva":
        final = [budget + (1 if kind == "value" else -1) for _, kind in modules]
        return [0.0] * len(modules), [budget] * len(modules), final
    return [0.0] * len(modules), [budget] * len(modules), [budget] * len(modules)


def make_result(method: str, budget: int, shots: int, seed: int) -> dict:
    rng = random.Random(f"{method}-{budget}-{shots}-{seed}")  # str seeds are stable across processes
    importance, ranks, finals = _ranks(method, budget, rng)
    names = [f"bert.encoder.layer.{layer}.attention.self.{kind}" for layer in range(LAYERS) for kind in KINDS]
    allocation = [{"name": n, "shape": [HIDDEN, HIDDEN], "importance": i, "rank": r, "params": r * 2 * HIDDEN,
                   "final_rank": f} for n, i, r, f in zip(names, importance, ranks, finals)]
    seed_noise = {42: 0.01, 43: -0.012, 44: 0.004, 45: -0.003, 46: 0.007}[seed]
    stuck = method == "lora" and shots == 16 and seed == 43  # one unconverged run, at the majority rate
    accuracy = MAJORITY if stuck else (0.70 + 0.02 * (shots == 64) + 0.005 * (budget == 8) + EFFECT[method]
                                       * (1.5 if shots == 16 else 1.0) + seed_noise + rng.uniform(-0.004, 0.004))
    steps = 40 if shots == 16 else 160
    train_loss = [[s, 0.35 + 0.35 * math.exp(-s / (steps / 4)) + rng.uniform(-0.05, 0.05)] for s in
                  range(1, steps + 1)]
    validation = [[round(steps * i / 8), {"accuracy": MAJORITY + (accuracy - MAJORITY) * i / 8, "loss": 0.7}]
                  for i in range(9)]
    timings = {"load": 2.0, "train": 0.2 * steps * rng.uniform(0.9, 1.1), "eval": 3.0}
    if method.startswith("ba_lora"):
        timings |= {"importance": 1.5, "allocation": 0.01, "init": 0.05}
    timings["total"] = sum(timings.values())
    lora = sum(r * 2 * HIDDEN for r in ranks) + (len(ranks) * ranks[0] if method == "adalora" else 0)
    return {
        "sweep": "synthetic", "key": f"{method}-{budget}-{shots}-{seed}",
        "config": {"method": method, "model": "minilm", "dataset": "rotten_tomatoes", "shots": shots,
                   "train_size": None, "budget": None, "budget_rank": float(budget), "rank": None, "seed": seed,
                   "epochs": None, "learning_rate": 5e-4, "strategy": "seed000", "warmstart": True},
        "metrics": {"accuracy": accuracy, "f1": accuracy - 0.02, "precision": accuracy, "recall": accuracy,
                    "loss": 0.9 - accuracy, "majority_rate": MAJORITY},
        "params": {"lora": lora, "lora_final": sum(f * 2 * HIDDEN for f in finals), "head": 770,
                   "total_trainable": lora + 770},
        "budget": {"lora_budget": budget * 12 * 2 * HIDDEN, "rank_equivalent": float(budget), "count_head": False},
        "data": {"dataset": "rotten_tomatoes", "train_examples": 2 * shots, "validation": 500, "test": 2000},
        "allocation": allocation, "curves": {"train_loss": train_loss, "validation": validation},
        "convergence_step": steps // 2, "steps": steps, "timings": timings,
        "memory": {"peak_rss_mib": {"load": 900.0, "train": 1100.0 + budget}, "peak_cuda_mib": {}},
        "environment": {"device": "cpu"},
    }


def synthetic_results() -> list[dict]:
    """8 methods × 2 budgets × 2 shot counts × 5 seeds; EVA has only 2 seeds at 64 shots, r=4 (n<3)."""
    return [make_result(m, b, k, s) for m in METHODS for b in (4, 8) for k in (16, 64) for s in SEEDS
            if not (m == "eva" and k == 64 and b == 4 and s > 43)]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(synthetic_results(), out / "report", paper_dir=out / "paper")
    return out


def test_report_files(report_dir: Path):
    out = report_dir / "report"
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?:""", page)
    figures = sorted(out.glob("figures/*.png"))
    assert len(figures) >= 8
    for png in figures:
        assert png.with_suffix(".pdf").stat().st_size > 0
        assert f"figures/{png.name}" in markdown
    for kind in ("budget", "fewshot", "fewshot_trend", "ablation", "strategy", "cost", "coverage"):
        assert list(out.glob(f"tables/{kind}*.tex")), kind
    assert "n<3 (n=2)" in markdown  # EVA's 2-seed cell is marked, not tested
    assert "Dynamic reallocation" not in markdown  # no dynamic runs, no section
    assert "significantly better" in markdown


def _markdown_tables(markdown: str) -> list[tuple[str, list[dict[str, str]]]]:
    """(title, rows as {column: cell}) for every table under a **title** line."""
    found, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i >= 2 and lines[i - 2].startswith("**"):
            header = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, [c.strip() for c in row.strip().strip("|").split(" | ")])))
            found.append((lines[i - 2].strip("*"), rows))
    return found


def _close(cell: str, value: float, decimals: int) -> None:
    assert abs(float(cell.replace(",", "")) - value) <= 0.5 * 10 ** -decimals + 1e-9, (cell, value)


def _check_p(cell: str, p: float | None) -> None:
    if p is None:
        assert cell == "–" or cell.startswith("n<3"), cell
    elif cell == "<0.001":
        assert p < 0.001
    else:
        _close(cell, p, 3)


def test_every_table_number_matches_the_results(report_dir: Path):
    results = synthetic_results()
    markdown = (report_dir / "report" / "report.md").read_text()
    tables = {title: rows for title, rows in _markdown_tables(markdown)}
    checked = 0
    for shots in (16, 64):
        setting = setting_label("minilm", "rotten_tomatoes", shots, None)
        budget_rows = tables[f"Budget efficiency — {setting}"]
        comparisons, expected = [], {}
        for budget in (4, 8):
            cell = [r for r in results if r["config"]["shots"] == shots and r["config"]["budget_rank"] == budget]
            lora = {r["config"]["seed"]: r["metrics"]["accuracy"] for r in cell if r["config"]["method"] == "lora"}
            for method in ("lora", "ba_lora", "adalora", "eva"):
                runs = [r for r in cell if r["config"]["method"] == method]
                acc = {r["config"]["seed"]: r["metrics"]["accuracy"] for r in runs}
                label = budget_label(budget)
                row = next(r for r in budget_rows if r["Budget"] == label and r["Method"] == method_name(method))
                assert row["n"] == str(len(runs))
                mean, sd = row["Acc. (%)"].split(" ± ")
                _close(mean, 100 * np.mean(list(acc.values())), 2)
                _close(sd, 100 * np.std(list(acc.values()), ddof=1), 2)
                _close(row["F1 (%)"].split(" ± ")[0], 100 * np.mean([r["metrics"]["f1"] for r in runs]), 2)
                _close(row["LoRA params"], np.mean([r["params"]["lora"] for r in runs]), 0)
                _close(row["Head params"], 770, 0)
                _close(row["Majority (%)"], 100 * MAJORITY, 2)
                stuck = sum(r["metrics"]["accuracy"] < MAJORITY + 0.001 for r in runs)
                assert row["≤ majority"] == f"{stuck}/{len(runs)}"
                if method == "lora":
                    assert row["Verdict"] == "(reference)"
                    continue
                seeds = sorted(set(acc) & set(lora))
                d = np.array([acc[s] - lora[s] for s in seeds])
                p = sps.ttest_1samp(d, 0).pvalue if len(d) >= 3 else None
                delta, *ci = row["Δ acc. (pp) [CI]"].split(" [")
                _close(delta, 100 * d.mean(), 2)
                assert bool(ci) == (p is not None)  # a CI where there is a test (and so a verdict), none elsewhere
                _check_p(row["p (t)"], p)
                _check_p(row["p (Wilcoxon)"], sps.wilcoxon(d).pvalue if len(d) >= 6 else None)
                if len(d) >= 3:
                    _close(row["d"], d.mean() / d.std(ddof=1), 2)
                comparisons.append((p, d))
                expected[(label, method)] = row
                checked += 1
        # Holm over this table's comparisons, computed by hand; each CI at the level matching its verdict
        holm = _holm_by_hand([p for p, _ in comparisons])
        # the equivalence tests at accuracy's default ±1 pp, Holm-adjusted over the same comparisons
        equivalence = _holm_by_hand([tost_by_hand(d, 0.01) if p is not None else None for p, d in comparisons])
        for i, row in enumerate(expected.values()):
            _check_p(row["p (Holm)"], holm.get(i))
            _check_p(row["p (TOST, Holm)"], equivalence.get(i))
            p, d = comparisons[i]
            if p is None:
                assert row["Verdict"] == "n<3" and row["MDE (pp)"] == "–"
                continue
            # at Bonferroni's α over the table's tested comparisons, which Holm's test detects at least as often
            mde = 100 * mde_by_hand(len(d), d.std(ddof=1), alpha=0.05 / len(holm))
            _close(row["MDE (pp)"], mde, 2)
            assert row["Verdict"] == ("better" if holm[i] < 0.05 and d.mean() > 0 else "worse" if holm[i] < 0.05 else
                                      "equivalent within ±1 pp" if equivalence[i] < 0.05 else
                                      f"inconclusive (MDE {mde:.2f} pp)")
            level = 1 - 0.05 * p / holm[i]
            half = sps.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
            low, high = row["Δ acc. (pp) [CI]"].split(" [")[1].rstrip("]").split(", ")
            _close(low, 100 * (d.mean() - half), 2)
            _close(high, 100 * (d.mean() + half), 2)
            significant = row["Verdict"] in ("better", "worse")
            assert significant == (float(low) > 0 or float(high) < 0) or min(abs(float(low)), abs(float(high))) < 0.01
    assert checked == 12


def _holm_by_hand(ps: list[float | None]) -> dict[int, float]:
    """{index: Holm-adjusted p} of the p-values that are not None: sorted, ×(m − rank), running maximum."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    holm, running = {}, 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        holm[i] = running
    return holm


def test_claims_say_so_when_ba_lora_loses(monkeypatch: pytest.MonkeyPatch):
    """Wording follows the tests: a consistent loss is reported as 'significantly worse', never as a win."""
    from balora.report import claims
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    monkeypatch.setitem(EFFECT, "ba_lora", -0.05)
    runs = [make_result(m, b, 64, s) for m in ("lora", "ba_lora") for b in (4, 8) for s in SEEDS]
    analysis = analyse(load_runs(runs))
    bottom, *_ = claims.conclusion_claims(analysis)
    assert bottom == "BA-LoRA was significantly less accurate than LoRA in every tested comparison."
    sentences = claims.budget_claims(analysis, setting_label("minilm", "rotten_tomatoes", 64, None))
    assert len(sentences) == 2 and all("BA-LoRA is significantly worse than LoRA" in s for s in sentences)
    few = analyse(load_runs(runs[:2] + runs[10:12]))  # two seeds per method and budget: no test, no claim
    assert claims.conclusion_claims(few)[0].startswith("No comparison of BA-LoRA with LoRA had 3 or more")
    # the verdict counts name only the verdicts that occurred
    assert ("Across 2 setting–budget combinations (paired t-tests and equivalence tests on matched seeds, "
            "Holm-adjusted per table, α = 0.05), the verdict on BA-LoRA against LoRA was worse in all 2."
            ) in claims.summary_claims(analysis)
    one = analyse(load_runs(runs[:5] + runs[10:15]))  # one budget: no count to give
    assert claims.summary_claims(one)[0].startswith("In the one setting–budget combination (paired t-tests and "
                                                    "equivalence tests on matched seeds, Holm-adjusted per table, "
                                                    "α = 0.05), the verdict on BA-LoRA against LoRA was worse.")
    # the conclusion gives the bottom line once: the abstract's verdict count would repeat it
    assert not any(s.startswith("Across") for s in claims.conclusion_claims(analysis))
    assert ("The one setting–budget combination could not be tested: it had fewer than 3 matched seeds, no "
            "LoRA runs, or the same difference on every seed.") in claims.summary_claims(few)


def test_the_abstract_is_one_paragraph_of_a_studys_findings_and_the_main_results_verdict_count(tmp_path: Path):
    """The third review (N9): the abstract ran to 450 words in 6 items, with the main results' example cases beside
    their verdict count. Each source writes one paragraph: the main results, the verdicts over every comparison with
    tuned LoRA, naming whose they are ("every setting" read as every source's, review 2, item 6); a study, BA-LoRA
    against tuned LoRA per setting with Δ and its CI where it found a difference, and then the ranks alone at each
    initialisation (the one-lever table's comparisons with uniform ranks, issue 39), with theirs."""
    from balora.report import write_runs_report
    from balora.runfiles import write_run

    main = [make_result(m, b, k, s) for m in ("lora", "ba_lora") for b in (4, 8) for k in (16, 64) for s in SEEDS]
    build_report(main, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    abstract = (tmp_path / "paper" / "generated" / "abstract.tex").read_text()
    assert abstract.startswith("Over all 4 comparisons of BA-LoRA with tuned LoRA (every setting and budget of the main "
                               "results in classification; all on modules of one shape), the verdict was ")
    assert r"\item" not in abstract and "For example" not in abstract and "success criteria" not in abstract
    for run in [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "ba_lora_no_warmstart", "ba_lora_uniform",
                                                   "ba_lora_shuffled") for s in SEEDS]:
        write_run(tmp_path / "levers", run)
    for run in [make_result("ba_lora_uniform", 8, 64, s) for s in SEEDS]:  # a variant of a control is that control
        run["config"]["warmstart_init"], run["key"] = "gora", run["key"] + "-gora"
        write_run(tmp_path / "levers", run)
    write_runs_report(tmp_path / "levers", tmp_path / "levers_report", paper_dir=tmp_path / "paper", figures_too=False)
    study = " ".join((tmp_path / "paper" / "generated" / "levers" / "abstract.tex").read_text().split())
    assert r"\item" not in study
    assert study.startswith("With MiniLM on Rotten Tomatoes snippets (64 examples per class) at the rank-8 budget, "
                            "against tuned LoRA: BA-LoRA, $\\Delta$ = +")
    assert ("), better. Against uniform ranks (the ranks alone): allocated at LoRA's init, "
            "$\\Delta$ = ") in study
    assert "; allocated at BA-LoRA's warm-start, $\\Delta$ = " in study
    assert "; shuffled at BA-LoRA's warm-start, $\\Delta$ = " in study
    # the other levers (the initialisation, the options) and the controls against full BA-LoRA are the body's
    assert "Against full BA-LoRA" not in study and "GoRA" not in study


def close_pairs(offsets: tuple[float, ...], shots: int = 64) -> list[dict]:
    """LoRA and BA-LoRA at r=8, `shots` shots, on seeds 42…; BA-LoRA's accuracy = LoRA's + the seed's offset."""
    lora = [make_result("lora", 8, shots, s) for s in SEEDS[:len(offsets)]]
    ba = [make_result("ba_lora", 8, shots, s) for s in SEEDS[:len(offsets)]]
    for ours, theirs, offset in zip(ba, lora, offsets):
        ours["metrics"]["accuracy"] = theirs["metrics"]["accuracy"] + offset
    return lora + ba


def test_the_verdict_counts_read_a_few_shot_comparison_as_its_few_shot_table_does():
    """A budget of a few-shot series is counted with its few-shot table's verdict (Holm over the shot counts):
    64 shots alone reads equivalent (TOST p ≈ 0.031), adjusted over the 2 shot counts inconclusive (p ≈ 0.062),
    so the count says inconclusive in both, never "equivalent"."""
    from balora.report import claims
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    analysis = analyse(load_runs(close_pairs((0.011, -0.011, 0.0055, -0.0055, 0.0))
                                 + close_pairs((0.05, -0.04, 0.03, -0.06, 0.02), shots=16)))
    bottom, *_ = claims.conclusion_claims(analysis)
    assert "equivalent" not in bottom and "inconclusive in all 2" in bottom
    assert "inconclusive in all 2" in claims.summary_claims(analysis)[0]


@pytest.mark.parametrize("declared, verdict, margin", [
    (None, "inconclusive (MDE {mde:.2f} pp)", ("Equivalence margin: ±1 pp.", "The margin is the default for accuracy: "
                                               "no preset among the compared runs' sweeps declares equivalence_margin "
                                               "(this table's runs are from sweep synthetic).")),
    (0.03, "equivalent within ±3 pp", ("Equivalence margin: ±3 pp.", "The margin is declared (equivalence_margin) by the "
                                       "spec of sweep synthetic (this table's runs are from sweep synthetic).")),
])
def test_a_spec_declared_margin_reaches_the_verdict_and_the_table_says_which_applied(
        declared: float | None, verdict: str, margin: tuple[str, str], tmp_path: Path):
    """Differences of mean ≈ 0 whose spread rules out neither a 1 pp difference nor equivalence within ±1 pp:
    inconclusive at accuracy's default margin, equivalent at a ±3 pp margin that the runs' spec declares."""
    from balora.specs import ReportSpec, Spec, given_spec

    offsets = (0.015, -0.012, 0.008, -0.014, 0.005)
    with given_spec(Spec("synthetic", "", [], report=ReportSpec(equivalence_margin=declared))):
        markdown = build_report(close_pairs(offsets), tmp_path / "report", figures_too=False).read_text()
    (title, rows), *_ = _markdown_tables(markdown.split("## Budget efficiency")[1])
    (row,) = [r for r in rows if r["Method"] == "BA-LoRA"]
    expected = verdict.format(mde=100 * mde_by_hand(5, np.std(offsets, ddof=1)))
    assert row["Verdict"] == expected
    claim = next(line for line in markdown.splitlines() if line.startswith("- minilm") and "BA-LoRA reached" in line)
    # the sentence states the interval that matches its verdict: the equivalence test's (90%) where equivalent
    level = "90.0" if verdict.startswith("equivalent") else "95.0"
    assert f": {expected}" in claim and f"Δ = +0.04 pp ({level}% CI" in claim
    section = markdown.split("## Budget efficiency")[1].split("\n## ")[0]
    assert all(f"_{note}_" in section for note in margin)  # the margin, then the spec that declares it


def test_write_report_reads_the_store_and_says_what_is_missing(tmp_path: Path):
    """Through the SQLite store: one shot count, two methods, one budget → no few-shot or ablation table,
    and the report says so."""
    from balora.report import write_report
    from balora.store import ResultsStore

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    with ResultsStore(tmp_path / "results.db") as store:
        for run in runs:
            assert store.claim(run["key"], run["config"], "synthetic")
            store.finish(run["key"], run)
    path = write_report(tmp_path / "results.db", tmp_path / "report", paper_dir=tmp_path / "paper")
    markdown = path.read_text()
    assert "Budget efficiency — minilm · rotten_tomatoes · 64-shot" in markdown
    assert "Few-shot comparison: no few-shot" not in markdown  # there are few-shot runs, but one shot count
    assert "only one shot count (64)" in markdown and "no ablation runs" in markdown
    assert not list((tmp_path / "report" / "tables").glob("fewshot*")) and not list(
        (tmp_path / "report" / "tables").glob("ablation*"))
    generated = tmp_path / "paper" / "generated"
    assert r"\newcommand{\NumRuns}{6}" in (generated / "results.tex").read_text()
    assert r"\newcommand{\Devices}{CPU}" in (generated / "results.tex").read_text()  # a reader's name for it
    assert "only one shot count" in (generated / "fewshot.tex").read_text()


def test_the_paper_shows_ablations_and_strategies_from_the_settings_that_ran_them(tmp_path: Path):
    """As in the paper preset: the budget comparison on full data is the primary setting, while the ablations
    and the strategy comparison ran at 64 shots (the strategies on a wider placement): each section shows
    its own setting's table instead of saying the primary setting has none."""
    full = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    for run in full:
        run["config"] |= {"shots": None, "train_size": 2000}
        run["key"] += "-full"
    ablations = [make_result(m, 8, 64, s) for m in ("ba_lora", "ba_lora_no_warmstart") for s in SEEDS[:3]]
    wider = [make_result(m, 8, 64, s) for m in ("lora", "linear_decay") for s in SEEDS[:3]]
    for run in wider:
        run["config"]["target_modules"] = ["query", "value", "intermediate.dense"]
        run["key"] += "-wider"
    build_report(full + ablations + wider, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    generated = tmp_path / "paper" / "generated"
    # the setup names the primary setting in words (a reviewer's read, 2026-12-07: "minilm · rotten_tomatoes · ..."),
    # its default targets by the modules they are where another setting has others (2026-12-08: "minimum rank 2" alone
    # did not say that the lever study's regime (a) adapts query and value)
    assert r"\newcommand{\PrimarySetting}{MiniLM on Rotten Tomatoes snippets (2,000 training examples), query and value}" \
        in (generated / "results.tex").read_text()
    ablation, strategy = (generated / "ablation.tex").read_text(), (generated / "strategy.tex").read_text()
    # the body says the verdicts and points to the table, which is the appendix's (the body's pages are the studies')
    assert r"\input{generated/tables/ablation_minilm_rotten_tomatoes_64_shot" in (generated / "ablation_more.tex").read_text()
    assert r"\ref{tab:ablation_minilm_rotten_tomatoes_64_shot" in ablation and r"\input" not in ablation
    assert "w/o warm-start" in ablation and "No ablation runs" not in ablation
    assert r"\input{generated/tables/strategy_minilm_rotten_tomatoes_64_shot_targets" in strategy
    assert "strategy_minilm_rotten_tomatoes_64_shot_default" not in strategy  # ablations are no strategies
    # the strategies' verdicts in words, from their tests (a tie is said as such); the numbers stay in the table
    # led by their setting in words, and pointing to their table (a reviewer's read, 2026-12-07: an orphan sentence)
    # (its targets said as a list: "query, value and intermediate.dense", not the label's code)
    assert "MiniLM on Rotten Tomatoes snippets (64 examples per class), query, value and intermediate.dense, against " \
           r"LoRA: linear decay, equivalent within $\pm$1 pp (Table~\ref{tab:strategy_" in strategy.replace(r"\allowbreak{}", "")
    # the discussion's evidence: BA-LoRA against LoRA on modules of several shapes, and the controls, with Δ and CI
    assert "No comparison of BA-LoRA with LoRA among the strategies" in (generated / "shapes.tex").read_text()
    assert "Against full BA-LoRA: BA-LoRA w/o warm-start, " in ablation and r"\ref{tab:ablation_" in ablation
    assert not (generated / "controls.tex").exists()  # review 3, N10: the discussion repeated it word for word
    # the abstract gives the verdicts over every comparison in words, and never "seed 000"
    abstract = (generated / "abstract.tex").read_text()
    assert abstract.startswith("Over all ") and "seed 000" not in abstract
    assert "combination" not in abstract  # the counts over every comparison are the conclusion's, not the abstract's


def test_the_method_section_describes_the_proportional_allocation_the_runs_used():
    """Every BA-LoRA run used `proportional`; seed 000's min-max rule appears only as what the no-budget ablation
    uses, said to change the rule and the budget at once."""
    tex = (Path(__file__).parents[1] / "paper" / "main.tex").read_text()
    method = tex[tex.index(r"\paragraph{Budgeted allocation.}"):tex.index(r"\paragraph{Warm-start.}")]
    assert r"\AllocationStrategies" in method and "min-max" not in method and "seed000" not in method
    ablations = tex[tex.index(r"\paragraph{Baselines and controls.}"):tex.index(r"\section{Experimental")]
    words = " ".join(ablations.split())  # whatever line the source breaks them across
    assert "unbudgeted rule" in words and "min-max normalised" in words and "does not isolate" in words
    for dump in (r"\LearningRates", r"\Gammas", r"\AlphaRatios", r"\AdaLoRAInitRatios", r"\SeedList"):
        for study in ("", "Levers"):  # nor the lever study's
            macro = "\\" + study + dump[1:]
            assert macro not in tex.split(r"\begin{document}")[1], macro


def test_strategy_claims_name_the_strategies_that_lose_and_the_best_one(monkeypatch: pytest.MonkeyPatch):
    from balora.report import claims
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    monkeypatch.setitem(EFFECT, "linear_decay", -0.05)
    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "linear_decay") for s in SEEDS[:3]]
    for run in runs:
        run["config"]["target_modules"] = ["query", "value", "intermediate.dense"]
    analysis = analyse(load_runs(runs))
    (setting,) = analysis.strategy
    detail, verdicts = claims.strategy_claims(analysis, setting)
    assert detail.startswith(f"{setting}, budget r=8") and "BA-LoRA is significantly better than LoRA" in detail
    assert ("better: BA-LoRA; worse: linear decay; equivalent within ±1 pp: none; inconclusive: none. "
            "The highest mean accuracy is BA-LoRA's") in verdicts
    assert claims.strategy_claims(analysis, "no such setting") == []


@pytest.mark.parametrize("where, wraps", [("16-shot", False), ("minilm · rotten_tomatoes · k-shot · default targets", True)])
def test_latex_tables_stay_legible_long_text_wraps_instead_of_shrinking(where: str, wraps: bool):
    """9 pt type; a column of long text wraps to the text width (tabularx) where shrinking the whole table to
    fit would make its type illegible in print; short columns keep a plain tabular, never shrunk."""
    from balora.report.document import Table, table_latex

    latex = table_latex(Table("t", "Title", ["Criterion", "Where", "Mark"], [["The gap widens", where, "not met"]]))
    assert r"\footnotesize" in latex and r"\scriptsize" not in latex
    assert (r"\begin{tabularx}{\linewidth}{l>{\raggedright\arraybackslash}Xr}" in latex) is wraps
    assert r"\resizebox" not in latex and (r"\begin{tabular}{llr}" in latex) is not wraps
    # a header longer than its column's cells takes two lines instead of widening the column
    numbers = table_latex(Table("t", "Title", ["Method", "n", "Final LoRA params"], [["LoRA", "5", "73,728"]]))
    assert r"\begin{tabular}[b]{@{}r@{}}Final LoRA\\params\end{tabular}" in numbers


def test_a_paper_table_states_a_column_that_is_the_same_in_every_row_in_its_caption():
    """A column with one value in every row (the head's parameters, n, a single budget) widens the table and
    shrinks its type; the paper's version says it once in the caption instead. A one-row table keeps all."""
    from balora.report.document import Table

    table = Table("t", "Title", ["Budget", "Method", "n", "Head params", "Acc. (%)", "F1 (%)", "p", "Verdict"],
                  [["r=8", "LoRA", "3", "770", "80.0", "79.0", "–", "(reference)"],
                   ["r=8", "BA-LoRA", "3", "770", "81.0", "80.0", "0.5", "n.s."]], ["A note."],
                  column_notes={"Head params": "Head params: the classifier's."})
    short = table.constants_in_caption()
    assert short.columns == ["Method", "Acc. (%)", "F1 (%)", "p", "Verdict"]
    assert short.rows == [["LoRA", "80.0", "79.0", "–", "(reference)"], ["BA-LoRA", "81.0", "80.0", "0.5", "n.s."]]
    # the constant column's note stays: what the value said once means
    assert short.captions == ["Same in every row — Budget: r=8; n: 3; Head params: 770.", "Head params: the classifier's.",
                              "A note."]
    one = Table("t", "Title", table.columns, table.rows[:1])
    criteria = Table("t", "Criteria", ["Criterion", "Where", "Mark"], [["a", "x", "not met"], ["b", "x", "not met"]])
    assert one.constants_in_caption() == one and criteria.constants_in_caption() == criteria


def test_a_table_note_names_the_common_value_once_and_each_method_once():
    """What rows differ in reads as the common value and its exceptions, each method named once with its
    budgets, instead of every row listed under every value."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, b, 64, s) for m in ("lora", "ba_lora", "adalora") for b in (4, 8) for s in SEEDS[:3]]
    for run in runs:
        adalora = run["config"]["method"] == "adalora"
        run["config"] |= {"epochs": 6 if adalora else 3, "tuned": ["learning_rate", *(["epochs"] if adalora else [])]}
    (table,) = tables.budget_tables(analyse(load_runs(runs)))
    assert ("Rows also differ in: epochs 3, except 6 for AdaLoRA (r=4, r=8) | tuned learning_rate, except "
            "learning_rate + epochs for AdaLoRA (r=4, r=8).") in table.notes, table.notes


def test_a_vertical_bar_prints_as_a_bar_in_latex():
    """pdflatex's default font sets a plain | as an em dash."""
    from balora.report.document import latex_text

    assert latex_text("a | b") == r"a \textbar{} b"


def test_a_target_list_may_break_between_its_names_in_latex():
    """Settings such as query+value+intermediate.dense are one unbreakable word to TeX and ran past the
    margin of the paper's missing-data list; a sign before a number must still stay with it."""
    from balora.report.document import latex_text

    assert latex_text("targets query+value+intermediate.dense") == (
        r"targets query+\allowbreak{}value+\allowbreak{}intermediate.dense")
    assert latex_text("Δ +0.35 pp, a+1") == r"$\Delta$ +0.35 pp, a+1"


def test_every_panel_s_axis_label_fits_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Three budgets side by side shrink each panel; a y label taller than its panel runs into the legend or
    the panel below."""
    from balora.report import figures

    drawn, save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, *args: drawn.append(fig) or save(fig, *args))
    runs = [make_result(m, b, 64, s) for m in ("lora", "ba_lora", "adalora") for b in (4, 8, 16) for s in SEEDS[:2]]
    build_report(runs, tmp_path / "report")
    assert len(drawn) >= 5
    for fig in drawn:
        for ax in fig.axes:
            if ax.get_ylabel() and ax.get_visible():
                assert ax.yaxis.label.get_window_extent().height <= ax.get_window_extent().height, ax.get_ylabel()


def test_a_part_missing_for_one_reason_in_several_settings_is_said_once(tmp_path: Path):
    runs = [make_result(m, 8, k, s) for m in ("lora", "ba_lora") for k in (16, 64) for s in SEEDS[:3]]
    markdown = build_report(runs, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False).read_text()
    settings_ = "; ".join(setting_label("minilm", "rotten_tomatoes", k, None) for k in (16, 64))
    assert f"- Ablations: no ablation runs, in 2 settings ({settings_})." in markdown
    assert "- Ablations, minilm" not in markdown
    # the paper never lists what did not run; what ran is in the n of its tables (review 2, item 12: a table of
    # runs per arm repeated them)
    generated = tmp_path / "paper" / "generated"
    assert not (generated / "missing.tex").exists() and not (generated / "coverage.tex").exists()
    assert not any("no ablation runs" in path.read_text() for path in generated.rglob("*.tex"))


def test_missing_or_empty_database(tmp_path: Path):
    from balora.errors import BaloraError
    from balora.report import write_report
    from balora.store import ResultsStore

    with pytest.raises(BaloraError, match="no results database"):
        write_report(tmp_path / "typo.db", tmp_path / "report")
    assert not (tmp_path / "typo.db").exists()
    ResultsStore(tmp_path / "empty.db").close()
    path = write_report(tmp_path / "empty.db", tmp_path / "report", paper_dir=tmp_path / "paper")
    text = path.read_text()
    assert "No finished evaluation runs" in text
    # like every report, it names its source (the docs' Results pages read this line)
    assert re.search(r"^Source: results store .*empty\.db\.$", text, re.MULTILINE)
    assert r"\newcommand{\NumRuns}{n/a}" in (tmp_path / "paper" / "generated" / "results.tex").read_text()


def test_a_sweep_still_tuning_reports_what_its_tuning_has_selected(tmp_path: Path):
    """results/peers before its first evaluation run: no comparison, but the appendix's selection table, so the
    values chosen so far on validation are on record."""
    from test_tuning import tuning_result

    runs = [tuning_result(lr, seed, 0.7 + lr, method="pissa") for lr in (1e-3, 2e-3) for seed in (0, 1)]
    text = build_report(runs, tmp_path / "report", figures_too=False).read_text()
    assert "No finished evaluation runs" in text and "## Appendix: selection on validation" in text
    assert "| PiSSA |" in text and "lr=0.002" in text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (TeX Live builds the paper)")
def test_paper_builds(report_dir: Path, tmp_path: Path):
    from balora.report import build_paper

    paper = tmp_path / "paper"
    shutil.copytree(Path(__file__).parents[1] / "paper", paper, ignore=shutil.ignore_patterns("generated", "*.pdf"))
    shutil.copytree(report_dir / "paper" / "generated", paper / "generated")
    pdf = build_paper(paper)
    assert pdf.stat().st_size > 10_000
    log = (paper / "main.log").read_text(errors="replace")
    assert not re.search(r"(Citation|Reference) `[^']*' on page \d+ undefined", log)
    assert "There were undefined references" not in log


def test_tables_show_how_far_each_arm_is_from_uniform_ranks(report_dir: Path):
    results = synthetic_results()
    markdown = (report_dir / "report" / "report.md").read_text()
    rows = dict(_markdown_tables(markdown))[f"Budget efficiency — {setting_label('minilm', 'rotten_tomatoes', 64, None)}"]
    for method in ("lora", "ba_lora"):
        runs = [r for r in results if r["config"]["method"] == method and r["config"]["shots"] == 64
                and r["config"]["budget_rank"] == 8]
        ginis = []
        for run in runs:
            ranks = sorted(m["final_rank"] for m in run["allocation"])
            ginis.append(sum((2 * i - len(ranks) + 1) * r for i, r in enumerate(ranks)) / (len(ranks) * sum(ranks)))
        low = min(m["final_rank"] for r in runs for m in r["allocation"])
        high = max(m["final_rank"] for r in runs for m in r["allocation"])
        row = next(r for r in rows if r["Budget"] == budget_label(8) and r["Method"] == method_name(method))
        assert row["Ranks (Gini)"] == f"{low}–{high}, G={np.mean(ginis):.2f}"
    assert next(r for r in rows if r["Method"] == "LoRA")["Ranks (Gini)"].endswith("G=0.00")


# Seed 002's instruction-tuning section (causal-LM runs).

LM_LOSS = {("lora", 8, 3e-4): 2.10, ("lora", 8, 1e-3): 2.00, ("lora", 16, 1e-3): 1.98, ("ba_lora", 8, 3e-4): 1.95,
           ("ba_lora", 8, 1e-3): 2.30}


def make_lm_result(method: str, rank: int, lr: float, seed: int) -> dict:
    result = make_result(method if method != "ba_lora" else "lora", 8, 64, seed)
    loss = LM_LOSS[(method, rank, lr)] + {42: 0.01, 43: -0.01, 44: 0.02}[seed]
    layers = [f"model.layers.{layer}.self_attn.q_proj" for layer in range(3)]
    ranks = [rank] * 3 if method == "lora" else [4, 8, 12]
    result.update({
        "task": "causal_lm", "key": f"lm-{method}-{rank}-{lr}-{seed}",
        "config": {**result["config"], "method": method, "model": "smollm2", "dataset": "critic_instructions",
                   "shots": None, "train_size": 200, "budget_rank": float(rank), "learning_rate": lr},
        "metrics": {"loss": loss, "perplexity": math.exp(loss), "tokens": 1000.0},
        "curves": {"train_loss": result["curves"]["train_loss"], "validation": [[0, {"loss": 3.0}], [10, {"loss": loss}]]},
        "allocation": [{"name": n, "shape": [576, 576], "importance": 0.0, "rank": r, "params": r * 1152,
                        "final_rank": r} for n, r in zip(layers, ranks)],
        "params": {"lora": rank * 3 * 1152, "lora_final": rank * 3 * 1152, "head": 0, "total_trainable": rank * 3456},
        "budget": {"lora_budget": rank * 3456, "rank_equivalent": float(rank), "count_head": False},
        "generations": [{"instruction": "Write a positive critic's blurb about the film Heat.", "input": "",
                         "reference": "A classic.", "generated": f"Great film ({method})."}],
    })
    return result


def test_instruction_tuning_figures_colour_each_strategy_by_its_method():
    """LoRA r=8 and BA-LoRA keep the colours and lines they have in every other figure; another strategy of
    a method (LoRA r=16) keeps the method's colour with its own dash pattern."""
    from balora.report.figures import arm_style
    from balora.report.lm import selected_runs
    from balora.report.runs import load_runs

    runs = selected_runs(load_runs([make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]))
    style = {row.strategy: arm_style(row.arm) for row in runs.itertuples()}
    assert style["LoRA r=8"] == arm_style("lora") and style["BA-LoRA"] == arm_style("ba_lora")
    assert style["LoRA r=16"]["color"] == arm_style("lora")["color"]
    assert style["LoRA r=16"]["linestyle"] != arm_style("lora")["linestyle"]


def test_instruction_tuning_bars_are_as_thick_in_every_budget_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Seed 002's bar chart gives each budget's row the height its bars need: the lone LoRA r=16 bar is no
    wider a block than the r=8 bars above it, and the parameter axis is shared, so r=16's twice the parameters
    show as a twice longer bar."""
    from balora.report import figures
    from balora.report.lm import selected_runs
    from balora.report.runs import load_runs

    canvases = []
    monkeypatch.setattr(figures, "_save", lambda fig, *args: canvases.append(fig))
    runs = selected_runs(load_runs([make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]))
    figures.params_loss_bars(runs, "smollm2 · critic_instructions", tmp_path)
    (canvas,) = canvases
    canvas.draw_without_rendering()
    left_panels = canvas.axes[0::2]
    thickness = [panel.patches[0].get_window_extent().height for panel in left_panels]
    assert max(thickness) < 1.2 * min(thickness), thickness
    assert left_panels[0].get_xlim() == left_panels[1].get_xlim()


def test_instruction_tuning_section_selects_learning_rates_on_validation_and_compares_with_lora(tmp_path: Path):
    lm = [make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]
    build_report(lm + synthetic_results()[:40], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Instruction tuning (seed 002)"):]
    strategy_table = section[:section.index("**Instruction tuning: cost")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in strategy_table.splitlines() if line.startswith("| LoRA") or line.startswith("| BA-LoRA")}
    assert rows["LoRA r=8"][0] == "0.001" and rows["BA-LoRA"][0] == "0.0003"  # chosen on validation loss
    assert rows["BA-LoRA"][2].startswith("1.9567") and rows["BA-LoRA"][3] == f"{math.exp(1.95 + 0.02 / 3):.2f}"
    assert rows["BA-LoRA"][6].startswith("-0.0500") and rows["LoRA r=16"][5] == "0.0"
    assert "Great film (ba_lora)" in section and "Great film (lora)" in section
    figures_made = {p.stem for p in (tmp_path / "report" / "figures").glob("*.png")}
    assert {"params_loss_smollm2_critic_instructions", "rank_per_layer_smollm2_critic_instructions"} <= figures_made
    assert "## Budget efficiency" in text  # the classification runs keep their sections

    build_report(lm, tmp_path / "only-lm", paper_dir=tmp_path / "paper")  # a store with causal-LM runs only
    assert "## Instruction tuning (seed 002)" in (tmp_path / "only-lm" / "report.md").read_text()
    generated = tmp_path / "paper" / "generated"
    assert "lm_strategy_smollm2_critic_instructions" in (generated / "lm.tex").read_text()
    assert "Instruction tuning: strategy comparison" in (generated / "tables" / "lm_strategy_smollm2_critic_instructions.tex").read_text()


def test_the_readme_block_is_one_table_and_the_instruction_tuning_verdict(tmp_path: Path):
    """The README's generated block is a landing page's: one table of every main method against LoRA (one row per
    method and budget or shot count, with what it trains and its verdict) and seed 002's verdict as the report
    words it; every other table, the criteria and the figures stay on the results pages."""
    from balora.report.builder import build
    from balora.report.figures import RENDER
    from balora.report.readme import headline
    from balora.report.runs import load_runs

    results = [make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]
    results += [make_result(m, 8, shots, s) for m in ("lora", "ba_lora", "dora") for shots in (16, 64)
                for s in (42, 43, 44)]
    token = RENDER.set(False)  # the block has no figures: none drawn
    try:
        report = build(load_runs(results), tmp_path, results)
        text = headline(report, results)
    finally:
        RENDER.reset(token)
    rows = [line for line in text.splitlines() if line.startswith("| Exp. 2, few-shot |")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["16 shots/class", "BA-LoRA"], ["16 shots/class", "DoRA"], ["64 shots/class", "BA-LoRA"],
        ["64 shots/class", "DoRA"]], text
    assert all(" | 3 | " in row for row in rows)
    assert [line for line in text.splitlines() if line.startswith("| ") and "Verdict" in line] == [
        "| Experiment | Setting | Method | Trained params | Pairs | LoRA acc. (%) | Acc. (%) | Δ (pp) [CI] | Verdict |"]
    assert report.lm_bottom_lines and all(line in text for line in report.lm_bottom_lines)
    assert "Instruction tuning: strategy comparison" not in text and "success criteria" not in text
    assert "Great film" not in text and "![" not in text


def test_the_readme_block_shows_a_setting_of_one_shot_count(tmp_path: Path):
    """A setting run at a single shot count (the lever study's: no few-shot family over shot counts) is in the
    README's table as its budget row, not left out."""
    from balora.report.builder import build
    from balora.report.figures import RENDER
    from balora.report.readme import headline
    from balora.report.runs import load_runs

    results = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in (42, 43, 44)]
    token = RENDER.set(False)
    try:
        text = headline(build(load_runs(results), tmp_path, results), results)
    finally:
        RENDER.reset(token)
    rows = [line for line in text.splitlines() if "| BA-LoRA |" in line]  # one experiment: no Experiment column
    assert len(rows) == 1 and "| BA-LoRA |" in rows[0] and "r=8" in rows[0], text


# BA-LoRA's per-seed test loss minus LoRA r=8's (seeds 42, 43, 44): lower, higher, a tie within ±0.01 nats, and
# differences too spread to tell ({mde}: the MDE by hand, in nats).
LM_OUTCOMES = {"lower": ((-0.05, -0.06, -0.04), "better — BA-LoRA's test loss is significantly lower than LoRA r=8's"),
               "higher": ((0.05, 0.06, 0.04), "worse — BA-LoRA's test loss is significantly higher than LoRA r=8's: "
                                              "BA-LoRA does worse here"),
               "tie": ((0.001, -0.001, 0.0005), "equivalent within ±0.01 nats — the equivalence test rules out a "
                                                "difference of 0.01 nats or more between BA-LoRA and LoRA r=8"),
               "unsure": ((0.05, -0.06, 0.01), "inconclusive (MDE {mde}) — with 3 matched seeds neither a difference "
                                               "nor equivalence within ±0.01 nats is shown; only a difference of about "
                                               "{mde} or more would be detected with 80% power")}


def lm_pair(offsets: tuple[float, ...]) -> list[dict]:
    """LoRA r=8 and BA-LoRA runs on seeds 42-44, BA-LoRA's loss = LoRA's + the seed's offset."""
    lora = [make_lm_result("lora", 8, 1e-3, s) for s in (42, 43, 44)]
    ba = [make_lm_result("ba_lora", 8, 3e-4, s) for s in (42, 43, 44)]
    for ours, theirs, offset in zip(ba, lora, offsets):
        ours["metrics"]["loss"] = theirs["metrics"]["loss"] + offset
    return lora + ba


@pytest.mark.parametrize("outcome", sorted(LM_OUTCOMES))
def test_instruction_tuning_claims_follow_the_paired_test_in_report_and_paper(outcome: str, tmp_path: Path):
    from balora.report.document import latex_text
    from balora.tasks import number

    offsets, verdict = LM_OUTCOMES[outcome]
    verdict = verdict.format(mde=f"{mde_by_hand(3, np.std(offsets, ddof=1)):.4f} nats")
    runs = lm_pair(offsets)
    build_report(runs, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    markdown = (tmp_path / "report" / "report.md").read_text()
    lora = [r["metrics"]["loss"] for r in runs[:3]]
    ba = [r["metrics"]["loss"] for r in runs[3:]]
    p = sps.ttest_rel(ba, lora).pvalue
    claim = next(line[2:] for line in markdown.splitlines() if line.startswith("- smollm2 · critic_instructions: BA-LoRA"))
    assert claim.endswith(f": {verdict}.")
    delta = number(np.mean(np.subtract(ba, lora)), 4, sign=True)  # "0.0000" where the offsets cancel out
    assert f"Δ loss = {delta}" in claim
    assert f"paired t-test p = {p:.3f}, Holm-adjusted p = {p:.3f}" in claim  # one test in the table
    assert f"a test loss of {np.mean(ba):.4f} ± {np.std(ba, ddof=1):.4f} (perplexity {math.exp(np.mean(ba)):.2f}, n = 3" in claim
    listed = {"lower": "better (significantly lower loss): BA-LoRA;", "higher": "worse (significantly higher loss): BA-LoRA;",
              "tie": "equivalent within ±0.01 nats: BA-LoRA;", "unsure": "inconclusive: BA-LoRA (MDE "}[outcome]
    assert listed in markdown
    # the results section states the finding, BA-LoRA's verdict word, and points to the appendix's table with the
    # numbers; the appendix has the table only (the third review, N10: each said the finding again)
    label = {"lower": "better", "higher": "worse", "tie": "equivalent within ±0.01 nats",
             "unsure": verdict.split(" — ")[0]}[outcome]
    body = (tmp_path / "paper" / "generated" / "instruction.tex").read_text()
    assert latex_text(f"against LoRA r=8 in test loss: BA-LoRA is {label} (") in body
    assert r"(Table~\ref{tab:lm_strategy_smollm2_critic_instructions}" in body and "Holm-adjusted" not in body
    appendix = (tmp_path / "paper" / "generated" / "lm.tex").read_text()
    assert appendix.startswith(r"\input{generated/tables/lm_config.tex}") and "in test loss" not in appendix
    assert r"\input{generated/tables/lm_strategy_smollm2_critic_instructions.tex}" in appendix
    # the study's bottom line, with Δ and its CI, reaches the report's summary; the paper's abstract and conclusion
    # say it in plain words (its model and data, Δ, the CI and the verdict), with or without classification runs
    classification = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    build_report(runs + classification, tmp_path / "both", paper_dir=tmp_path / "paper2", figures_too=False)
    summary = (tmp_path / "both" / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    bottom = next(line[2:] for line in summary.splitlines() if line.startswith("- In instruction tuning"))
    assert bottom.startswith("In instruction tuning (smollm2 · critic_instructions, at the budget of LoRA r=8 on "
                             f"every projection), BA-LoRA against LoRA r=8 (Δ test loss {delta}, ")
    assert "% CI " in bottom and bottom.endswith(f": {verdict}.")
    plain = latex_text("In instruction tuning of SmolLM2-135M-Instruct on instructions built from Rotten Tomatoes "
                       f"snippets, with every projection adapted, BA-LoRA's test loss differs from LoRA r=8's at its "
                       f"budget by {delta} nats (")
    abstract = (tmp_path / "paper" / "generated" / "abstract.tex").read_text()
    assert plain in abstract and latex_text(f"): {label}.") in abstract and "Holm-adjusted" not in abstract
    assert plain not in body  # the abstract has the interval; the results section, the finding (N10: said twice)
    assert "BA-LoRA was significantly more accurate than LoRA" in summary
    assert plain in (tmp_path / "paper2" / "generated" / "abstract.tex").read_text()
    assert not (tmp_path / "paper2" / "generated" / "conclusion.tex").exists()  # review 3, N10: a verbatim repeat


def timed_lm_pair() -> list[dict]:
    """`lm_pair`'s runs with timings: training 100 s + the seed, and BA-LoRA's 7 s importance pass."""
    runs = lm_pair((0.01, -0.01, 0.0))
    for run in runs:
        seed, ours = run["config"]["seed"], run["config"]["method"] == "ba_lora"
        run["timings"] = {"load": 1.0, "train": 100.0 + seed, "eval": 10.0, **({"importance": 7.0} if ours else {})}
        run["timings"]["total"] = sum(run["timings"].values())
    return runs


def lm_cost_cells(runs: list[dict], tmp_path: Path) -> dict[str, dict[str, str]]:
    """The report's instruction-tuning cost table as {strategy: {column: cell}}."""
    build_report(runs, tmp_path / "report", figures_too=False)
    text = (tmp_path / "report" / "report.md").read_text()
    table = text[text.index("**Instruction tuning: cost"):]
    header, rows = table.splitlines()[2], [line for line in table.splitlines() if line.startswith(("| BA-LoRA", "| LoRA"))]
    columns = [c.strip() for c in header.split("|")[1:-1]]
    return {row.split("|")[1].strip(): dict(zip(columns, (c.strip() for c in row.split("|")[1:-1]))) for row in rows}


def test_instruction_tuning_cost_table_times_each_strategy_against_lora_on_the_same_seed(tmp_path: Path):
    """The study's own measure of what BA-LoRA costs: seconds per phase, and total time over LoRA r=8's run
    with the same seed (mean ± std over seeds)."""
    import statistics

    cells = lm_cost_cells(timed_lm_pair(), tmp_path)
    ratios = [(118 + s) / (111 + s) for s in (42, 43, 44)]
    assert cells["BA-LoRA"]["importance (s)"] == "7.0" and cells["LoRA r=8"]["importance (s)"] == "–"
    assert cells["BA-LoRA"]["Total (s)"] == "161.0"
    assert cells["BA-LoRA"]["Total / LoRA r=8 (×)"] == (f"{statistics.mean(ratios):.2f} ± "
                                                        f"{statistics.stdev(ratios):.2f} (n=3)")
    assert cells["LoRA r=8"]["Total / LoRA r=8 (×)"] == "1.00 ± 0.00 (n=3)"


def test_instruction_tuning_cost_table_compares_times_only_on_the_same_machine(tmp_path: Path):
    """The study's runs come from several sessions' machines, one ~1.5x slower than another (2026-12-03): a
    run is timed against LoRA r=8's only where both ran on the same machine, else its ratio would be the
    machines' speeds, not the method's cost."""
    runs = timed_lm_pair()
    for run in runs:
        run["environment"] = {"device": "cpu", "platform": "Linux-a", "cpu": "AMD EPYC"}
    runs[5]["environment"]["platform"] = "Linux-b"  # BA-LoRA's seed 44 on another machine
    cells = lm_cost_cells(runs, tmp_path / "one")
    ratios = [(118 + s) / (111 + s) for s in (42, 43)]
    assert cells["BA-LoRA"]["Total / LoRA r=8 (×)"] == f"{np.mean(ratios):.2f} ± {np.std(ratios, ddof=1):.2f} (n=2)"
    for run in runs[3:]:
        run["environment"]["cpu"] = "Intel Xeon"  # the same platform string on another processor
    assert lm_cost_cells(runs, tmp_path / "none")["BA-LoRA"]["Total / LoRA r=8 (×)"] == "–"


def test_cost_table_times_an_arm_against_lora_only_on_the_same_machine():
    from balora.report.runs import load_runs
    from balora.report.tables import time_ratios

    results = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    assert len(time_ratios(load_runs(results), "ba_lora")) == 3
    results[3]["environment"] = {"device": "NVIDIA H200"}  # BA-LoRA's seed 42 on a GPU, LoRA's on the CPU
    assert len(time_ratios(load_runs(results), "ba_lora")) == 2


def test_instruction_tuning_tables_list_strategies_from_the_lowest_mean_test_loss(tmp_path: Path):
    """Rows in a reader's order, not the run files' hash order: by mean test loss, the cost table alike."""
    runs = timed_lm_pair()
    for ours, theirs in zip(runs[3:], runs[:3]):
        ours["metrics"]["loss"] = theirs["metrics"]["loss"] + 0.03  # BA-LoRA last, LoRA r=16 first
    cells = lm_cost_cells(runs + [make_lm_result("lora", 16, 1e-3, s) for s in (42, 43, 44)], tmp_path)
    text = (tmp_path / "report" / "report.md").read_text()
    strategy = text[text.index("**Instruction tuning: strategy"):text.index("**Instruction tuning: cost")]
    order = [line.split("|")[1].strip() for line in strategy.splitlines() if line.startswith(("| BA-LoRA", "| LoRA"))]
    assert order == ["LoRA r=16", "LoRA r=8", "BA-LoRA"] == list(cells)


def test_instruction_tuning_table_says_how_adalora_s_parameter_count_differs(tmp_path: Path):
    """AdaLoRA trains above the budget (its initial ranks) and prunes down to it: the table gives both counts."""
    adalora = [make_lm_result("lora", 8, 1e-3, s) for s in (42, 43, 44)]
    for run in adalora:
        run["key"] = run["key"].replace("lora", "adalora")
        run["config"]["method"] = "adalora"
        run["params"] |= {"lora": 41472, "lora_final": 27000, "total_trainable": 41472}
    build_report(lm_pair((0.0, 0.01, -0.01)) + adalora, tmp_path / "report", figures_too=False)
    text = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| AdaLoRA | 0.001 |"))
    assert "| 41,472 (final 27,000) |" in row
    assert "| 27,648 |" in next(line for line in text.splitlines() if line.startswith("| LoRA r=8 | 0.001 |"))
    assert "where the final count differs (AdaLoRA prunes its ranks during training), it follows in brackets" in text


def test_instruction_tuning_claims_need_three_seeds_and_a_reference(tmp_path: Path):
    runs = lm_pair((-0.05, -0.06, -0.04))
    build_report(runs[:2] + runs[3:5], tmp_path / "two", figures_too=False)
    assert "with 2 matched seeds there are too few for a test, so no claim is made." in \
        (tmp_path / "two" / "report.md").read_text()
    build_report(runs[3:], tmp_path / "alone", figures_too=False)
    assert "there are no LoRA r=8 runs, so no strategy is compared with LoRA." in \
        (tmp_path / "alone" / "report.md").read_text()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (TeX Live builds the paper)")
def test_paper_builds_with_the_instruction_tuning_study(tmp_path: Path):
    from balora.report import build_paper

    paper = tmp_path / "paper"
    shutil.copytree(Path(__file__).parents[1] / "paper", paper, ignore=shutil.ignore_patterns("generated", "*.pdf"))
    runs = lm_pair(LM_OUTCOMES["higher"][0]) + [make_lm_result("lora", 16, 1e-3, s) for s in (42, 43, 44)]
    build_report(runs + synthetic_results()[:40], tmp_path / "report", paper_dir=paper)
    pdf = build_paper(paper)
    assert pdf.stat().st_size > 10_000
    aux = (paper / "main.aux").read_text(errors="replace")
    for label in ("tab:lm_strategy_smollm2_critic_instructions", "fig:params_loss_smollm2_critic_instructions",
                  "fig:rank_per_layer_smollm2_critic_instructions"):
        assert f"\\newlabel{{{label}}}" in aux, label
    assert "There were undefined references" not in (paper / "main.log").read_text(errors="replace")


def test_no_table_row_holds_two_protocols():
    """Runs that differ in anything but the seed are never one row: LoRA's budget given as a parameter count
    next to the same budget as a rank (one budget, r=8), and 16-shot LoRA trained for 5 and for 40 epochs
    (one few-shot family, which groups shot counts)."""
    from balora.config import protocol_key
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, k, s) for m in ("lora", "ba_lora") for k in (16, 64) for s in SEEDS[:3]]
    by_count = [make_result("lora", 8, 64, s) for s in SEEDS[:3]]
    longer = [make_result("lora", 8, 16, s) for s in SEEDS[:3]]
    for run in by_count:
        run["config"] |= {"budget_rank": None, "budget": 8 * 12 * 2 * HIDDEN}
    for run in longer:
        run["config"]["epochs"] = 40
    analysis = analyse(load_runs(runs + by_count + longer))
    rows = [row for tables in (analysis.main, analysis.fewshot, analysis.strategy) for table in tables.values()
            for row in table]
    assert rows and all(len({protocol_key(r["config"]) for r in row.runs["result"]}) == 1 for row in rows)
    main = analysis.main[setting_label("minilm", "rotten_tomatoes", 64, None, "epochs=5")]
    assert sorted(len(row.runs) for row in main if row.arm.startswith("lora")) == [3, 3]
    assert {row.label for row in main} >= {"LoRA (budget=73728, budget_rank=None)", "LoRA (budget=None, budget_rank=8.0)"}
    fewshot = [row for table in analysis.fewshot.values() for row in table]
    assert sorted(len(row.runs) for row in fewshot if row.arm == "lora" and row.lead == "16") == [3]


def test_settings_that_differ_in_target_modules_read_as_placements():
    """The strategy table's wider placement is its own setting, labelled by the modules it adapts; the
    model's default placement says so instead of printing a Python None or tuple."""
    from balora.report.runs import load_runs

    runs = [make_result("lora", 8, 64, s) for s in SEEDS[:3]]
    wider = [make_result("lora", 8, 64, s) for s in SEEDS[:3]]
    for run in wider:
        run["config"]["target_modules"] = ["query", "value", "intermediate.dense"]
    labels = set(load_runs(runs + wider)["setting"])
    assert labels == {setting_label("minilm", "rotten_tomatoes", 64, None, "default targets"),
                      setting_label("minilm", "rotten_tomatoes", 64, None, "targets query+value+intermediate.dense")}


def test_a_setting_names_only_what_varies_among_the_runs_of_its_own_model_and_data():
    """Issue 39's regime (b) runs Rotten Tomatoes at 2,000 examples with every linear layer and min_rank 0 beside
    regime (a)'s query+value at min_rank 2, and selects each arm's epochs there: those labels say min_rank and the
    targets, but the debates' and the 16-shot settings, where nothing varies, keep their plain labels (they had read
    "· epochs=5, min_rank=2, default targets", renaming every table of the study)."""
    from balora.report.runs import load_runs

    regime_a = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    regime_b = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    for run in regime_a:
        run["config"] |= {"shots": None, "train_size": 2000, "min_rank": 2}
    for run in regime_b:
        run["config"] |= {"shots": None, "train_size": 2000, "min_rank": 0, "target_modules": ["query", "key"],
                          "epochs": 3 if run["config"]["method"] == "lora" else 6, "tuned": ["learning_rate", "epochs"]}
        run["key"] += "-b"
    debates = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    for run in debates:
        run["config"] |= {"dataset": "presidential_debates", "epochs": 8}
    few = [make_result(m, 8, 16, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    labels = set(load_runs(regime_a + regime_b + debates + few)["setting"])
    # in the paper's words: the default targets go unsaid where the runs do not name them, else they are the modules
    # they are; every linear layer of the encoder is said so
    assert setting_words("minilm", "rotten_tomatoes", None, 2000, "min_rank=2, default targets") == (
        "MiniLM on Rotten Tomatoes snippets (2,000 training examples), minimum rank 2")
    modules = [f"encoder.layer.{i}.attention.self.{kind}" for i in range(2) for kind in ("query", "value")]
    assert setting_words("minilm", "rotten_tomatoes", None, 2000, "min_rank=2, default targets", modules) == (
        "MiniLM on Rotten Tomatoes snippets (2,000 training examples), minimum rank 2, query and value")
    assert setting_words("minilm", "rotten_tomatoes", None, 2000,
                         "min_rank=0, targets query+key+value+output.dense+intermediate.dense").endswith(
        "examples), minimum rank 0, every linear layer")
    assert labels == {setting_label("minilm", "rotten_tomatoes", None, 2000, "min_rank=2, default targets"),
                      setting_label("minilm", "rotten_tomatoes", None, 2000, "min_rank=0, targets query+key"),
                      setting_label("minilm", "presidential_debates", 64, None),
                      setting_label("minilm", "rotten_tomatoes", 16, None, "min_rank=2, default targets")}


def test_a_method_option_at_its_task_s_default_keeps_the_plain_method_name():
    """The warm-start step defaults per task (0.005 for a classifier, 1e-4 for a causal LM): runs that use
    their own task's default are the plain arm even where the folder holds both tasks, and a step that is not
    its task's default still names its arm."""
    from balora.report.runs import load_runs

    classifier = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    for run in classifier:
        run["config"]["gamma"] = 0.005
    lm = [make_lm_result(m, 8, 1e-3, s) for m in ("lora", "ba_lora") for s in (42, 43, 44)]
    for run in lm:
        run["config"]["gamma"] = 1e-4
    stepped = [make_result("ba_lora", 8, 64, s) for s in SEEDS[:3]]
    for run in stepped:
        run["config"]["gamma"] = 0.01
    labels = set(load_runs(classifier + lm + stepped)["arm_label"])
    assert labels == {"LoRA", "BA-LoRA", "BA-LoRA (gamma=0.01)"}


def test_runs_in_bf16_are_a_setting_of_their_own():
    """The forward precision is part of the training protocol: bf16 runs are never compared in one table
    with fp32 runs, and the label says which is which; run files written before the field existed are fp32."""
    from balora.report.runs import load_runs

    runs = [make_result("lora", 8, 64, s) for s in SEEDS[:3]]
    bf16 = [make_result("lora", 8, 64, s) for s in SEEDS[:3]]
    for run in bf16:
        run["config"]["precision"] = "bf16"
    assert "precision" not in runs[0]["config"]
    labels = set(load_runs(runs + bf16)["setting"])
    assert labels == {setting_label("minilm", "rotten_tomatoes", 64, None, "precision=fp32"),
                      setting_label("minilm", "rotten_tomatoes", 64, None, "precision=bf16")}


def test_runs_on_two_builds_of_a_base_model_are_two_settings():
    """results/levers' ViT rows mixed two builds of the locally pretrained vit-fashion: LoRA's learning rate was
    selected, and 3 of its 10 seeds run, on one, its other seeds and most arms on another. Runs whose base weights
    differ (the checksums each run records) are two settings, the label naming each build, never one row; runs on
    one build keep their plain label."""
    from balora.report.runs import load_runs

    def on(build: str, method: str, seed: int) -> dict:
        run = make_result(method, 8, 64, seed)
        run["environment"]["weights_sha256"] = {"model.safetensors": build * 64}
        return run

    one = [on("a", m, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    assert set(load_runs(one)["setting"]) == {setting_label("minilm", "rotten_tomatoes", 64, None)}
    mixed = one + [on("b", m, s) for m in ("lora", "ba_lora") for s in SEEDS[3:5]]
    frame = load_runs(mixed)
    assert set(frame["setting"]) == {setting_label("minilm", "rotten_tomatoes", 64, None, "base weights aaaaaaaa"),
                                     setting_label("minilm", "rotten_tomatoes", 64, None, "base weights bbbbbbbb")}
    assert frame.groupby("setting")["seed"].nunique().to_dict() == {
        setting_label("minilm", "rotten_tomatoes", 64, None, "base weights aaaaaaaa"): 3,
        setting_label("minilm", "rotten_tomatoes", 64, None, "base weights bbbbbbbb"): 2}


def test_a_field_one_arm_selected_on_validation_does_not_split_the_setting():
    """LoRA at a fixed 16 epochs and AdaLoRA with its epochs selected on validation are one comparison:
    the table holds both, and notes how their rows differ."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "adalora") for s in SEEDS[:3]]
    for run in runs:
        run["config"] |= {"epochs": 16, "tuned": ["learning_rate"]}
        if run["config"]["method"] == "adalora":
            run["config"] |= {"epochs": 32, "tuned": ["learning_rate", "epochs"]}
    frame = load_runs(runs)
    assert frame["setting"].nunique() == 1
    (table,) = tables.budget_tables(analyse(frame))
    assert any(note.startswith("Rows also differ in: epochs") for note in table.notes), table.notes
    # a list reads as its items, not as Python's repr
    assert "tuned learning_rate for LoRA (r=8); learning_rate + epochs for AdaLoRA (r=8)." in table.notes[0], table.notes


def test_a_column_note_goes_where_its_column_goes(report_dir: Path):
    """The paper's compact tables drop columns; the caption must not explain a column that is not there."""
    from balora.report.document import Table

    table = Table("t", "Title", ["Method", "Ranks (Gini)", "Acc. (%)"], [["LoRA", "8–8, G=0.00", "80.0"]],
                  ["Rows also differ in: nothing."], column_notes={"Ranks (Gini)": "Ranks (Gini): spread.",
                                                                   "Acc. (%)": "Acc.: on test."})
    assert table.captions == ["Ranks (Gini): spread. Acc.: on test.", "Rows also differ in: nothing."]
    assert table.select(["Method", "Acc. (%)"]).captions == ["Acc.: on test.", "Rows also differ in: nothing."]
    budget = sorted((report_dir / "paper" / "generated" / "tables").glob("budget_*.tex"))
    assert budget
    for tex in budget:
        # the paper keeps training-time LoRA params only: neither the Gini nor the final count is explained
        assert "Gini" not in tex.read_text() and "final: after AdaLoRA's pruning" not in tex.read_text()


def test_a_table_notes_what_its_rows_differ_in_beyond_what_it_shows():
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    for run in runs[3:]:
        run["config"]["gradient_samples"] = 250  # every BA-LoRA run (LoRA's have the default, 500): not in its arm's name
    (table,) = tables.budget_tables(analyse(load_runs(runs)))
    assert "Rows also differ in: gradient_samples 500 for LoRA (r=8); 250 for BA-LoRA (r=8)." in table.notes
    (same,) = tables.budget_tables(analyse(load_runs(runs[:3] + [make_result("ba_lora", 8, 64, s) for s in SEEDS[:3]])))
    assert not any(note.startswith("Rows also differ") for note in same.notes)


def test_quantised_bases_table(tmp_path: Path):
    """Runs on quantised bases get their own table against full-precision LoRA, and join no other one."""
    results = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    for seed in SEEDS[:3]:
        run = make_result("lora", 8, 64, seed)
        run["key"] += "-nf4"
        run["config"] |= {"quant": "nf4", "quant_group_size": 64}
        run["metrics"]["accuracy"] -= 0.01
        run["quantisation"] = {"memory": {"ratio": 7.53}, "balance": [[0, {"mean": 0.0}], [160, {"mean": 0.5}]]}
        results.append(run)
    build_report(results, tmp_path / "report", paper_dir=tmp_path / "paper")
    tables = dict(_markdown_tables((tmp_path / "report" / "report.md").read_text()))
    quantised = next(rows for title, rows in tables.items() if title.startswith("Quantised bases"))
    by_method = {row["Method"]: row for row in quantised}
    nf4 = by_method["LoRA (quant=nf4)"]
    assert nf4["Base fp32 / stored (×)"] == "7.53" and nf4["Balance"] == "0.5" and nf4["n"] == "3"
    _close(nf4["Δ acc. (pp) [CI]"].split()[0], -1.0, 2)
    assert by_method["LoRA"]["Base fp32 / stored (×)"] == "–" and "BA-LoRA" in by_method
    budget = next(rows for title, rows in tables.items() if title.startswith("Budget efficiency"))
    assert all("quant" not in row["Method"] for row in budget)


def _dynamic_result(budget: int, seed: int) -> dict:
    """A BA-LoRA dynamic run: three reallocations, each moving one rank from the first module to the second."""
    result = make_result("ba_lora", budget, 64, seed)
    result["config"]["method"], result["key"] = "ba_lora_dynamic", f"dynamic-{budget}-{seed}"
    result["metrics"]["accuracy"] += 0.001 * (seed - 42)  # not static BA-LoRA's on every seed: a testable Δ
    ranks = {m["name"]: m["rank"] for m in result["allocation"]}
    first, second = list(ranks)[:2]
    history = []
    for index, step in enumerate((0, 40, 80, 120)):
        if index:
            ranks = ranks | {first: ranks[first] - 1, second: ranks[second] + 1}
        history.append({"step": step, "ranks": dict(ranks), "importance": {m: 1e-4 * (1 + index) for m in ranks},
                        "params": sum(ranks.values()) * 2 * HIDDEN, "budget": result["budget"]["lora_budget"],
                        "changed": [first, second] if index else [], "seconds": 0.02})
    result["reallocations"] = history
    for m in result["allocation"]:
        m["final_rank"] = ranks[m["name"]]
    return result


def test_dynamic_runs_get_a_reallocation_section_with_their_parameters_against_the_budget(tmp_path: Path):
    results = [make_result(m, b, 64, s) for m in ("lora", "ba_lora", "adalora") for b in (4, 8) for s in SEEDS[:3]]
    results += [_dynamic_result(b, s) for b in (4, 8) for s in SEEDS[:3]]
    out = tmp_path / "report"
    build_report(results, out, paper_dir=tmp_path / "paper")
    markdown = (out / "report.md").read_text()
    assert "## Dynamic reallocation (seed 003)" in markdown
    assert "9 reallocations over 3 runs, 9 of them moved ranks (mean 2.0 modules each)" in markdown
    assert "100.00% of the budget" in markdown
    assert "Mean training loss over the 3 steps after a reallocation / the 3 steps up to it" in markdown
    # whether reallocating helped: against static BA-LoRA, paired on seeds, Holm over the two budgets
    for budget in (4, 8):
        assert (f"budget r={budget} ({budget * LAYERS * len(KINDS) * 2 * HIDDEN:,} LoRA parameters): BA-LoRA dynamic reached "
                in markdown and "against static BA-LoRA's" in markdown)
    assert markdown.count("between BA-LoRA dynamic and static BA-LoRA") == 2
    assert len(list(out.glob("figures/reallocation_*.png"))) == 2  # one per budget


# Seed 003's layer-importance section (image runs).

VIT_KINDS = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1", "mlp.fc2")


def make_vit_result(method: str, metric: str, seed: int, attention_weight: float) -> dict:
    """A run on a 4-layer ViT, all linear layers adapted; attention modules score `attention_weight` × MLP's
    (times noise), or with weight 1, every module of a layer scores the same (deeper layers more)."""
    result = make_result("lora" if method == "lora" else "ba_lora", 4, 16, seed)
    rng = random.Random(f"vit-{method}-{metric}-{seed}")
    names = [f"vit.layers.{layer}.{kind}" for layer in range(4) for kind in VIT_KINDS]
    scored = method != "lora"
    importance = [(1 + 0.1 * int(n.split(".")[2])) * scored if attention_weight == 1.0 else
                  (attention_weight if ".attention." in n else 1.0) * rng.uniform(0.8, 1.2) * scored for n in names]
    ranks = [4 if not scored else (6 if ".attention." in n and attention_weight > 1 else 3) for n in names]
    result.update({
        "task": "image", "key": f"vit-{method}-{metric}-{seed}",
        "config": {**result["config"], "method": method, "model": "vit-fashion", "dataset": "digits",
                   "importance_metric": metric, "target_modules": ["all-linear"], "strategy": "proportional"},
        "allocation": [{"name": n, "shape": [128, 128], "importance": i, "rank": r, "params": r * 256, "final_rank": r}
                       for n, i, r in zip(names, importance, ranks)],
    })
    return result


def test_vision_section_tests_whether_attention_dominates_with_mann_whitney(tmp_path: Path):
    from balora.report.runs import load_runs
    from balora.report.vision import groups, scored_modules

    runs = ([make_vit_result("ba_lora", "fisher", s, 3.0) for s in (42, 43, 44)]
            + [make_vit_result("ba_lora", "magnitude", s, 1.0) for s in (42, 43, 44)]
            + [make_vit_result("ba_lora", "grad_norm", s, 0.3) for s in (42, 43, 44)]
            + [make_vit_result("lora", "sensitivity", s, 1.0) for s in (42, 43, 44)])
    build_report(runs, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    section = text.split("## Layer importance in Vision Transformers (seed 003)")[1].split("\n## ")[0]
    # the statistic, computed here from the raw results: shares per run, averaged per module over seeds
    shares = {}
    for result in runs[:3]:
        total = sum(m["importance"] for m in result["allocation"])
        for m in result["allocation"]:
            shares.setdefault(m["name"], []).append(m["importance"] / total)
    attention = [np.mean(v) for n, v in shares.items() if ".attention." in n]
    mlp = [np.mean(v) for n, v in shares.items() if ".mlp." in n]
    u = sps.mannwhitneyu(attention, mlp, alternative="greater").statistic
    assert f"fisher importance: attention modules score significantly higher than MLP modules (one-sided " \
           f"Mann-Whitney U = {u:.0f}" in section and "seed 003's claim holds here" in section
    assert "magnitude importance: attention modules do not score significantly higher" in section
    assert "grad_norm importance: MLP modules score significantly higher" in section and "the opposite" in section
    assert "sensitivity importance" not in section  # LoRA scores nothing
    assert "| attention.q_proj | attention | 4 |" in section and "| mlp.fc1 | MLP | 4 |" in section
    image = load_runs(runs)
    assert {(g[1], len(g[2])) for g in groups(image)} == {("fisher", 72), ("magnitude", 72), ("grad_norm", 72)}
    assert np.allclose(scored_modules(image)["share"].groupby(scored_modules(image)["run"]).sum(), 1.0)


def test_vision_section_appears_only_with_image_runs(report_dir: Path):
    assert "Layer importance in Vision Transformers" not in (report_dir / "report" / "report.md").read_text()


def test_the_budget_table_says_dora_s_count_includes_its_magnitudes():
    """With a DoRA row, the parameter columns' note says its count holds the magnitude vectors paid from the
    budget; without one, the note is as it was (no committed report changes)."""
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs
    from balora.report.tables import budget_tables

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in (42, 43, 44)]
    for methods, said in ((("dora",), True), ((), False)):
        extra = [make_result(m, 8, 64, s) for m in methods for s in (42, 43, 44)]
        captions = " ".join(c for t in budget_tables(analyse(load_runs(runs + extra))) for c in t.captions)
        assert ("DoRA's include its magnitude vectors" in captions) is said


def test_the_budget_table_counts_the_saved_adapter_where_peft_s_conversion_doubles_its_rank():
    """PiSSA trains 73,728 parameters but saves a plain LoRA of the original base at twice the rank: the budget
    table shows the adapter file's count, with its note, only where some arm's differs from what it trains."""
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs
    from balora.report.tables import budget_tables

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "pissa") for s in (42, 43, 44)]
    for result in runs:
        if result["config"]["method"] == "pissa":
            result["params"]["saved_adapter"] = 2 * result["params"]["lora_final"]
    (table,) = budget_tables(analyse(load_runs(runs)))
    column = table.columns.index("Saved adapter params")
    saved = {row[table.columns.index("Method")]: row[column] for row in table.rows}
    assert saved["PiSSA"] == f"{2 * runs[-1]['params']['lora_final']:,}" and saved["LoRA"] == f"{runs[0]['params']['lora']:,}"
    assert any("twice the rank" in c for c in table.captions)
    (plain,) = budget_tables(analyse(load_runs([r for r in runs if r["config"]["method"] != "pissa"])))
    assert "Saved adapter params" not in plain.columns and not any("twice the rank" in c for c in plain.captions)


def test_instruction_tuning_loss_axis_spans_the_losses_not_from_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Losses of nearly equal arms differ in the third digit: on an axis from 0 the differences vanish, so the
    loss panel shows dots on an axis from just below the lowest mean − std to just above the highest."""
    from balora.report import figures
    from balora.report.lm import selected_runs
    from balora.report.runs import load_runs

    canvases = []
    monkeypatch.setattr(figures, "_save", lambda fig, *args: canvases.append(fig))
    runs = selected_runs(load_runs([make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS for s in (42, 43, 44)]))
    figures.params_loss_bars(runs, "smollm2 · critic_instructions", tmp_path)
    (canvas,) = canvases
    low, high = canvas.axes[1].get_xlim()
    losses = runs["loss"]
    assert 0 < low <= losses.min() and high >= losses.max()
    assert high - low < 2 * (losses.max() - losses.min()) + 0.2 * losses.max()


def test_every_rank_heatmap_has_its_colour_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A heatmap's colours mean nothing without their scale: each figure (one per budget) has a colorbar."""
    from balora.report import figures
    from balora.report.runs import load_runs

    canvases = []
    monkeypatch.setattr(figures, "_save", lambda fig, *args: canvases.append(fig))
    frame = load_runs(synthetic_results())
    setting = frame["setting"].iloc[0]
    figures.rank_heatmaps(frame[frame["setting"] == setting], setting, tmp_path)
    assert len(canvases) >= 2
    tops = []
    for canvas in canvases:
        assert any(ax.get_label() == "<colorbar>" for ax in canvas.axes)
        images = [image for ax in canvas.axes for image in ax.get_images()]
        # the figure's own scale: 0 to the largest rank it shows, not the setting's largest over every budget
        tops.append(max(image.norm.vmax for image in images))
        assert tops[-1] == max(float(image.get_array().max()) for image in images)
    assert len(set(tops)) == len(tops)


def test_every_word_and_number_of_a_rank_heatmap_is_at_least_8_pt_in_print(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """With six module types (every linear layer of the ViT in results/levers) and four adaptive arms, the heatmap
    was shrunk on the page until its cell values and method names were 6 pt; every text of it, as the paper prints
    it (its tight box scaled to the text width and to the paper's cap on a figure's height), is 8 pt or more."""
    from matplotlib.text import Text

    from balora.report import figures
    from balora.report.paper_latex import FIGURE_HEIGHT, TEXT_WIDTH
    from balora.report.runs import load_runs
    from balora.runfiles import read_runs

    canvases = []
    monkeypatch.setattr(figures, "_save", lambda fig, *args: canvases.append(fig))
    frame = load_runs(read_runs(Path(__file__).parents[1] / "results" / "levers"))
    setting = next(s for s in frame["setting"].unique() if s.startswith("vit-fashion"))
    figures.rank_heatmaps(frame[frame["setting"] == setting], setting, tmp_path)
    assert canvases
    text_height = 9.0  # inches: letter paper less 1 in margins
    for canvas in canvases:
        canvas.draw_without_rendering()
        box = canvas.get_tightbbox().padded(0.05)
        scale = min(1.0, TEXT_WIDTH / box.width, FIGURE_HEIGHT * text_height / box.height)
        texts = [t for t in canvas.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert len(texts) > 4 * 6 * 4  # the cell values are among them
        small = sorted({(round(t.get_fontsize() * scale, 1), t.get_text()) for t in texts
                        if t.get_fontsize() * scale < 8})
        assert not small, small[:5]


def test_table_latex_never_shrinks_type_below_9_pt():
    """A table too wide for the page is set sideways (and wraps a text column if it must), never scaled down
    nor set in \\scriptsize or \\tiny: in print those are 6 pt."""
    from balora.report.document import PORTRAIT, Table, table_latex, table_width

    narrow = Table("n", "Narrow", ["Method", "Acc. (%)"], [["LoRA", "79.48 ± 0.13"]])
    wide = Table("w", "Wide", ["Method", *(f"Column number {i}" for i in range(12))],
                 [["BA-LoRA w/o warm-start", *(f"{i}.123 ± 0.456" for i in range(12))]])
    assert table_width(narrow) <= PORTRAIT < table_width(wide)
    for table in (narrow, wide):
        latex = table_latex(table)
        assert not re.search(r"\\(resizebox|scalebox|scriptsize|tiny)\b", latex), latex
        assert r"\footnotesize" in latex
    assert r"\begin{sidewaystable}" in table_latex(wide) and r"\begin{table}" in table_latex(narrow)


def test_paper_tables_state_the_level_of_their_confidence_intervals(report_dir: Path):
    """The paper drops the statistics legend from its tables, but each Δ [CI] column's level is a number in the
    table (issue 39: a reader must not compute it): per row in a column of its own where the levels differ, else in
    the column's header; why it is that level, Appendix A says once (review 3, N10: every caption repeated it)."""
    tables = sorted((report_dir / "paper" / "generated" / "tables").glob("*.tex"))
    with_ci = [t.read_text() for t in tables if "$\\Delta$ acc. (pp)" in t.read_text()]
    assert with_ci
    for text in with_ci:
        assert "the one that matches Holm's verdict" not in text, text[:400]
        per_row = re.findall(r" & (\d+\.\d)\\% & ", text)
        assert ("CI\\\\level" in text and per_row) or re.search(r"\[\d+\.\d\\% CI\]", text), text[:400]


def test_a_wide_table_wraps_its_verdict_upright_before_it_goes_sideways():
    """A comparison table a little wider than the page wraps its words (the verdict), never its intervals, and
    stays upright; only one too wide even so is set sideways on a page of its own."""
    from balora.report.document import PORTRAIT, Table, table_latex, table_width

    row = ["r=8", "BA-LoRA", "3", "73,728", "79.80 ± 0.59", "0/3", "−0.27 [−1.92, +1.39]", "0.287",
           "inconclusive (MDE 1.27 pp)"]
    columns = ["Budget", "Method", "n", "LoRA params", "Acc. (%)", "≤ majority", "Δ acc. (pp) [CI]",
               "p (TOST, Holm)", "Verdict"]
    table = Table("t", "T", columns, [["r=8", "LoRA", "3", "73,728", "79.83 ± 1.13", "0/3", "(reference)", "—",
                                      "(reference)"], row])
    assert table_width(table) > PORTRAIT
    latex = table_latex(table)
    assert r"\begin{table}" in latex and r"\begin{tabularx}" in latex
    spec = re.search(r"\\begin\{tabularx\}\{\\linewidth\}\{(.*)\}", latex).group(1)
    assert spec.endswith(r"\arraybackslash}X") and spec.count("X") == 1, spec  # only the verdict wraps
    wide = Table("w", "W", [*columns, *(f"Extra column {i}" for i in range(6))], [[*row, *["12,345.67"] * 6]] * 2)
    assert r"\begin{sidewaystable}" in table_latex(wide)


CAN_BUILD = shutil.which("pdflatex") is not None and shutil.which("pdftotext") is not None
BUILDS_AND_READS = pytest.mark.skipif(not CAN_BUILD, reason="pdflatex and pdftotext (poppler-utils) build and read the paper")


@pytest.fixture(scope="module")
def committed_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper's sources with the parts the committed runs write (the studies', results/levers and results/peers,
    first, then the main results', results/paper, which must leave the studies' alone), with the figures where the paper is
    built: its folder. Written once for the module: each report takes half a minute on the CI machine."""
    from balora.report import write_runs_report

    root, out = Path(__file__).parents[1], tmp_path_factory.mktemp("committed")
    paper = out / "paper"
    shutil.copytree(root / "paper", paper, ignore=shutil.ignore_patterns("generated", "*.pdf", "*.aux", "*.log"))
    write_runs_report(root / "results" / "levers", out / "levers", paper_dir=paper, figures_too=CAN_BUILD)
    write_runs_report(root / "results" / "peers", out / "peers", paper_dir=paper, figures_too=CAN_BUILD)
    write_runs_report(root / "results" / "paper", out / "report", paper_dir=paper, figures_too=CAN_BUILD)
    return paper


@pytest.fixture(scope="module")
def committed_paper(committed_parts: Path) -> Path:
    """The paper built from the committed runs (results/paper and the studies, results/levers and results/peers):
    its folder."""
    from balora.report import build_paper

    build_paper(committed_parts)
    return committed_parts


@BUILDS_AND_READS
def test_the_paper_body_from_the_committed_runs_fits_ten_pages(committed_paper: Path):
    """The paper built from results/paper has at most 10 pages before its references (the appendix after them
    does not count), and no results table is set sideways on a page of its own in the body."""

    paper = committed_paper
    pages = _paper_text(paper).split("\f")
    references = next(i for i, page in enumerate(pages, 1) if re.search(r"^\s*References\s*$", page, re.M))
    assert references - 1 <= 10, f"the body has {references - 1} pages"
    body = " ".join("".join(pages[:references - 1]).split())  # words, whatever line they break across
    assert "is missing: run balora report" not in "".join(pages)  # every part, the lever study's included
    # the body leads with the lever study's answer: its setting's comparisons with a tuned LoRA
    assert "a Fashion-MNIST-pretrained 4-block ViT" in body and "against tuned LoRA" in body
    for name in ("budget", "fewshot", "ablation", "strategy"):
        for table in (paper / "generated" / "tables").glob(f"{name}_*.tex"):
            assert r"\begin{sidewaystable}" not in table.read_text(), table.name


@BUILDS_AND_READS
def test_every_table_of_the_committed_paper_fits_its_page_at_print_size(committed_paper: Path):
    """Issue 39: no table runs off its page (a float taller than the page, a line wider than it) or is set
    sideways; one scaled to fit keeps type of at least 8 pt (9 pt tables, scaled by no less than 8/9); no caption
    lists in prose what its rows differ in (they are columns, or a table of their own); each interval's level is a
    number in its table."""
    log = (committed_paper / "main.log").read_text(errors="replace")
    assert "Float too large" not in log
    # every \ref has its float (a study's shares pointed to heatmaps only its primary setting's appendix part held)
    assert "There were undefined references" not in log
    assert not re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)
    tables = sorted((committed_paper / "generated").rglob("tables/*.tex"))
    assert len(tables) > 10
    for path in tables:
        tex = path.read_text()
        assert r"\begin{sidewaystable}" not in tex, path.name
        assert "Rows also differ in" not in tex, path.name
        # no configuration in a caption: an option an arm's name says, or one method's (the configuration table's)
        assert "Scaling rule:" not in tex and "Warmstart init:" not in tex, path.name
        assert "of BA-LoRA dynamic:" not in tex, path.name
        # what a levers table's groups are: the body says it once (a second read: 12-line captions)
        assert "Each group holds arms" not in tex, path.name
        for factor in re.findall(r"\\resizebox\{\\linewidth\}\{!\}\{\\begin\{tabularx\}\{([\d.]+)\\linewidth", tex):
            assert float(factor) <= 9 / 8, (path.name, factor)
        if "[CI]" in tex:  # levels that differ by row: a column of them (one level: the header says it, "[95.0% CI]")
            assert "CI\\\\level" in tex, path.name
    tuning = (committed_paper / "generated" / "tables" / "tuning.tex").read_text()
    assert r"\begin{longtable}" in tuning  # on as many pages as its rows need


def _paper_text(paper: Path) -> str:
    """The built paper's text, page by page (form feeds), a word broken at its hyphen across lines
    ("presidential-" / "debate") joined again (without -layout, pdftotext drops that hyphen)."""
    import subprocess

    text = subprocess.run(["pdftotext", "-layout", str(paper / "main.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    return re.sub(r"(?<=\w)-\n\s*(?=\w)", "-", text)


@BUILDS_AND_READS
def test_the_committed_papers_body_cites_an_appendix_float_by_its_appendix(committed_paper: Path):
    """A reviewer's read (2026-12-07): the body cited "Table 18" and "Figure 2", which the appendix holds, as if the
    reader would find them nearby. A table or figure of the appendix is numbered within it ("Table C.5"), so every
    plainly numbered one the body cites is in the body."""
    text = _paper_text(committed_paper)
    references = re.search(r"^\s*References\s*$", text, re.M).start()  # at a page's top, after its form feed
    body, appendix = text[:references], text[references:]
    for kind in ("Table", "Figure"):
        shown = set(re.findall(rf"^\s*{kind} (\d+):", body, re.M))
        assert set(re.findall(rf"{kind} (\d+)\b(?!\.\d)", body)) <= shown, kind
        assert not re.findall(rf"^\s*{kind} \d+:", appendix, re.M), kind
    assert re.search(r"^\s*Table 1:", body, re.M) and re.search(r"Table C\.\d+", body)  # the body's, the appendix's


@BUILDS_AND_READS
def test_the_committed_papers_body_refers_to_every_table_and_figure_it_shows(committed_paper: Path):
    """A reviewer's read (2026-12-07): the body's tables and its figure were never referred to from its text. Every
    float a generated part of the body holds, its tables included, is referred to (\\ref) from the body's text."""
    main = (committed_paper / "main.tex").read_text()
    body = main[main.index(r"\begin{document}"):main.index(r"\bibliography")]
    parts = "\n".join((committed_paper / "generated" / name).read_text()
                      for name in re.findall(r"\\generated\{([^}]+)\}", body))
    floats = parts + "".join((committed_paper / path).read_text() for path in re.findall(r"\\input\{([^}]+)\}", parts))
    labels = re.findall(r"\\label\{((?:tab|fig):[^}]+)\}", floats)
    referred = set(re.findall(r"\\ref\{([^}]+)\}", body + parts))
    assert len(labels) >= 4 and [label for label in labels if label not in referred] == []


@BUILDS_AND_READS
def test_the_committed_papers_prose_says_findings_not_the_tables_numbers(committed_paper: Path):
    """A reviewer's read (2026-12-07): the abstract named settings by their codes ("minilm · presidential debates ·
    64-shot") and gave raw Holm-adjusted p-values; the prose listed the mean rank of every module type, repeated the
    instruction-tuning table row by row and the convergence table's gains, and listed what was not run; an interval
    read [−0.00, +6.69]. The abstract says model, data and shots in words, each verdict with its interval (and MDE);
    the prose states findings and points to the tables."""
    text = _paper_text(committed_paper)
    abstract = " ".join(text[:text.index("Introduction")].split())  # words, whatever line they break across
    # arXiv takes an abstract of at most 1,920 characters (its own, from "Abstract" to the first section's number)
    assert len(abstract.split("Abstract", 1)[1].rsplit(" ", 1)[0]) <= 1920
    assert "·" not in abstract and "Holm-adjusted" not in abstract and "p = " not in abstract
    assert "presidential-debate statements (64 examples per class" in abstract and "inconclusive (MDE" in abstract
    # the settings without a difference in a sentence, each verdict once, not a list of "setting, verdict; …"
    assert "BA-LoRA is equivalent within ±1 pp with " in abstract and "Against tuned LoRA, BA-LoRA: " not in abstract
    assert "minilm" not in abstract and "vit-fashion" not in abstract and "smollm2" not in abstract
    assert "(MDEs 1.46 to " in abstract  # the main results' inconclusive comparisons with their MDEs
    for repeated in ("Mean rank per module type", "perplexity 46", "no longer training was tried", "not run yet",
                     "evaluation pending"):
        assert repeated not in text, repeated
    assert not re.search(r"[−-]0\.0+(?![0-9])", text)  # a zero with a minus
    lm = (committed_paper / "generated" / "instruction.tex").read_text()
    assert r"(Table~\ref{tab:lm_strategy_" in lm and "Holm-adjusted" not in lm
    # the discussion's evidence is a sentence, not "Tuned LoRA: BA-LoRA, Δ = …", that names its setting (a
    # reviewer's reads, 2026-12-07), with its verdict, not the table's row copied (Δ and CI: a read of 2026-12-08)
    shapes = (committed_paper / "generated" / "shapes.tex").read_text()
    assert shapes.startswith("MiniLM on Rotten Tomatoes") and "against tuned LoRA: BA-LoRA, inconclusive" in shapes
    assert "CI" not in shapes and "Δ" not in shapes and "Delta" not in shapes


def test_the_committed_papers_appendix_repeats_no_table_and_shows_each_studys_configuration(committed_parts: Path):
    """The second review (2026-12-07): the appendix repeated the selection table's values in a table per results table
    (items 12, 20), printed intervals that crossed the margin beside "equivalent" (item 7), and had no configuration
    of the lever study (item 17). No table of values is written where the selection table has them, and no heading
    stands over nothing; an equivalent row's interval lies inside its margin; the lever study's configuration table,
    with its test sets and majority rates, is in the paper."""
    generated = committed_parts / "generated"
    assert not list(generated.rglob("tables/*_values.tex"))
    assert "Values the rows differ in" not in (committed_parts / "main.tex").read_text()
    assert all(not path.read_text() for path in generated.rglob("values.tex"))
    (lm,) = generated.glob("tables/lm_strategy_*.tex")
    equivalent = [line for line in lm.read_text().splitlines() if r" \\" in line and "equivalent" in line]  # a row
    assert equivalent
    for line in equivalent:
        low, high = (float(v.replace("$-$", "-")) for v in re.search(r"\[(\S+), (\S+)\]", line).groups())
        assert -0.01 < low <= high < 0.01, line
    assert r"\generated{levers/config.tex}" in (committed_parts / "main.tex").read_text()
    config = (generated / "levers" / "tables" / "config.tex").read_text()
    assert "37.44" in config and "359 examples" in config and "7$\\times$7 patches" in config


def test_every_experiment_the_success_criteria_name_is_defined_in_the_paper():
    """The criteria of the paper preset name their experiments ("Exp. 1"); the paper's text says what each is."""
    from balora import specs

    named = {m for h in specs.report_spec("paper").hypotheses for m in re.findall(r"Exp\. (\d+)", h.name)}
    assert named
    text = (Path(__file__).parents[1] / "paper" / "main.tex").read_text()
    for number in named:
        assert rf"\emph{{Exp.~{number}}}" in text, number


def _paper_table(table, tmp_path: Path) -> str:
    """`table` as the paper sets it (its generated .tex)."""
    from balora.report import paper_latex

    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated"))
    return (tmp_path / "tables" / f"{table.name}.tex").read_text()


def test_the_paper_shows_what_rows_differ_in_as_columns_with_selected_values_marked(tmp_path: Path):
    """Issue 39: no configuration dump in a caption. The fields the rows differ in are columns of the paper's table
    (the report keeps its note), a value selected on validation marked; each row's CI level is a number in it."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "adalora") for s in SEEDS[:3]]
    for run in runs:
        ba_lora = run["config"]["method"] == "ba_lora"
        run["config"] |= {"epochs": 32 if ba_lora else 16, "tuned": ["learning_rate", *(["epochs"] if ba_lora else [])],
                          "gradient_samples": 250 if ba_lora else 500}
    analysis = analyse(load_runs(runs))
    (table,) = tables.budget_tables(analysis)
    assert any(note.startswith("Rows also differ in") for note in table.notes)  # the report's
    tex = _paper_table(table, tmp_path)
    assert "Rows also differ in" not in tex
    assert r"gradient\\samples" in tex and "*: selected on validation" in tex
    # LoRA's unmarked 16 epochs may be a choice too (a longer training tried and not better): not called "fixed"
    assert "else fixed" not in tex and "an unmarked epochs value is the preset's where a longer training" in tex
    rows = {line.split(" & ")[0]: line.split(" & ") for line in tex.splitlines() if line.endswith(r"\\")}
    assert rows["LoRA"][1:3] == ["16", "500"] and rows["BA-LoRA"][1:3] == ["32*", "250"], rows
    (compared,) = analysis.main.values()
    levels = {f"{100 * r.comparison.ci_level:.1f}" for r in compared if r.comparison is not None}
    if len(levels) == 1:
        assert f"[{levels.pop()}\\% CI]" in tex
    else:
        for level in levels:
            assert f" & {level}\\% & " in tex, level


def test_a_long_table_by_setting_is_a_listing_on_as_many_pages_as_it_needs(tmp_path: Path):
    """Issue 39: a table of many rows (the selection on validation) ran off the page's bottom as a float. The paper
    sets a table whose rows repeat their setting as a longtable, each setting once, as a heading over its rows."""
    from balora.report.document import Table

    rows = [[f"setting {k}", "r=8", f"method {i}", "2", "lr=0.001, epochs=20", "–"] for k in range(3) for i in range(20)]
    table = Table("tuning", "Selection on validation", ["Setting", "Budget", "Method", "n", "Selected", "Not admissible"],
                  rows)
    tex = _paper_table(table, tmp_path)
    assert r"\begin{longtable}" in tex and r"\begin{table}" not in tex
    assert r"\endhead" in tex  # the header again on each page
    for k in range(3):
        assert tex.count(f"setting {k}") == 1


def test_the_lever_study_writes_its_own_paper_parts_whose_numbers_are_its_reports(committed_parts: Path):
    """results/levers is a study of its own in the paper: its report writes generated/levers/ (macros
    prefixed Levers), the main results' report, written after it, leaves that folder alone, and its abstract's
    sentences carry exactly the verdict of BA-LoRA against tuned LoRA in each setting of the study's committed report,
    and where it is better or worse, its Δ and CI and those of the ranks alone at that budget (the one-lever table's
    rows against uniform ranks), not the other levers'."""
    from balora.report.document import latex_text
    from balora.runfiles import read_runs

    root = Path(__file__).parents[1]
    generated = committed_parts / "generated"
    assert r"\newcommand{\NumRuns}" in (generated / "results.tex").read_text()
    levers = generated / "levers"
    assert r"\newcommand{\LeversNumRuns}" in (levers / "results.tex").read_text()
    assert r"\input{generated/levers/tables/ablation_" in (levers / "ablation_more.tex").read_text()
    abstract = (levers / "abstract.tex").read_text()
    report = (root / "results" / "levers" / "report" / "report.md").read_text()

    def table(heading: str, setting: str) -> list[dict[str, str]]:
        found = re.search(rf"\*\*{heading}{re.escape(setting)}\*\*\n\n(.+?)\n\n", report, re.S)
        header, _, *rows = [[cell.strip() for cell in line.strip("|").split("|")]
                            for line in found.group(1).splitlines()] if found else [[], []]
        return [dict(zip(header, row)) for row in rows]

    found, compared, equivalent, inconclusive = set(), 0, 0, 0
    frame = load_runs(read_runs(root / "results" / "levers"))
    for setting in re.findall(r"\*\*Budget efficiency — (.+?)\*\*", report):
        words = words_of(frame, setting)
        rows = table("Budget efficiency — ", setting)
        several = len({row.get("Budget") for row in rows}) > 1  # each budget named where the setting has several
        for row in rows:
            where = f"{words} at the rank-{row['Budget'].removeprefix('r=')} budget" if several else words
            if row["Method"] != "BA-LoRA":
                assert latex_text(f": {row['Method']}, Δ") not in abstract and latex_text(f"; {row['Method']}, Δ") not in abstract
                continue
            if row["Verdict"] not in ("better", "worse"):
                # the settings without a difference in one sentence, each verdict once (not a list of "setting,
                # verdict; …"); an equivalence with the interval that bounds it (regime (b) at 10 seeds), an
                # inconclusive verdict with the setting's MDE
                undecided = abstract.split(". ")[0]
                assert undecided.startswith("Against tuned LoRA, BA-LoRA is ")
                if row["Verdict"].startswith("equivalent"):
                    d, low, high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", row["Δ acc. (pp) [CI]"]).groups()
                    assert latex_text(f"{row['Verdict']} with {where} (Δ = {d} pp, ") in undecided
                    # and, where they trained for different lengths, how many steps BA-LoRA took for LoRA's one
                    assert re.search(re.escape(latex_text(f"CI {low} to {high}")) + r"(\)|; BA-LoRA at twice LoRA's "
                                     r"training steps\))", undecided)
                    equivalent += 1
                else:
                    mde = re.fullmatch(r"inconclusive \((MDE .+)\)", row["Verdict"]).group(1)
                    said = f"with {where[:-1]}; {mde})" if where.endswith(")") else f"with {where} ({mde})"
                    assert "inconclusive with " in undecided and latex_text(said) in undecided
                    inconclusive += 1
                continue
            found.add(setting)
            d, low, high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", row["Δ acc. (pp) [CI]"]).groups()
            assert latex_text(f"With {words} at the rank-{row['Budget'].removeprefix('r=')} budget, against tuned "
                              f"LoRA: BA-LoRA, Δ = {d} pp (") in abstract
            assert latex_text(f"CI {low} to {high}), {row['Verdict']}") in abstract
            # the ranks alone at that budget, each against uniform ranks at its initialisation
            ranks = [r for r in table("One lever at a time — ", setting)
                     if r["Lever, at"].startswith(f"{row['Budget']} · ranks, at ") and r["Verdict"] != "(reference)"]
            assert ranks and latex_text("Against uniform ranks (the ranks alone): ") in abstract
            for lever in ranks:
                held = lever["Lever, at"].split(" · ranks, at ")[1]
                level = "shuffled" if "shuffled" in lever["Method"] else "allocated"
                d, low, high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", lever["Δ acc. (pp) [CI]"]).groups()
                assert latex_text(f"{level} at {held}, Δ = {d} pp (") in abstract
                assert latex_text(f"CI {low} to {high}), {lever['Verdict']}") in abstract
                compared += 1
    # where BA-LoRA against LoRA is decided, so are the ranks alone at its budget (none is since the ViT's runs were
    # rerun on one build of its base, 2026-12-07)
    assert compared >= 3 if found else compared == 0
    assert equivalent and inconclusive >= 3  # regime (b); the debates, regime (a) and the ViT


def test_the_peers_study_says_every_arms_verdict_against_lora_and_points_to_its_table(committed_parts: Path):
    """results/peers (PEFT's methods at Experiment 1's budget) is a study of its own in the paper: its part says,
    for every arm of its committed report's budget table, the verdict that table gives it, in the four verdict words
    with the MDEs and the intervals' range, and refers to that table, which has the trained and the saved parameters
    (PiSSA, OLoRA and LoRA-GA save twice the rank they train); main.tex pulls the part into its results and the
    table into its appendix."""
    from balora.report.document import latex_text

    root = Path(__file__).parents[1]
    peers = committed_parts / "generated" / "peers"
    arms = (peers / "arms.tex").read_text()
    report = (root / "results" / "peers" / "report" / "report.md").read_text()
    (lines,) = re.findall(r"\*\*Budget efficiency — .+?\*\*\n\n(.+?)\n\n", report, re.S)
    header, _, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines.splitlines()]
    method, verdict = header.index("Method"), header.index("Verdict")
    compared = [(row[method], row[verdict]) for row in rows if row[verdict] != "(reference)"]
    assert len(compared) == 7
    for name, said in compared:  # "inconclusive (MDE 1.13 pp)" in the table; "inconclusive: BA-LoRA, …" in the part
        word = said.partition(" (")[0]
        assert word in ("better", "worse", "inconclusive") or word.startswith("equivalent"), said
        clause = re.search(re.escape(latex_text(f"{word}: ")) + r"([^;]*)", arms).group(1)
        assert latex_text(name) in clause.split(" (")[0].split(", "), (name, clause)
    mdes = sorted(float(m) for m in re.findall(r"MDE ([\d.]+) pp", " ".join(said for _, said in compared)))
    assert f"(MDEs {mdes[0]:.2f} to {mdes[-1]:.2f} pp)" in arms
    for word in ("better: ", "worse: ", "equivalent within ", "inconclusive: ", "is not a tie"):
        assert latex_text(word) in arms, word
    assert r"\ref{tab:peers/budget_" in arms
    assert r"\input{generated/peers/tables/budget_" in (peers / "arms_more.tex").read_text()  # the table, for the appendix
    table = next((peers / "tables").glob("budget_*.tex")).read_text()
    assert "Saved adapter params" in table and "LoRA params" in table
    assert "DoRA's include its magnitude vectors" in table  # why DoRA trains fewer: its magnitudes are in the budget
    main = (committed_parts / "main.tex").read_text()
    assert r"\generated{peers/arms.tex}" in main and r"\generated{peers/arms_more.tex}" in main


def test_a_table_two_parts_show_lists_the_values_its_rows_differ_in_once(tmp_path: Path):
    """The budget table is in two parts (budget; arms_more, the peers study's appendix): where it has no room for the
    values its rows differ in and no selection table holds them, the appendix lists them once, not once per part."""
    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "adalora") for s in SEEDS[:3]]
    fields = {"epochs": 10, "learning_rate": 1e-3, "lora_dropout": 0.05, "weight_decay": 0.01, "warmup_ratio": 0.1,
              "batch_size": 8}
    for run in runs:  # each arm "selected" other values of many fields: too many columns for the page
        k = ("lora", "ba_lora", "adalora").index(run["config"]["method"])
        run["config"] |= {name: value * (k + 1) for name, value in fields.items()} | {"tuned": list(fields)}
    build_report(runs, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    values = (tmp_path / "paper" / "generated" / "values.tex").read_text()
    assert values.count(r"\input{generated/tables/budget_") == 1, values


def test_a_study_shows_every_settings_comparison_with_lora_and_the_main_results_their_primary_one(tmp_path: Path):
    """A study's settings are each a question of its own (results/levers: the ViT, the debates), so its budget
    part has a table and a verdict sentence per setting; the main results' part shows the primary setting only, its
    table in the appendix (2026-12-08: the body's pages are the lever study's, as for the few-shot tables)."""
    from balora.report import write_runs_report
    from balora.report.document import latex_text, slug
    from balora.runfiles import write_run

    runs = [make_result(m, 8, k, s) for m in ("lora", "ba_lora") for k in (16, 64) for s in SEEDS[:3]]
    for name in ("levers", "other"):
        for run in runs:
            write_run(tmp_path / name, run)
        write_runs_report(tmp_path / name, tmp_path / f"{name}_report", paper_dir=tmp_path / "paper",
                          figures_too=False)
    study = (tmp_path / "paper" / "generated" / "levers" / "budget.tex").read_text()
    main = (tmp_path / "paper" / "generated" / "budget.tex").read_text()
    for k in (16, 64):
        setting = setting_label("minilm", "rotten_tomatoes", k, None)
        assert f"generated/levers/tables/budget_{slug(setting)}.tex" in study
        assert latex_text(f"{setting_words('minilm', 'rotten_tomatoes', k)}, against LoRA: BA-LoRA, ") in study
    assert r"\input{generated/tables/budget_" not in main and "against LoRA: BA-LoRA" not in main
    assert r"\ref{tab:budget_" in main  # the sentence cites the table the appendix holds
    appendix = (tmp_path / "paper" / "generated" / "budget_more.tex").read_text()
    assert appendix.count(r"\input{generated/tables/budget_") == 1


@pytest.mark.parametrize("folder, writes", [("probe", False), ("mine", False), ("paper", True)])
def test_a_run_folder_the_paper_does_not_report_leaves_the_papers_inputs_alone(
        folder: str, writes: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`balora report --runs DIR` writes paper/generated/ only for the folders the paper reports (results/paper,
    and its studies), so building another folder's report never replaces the paper's numbers with its own."""
    from balora.cli import main
    from balora.runfiles import write_run

    monkeypatch.chdir(tmp_path)
    for result in close_pairs((0.01, 0.02, 0.015)):
        write_run(tmp_path / "results" / folder, result)
    assert main(["report", "--runs", f"results/{folder}"]) == 0
    assert (tmp_path / "paper" / "generated" / "abstract.tex").exists() is writes


# Captions explain what their table or figure shows, and only that.

def test_the_instruction_tuning_tables_explain_only_the_columns_the_paper_keeps():
    """The paper's strategy table (fewer columns, for legible type) explains no p (TOST, Holm) or MDE column it
    does not show, and its reference row reads "(reference)" as every other table's does; the cost table's
    caption explains no phase it does not show, and says what RSS is."""
    from balora.report.lm import cost_table, lm_comparisons, strategy_table
    from balora.report.runs import load_runs

    ((setting, (_, rows)),) = lm_comparisons(load_runs([make_lm_result(m, r, lr, s) for (m, r, lr) in LM_LOSS
                                                        for s in (42, 43, 44)])).items()
    table = strategy_table(rows, setting)
    paper = table.select(table.compact)
    said = " ".join(paper.captions)
    assert "p (TOST, Holm)" not in paper.columns and "p (TOST, Holm):" not in said and "MDE (nats):" not in said
    assert "Verdict at α = 0.05" in said and len(paper.columns) <= 5
    assert "p (Holm)" not in said  # a reviewer's read (2026-12-07): the caption named columns it does not show
    reference = next(row for row in table.rows if row[0] == "LoRA r=8")
    assert reference[table.columns.index("Δ loss vs LoRA r=8 [CI]")] == "(reference)"
    assert reference[table.columns.index("Verdict")] == "(reference)"
    assert "p (TOST, Holm): paired equivalence test" in " ".join(table.captions)  # the report's full table explains it
    cost = cost_table(rows, setting)
    short = " ".join(cost.select(cost.compact).captions)
    assert "Seconds per phase" not in short and "Train includes" not in short
    assert "Peak RSS: peak resident set size" in short and "Total / LoRA r=8: mean ± std" in short
    assert "Seconds per phase" in " ".join(cost.captions)


def test_a_note_several_columns_share_is_said_once_and_a_constant_column_keeps_its_note():
    from balora.report.document import Table

    table = Table("t", "Title", ["Method", "n", "load (s)", "train (s)", "eval (s)", "Acc. (%)", "Reduction (%)"],
                  [["LoRA", "3", "1.0", "2.0", "0.5", "70.0", "0.0"], ["BA-LoRA", "3", "1.5", "2.5", "0.6", "71.0", "0.0"]],
                  column_notes={"load (s)": "Seconds per phase.", "train (s)": "Seconds per phase.",
                                "Reduction (%)": "Reduction: 1 − params / the largest."})
    assert table.captions == ["Seconds per phase. Reduction: 1 − params / the largest."]
    assert table.select(["Method", "train (s)"]).captions == ["Seconds per phase."]
    # a column said once in the caption ("Reduction (%): 0.0") keeps what it means
    assert "Reduction: 1 − params / the largest." in table.constants_in_caption().captions


def test_a_comparison_table_explains_its_majority_column_while_it_shows_it():
    """≤ majority is explained in the caption of a table that shows it (the paper drops the statistics legend),
    not in one that does not."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, shots, s) for m in ("lora", "ba_lora") for shots in (16, 64) for s in SEEDS[:3]]
    (fewshot, _), *_ = [tables.fewshot_tables(analyse(load_runs(runs)))]
    assert "≤ majority" in fewshot.compact
    assert any(note.startswith("≤ majority: runs whose accuracy") for note in fewshot.select(fewshot.compact).captions)
    assert not any("≤ majority" in note for note in fewshot.select(["Shots/class", "Method", "n"]).captions)


def test_the_paper_states_the_equivalence_margin_without_the_spec_that_declares_it(tmp_path: Path):
    from balora.report import paper_latex
    from balora.report.document import Table

    table = Table("t", "Title", ["Method", "n"], [["LoRA", "3"], ["BA-LoRA", "3"]],
                  ["Equivalence margin: ±1 pp.", "The margin is declared (equivalence_margin) by the spec of sweep x."])
    out = paper_latex.Output(tmp_path, "generated")
    paper_latex.table_tex(table, out)
    latex = (tmp_path / "tables" / "t.tex").read_text()
    assert "spec of sweep" not in latex
    # review 3, N1: the main results' margin (TOST entered the code on 2026-12-06) came after most of their runs;
    # the lever study fixed its own before its own runs, not before those it imports (a reviewer's read,
    # 2026-12-07: its regime (a) table said "fixed before the runs" of the main results' runs); a source with no
    # such history fixed it before its runs
    assert r"Equivalence margin: $\pm$1 pp, fixed after most runs." in latex
    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated/levers", "levers"))
    latex = (tmp_path / "tables" / "t.tex").read_text()
    assert r"Equivalence margin: $\pm$1 pp, fixed after the runs it imports." in latex
    paper_latex.table_tex(table, paper_latex.Output(tmp_path, "generated/other", "other"))
    assert r"Equivalence margin: $\pm$1 pp, fixed before the runs." in (tmp_path / "tables" / "t.tex").read_text()


def test_a_method_option_is_a_dash_for_the_rows_whose_method_does_not_read_it():
    """LoRA and static BA-LoRA carry dynamic BA-LoRA's reallocation interval at its default and never use it:
    only the dynamic arm's row shows a value."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "ba_lora") for s in SEEDS[:3]]
    for run in runs[6:]:  # the third arm reallocates every 20 steps
        run["config"] |= {"method": "ba_lora_dynamic", "method_options": {"realloc_every": 20}}
        run["key"] = run["key"].replace("ba_lora", "ba_lora_dynamic")
    (rows,) = analyse(load_runs(runs)).main.values()
    shown = dict(zip((r.label for r in rows), tables.differing_fields(rows)["realloc_every"]))
    assert shown == {"LoRA": tables.DASH, "BA-LoRA": tables.DASH, "BA-LoRA dynamic": "20"}, shown
    assert "realloc_every 20 for BA-LoRA dynamic (r=8) (the other rows' methods do not read it)" in \
        tables.hidden_differences(rows)[0]


@pytest.mark.parametrize("methods, named", [(("lora", "ba_lora"), False), (("lora", "ba_lora", "adalora"), True)])
def test_a_figure_caption_names_adalora_only_where_the_figure_draws_it(
        methods: tuple[str, ...], named: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from balora.report import figures
    from balora.report.runs import load_runs

    captions = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, name, title, caption: captions.append(caption))
    frame = load_runs([make_result(m, 8, 64, s) for m in methods for s in SEEDS[:2]])
    setting = frame["setting"].iloc[0]
    figures.rank_heatmaps(frame, setting, tmp_path)
    figures.training_loss(frame, setting, tmp_path)
    heatmap, loss = captions
    assert ("AdaLoRA: unpruned singular values" in heatmap) is named and "EVA" not in heatmap
    assert ("AdaLoRA's includes its orthogonality penalty" in loss) is named


def test_the_limitations_say_where_lora_or_ba_lora_had_not_converged(report_dir: Path):
    """A reviewer's read (2026-12-07): the headline reference, LoRA, was still rising at its last evaluation with no
    longer training tried, and the body never said so. The limitations say it, for every such budget and setting (the
    synthetic curves rise to the end; no tuning run tried a longer training), the setting in words; and the same of
    BA-LoRA (2026-12-08: the sentence named LoRA only, though BA-LoRA cut short biases the comparison the other way)."""
    text = " ".join((report_dir / "paper" / "generated" / "limitations.tex").read_text().split())
    assert text.startswith("Still rising on validation when its training ended, and not tried for longer: with MiniLM "
                           "on Rotten Tomatoes snippets (16 examples per class), LoRA, the reference, at r=4")
    assert text.count("with MiniLM on Rotten Tomatoes snippets (16 examples per class),") == 1  # each setting once
    assert " and BA-LoRA at r=4" in text or ", BA-LoRA at r=4" in text
    for group in text.split("; with "):  # in each setting, the reference's first
        assert group.index("BA-LoRA at") > group.rindex("LoRA, the reference,")
    assert text.endswith("A longer training might change those comparisons.")


def test_a_paper_table_shows_n_where_a_row_has_fewer_seeds_than_its_reference_and_the_notation_says_what_delta_is_over():
    """A reviewer's read (2026-12-07): Table 8's Δ (over the 5 seeds both arms ran) contradicted its means (the
    reference's over 10 seeds), with a sign flip. Where rows differ in n, the paper's table shows each row's n, and
    the paper's table notation (Appendix A) says once that Δ is over the seeds a row shares with its reference: a
    second read (the same day) found the note, repeated in every such caption, made captions of 6-7 lines."""
    from balora.report import paper_setup, tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("ba_lora", "ba_lora_no_warmstart") for s in SEEDS]
    kept = [r for r in runs if r["config"]["method"] == "ba_lora" or r["config"]["seed"] in SEEDS[:3]]
    (table,) = tables.ablation_tables(analyse(load_runs(kept)))
    tex = " ".join(_paper_table(table, Path(tempfile.mkdtemp())).split())
    assert "& n &" in tex and "the seeds they share" not in tex
    assert "Δ is over the seeds they share" in paper_setup.statistics_latex("").replace("$\\Delta$", "Δ")


def test_the_papers_protocol_states_the_verdict_rule_once_and_defines_only_the_columns_its_tables_show(
        report_dir: Path):
    """A reviewer's read (2026-12-07): Appendix A stated the verdict rule and the CI's level twice, and defined p (t),
    p (Wilcoxon), d and p (Holm), which no table of the paper shows; it said "the runs' spec declares", a word the
    reader does not know."""
    from balora.report.document import latex_text

    generated = report_dir / "paper" / "generated"
    protocol = (generated / "statistics.tex").read_text()
    assert protocol.count(latex_text("1 − 0.05·p/p(Holm)")) == 1 and protocol.count("Verdict at") == 0
    for undefined in ("p (t):", "p (Wilcoxon):", "d: paired", "p (Holm):"):
        assert undefined not in protocol, undefined
    assert r"\item[{p (TOST, Holm)}]" in protocol and "minimum detectable effect (MDE)" in protocol
    assert "spec" not in protocol and "declared before the runs" not in protocol  # review 3, N1: it was not
    assert "fixed before the analysis but after most of the runs" in protocol


def test_a_column_of_an_option_one_method_reads_says_what_it_means(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A reviewer's read (2026-12-07): "realloc every" and "realloc warmup" were columns no caption explained. A column
    of an option that only one method reads says what it means, from the option's help."""
    from balora.report import tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    monkeypatch.setitem(EFFECT, "ba_lora_dynamic", 0.04)
    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora", "ba_lora_dynamic") for s in SEEDS[:3]]
    for run in runs:
        if run["config"]["method"] == "ba_lora_dynamic":
            run["config"] |= {"realloc_every": 20, "realloc_warmup": 20}
    (table,) = tables.budget_tables(analyse(load_runs(runs)))
    tex = " ".join(_paper_table(table, tmp_path).split())
    assert "realloc every: optimizer steps between reallocations of BA-LoRA dynamic" in tex
    assert "realloc warmup: steps before the first reallocation of BA-LoRA dynamic" in tex


def test_the_papers_time_ratios_say_they_include_the_machines_load(report_dir: Path):
    """A reviewer's read (2026-12-07): "BA-LoRA: total time 0.83 × LoRA's" read as a speed-up, while BA-LoRA adds a
    phase; the caveat that the runs share their machine was only in the instruction-tuning table's caption."""
    generated = report_dir / "paper" / "generated"
    text = " ".join((generated / "cost.tex").read_text().split())
    text += " ".join(table.read_text() for table in generated.glob("tables/cost_*.tex"))  # its table's caption
    assert "total time" in text and "include that contention" in text and "one below 1 is no speed-up" in text


def test_a_paper_sentence_that_begins_with_its_setting_in_words_begins_with_a_capital():
    """The paper says a setting in words ("a Fashion-MNIST-pretrained 4-block ViT on ..."); where that begins a
    sentence, its first letter is a capital, and a label inside a sentence keeps the words' own case."""
    from balora.report.paper import settings_in_words
    from balora.report.paper_latex import Cited
    from balora.report.runs import load_runs

    frame = load_runs([make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]])
    for run in frame["result"]:
        run["config"]["model"] = "vit-fashion"
    frame = load_runs(list(frame["result"]))
    (label,) = frame["setting"].unique()
    assert settings_in_words(f"{label}: every run ended above it.", frame).startswith(
        "A Fashion-MNIST-pretrained 4-block ViT")
    assert settings_in_words(Cited(f"Against LoRA, {label}.", ()), frame).text == (
        "Against LoRA, a Fashion-MNIST-pretrained 4-block ViT on Rotten Tomatoes snippets (64 examples per class).")


def test_the_papers_verdict_words_carry_their_margin_or_mde_and_an_inconclusive_slope_its_interval(
        monkeypatch: pytest.MonkeyPatch):
    """Review 3, N7: the paper's sentences said "inconclusive" and "equivalent" bare, which read as a tie, and "no
    significant trend", not a verdict word. Each verdict carries its margin or MDE; a slope, its 95% CI."""
    from balora.report import claims, paper, stats, tables
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    monkeypatch.setitem(EFFECT, "ba_lora", 0.0)
    analysis = analyse(load_runs([make_result(m, 8, k, s) for m in ("lora", "ba_lora") for k in (16, 64)
                                  for s in SEEDS]))
    (name,) = analysis.fewshot
    rows = claims.proposed_rows(analysis.fewshot[name])
    (sentence,) = paper._verdict_words(rows, "LoRA", "shot counts")
    for c in (r.comparison for r in rows):
        assert c.verdict in (stats.INCONCLUSIVE, stats.EQUIVALENT)
        said = ("MDE", c.metric.amount(c.mde).split()[0]) if c.verdict == stats.INCONCLUSIVE else ("within ±1 pp",)
        assert all(part in sentence for part in said), sentence
    assert analysis.trends[name]["ba_lora"].verdict == stats.NO_TREND
    trend = analysis.trends[name]["ba_lora"]
    (counts,) = claims.trend_counts(analysis)
    assert "slope" in counts and "inconclusive" in counts and "no significant trend" not in counts
    assert f"95% CI {tables.signed(trend.ci_low)} to {tables.signed(trend.ci_high)} pp per doubling" in counts, counts


def test_instruction_tuning_says_how_far_training_moved_the_loss_from_the_untrained_model(tmp_path: Path):
    """An equivalence margin of ±0.01 nats means little unless training moved the loss much further: LoRA's B = 0
    makes its step-0 validation point the base model's, so the report and the paper's results section say the
    drop from it to LoRA's final validation loss, in nats and in margins (a reviewer's read, 2026-12-07, N19)."""
    from balora.report.document import latex_text

    runs = lm_pair((0.001, -0.001, 0.0005))
    lora, start = runs[:3], 5.0
    for run in lora:
        run["curves"]["validation"][0] = [0, {"loss": start}]
    end = np.mean([r["curves"]["validation"][-1][1]["loss"] for r in lora])
    build_report(runs, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    said = (f"before its first step, where B = 0 leaves the base model unchanged, LoRA r=8 scores a validation loss "
            f"of {start:.4f} nats, and {end:.4f} after training: {start - end:.2f} nats lower, "
            f"{(start - end) / 0.01:.0f} times the ±0.01 nats margin")
    assert said in (tmp_path / "report" / "report.md").read_text()
    assert latex_text(said) in (tmp_path / "paper" / "generated" / "instruction.tex").read_text()


def test_the_paper_says_how_ba_loras_ranks_split_the_budget_between_attention_and_mlp(tmp_path: Path):
    """The third review (N11): the body pointed to the appendix for where the ranks go, the evidence for its thesis.
    A part says, from the runs' allocations, each of attention's and the MLP's share of BA-LoRA's LoRA parameters
    with its mean rank, beside the shares uniform ranks give them; nothing where only attention is adapted."""
    from balora.report import claims
    from balora.report.runs import load_runs, settings

    vit = [make_vit_result("ba_lora", "sensitivity", s, 3.0) for s in (42, 43, 44)]
    (setting,) = settings(load_runs(vit))
    # 16 attention modules at rank 6, 8 MLP modules at rank 3, every one 128×128: 96 of 120 rank units to attention
    said = claims.budget_shares(load_runs(vit), setting)
    assert said == [f"{setting}: over 3 BA-LoRA runs, the allocated ranks give attention modules 80.00% (mean rank 6.0) "
                    "and MLP modules 20.00% (mean rank 3.0) of the LoRA parameters (uniform ranks: 66.67% and 33.33%)."]
    # regime (b) of issue 39: at min_rank 0 the allocation may leave modules out, and the sentence counts them
    sparse = copy.deepcopy(vit)
    for run in sparse:
        for module in [m for m in run["allocation"] if ".attention." not in m["name"]][:2 + (run["config"]["seed"] == 44)]:
            module |= {"rank": 0, "params": 0, "final_rank": 0}
    assert claims.budget_shares(load_runs(sparse), setting)[0].endswith(
        " (uniform ranks: 66.67% and 33.33%); 2.3 of its 24 modules per run got rank 0 and were not adapted.")
    query_value = load_runs([make_result("ba_lora", 8, 64, s) for s in SEEDS[:3]])
    assert claims.budget_shares(query_value, settings(query_value)[0]) == []
    # two budgets: a sentence each (2026-12-08: regime (b)'s shares were a mean over its rank-1 and rank-2 runs)
    doubled = copy.deepcopy(vit)
    for run in doubled:
        run["config"]["budget_rank"], run["key"] = 8, run["key"] + "-r8"
        for module in run["allocation"]:
            module |= {"rank": 2 * module["rank"], "final_rank": 2 * module["rank"]}
    both = claims.budget_shares(load_runs(vit + doubled), setting)
    assert [sentence.split(":")[0] for sentence in both] == [f"{setting} at r=4", f"{setting} at r=8"]
    assert "(mean rank 6.0)" in both[0] and "(mean rank 12.0)" in both[1]
    build_report(vit, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    assert "attention modules 80.00\\% (mean rank 6.0)" in (tmp_path / "paper" / "generated" / "shares.tex").read_text()


def test_the_papers_setup_gives_each_test_set_its_majority_rate_and_the_configuration_the_images_size(tmp_path: Path):
    """Review 2, item 17: the setup named the ViT's 7×7 patches on 8×8 digits without the resize, and neither the
    lever settings' test sizes nor their majority rates. A part says them, from the runs; the image size is the
    configuration table's, not the setup's prose (a later review, 2026-12-08, read it there as a configuration dump)."""
    from balora.report.paper_setup import config_table
    from balora.report.runs import load_runs

    runs = [make_result(m, 8, 64, s) for m in ("lora", "ba_lora") for s in SEEDS[:3]]
    vit = [make_vit_result("ba_lora", "sensitivity", s, 3.0) for s in (42, 43, 44)]
    build_report(runs + vit, tmp_path / "report", paper_dir=tmp_path / "paper", figures_too=False)
    data = " ".join((tmp_path / "paper" / "generated" / "data.tex").read_text().split())
    assert "The test sets: Rotten Tomatoes snippets, 2,000 examples (majority-class rate 57.80\\%);" in data
    assert "patches" not in data
    rows = dict(config_table(load_runs(runs + vit)).rows)
    assert rows["Image input"] == ("ViT (Fashion-MNIST): Digits images resized to 28×28 pixels, cut into 7×7 patches "
                                   "(16 per image)")


def test_the_selection_protocol_says_what_a_sweep_and_its_tuned_fields_are():
    """Review 2, item 14: Appendix B spoke of "its tune block" and "its tune block's lengthen", the spec format's
    words, which the paper never defines."""
    from balora.report.selection import PROTOCOL

    assert "tune block" not in PROTOCOL and "lengthen" not in PROTOCOL
    assert PROTOCOL.startswith("A sweep is the set of runs that one spec (such as a preset) declares.")


def test_an_option_set_per_setting_does_not_make_a_variant_but_one_that_differs_within_a_setting_does():
    """The lever study sets gradient_samples 1000 for the debates and leaves the default elsewhere: BA-LoRA there is
    BA-LoRA, not "BA-LoRA (gradient_samples=1000)", which also dropped it from the report's count of BA-LoRA's
    comparisons. A variant is an option that differs between runs of a method in one setting."""
    from balora.report.runs import method_variants

    runs = [make_result("ba_lora", 8, shots, s) for shots in (16, 64) for s in SEEDS[:3]]
    for run in runs:
        run["config"]["gradient_samples"] = 1000 if run["config"]["shots"] == 16 else 500
    assert method_variants(runs) == [""] * len(runs)
    rslora = [make_result("ba_lora", 8, 64, s) for s in SEEDS[:3]]
    for run in rslora:
        run["config"] |= {"gradient_samples": 500, "scaling_rule": "rslora"}
    assert method_variants(runs + rslora)[-3:] == ["rsLoRA scaling"] * 3  # the lever's name in words
    assert method_variants(runs + rslora)[:3] == [""] * 3  # the 16-shot setting has no rslora run
    plus = [make_result("ba_lora", 8, 64, s) for s in SEEDS[:3]]
    for run in plus:  # LoRA+ with its ratio selected on validation: the selection table gives the ratio
        run["config"] |= {"gradient_samples": 500, "loraplus_ratio": 4.0, "tuned": ["learning_rate", "loraplus_ratio"]}
    assert method_variants(runs + plus)[-3:] == ["LoRA+"] * 3


def lever_results() -> list[dict]:
    """The ViT lever study's arms in miniature, 5 seeds each: the 2x2 of ranks x initialisation, shuffled ranks,
    GoRA's initialisation on both kinds of ranks, LoRA+ on both sides, and AdaLoRA (no place in the levers table)."""
    arms = [("lora", {}), ("ba_lora", {}), ("ba_lora_uniform", {}), ("ba_lora_no_warmstart", {}),
            ("ba_lora_shuffled", {}), ("ba_lora", {"warmstart_init": "gora"}),
            ("ba_lora_uniform", {"warmstart_init": "gora"}), ("lora", {"loraplus_ratio": 4.0}),
            ("ba_lora", {"loraplus_ratio": 16.0}), ("adalora", {})]
    results = []
    for index, (method, options) in enumerate(arms):
        for seed in SEEDS:
            result = make_result(method, 8, 64, seed)
            result["key"] += f"-{index}"
            result["config"] |= {"strategy": "proportional", **options,
                                 "tuned": ["learning_rate", *(["loraplus_ratio"] if "loraplus_ratio" in options else [])]}
            result["metrics"]["accuracy"] += 0.002 * index * (seed % 3)  # a different spread for every arm
            results.append(result)
    return results


def test_the_levers_table_pairs_arms_that_differ_in_one_lever_alone():
    from balora.report.analysis import Lever, analyse
    from balora.report.runs import by_seed, load_runs

    results = lever_results()
    analysis = analyse(load_runs(results))
    (rows,) = analysis.levers.values()
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row.lead, []).append(row)
    found = {lead: [r.label for r in group] for lead, group in groups.items()}
    assert found == {
        "r=8 · ranks, at LoRA's init": ["LoRA", "BA-LoRA w/o warm-start"],
        "r=8 · ranks, at BA-LoRA's warm-start": ["BA-LoRA uniform ranks", "BA-LoRA", "BA-LoRA shuffled ranks"],
        "r=8 · ranks, at GoRA's init": ["BA-LoRA uniform ranks (GoRA's init)", "BA-LoRA (GoRA's init)"],
        "r=8 · init, at uniform ranks": ["LoRA", "BA-LoRA uniform ranks", "BA-LoRA uniform ranks (GoRA's init)"],
        "r=8 · init, at allocated ranks": ["BA-LoRA w/o warm-start", "BA-LoRA", "BA-LoRA (GoRA's init)"],
        "r=8 · options, at uniform ranks, LoRA's init": ["LoRA", "LoRA (LoRA+)"],
        "r=8 · options, at allocated ranks, BA-LoRA's warm-start": ["BA-LoRA", "BA-LoRA (LoRA+)"],
        "r=8 · method, at LoRA+": ["LoRA (LoRA+)", "BA-LoRA (LoRA+)"]}
    for group in groups.values():  # the reference first, and every Δ against it on matched seeds
        reference, *compared = group
        assert reference.comparison is None and all(r.comparison is not None for r in compared)
        base = by_seed(reference.runs, "accuracy")
        for row in compared:
            values = by_seed(row.runs, "accuracy")
            assert row.comparison.delta == pytest.approx(np.mean([values[s] - base[s] for s in SEEDS]))
    # Holm over the whole table: the smallest p is multiplied by the number of comparisons
    tested = [r.comparison for r in rows if r.comparison is not None]
    assert min(c.p_holm for c in tested) == pytest.approx(min(1.0, len(tested) * min(c.p_t for c in tested)))
    # each row knows its lever, its budget and the arm it is against: the README and the paper read them, not the lead
    assert rows[0].lever == Lever("ranks", "LoRA's init", "uniform", "r=8", "LoRA")
    assert rows[1].lever == Lever("ranks", "LoRA's init", "allocated", "r=8", "LoRA")
    assert {r.lever.against for r in rows if r.lead == "r=8 · init, at allocated ranks"} == {"BA-LoRA w/o warm-start"}


def test_the_papers_lever_sentences_say_each_verdict_once_counting_the_common_one_and_naming_the_rest():
    """A reviewer's read (2026-12-08): the body's one-lever sentences listed every comparison with its MDE ("at LoRA's
    init, allocated inconclusive (MDE 2.26 pp); at BA-LoRA's warm-start, allocated inconclusive (MDE 3.67 pp), …"), a
    table said number by number. Each lever's sentence says each verdict once: the common one counted, the others
    with the comparisons that got them, by the lever's value and what it holds fixed."""
    from dataclasses import replace

    from balora.report import stats
    from balora.report.analysis import analyse
    from balora.report.paper import _lever_words
    from balora.report.runs import load_runs

    (rows,) = analyse(load_runs(lever_results())).levers.values()
    ranks, init, options, method = _lever_words(rows)
    assert ranks == "The ranks alone, against uniform ranks: better in all 4."
    assert init == "The initialisation alone, against LoRA's (B = 0): better in all 4."
    assert re.fullmatch(r"Another option alone, against the same arm with the defaults: LoRA\+ at uniform ranks with "
                        r"LoRA's init and LoRA\+ at allocated ranks with BA-LoRA's warm-start, each inconclusive "
                        r"\(MDEs? \d+\.\d\d pp\)\.", options)
    assert method == "The whole method, against LoRA: BA-LoRA with LoRA+ on both sides, better."
    # one comparison of the ranks lever worse: the three better counted, the worse one named
    gora = next(r for r in rows if r.lever.kind == "ranks" and r.lever.held == "GoRA's init" and r.comparison is not None)
    mixed = [replace(r, comparison=replace(r.comparison, verdict=stats.WORSE)) if r is gora else r for r in rows]
    assert _lever_words(mixed)[0] == ("The ranks alone, against uniform ranks: better in 3 of 4; allocated at GoRA's "
                                      "init, worse.")


def test_the_readme_block_adds_the_levers_table_where_arms_differ_in_one_lever(tmp_path: Path):
    from balora.report.builder import build
    from balora.report.figures import RENDER
    from balora.report.readme import headline
    from balora.report.runs import load_runs

    results = lever_results()
    token = RENDER.set(False)
    try:
        text = headline(build(load_runs(results), tmp_path, results), results)
    finally:
        RENDER.reset(token)
    assert "**One lever at a time: arms that differ in one lever, each at its selected learning rate**" in text
    rows = [line.split(" | ")[1:6] for line in text.splitlines() if line.startswith("| minilm") and " | r=8 | " in line]
    assert ["ranks", "r=8", "GoRA's init", "BA-LoRA (GoRA's init)", "BA-LoRA uniform ranks (GoRA's init)"] in rows
    assert ["method", "r=8", "LoRA+", "BA-LoRA (LoRA+)", "LoRA (LoRA+)"] in rows and len(rows) == 11
    # a study's budget comparisons are no "Exp. 1" (the main results' experiments): one experiment, no column
    assert "| Experiment |" not in text and "Exp. 1" not in text


def test_a_regimes_lowest_rank_is_its_settings_protocol_not_a_variant_of_its_arms():
    """The lever study's regime (b) runs every arm with min_rank 0 on regime (a)'s data: its LoRA is plain LoRA in
    a setting of its own (it was 'LoRA (min_rank=0)', and so never paired with the arms whose label did not say it)."""
    from balora.report.analysis import analyse
    from balora.report.runs import load_runs

    results = []
    for regime, extra in (("a", {}), ("b", {"min_rank": 0, "target_modules": ["query", "key", "value"]})):
        for method in ("lora", "ba_lora", "ba_lora_no_warmstart"):
            for seed in SEEDS[:3]:
                result = make_result(method, 8, 64, seed)
                result["key"] += f"-{regime}"
                result["config"] |= {"strategy": "proportional", **extra}
                results.append(result)
    frame = load_runs(results)
    assert set(frame["arm_label"]) == {"LoRA", "BA-LoRA", "BA-LoRA w/o warm-start"}
    assert any("min_rank=0" in setting for setting in frame["setting"].unique())
    for rows in analyse(frame).levers.values():
        assert [r.label for r in rows if r.lead.endswith("ranks, at LoRA's init")] == ["LoRA", "BA-LoRA w/o warm-start"]

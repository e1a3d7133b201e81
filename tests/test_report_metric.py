"""The report is written over the run's metric, as its task declares it: one metric record for tasks and report,
one comparison path whose direction comes from the metric, and no branch on a task's or metric's name."""

from __future__ import annotations

import ast
from pathlib import Path

from balora import tasks
from balora.report import stats, tables
from balora.report.analysis import Row

REPORT = Path(stats.__file__).parent  # the report package, as imported


def test_the_report_reads_the_tasks_metric_records():
    assert stats.Metric is tasks.Metric
    assert stats.ACCURACY is tasks.get("classification").metric
    assert stats.LOSS is tasks.get("causal_lm").metric
    assert stats.LOSS.amount(0.01, exact=True) == "0.01 nats"
    assert stats.ACCURACY.amount(0.0234) == "2.34 pp"


def _compare(metric: tasks.Metric, reference: dict[int, float], gain: float) -> stats.Comparison:
    """`metric`'s values `gain` better than `reference` on every seed (with a little noise)."""
    noise = (0.001, -0.001, 0.0005, 0.0, -0.0005)
    method = {s: v + metric.sign * gain + noise[s] for s, v in reference.items()}
    (c,) = stats.holm_adjust([stats.paired_comparison(method, reference, metric)])
    return c


def test_a_loss_and_an_accuracy_are_compared_by_one_function_in_their_direction():
    from balora.report.claims import evidence

    accuracy = _compare(stats.ACCURACY, {s: 0.70 + 0.01 * s for s in range(5)}, 0.05)
    loss = _compare(stats.LOSS, {s: 3.84 + 0.01 * s for s in range(5)}, 0.05)
    assert accuracy.verdict == loss.verdict == stats.BETTER  # a higher accuracy, a lower loss
    assert accuracy.delta > 0 > loss.delta  # Δ is method − reference in the metric's own units
    assert loss.ci_high < 0
    worse = _compare(stats.LOSS, {s: 3.84 + 0.01 * s for s in range(5)}, -0.05)
    assert worse.verdict == stats.WORSE and worse.delta > 0
    # the same cells and sentence clause, each in its metric's unit
    assert tables.delta_text(accuracy).startswith("+5.00 [")
    assert tables.delta_text(loss).startswith("-0.0500 [")
    assert tables.mde_cell(loss) == f"{loss.mde:.4f}"
    cell = tables.COLUMNS["Verdict"](Row("r=8", "ba_lora", None, loss))
    assert cell == "better"
    assert evidence(loss, "Δ loss = -0.0500").startswith("; over 5 matched seeds Δ loss = -0.0500 (")


def test_the_report_does_not_branch_on_a_task_or_metric_name():
    """A task is one unit: the report reads a run's metric (and what its task asks for) from the task, so no module
    of the report names a task, nor compares anything with a metric's name."""
    named = set(tasks.names())
    metrics = {t.metric.name for t in tasks.all_tasks()}
    found = []
    for path in sorted(REPORT.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in named:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.Compare) and all(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                operands = [node.left, *node.comparators]
                found += [f"{path.name}:{node.lineno}: == {o.value!r}" for o in operands
                          if isinstance(o, ast.Constant) and o.value in metrics]
    assert not found


def test_a_number_that_rounds_to_zero_shows_its_first_digit_and_sign():
    """The paper printed an anytime interval as [−0.00, +6.69], a minus on a zero, and then as [0.00, +6.69] beside
    "inconclusive", an interval that reads as excluding 0. A non-zero value that rounds to zero is written down to
    its first digit with its sign, in every signed number of the report (differences, intervals, effect sizes,
    correlations); an exact zero, or one below the extra decimals, is written 0."""
    from dataclasses import replace

    from balora.report.claims import _rho

    accuracy = _compare(stats.ACCURACY, {s: 0.70 + 0.01 * s for s in range(5)}, 0.05)
    touching = replace(accuracy, ci_low=-0.00004, cohens_d=-0.001)
    assert tables.delta_text(touching) == f"+5.00 [-0.004, {tables.signed(touching.ci_high)}]"
    assert tables._d(touching) == "-0.001"
    assert stats.LOSS.signed(-0.00001) == "-0.00001" and stats.ACCURACY.signed(0.0) == "0.00"
    assert tables.signed(-0.00006) == "-0.01" and tables.signed(-1e-12) == "0.00"
    assert _rho(stats.Summary(-0.001, float("nan"), 1)) == "-0.001"
    assert stats.ACCURACY.signed(0.0001) == "+0.01"  # a non-zero keeps its sign

"""Selecting hyperparameters on validation: a sweep's `tune:` block and what its tuning runs decide.

A tuned grid names candidate values for one or more run fields (usually `learning_rate`) and tuning
seeds. For each cell, i.e. each method × setting × budget (everything that defines a run except the
seed and the tuned fields), every candidate is trained once per tuning seed as a *tuning run*
(`RunConfig.tuning`, scored on validation only). A candidate is *admissible* unless a run at it, on a
tuning seed or (once they have run) on an evaluation seed, ended at chance on validation (`at_chance`:
it predicts one class whatever the input, so it has not learnt the task, and a method's mean over
seeds would average a failure to train with real results). Among the admissible candidates (all of
them when none is) the selected one is the one with:

1. the highest mean over tuning seeds of the final validation accuracy (the last point of the
   validation curve, i.e. the model that training returns, which is the one a test would score);
2. on a tie (equal to 1e-9), the lowest mean final validation loss;
3. on a tie there too, the smallest candidate (e.g. the lower learning rate).

A grid may grow (`extend: N` in the `tune:` block): where a cell's selection is the smallest or largest
value of a numeric field of three or more, that cell's grid gets the next value on the grid's
geometric step past that end, its tuning runs run, and the selection is made again, until it lies
inside the grid or the field has N values more than the spec's (`Tune.grown`). The report then
leaves out evaluation runs at a value that is no longer selected (`superseded`).

The training length is selected too where a `tune:` block says `lengthen: N`: a cell's selection is
final only once it has also been trained, on the tuning seeds, for twice its epochs, at the same
values of the other fields, and that was not better (or N doublings past the spec's longest epochs
were reached). A longer candidate that wins is itself doubled, within the limit. Its runs mark
`epochs` as tuned; the cell's runs that do not are at the epochs the cell's config trains for, so
old and lengthened runs are candidates of one cell (`cell_key` leaves epochs out).

A causal LM has no accuracy: it is selected on the lowest mean final validation loss (token-weighted
cross-entropy on response tokens), ties again going to the smallest candidate.

The evaluation runs (every seed) then run only at the selected values; they record the tuned field
names in `RunConfig.tuned`, so the report knows that those values were selected, not fixed. Where one
of them ends at chance on validation, its candidate is no longer admissible: the cell selects again,
its evaluation runs run at the new value, and those at the old one are `superseded`. The rule reads
validation only, never test, and holds for every arm alike.

Convergence: an arm is *still rising* when the mean over its seeds of the validation accuracy at the
last evaluation exceeds the best mean at any earlier evaluation (step 0 included) by more than
`RISING_TOLERANCE` (0.5 pp, about four examples of an 872-example validation split). Its curve was not
flat at the end: more training might still change the comparison.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from balora import tasks
from balora.config import RunConfig, protocol

RISING_TOLERANCE = 0.005
AT_CHANCE_TOLERANCE = 0.02
TIE = 1e-9


@dataclass(frozen=True)
class Tune:
    """A `tune:` block: candidate values per tuned field (their cross product is the candidate list), the
    tuning seeds, how many values a cell's grid may grow by beyond its ends (`extend`) and how many
    times its selection's epochs may double (`lengthen`), see `grown`; `longer` holds the lengthened
    candidates a cell's grid has grown by."""

    values: dict[str, list[Any]]
    seeds: list[int]
    extend: int = 0
    lengthen: int = 0
    longer: tuple[dict[str, Any], ...] = ()

    @property
    def fields(self) -> list[str]:
        return list(self.values)

    def candidates(self) -> list[dict[str, Any]]:
        return [dict(zip(self.values, point)) for point in itertools.product(*self.values.values())] + list(self.longer)

    def grown(self, selected: dict[str, Any], grid: Tune, epochs: int) -> Tune | None:
        """This cell's grid grown from its selection `selected` (the cell's fields' values; a cell's config
        trains for `epochs` where the candidates do not set them):

        - past the end it lies at: for each tuned numeric field of three or more values whose selected value
          is its smallest or largest, the next value on the grid's geometric step there (5e-4 after 1e-3,
          2e-3, ... gives 2.5e-4), while the field holds at most `extend` values more than in `grid`, the
          spec's own;
        - otherwise, with `lengthen`, by the selection at twice its epochs, unless that was tried or is more
          than `lengthen` doublings past the spec's longest epochs (so only a selection the grid no longer
          moves is lengthened).

        None when nothing grows: the selection is final."""
        values, grew = dict(self.values), False
        for name in self.fields:
            ordered = sorted(values[name])
            if (len(ordered) < 3 or len(ordered) - len(grid.values[name]) >= self.extend
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in ordered)):
                continue
            value = selected[name]
            beyond = (ordered[0] ** 2 / ordered[1] if value == ordered[0] else
                      ordered[-1] ** 2 / ordered[-2] if value == ordered[-1] else None)
            if beyond is not None:
                beyond = type(value)(float(f"{beyond:.6g}"))
                values[name] = sorted({*values[name], beyond})
                grew = True
        if grew:
            return replace(self, values=values)
        twice = {**{name: selected[name] for name in self.fields}, "epochs": 2 * selected.get("epochs", epochs)}
        tried = [{"epochs": epochs, **candidate} for candidate in self.candidates()]
        if not self.lengthen or twice in tried or twice["epochs"] > max(grid.values.get("epochs", [epochs])) * 2 ** self.lengthen:
            return None
        return replace(self, longer=(*self.longer, twice))


def cell_key(config: dict[str, Any]) -> str:
    """The cell a run belongs to: its protocol (`config.protocol`: fields a stored run predates count at
    their default) without the tuning marks, the tuned fields' values and the epochs (which a cell may
    lengthen, `Tune.lengthen`, marking them tuned in its longer runs only), so tuning and evaluation runs
    of one method × setting × budget share it, whichever balora version stored them."""
    tuned = set(config.get("tuned") or [])
    rest = {k: v for k, v in protocol(config).items() if k not in tuned and k not in ("tuning", "tuned", "epochs")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_fields(results: list[dict[str, Any]]) -> list[str]:
    """The fields a cell's candidates assign: every field some run of the cell tuned, in the order the runs
    list them (`epochs` last where only lengthened runs tuned it)."""
    return list(dict.fromkeys(name for result in results for name in result["config"].get("tuned") or []))


def grid_fields(results: list[dict[str, Any]]) -> list[str]:
    """The fields of a cell's grid: those every tuning run of the cell tuned (`cell_fields` without the epochs
    that only its lengthened runs tuned)."""
    tuned = [set(r["config"].get("tuned") or []) for r in results if r["config"].get("tuning")]
    return [name for name in cell_fields(results) if all(name in names for names in tuned)]


def candidate_of(config: dict[str, Any], fields: list[str]) -> tuple:
    """A run's values of `fields` (its cell's, `cell_fields`): a field it did not tune, such as the epochs of a
    run that was not lengthened, at the value it trained with."""
    values = protocol(config)
    return tuple(values[name] for name in fields)


def with_candidate(config: RunConfig, candidate: dict[str, Any]) -> RunConfig:
    """`config` at a candidate's values. A candidate's epochs where `config` does not tune them are set, and
    marked tuned, only where they differ from the epochs `config` trains for (a lengthened candidate);
    otherwise the config is left as it was, so that runs stored before lengthening keep their keys."""
    values, tuned = dict(candidate), list(config.tuned or [])
    if "epochs" in values and "epochs" not in tuned:
        epochs = values.pop("epochs")
        if epochs != config.train_epochs:
            values["epochs"], values["tuned"] = epochs, [*tuned, "epochs"]
    return config.with_values(**values)


MIN_CURVE_POINTS = 3  # an anytime area from fewer validation points says little about the path


def primary_metric(result: dict[str, Any]) -> str:
    """The validation metric a run's curves are read by: its task's (`Task.metric`; a causal LM's loss, a
    classifier's accuracy)."""
    return tasks.of_result(result).metric.name


def validation_curve(result: dict[str, Any], metric: str | None = None) -> list[tuple[int, float]]:
    """(step, value) of the run's validation curve for `metric` (its primary metric by default), in step
    order; points without the metric are left out."""
    metric = metric or primary_metric(result)
    points = (result.get("curves") or {}).get("validation") or []
    return sorted((int(step), float(values[metric])) for step, values in points if metric in values)


def anytime_value(curve: list[tuple[int, float]], steps: int | None, horizon: int | None = None) -> float:
    """The anytime metric, read by the report and by a sweep's confirmation stage: the area under `curve`
    over its first `horizon` optimizer steps (all `steps` where None) divided by `horizon` (trapezoid rule,
    the curve read linearly between its points): the mean validation metric over those steps. Arms compared
    on it share one horizon, the shortest training among them (`matched_horizon`), so that an arm trained
    twice as long is not read at twice the pace. NaN for fewer than `MIN_CURVE_POINTS` points up to the
    horizon, or a curve that does not run from step 0 to `steps`."""
    if not steps or not curve or curve[0][0] != 0 or curve[-1][0] != steps:
        return math.nan
    horizon = steps if horizon is None else min(horizon, steps)
    points = [(s, v) for s, v in curve if s < horizon]
    after = next((i for i, (s, _) in enumerate(curve) if s >= horizon), None)
    if after is not None:  # the value at the horizon, read between the points around it
        (s0, v0), (s1, v1) = curve[max(after - 1, 0)], curve[after]
        points.append((horizon, v1 if s1 == s0 else v0 + (v1 - v0) * (horizon - s0) / (s1 - s0)))
    if horizon <= 0 or len(points) < MIN_CURVE_POINTS:
        return math.nan
    return sum((b[0] - a[0]) / horizon * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:]))


def matched_horizon(step_counts: list[int | None]) -> int | None:
    """The steps over which runs of unequal length compare on the anytime metric: the fewest any of them
    trained (None where none says)."""
    known = [int(s) for s in step_counts if s]
    return min(known) if known else None


def final_validation(result: dict[str, Any]) -> dict[str, float]:
    """Validation metrics at the last evaluation of a stored run."""
    return result["curves"]["validation"][-1][1]


def at_chance(result: dict[str, Any]) -> bool:
    """Whether a classifier's final validation balanced accuracy (macro recall) is within
    `AT_CHANCE_TOLERANCE` (2 pp) of chance, 1 / number of classes: what a model gets that predicts (nearly)
    one class whatever the input, whichever class that is and however unbalanced the split. False for a
    run without it (a causal LM)."""
    final, labels = final_validation(result), result.get("data", {}).get("labels")
    return "recall" in final and bool(labels) and float(final["recall"]) <= 1 / len(labels) + AT_CHANCE_TOLERANCE


def still_rising(curves: list[list[tuple[int, float]]], tolerance: float = RISING_TOLERANCE) -> bool:
    """Whether the mean curve over seeds (curves aligned by evaluation index) ends more than `tolerance`
    above its best earlier point; False when there is no earlier point to compare with."""
    length = min((len(c) for c in curves), default=0)
    if length < 2:
        return False
    means = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
    return means[-1] > max(means[:-1]) + tolerance


def accuracy_curve(result: dict[str, Any]) -> list[tuple[int, float]]:
    return [(int(step), float(values["accuracy"])) for step, values in result["curves"]["validation"]]


@dataclass
class Score:
    """One candidate of one cell: final validation accuracy and loss per tuning seed, and the seeds (tuning
    or evaluation) whose run ended at chance on validation."""

    candidate: tuple
    lengthened: bool = False  # a longer training of a selection (`Tune.lengthen`), not a candidate of the grid
    accuracy: dict[int, float] = field(default_factory=dict)  # by seed
    loss: dict[int, float] = field(default_factory=dict)
    curves: list[list[tuple[int, float]]] = field(default_factory=list)
    at_chance: list[int] = field(default_factory=list)

    @property
    def admissible(self) -> bool:
        return not self.at_chance

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracy.values()) if self.accuracy else math.nan

    @property
    def sd(self) -> float:
        return statistics.stdev(self.accuracy.values()) if len(self.accuracy) > 1 else math.nan

    @property
    def mean_loss(self) -> float:
        return statistics.fmean(self.loss.values()) if self.loss else math.nan

    @property
    def sd_loss(self) -> float:
        return statistics.stdev(self.loss.values()) if len(self.loss) > 1 else math.nan

    @property
    def by_loss(self) -> bool:
        """Scored on loss alone: a causal LM's runs, which have no accuracy."""
        return not self.accuracy

    def objective(self) -> tuple[int, ...]:
        """What selection minimises, rounded to TIE (module docstring)."""
        loss = round(self.mean_loss / TIE)
        return (loss,) if self.by_loss else (-round(self.mean / TIE), loss)

    @property
    def rising(self) -> bool:
        return still_rising(self.curves)


def score(results: list[dict[str, Any]]) -> list[Score]:
    """Scores of the candidates among the tuning runs of one cell, in candidate order. The cell's evaluation
    runs among `results` count only where they ended at chance (`Score.at_chance`). Candidates are values of
    the cell's fields (`cell_fields`)."""
    fields, grid = cell_fields(results), set(grid_fields(results))
    scores: dict[tuple, Score] = {}
    for result in results:
        config = result["config"]
        if not config.get("tuning"):
            continue
        candidate = candidate_of(config, fields)
        entry = scores.setdefault(candidate, Score(candidate, lengthened=not set(config.get("tuned") or []) <= grid))
        final = final_validation(result)
        entry.loss[int(config["seed"])] = float(final["loss"])
        if "accuracy" in final:  # a classifier (a causal LM is scored on loss alone)
            entry.accuracy[int(config["seed"])] = float(final["accuracy"])
            entry.curves.append(accuracy_curve(result))
    for result in results:
        entry = scores.get(candidate_of(result["config"], fields))
        if entry is not None and at_chance(result):
            entry.at_chance.append(int(result["config"]["seed"]))
    return sorted(scores.values(), key=lambda s: _order(s.candidate))


def _order(candidate: tuple) -> tuple:
    return tuple((value is None, value if value is not None else 0) for value in candidate)


def choose(scores: list[Score]) -> Score:
    """The selected candidate: among the admissible ones (all when none is), best mean accuracy (a causal LM:
    none), then lowest mean loss, then the smallest (module docstring)."""
    return min([s for s in scores if s.admissible] or scores, key=lambda s: (s.objective(), _order(s.candidate)))


@dataclass
class CellTuning:
    """What the tuning runs of one cell decided, for the report's appendix."""

    cell: str
    fields: list[str]
    example: dict[str, Any]  # one tuning run's config (method, setting, budget)
    scores: list[Score]
    selected: Score
    grid_fields: list[str]  # the fields of the cell's grid (`grid_fields`), a part of `fields`

    def on_grid(self, candidate: tuple) -> tuple:
        """A candidate's values of the grid's fields."""
        return tuple(candidate[self.fields.index(name)] for name in self.grid_fields)

    @property
    def at_edge(self) -> bool:
        """For some tuned numeric field with three or more values in the grid, the selected value is the
        smallest or largest: the best may lie outside the grid, so a wider one might select otherwise.
        (With two values both are ends; such a field is not flagged. Epochs are `at_longest`'s.)"""
        for index, name in enumerate(self.fields):
            values = {s.candidate[index] for s in self.scores}
            if name == "epochs":
                continue
            if len(values) >= 3 and all(isinstance(v, (int, float)) for v in values) \
                    and self.selected.candidate[index] in (min(values), max(values)):
                return True
        return False

    @property
    def longer_not_better(self) -> bool:
        """Training for more epochs than the selection's, at its values of the other fields, was tried on the
        tuning seeds and not selected: the selection's length was checked against a longer one."""
        if "epochs" not in self.fields:
            return False
        index, selected = self.fields.index("epochs"), self.selected.candidate
        return any(s.candidate[index] > selected[index]
                   and s.candidate[:index] + s.candidate[index + 1:] == selected[:index] + selected[index + 1:]
                   for s in self.scores)

    @property
    def at_longest(self) -> bool:
        """The cell tried more than one number of epochs and selected the largest: longer training might
        still be better (a lengthening limit, `Tune.lengthen`, or a fixed choice of epochs stopped it)."""
        if "epochs" not in self.fields:
            return False
        index = self.fields.index("epochs")
        tried = {s.candidate[index] for s in self.scores}
        return len(tried) > 1 and self.selected.candidate[index] == max(tried)


def tuning_cells(results: list[dict[str, Any]]) -> list[CellTuning]:
    """Group stored tuning runs (and the evaluation runs of their cells) by cell and select each cell's
    candidate, as the sweep does."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if result["config"].get("tuning"):
            cells.setdefault(cell_key(result["config"]), []).append(result)
    for result in results:
        if not result["config"].get("tuning") and result["config"].get("tuned") \
                and (key := cell_key(result["config"])) in cells:
            cells[key].append(result)
    out = []
    for key, runs in cells.items():
        scores = score(runs)
        out.append(CellTuning(key, cell_fields(runs), runs[0]["config"], scores, choose(scores), grid_fields(runs)))
    return out


def superseded(results: list[dict[str, Any]]) -> set[str]:
    """Keys of the evaluation runs among `results` at tuned values their cell no longer selects: the cell's
    grid grew after they ran (`Tune.grown`) and the stored tuning runs now select another candidate, or one
    of them ended at chance on validation, so that their value is no longer admissible."""
    cells = {cell.cell: cell for cell in tuning_cells(results)}
    return {str(r.get("key")) for r in results
            if not r["config"].get("tuning") and r["config"].get("tuned")
            and (cell := cells.get(cell_key(r["config"]))) is not None
            and cell.selected.candidate != candidate_of(r["config"], cell.fields)}

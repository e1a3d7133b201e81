"""Sweep specs: a YAML grid of runs, read and validated into planned runs.

A spec has shared settings (`base`), per-method `overrides`, and one or more `grids`; each grid
maps RunConfig fields to lists of values and expands to their cross product. Identical configs
across grids run once (same config hash). Grids may share a name (one experiment in several settings),
but one that repeats a run of an earlier grid of its name, or an axis that lists a value twice, is refused
as a copy made by mistake.

Each of them takes the run's settings as `RunConfig.nested()` shows them, or flat as they are stored: the
common fields, then a section per unit (`balora.config.SECTIONS`), e.g.

    base: {model: minilm, budget_rank: 8, task: {name: classification, label_column: label}}
    overrides: {ba_lora_dynamic: {method: {realloc_every: 25}}}
    grids:
      - {method: {name: ba_lora, strategy: [proportional, top_k]}, seed: [42, 43, 44]}
      - {method: lora, base_transform: {quant: [nf4, int4]}, seed: [42, 43, 44]}

In a grid a section's values may be lists, as a flat field's may. A field written in the wrong section, or
twice (flat and by section), is an error naming its line and the section it belongs in.

A `tune:` block (for the whole spec, or per grid; `tune: null` in a grid turns it off) selects fields
on validation, e.g. `tune: {learning_rate: [5.0e-4, 1.0e-3, 2.0e-3, 4.0e-3], seeds: [0, 1]}` (a section's
fields by section or flat, as in a grid: `method: {allocation_power: [0.5, 1.0]}`): the
spec then plans tuning runs (every cell × candidate × tuning seed) as well as its evaluation runs
(`balora.sweeps` runs them in two phases).

A `confirm:` block (for the whole spec, or per grid; `confirm: null` in a grid turns it off) adds a
confirmation stage, e.g. `confirm: {seeds: [45, 46, 47, 48, 49, 50, 51], gain: 0.005}`: once an arm's
evaluation runs (its screening seeds) and those of the reference arm of its setting (`reference:`, default
plain LoRA) are done, the arm runs on the confirmation seeds too, and so does the reference, if its mean
final *validation* value, or its mean anytime value (the area under its validation curve), beats the
reference's by at least `gain` (accuracy: a fraction, 0.005 = 0.5 pp; loss: nats, lower is better). Only
validation decides what is confirmed, never test (`balora.sweeps.confirmations`).

An optional `equivalence_margin` declares the margin of the report's equivalence tests, in the units
of the metric compared: a fraction of accuracy (0.01 = ±1 pp) for classifiers, nats of test loss for a
causal LM. Without it the report uses the metric's default (±1 pp, ±0.01 nats).

An optional `anytime: true` asks the report for its "Anytime performance" section (the area under each
run's validation curve, and the steps to reach LoRA's final validation value; `balora.report.anytime`).

An optional `hypotheses:` list declares what the study tests, each entry a `Hypothesis` (which arm against
which reference, where, by which test, gain and alpha), e.g. the paper preset's success criteria:

    hypotheses:
      - name: BA-LoRA beats LoRA by ≥ 0.5 pp at every budget
        arm: ba_lora                            # reference: lora (the default)
        where: {budget_rank: [4, 8, 16], shots: null}
        gain: 0.005                             # test: difference (the default), alpha: 0.05 (the default)

A hypothesis's `where` reads sections as a grid does (`where: {method: {strategy: proportional}}`).
A hypothesis is about one metric, in whose units its gain is: that of the task its `where` names (`where:
{task: causal_lm}`: test loss, where better is lower), else the fallback task's, accuracy. The report checks
them on its own comparisons in that metric and marks each met, not met or not testable (`balora.report.criteria`).

These three keys are the spec's `ReportSpec`. A run file records its sweep's name, not its spec, so the
report finds them by that name (`report_spec`): among the specs given by file (`given_spec`, `balora report
--spec FILE`), then among the presets.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from balora import method_registry, tasks
from balora.config import RunConfig, check_field, flatten, option_defaults, tunable
from balora.errors import BaloraError, read_text
from balora.tuning import Tune, cell_key, with_candidate

# A preset is a spec file shipped in balora/presets/: adding the file is all it takes.
PRESETS = tuple(sorted(f.name.removesuffix(".yaml") for f in resources.files("balora.presets").iterdir()
                       if f.name.endswith(".yaml")))
SPEC_KEYS = {"name", "description", "base", "overrides", "grids", "tune", "confirm", "results_dir", "equivalence_margin",
             "anytime", "hypotheses"}
SWEEP_SET = ("tuned", "tuning")  # run fields only a sweep sets


@dataclass(frozen=True)
class Confirm:
    """A confirmation stage (module docstring): the seeds an arm that beats `reference` by `gain` on
    validation runs on too."""

    seeds: tuple[int, ...]
    gain: float
    reference: str = "lora"


TESTS = ("difference", "equivalence", "trend")
# The dimensions the report's tables run over: budget tables (one per setting, a row per budget) and few-shot
# tables (one per few-shot family and budget, a row per shot count); Holm's adjustment runs within a table.
DIMENSIONS = ("budget_rank", "shots")
HYPOTHESIS_USAGE = ("{name: BA-LoRA beats LoRA at every budget, arm: ba_lora, reference: lora, test: difference, "
                    "where: {budget_rank: [4, 8, 16], shots: null}, gain: 0.005, alpha: 0.05}")


@dataclass(frozen=True)
class Hypothesis:
    """One hypothesis a spec declares (module docstring), checked by the report on the comparisons of its
    tables: each case (a value of `dimension` in `where`, else every row of the table) is the table's paired
    comparison of `arm` with `reference`, Holm-adjusted within the table."""

    name: str = field(metadata={"help": "How the report names it, e.g. 'BA-LoRA beats LoRA at every budget'."})
    arm: str = field(metadata={"help": "The method compared, e.g. ba_lora."})
    reference: str = field(default="lora", metadata={
        "help": "What it is compared with, as the report's tables compare: lora, or ba_lora for one of its ablations."})
    test: str = field(default="difference", metadata={
        "help": "difference: the arm better by at least gain, with Holm p < alpha; equivalence: |Δ| within the "
                "spec's equivalence_margin, Holm-adjusted TOST p < alpha; trend: the gap widens as data shrinks "
                "(slope of the per-seed Δ against log2(shots) < 0 with p < alpha, over shots)."})
    where: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Run settings of the compared runs: a value, null for unset, or a list. A list of the dimension "
                "compared over is the cases (each must hold); a list of another setting admits any of its values."})
    over: str | None = field(default=None, metadata={
        "help": "The dimension compared over: budget_rank (the budget tables) or shots (the few-shot tables); "
                "default: the one where lists, else budget_rank."})
    gain: float | None = field(default=None, metadata={
        "help": "difference only: the least Δ that counts, in the metric's units (0.005 = 0.5 pp); default 0."})
    alpha: float = field(default=0.05, metadata={"help": "The significance level, 0 < alpha < 1."})

    def __post_init__(self) -> None:
        def refuse(problem: str) -> None:
            raise BaloraError(f"hypothesis {self.name!r}: {problem}; e.g. {HYPOTHESIS_USAGE}")

        if not isinstance(self.name, str) or not self.name.strip():
            refuse("name is the text the report names it by")
        for role in ("arm", "reference"):
            if method_registry.find(getattr(self, role)) is None:
                refuse(f"{role} '{getattr(self, role)}' is not a method; choose from {', '.join(method_registry.names())}")
        if self.test not in TESTS:
            refuse(f"test '{self.test}' is not a test; choose from {', '.join(TESTS)}")
        if self.over is not None and self.over not in DIMENSIONS:
            refuse(f"over '{self.over}' is not a dimension of the report's tables; choose from {', '.join(DIMENSIONS)}")
        if not isinstance(self.where, dict):
            refuse("where is a mapping of run settings to a value or a list of values")
        for key, value in self.where.items():
            if not _axis(key, value):
                refuse(f"where lists no value of {key}")
            for one in _axis(key, value):
                check_field(key, one, f"hypothesis {self.name!r}, where")
        listed = [d for d in DIMENSIONS if isinstance(self.where.get(d), list)]
        if len(listed) > 1 or (self.over is not None and listed and listed != [self.over]):
            refuse(f"where lists cases of {' and '.join(listed)}; a hypothesis runs over one dimension (over)")
        ablation = self.reference == "ba_lora" and self.arm in method_registry.group("ablation")
        if self.arm == self.reference or not (self.reference == "lora" or ablation):
            refuse(f"the report compares every method with lora, and BA-LoRA's ablations with ba_lora, "
                   f"not {self.arm} with {self.reference}")
        if self.dimension == "shots" and (self.reference != "lora" or self.arm not in method_registry.group("main")):
            refuse(f"the few-shot tables compare the main methods ({', '.join(method_registry.group('main'))}) "
                   "with lora")
        named = self.named_tasks
        if unknown := [task for task in named if task not in tasks.names()]:
            refuse(f"where's task '{unknown[0]}' is not a task; choose from {', '.join(tasks.names())}")
        if len({tasks.get(task).metric for task in named}) > 1:
            refuse(f"where names tasks read by different metrics ({', '.join(named)}); a hypothesis's gain is in "
                   "one metric's units")
        if self.test == "trend" and self.dimension != "shots":
            refuse("a trend is the gap's slope over shots: set over: shots, or list the shot counts in where")
        if self.gain is not None and (self.test != "difference" or isinstance(self.gain, bool)
                                      or not isinstance(self.gain, int | float) or not 0 <= self.gain < math.inf):
            refuse(f"gain is the least Δ a difference test counts, a number ≥ 0 (0.005 = 0.5 pp), got {self.gain!r}"
                   if self.test == "difference" else f"gain is for difference tests, not {self.test} (an "
                   "equivalence test's margin is the spec's equivalence_margin)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not 0 < self.alpha < 1:
            refuse(f"alpha is a significance level between 0 and 1, got {self.alpha!r}")

    @property
    def dimension(self) -> str:
        """The dimension compared over: `over`, else the one `where` lists, else budget_rank."""
        return self.over or next((d for d in DIMENSIONS if isinstance(self.where.get(d), list)), DIMENSIONS[0])

    @property
    def cases(self) -> list[Any] | None:
        """The values of `dimension` that each must hold; None: every one the table has."""
        return _axis(self.dimension, self.where[self.dimension]) if self.dimension in self.where else None

    @property
    def filters(self) -> dict[str, list[Any]]:
        """The other settings of `where`, each with the values it admits."""
        return {key: _axis(key, value) for key, value in self.where.items() if key != self.dimension}

    @property
    def least_gain(self) -> float:
        return float(self.gain or 0.0)

    @property
    def metric(self) -> tasks.Metric:
        """The metric the hypothesis is about (module docstring): that of the task `where` names, else the
        fallback task's, so that a hypothesis written before tasks were read by another metric keeps its meaning."""
        return (tasks.get(self.named_tasks[0]) if self.named_tasks else tasks.fallback()).metric

    @property
    def named_tasks(self) -> list[str]:
        """The tasks `where` names; none: it leaves the task open."""
        return _axis("task", self.where["task"]) if "task" in self.where else []


HYPOTHESIS_KEYS = tuple(f.name for f in fields(Hypothesis))


@dataclass
class Planned:
    """A run of the evaluation phase (or, from `Spec.tuning_runs`, of the tuning phase). With `tune`,
    the config's tuned fields hold the first candidate until selection replaces them."""

    config: RunConfig
    grid: str
    tune: Tune | None = None
    confirm: Confirm | None = None

    @property
    def cell(self) -> str:
        return cell_key(self.config.to_dict())

    def tuning_configs(self, tune: Tune) -> list[RunConfig]:
        """The cell's tuning runs under `tune`: every candidate on every tuning seed."""
        return [replace(with_candidate(self.config, c), seed=s, tuning=True) for c in tune.candidates() for s in tune.seeds]


@dataclass(frozen=True)
class ReportSpec:
    """The part of a spec that the report of its runs reads (module docstring)."""

    equivalence_margin: float | None = None  # the equivalence tests' margin (None: the metric's default)
    anytime: bool = False  # the anytime section (area under the validation curve, steps to LoRA's final)
    hypotheses: tuple[Hypothesis, ...] = ()  # what the report checks (met, not met, not testable)


@dataclass
class Spec:
    name: str
    description: str
    runs: list[Planned]
    results_dir: str | None = None  # where run files go by default (`--results-dir` overrides)
    report: ReportSpec = field(default_factory=ReportSpec)  # what the report of its runs reads

    def tuning_runs(self, grown: Mapping[str, Tune] | None = None) -> list[Planned]:
        """Every tuned cell × candidate × tuning seed, once each; a cell in `grown` (by cell key) with the
        candidates of its grown grid (`Tune.grown`) instead of the spec's."""
        planned: dict[str, Planned] = {}
        for p in self.runs:
            tune = (grown or {}).get(p.cell, p.tune)
            for config in p.tuning_configs(tune) if tune else []:
                planned.setdefault(config.key(), Planned(config, p.grid))
        return list(planned.values())


def _lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line, so errors can name the line."""
    found = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found.update(_lines(value, path + (key.value,)))
            found[path + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.update(_lines(item, path + (i,)))
    return found


def _read(source: str) -> tuple[str, str]:
    if source in PRESETS:
        return f"preset '{source}'", resources.files("balora.presets").joinpath(f"{source}.yaml").read_text()
    path = Path(source)
    if not path.is_file():
        raise BaloraError(f"no sweep spec '{source}': not a file and not a preset ({', '.join(PRESETS)})")
    return str(path), read_text(path, "sweep spec")


def _parse_only(only: list[str]) -> dict[str, str]:
    pairs = {}
    for item in only:
        if "=" not in item:
            raise BaloraError(f"--only takes KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        pairs[key] = value
    return pairs


def same_value(value: Any, wanted: Any) -> bool:
    """Whether a run's setting has the value a spec or the command line asks for: numbers by value (4 is 4.0)."""
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(wanted, numbers) and not isinstance(wanted, bool):
        return float(value) == float(wanted)
    return value == wanted


def _kept(value: Any, text: str) -> bool:
    """Whether `--only KEY=text` keeps a run whose setting is `value`: text as printed, or the value it reads as
    in YAML (a plug-in's float option given as 4, null for None)."""
    try:
        written = yaml.safe_load(text)
    except yaml.YAMLError:
        written = text
    return str(value) == text or same_value(value, written)


def load_spec(source: str, only: list[str] | None = None) -> Spec:
    """Read and validate a spec (file path or preset name) and expand its grids."""
    where, text = _read(source)
    try:
        document = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BaloraError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BaloraError(f"{where}: a sweep spec is a mapping with keys {', '.join(sorted(SPEC_KEYS))}")
    lines = _lines(document)

    def at(*path: Any) -> str:
        return f"{where}, line {lines.get(path, lines[()])}"

    unknown = set(data) - SPEC_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise BaloraError(f"{at(key)}: unknown key '{key}'; a spec has {', '.join(sorted(SPEC_KEYS))}")
    grids = data.get("grids") or []
    if not isinstance(grids, list) or not grids:
        raise BaloraError(f"{at('grids')}: 'grids' must be a non-empty list of grids")
    spec_tune = _tune(data.get("tune"), at, ("tune",))
    spec_confirm = _confirm(data.get("confirm"), at, ("confirm",), method_registry.names())

    def check_method(method: Any, *path: Any) -> None:
        if method_registry.find(method) is None:
            raise BaloraError(f"{at(*path)}: unknown method '{method}'; choose from {', '.join(method_registry.names())}")

    # Check every value where it is written, so that the error names its line.
    def check_settable(key: str, *path: Any) -> None:
        if key in SWEEP_SET:
            raise BaloraError(f"{at(*path)}: '{key}' is set by the sweep itself; select values on validation "
                              "with a tune: block")

    base, base_at = _flat(data.get("base") or {}, at, "base")
    for key, value in base.items():
        check_settable(key, *base_at[key])
        check_field(key, value, at(*base_at[key]))
    overrides, overrides_at = {}, {}
    for method, values in (data.get("overrides") or {}).items():
        check_method(method, "overrides", method)
        overrides[method], overrides_at[method] = _flat(values or {}, at, "overrides", method)
        for key, value in overrides[method].items():
            check_settable(key, *overrides_at[method][key])
            check_field(key, value, at(*overrides_at[method][key]))
    filters = _parse_only(only or [])
    planned: dict[str, Planned] = {}
    first_grid: dict[str, tuple[int, str]] = {}  # the grid (index, name) that planned each run first, by key
    for index, grid in enumerate(grids):
        if not isinstance(grid, dict):
            raise BaloraError(f"{at('grids', index)}: each grid is a mapping of field: [values]")
        grid = dict(grid)
        label = str(grid.pop("name", f"grid{index}"))
        tune = _tune(grid.pop("tune"), at, ("grids", index, "tune")) if "tune" in grid else spec_tune
        confirm = (_confirm(grid.pop("confirm"), at, ("grids", index, "confirm"), method_registry.names()) if "confirm" in grid
                   else spec_confirm)
        flat, grid_at = _flat(grid, at, "grids", index)
        axes = {k: _axis(k, v) for k, v in flat.items()}
        for key, values in axes.items():
            check_settable(key, *grid_at[key])
            twice = next((v for i, v in enumerate(values) if repr(v) in map(repr, values[:i])), None)
            if twice is not None:
                raise BaloraError(f"{at(*grid_at[key])}: grid {label} lists {key} {twice} twice; list each value once")
            for value in values:
                check_field(key, value, at(*grid_at[key]))
                if key == "method":
                    check_method(value, *grid_at[key])
        if "method" not in axes:
            check_method(base.get("method", RunConfig.method), *base_at.get("method", ("base",)))
        methods = axes.get("method", [base.get("method", RunConfig.method)])
        for name in tune.fields if tune else []:
            # A tuned field given a fixed value too would be ambiguous: refuse it where it is written.
            fixed = [grid_at[name]] if name in axes else [base_at[name]] if name in base else [
                overrides_at[m][name] for m in methods if name in overrides.get(m, {})]
            if fixed:
                raise BaloraError(f"{at(*fixed[0])}: '{name}' is tuned in grid {label}; remove its fixed value")
            if name in filters:
                raise BaloraError(f"--only {name}=...: '{name}' is tuned (selected on validation), not chosen")
        tuned = {"tuned": tune.fields, **tune.candidates()[0]} if tune else {}
        for point in itertools.product(*axes.values()):
            values = dict(zip(axes, point))
            method = values.get("method", base.get("method", RunConfig.method))
            config = tasks.with_task_defaults(RunConfig.from_dict({**base, **values, **(overrides.get(method) or {}), **tuned},
                                                            where=at("grids", index)))
            # Grids may share a name (one experiment in several settings) and different grids may plan the same
            # run (it runs once), but a grid repeating a run of another of its name is a copy made by mistake.
            first, name = first_grid.setdefault(config.key(), (index, label))
            if first != index and name == label:
                raise BaloraError(f"{at('grids', index)}: grid {label} plans the run {config.method}, seed {config.seed} "
                                  f"({config.key()}) that grid {label} on line {lines[('grids', first)]} already plans; "
                                  "remove the repeated grid, or the values it repeats")
            if all(_kept(getattr(config, k, None), v) for k, v in filters.items()):
                if confirm is not None and config.seed in confirm.seeds:
                    raise BaloraError(f"{at('grids', index, 'seed')}: grid {label} runs seed {config.seed}, one of its "
                                      "confirmation seeds; a confirmation seed runs only for arms that qualify")
                planned.setdefault(config.key(), Planned(config, label, tune, confirm))
    for key in filters:
        if key not in option_defaults():
            raise BaloraError(f"--only {key}=...: '{key}' is not a run setting")
    results_dir = data.get("results_dir")
    if results_dir is not None and not isinstance(results_dir, str):
        raise BaloraError(f"{at('results_dir')}: results_dir is a folder path, e.g. results/{data.get('name', 'NAME')}")
    return Spec(str(data.get("name", source)), str(data.get("description", "")), list(planned.values()), results_dir,
                _report_spec(data, at))


def _flat(values: Any, at: Any, *path: Any) -> tuple[dict[str, Any], dict[str, tuple]]:
    """A spec entry (`base`, an override, a grid, a `tune:` block, a hypothesis's `where`) in RunConfig's flat
    fields, nested or flat as written, with the path each field is written at, so that a check names its line."""
    if not isinstance(values, Mapping):
        raise BaloraError(f"{at(*path)}: '{path[0]}' is a mapping of run settings, by section or flat")
    flat, written = flatten(values, lambda *keys: at(*path, *keys))
    return flat, {name: (*path, *keys) for name, keys in written.items()}


def _report_spec(data: Mapping, at: Any) -> ReportSpec:
    return ReportSpec(_margin(data.get("equivalence_margin"), at("equivalence_margin")),
                      _anytime(data.get("anytime"), at("anytime")), _hypotheses(data.get("hypotheses"), at))



def _hypotheses(block: Any, at: Any) -> tuple[Hypothesis, ...]:
    """A `hypotheses:` list, each entry checked where it is written; absent or null: none."""
    if block is None:
        return ()
    if not isinstance(block, list):
        raise BaloraError(f"{at('hypotheses')}: 'hypotheses' is a list of hypotheses, e.g. - {HYPOTHESIS_USAGE}")
    found: list[Hypothesis] = []
    for index, entry in enumerate(block):
        if not isinstance(entry, dict) or set(entry) - set(HYPOTHESIS_KEYS) or not {"name", "arm"} <= set(entry):
            unknown = sorted(set(entry) - set(HYPOTHESIS_KEYS)) if isinstance(entry, dict) else []
            problem = f"unknown key '{unknown[0]}'" if unknown else "each hypothesis is a mapping with a name and an arm"
            raise BaloraError(f"{at('hypotheses', index)}: {problem}; a hypothesis has {', '.join(HYPOTHESIS_KEYS)}, "
                              f"e.g. {HYPOTHESIS_USAGE}")
        if isinstance(entry.get("where"), Mapping):  # by section or flat, as the grids are written
            entry = {**entry, "where": _flat(entry["where"], at, "hypotheses", index, "where")[0]}
        try:
            hypothesis = Hypothesis(**entry)
        except BaloraError as err:
            raise BaloraError(f"{at('hypotheses', index)}: {err}") from None
        if hypothesis.name in (h.name for h in found):
            raise BaloraError(f"{at('hypotheses', index)}: a second hypothesis named {hypothesis.name!r}; name each once")
        found.append(hypothesis)
    return tuple(found)


def _margin(value: Any, where: str) -> float | None:
    """A declared equivalence margin: a positive number, or None where the spec declares none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise BaloraError(f"{where}: equivalence_margin is a positive number in the compared metric's units "
                          f"(0.01: ±1 pp of accuracy, or ±0.01 nats of test loss), got {value!r}")
    return float(value)


def _anytime(value: Any, where: str) -> bool:
    """A declared `anytime`: true or false (absent: false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BaloraError(f"{where}: anytime is true or false (true: the report adds its anytime section), got {value!r}")
    return value


# Specs given by file to the report being built (`given_spec`, `balora report --spec FILE`): a run file records
# its sweep's name, not its spec, so only a preset or a spec given here can be found by that name.
_GIVEN: ContextVar[tuple[Spec, ...]] = ContextVar("given_specs", default=())


@contextmanager
def given_spec(spec: Spec | None) -> Iterator[None]:
    """Within the block, `report_spec(spec.name)` is `spec.report` (no change for None)."""
    token = _GIVEN.set(_GIVEN.get() + (() if spec is None else (spec,)))
    try:
        yield
    finally:
        _GIVEN.reset(token)


def report_spec(sweep: str) -> ReportSpec:
    """What the spec of the runs of sweep `sweep` declares for their report: a spec given by file
    (`given_spec`), else the preset of that name, else nothing (the defaults)."""
    given = [spec.report for spec in _GIVEN.get() if spec.name == sweep]
    return given[-1] if given else _preset_report_spec(sweep)


def folder_sweeps(folder: str | Path) -> tuple[str, ...]:
    """The sweeps whose run folder `folder` is (their spec's `results_dir`, resolved from the working
    directory; the `paper` and `lm` presets share one): the specs given by file (`given_spec`) that name it,
    else the presets that do; () for a folder no spec names (a user's own)."""
    target = Path(folder).resolve()
    given = tuple(spec.name for spec in _GIVEN.get() if spec.results_dir and Path(spec.results_dir).resolve() == target)
    return given or tuple(name for name, where in _preset_results_dirs() if where and Path(where).resolve() == target)


@functools.cache
def _preset_results_dirs() -> tuple[tuple[str, str | None], ...]:
    return tuple((name, yaml.safe_load(_read(name)[1]).get("results_dir")) for name in PRESETS)


@functools.cache
def _preset_report_spec(sweep: str) -> ReportSpec:
    """Reads the report's keys of the preset named `sweep`, without expanding its grids."""
    if sweep not in PRESETS:
        return ReportSpec()
    where, text = _read(sweep)
    lines = _lines(yaml.compose(text))
    return _report_spec(yaml.safe_load(text), lambda *path: f"{where}, line {lines.get(path, 1)}")


def _tune(block: Any, at: Any, path: tuple) -> Tune | None:
    """A `tune:` block, checked where it is written: `field: [candidates]` for each tuned field and
    `seeds: [tuning seeds]`; null or false means no tuning."""
    if block is None or block is False:
        return None
    usage = "tune: {learning_rate: [5.0e-4, 1.0e-3, 2.0e-3], seeds: [0, 1]} (candidates per field, tuning seeds)"
    if not isinstance(block, dict):
        raise BaloraError(f"{at(*path)}: 'tune' is a mapping, e.g. {usage}")
    seeds = block.get("seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise BaloraError(f"{at(*path, 'seeds') if 'seeds' in block else at(*path)}: tune needs seeds: a list of "
                          f"distinct integer tuning seeds, e.g. {usage}")
    extend, lengthen = block.get("extend", 0), block.get("lengthen", 0)
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
        raise BaloraError(f"{at(*path, 'extend')}: tune extend is how many values a cell's grid may grow by past "
                          f"its ends (0, the default, for none), got {extend!r}")
    if not isinstance(lengthen, int) or isinstance(lengthen, bool) or lengthen < 0:
        raise BaloraError(f"{at(*path, 'lengthen')}: tune lengthen is how many times a cell's selection may be "
                          f"trained for twice its epochs (0, the default, for never), got {lengthen!r}")
    values, written = _flat({k: v for k, v in block.items() if k not in ("seeds", "extend", "lengthen")}, at, *path)
    if not values:
        raise BaloraError(f"{at(*path)}: tune names no field to select; e.g. {usage}")
    for name, candidates in values.items():
        if name not in tunable():
            raise BaloraError(f"{at(*written[name])}: '{name}' cannot be tuned; tune takes seeds and any of "
                              f"{', '.join(sorted(tunable()))}")
        if not isinstance(candidates, list) or not candidates:
            raise BaloraError(f"{at(*written[name])}: tune {name} needs a list of candidate values, e.g. {usage}")
        for value in candidates:
            check_field(name, value, at(*written[name]))
        if len(set(map(repr, candidates))) != len(candidates):
            raise BaloraError(f"{at(*written[name])}: tune {name} lists a candidate twice")
    return Tune(values, list(seeds), extend, lengthen)


def _confirm(block: Any, at: Any, path: tuple, methods: Any) -> Confirm | None:
    """A `confirm:` block, checked where it is written; null means no confirmation stage."""
    if block is None:
        return None
    usage = "confirm: {seeds: [45, 46, 47], gain: 0.005} (confirmation seeds; the validation gain over LoRA that earns them)"
    if not isinstance(block, dict) or set(block) - {"seeds", "gain", "reference"}:
        raise BaloraError(f"{at(*path)}: 'confirm' is a mapping of seeds, gain and (optional) reference, e.g. {usage}")
    seeds, gain, reference = block.get("seeds"), block.get("gain"), block.get("reference", "lora")
    if (not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise BaloraError(f"{at(*path)}: confirm needs seeds: a list of distinct integer seeds, e.g. {usage}")
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not 0 <= gain < math.inf:
        raise BaloraError(f"{at(*path)}: confirm needs gain: a number ≥ 0 in the validation metric's units, e.g. {usage}")
    if reference not in methods:
        raise BaloraError(f"{at(*path)}: confirm reference '{reference}' is not a method; choose from {', '.join(methods)}")
    return Confirm(tuple(seeds), float(gain), reference)


def _axis(key: str, value: Any) -> list:
    """A grid entry's values: a list is an axis, anything else one value. `target_modules` is itself
    a list, so only a list of lists is an axis over it."""
    if key == "target_modules":
        return value if isinstance(value, list) and all(isinstance(v, list) for v in value) else [value]
    return value if isinstance(value, list) else [value]


def preset_for_legacy_flags(args: Any) -> str | None:
    """The old runner's flags (`--run_all`, `--run_adalora`, `--run_qa_lora`; seed 003's), mapped onto presets."""
    if getattr(args, "run_qa_lora", False):
        return "qa"
    if getattr(args, "run_all", False):
        return "paper"
    if getattr(args, "run_adalora", False):
        return "adalora"
    return None

"""Result dicts → one row per run with the labels the report groups by.

Vocabulary (shared with the tables, figures and paper):

- setting: (model, dataset, shots, train_size), plus the training protocol where runs differ in it
  (e.g. two learning rates give two settings), so comparisons never mix protocols;
- budget: `config.budget_rank`, else the rank-equivalent of the run's LoRA budget;
- arm: a method, plus the method-specific options that vary between its runs
  (e.g. `ba_lora (strategy=proportional)`);
- replicates: runs of one arm in one setting and budget that differ only in the seed; matched seeds
  pair arms.

A field a sweep selected on validation (listed in `config.tuned`) is part of the protocol as
"selected", not as its value: LoRA at its selected learning rate and BA-LoRA at its own are one
setting. So are arms where only some selected a field (AdaLoRA its epochs, LoRA trained for fixed
ones): each arm's value is its own, and the table notes how the rows differ. Tuning runs
(`config.tuning`) have no test accuracy and appear only in the tuning appendix.

Anytime columns (`anytime_columns`): a run's primary metric is its validation accuracy (higher is better),
or a causal LM's validation loss (lower is better). `anytime` is the area under the run's validation curve
of that metric over its first H optimizer steps, divided by H, by the trapezoid rule (the curve read linearly
between its points up to H):

    anytime = Σᵢ (sᵢ₊₁ − sᵢ) / H · (mᵢ + mᵢ₊₁) / 2,

i.e. the run's mean validation metric over those steps (in the metric's own units), with H (`anytime_steps`)
the fewest steps any run of its setting and budget trained (`balora.tuning.matched_horizon`): arms compare
at matched steps on how early they got where they got, and one trained twice as long is read over its first
half. It is NaN unless the curve runs from step 0 to the run's last step with at least `MIN_CURVE_POINTS`
points up to H. `steps_to_reference` is the
first validation step at which the run's metric reaches (≥ for accuracy, ≤ for loss) `reference_final`,
the final validation value of its paired reference run (LoRA with the same seed, in the same setting
and budget), None where it never does; `reference_final` is NaN where the run has no paired reference
with a usable curve (and then `steps_to_reference` is None too).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from balora import method_registry, specs, tasks
from balora.config import RunConfig, default_epochs, protocol, protocol_key
from balora.report import stats
from balora.tuning import MIN_CURVE_POINTS, anytime_value, matched_horizon, superseded, validation_curve

REFERENCE = "lora"
PHASES = ("load", "importance", "allocation", "init", "train", "eval", "generate")
METRICS = ("accuracy", "f1", "precision", "recall", "loss", "perplexity")

SETTING_FIELDS = ("model", "dataset", "shots", "train_size")
# The training protocol all methods of a comparison share; runs that differ in it are in different settings
# (min_rank: the lowest rank an allocation may give, a regime's bound that every arm of it is run with; at 0 a
# module may go unadapted).
PROTOCOL_FIELDS = ("target_modules", "count_head", "text_column", "label_column", "epochs", "batch_size",
                   "learning_rate", "weight_decay", "warmup_ratio", "lora_dropout", "alpha_ratio", "max_length",
                   "eval_batch_size", "evaluations", "precision", "min_rank", "base_weights")
# The base model's weights, by the checksums every run records (`base_weights`): a model built on the machine
# that runs it (vit-fashion, pretrained there) differs between builds, and runs on two builds are two settings,
# never one row (results/levers' first ViT runs mixed two builds in LoRA's and BA-LoRA's rows).
BASE_WEIGHTS = "base_weights"
# Every other config field is a method option (strategy, gamma, ...): runs of one method that differ in
# one are different arms.
NOT_VARIANT = SETTING_FIELDS + PROTOCOL_FIELDS + ("method", "seed", "budget", "budget_rank", "rank", "tuned", "tuning")
SELECTED = "selected on validation"
DEFAULTS = RunConfig().to_dict()
# A run whose accuracy is not above the majority-class rate by more than this has not learnt the task
# (it predicts, or does no better than predicting, one class).
MAJORITY_TOLERANCE = 0.001


def method_name(method: str) -> str:
    """The report's name of a method: its registered label (`balora.method_registry`), else the name itself."""
    known = method_registry.find(method)
    return known.label if known is not None else method


def _number(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}".rstrip("0")


def budget_label(budget: float, params: int | None = None) -> str:
    return f"r={_number(budget)}" + (f" ({params:,} params)" if params is not None else "")


def setting_label(model: str, dataset: str, shots: int | None, train_size: int | None, protocol: str = "") -> str:
    data = f"{shots}-shot" if shots is not None else (f"{train_size:,} examples" if train_size else "full pool")
    return " · ".join(part for part in (model, dataset, data, protocol) if part)


# What a reader calls the embedded models and datasets, where a setting is said in words; any other name (a local
# folder, a hub model) is said as it is
MODEL_WORDS = {"minilm": "MiniLM", "smollm2": "SmolLM2-135M-Instruct",
               "vit-fashion": "a Fashion-MNIST-pretrained 4-block ViT"}
DATASET_WORDS = {"rotten_tomatoes": "Rotten Tomatoes snippets", "presidential_debates": "presidential-debate statements",
                 "digits": "8×8 handwritten digits", "critic_instructions": "instructions built from Rotten Tomatoes snippets"}
DEFAULT_TARGETS = "default targets"  # a setting label's protocol where the model's own targets were adapted
# What a caption or a table's header calls them, where a setting label stays a label ("MiniLM · Rotten Tomatoes ·
# 64-shot") but is read without the report's codes (the paper's)
SHORT_NAMES = {"minilm": "MiniLM", "smollm2": "SmolLM2", "vit-fashion": "ViT (Fashion-MNIST)",
               "rotten_tomatoes": "Rotten Tomatoes", "presidential_debates": "Presidential debates", "digits": "Digits",
               "critic_instructions": "Critic instructions"}
_LABEL_CODE = re.compile("|".join(rf"(?<![\w-]){re.escape(code)}(?= · )|(?<= · ){re.escape(code)}(?![\w-])"
                                  for code in SHORT_NAMES))


def named_labels(text: str) -> str:
    """`text` with every model or dataset code inside a setting label (next to its " · ") said by its name
    (`SHORT_NAMES`): "minilm · rotten_tomatoes · 64-shot" → "MiniLM · Rotten Tomatoes · 64-shot"; a code outside a
    label, which may be a word of a sentence ("handwritten digits"), is left as it is. A label's protocol reads in
    words too (`_protocol_words`): "min_rank=0, targets all-linear" is "minimum rank 0, every linear layer"."""
    text = _LABEL_CODE.sub(lambda found: SHORT_NAMES[found.group()], text)
    return _PROTOCOL_PART.sub(lambda found: _protocol_words(found.group()), text)


# a label's protocol parts that `_protocol_words` says in words: a minimum rank, a list of target modules
_PROTOCOL_PART = re.compile(r"\bmin_rank=\d+|\btargets (?:all-linear|[\w.]+(?:\+[\w.]+)+)")


# target modules said in words (`setting_words`): every linear layer of a BERT encoder (regime (b) of issue 39) or
# of any model (PEFT's shorthand)
TARGET_WORDS = {"query+key+value+output.dense+intermediate.dense": "every linear layer",
                "all-linear": "every linear layer"}


def _protocol_words(part: str) -> str:
    """One part of a setting label's protocol in words: "targets all-linear" is "every linear layer", "targets
    query+value+intermediate.dense" "query, value and intermediate.dense", "min_rank=0" "minimum rank 0"; any other
    part as it is."""
    if part.startswith("targets "):
        targets = part.removeprefix("targets ")
        if targets in TARGET_WORDS:
            return TARGET_WORDS[targets]
        return listed(targets.split("+"))  # "query+value+intermediate.dense": "query, value and intermediate.dense"
    return f"minimum rank {part.removeprefix('min_rank=')}" if part.startswith("min_rank=") else part


def setting_words(model: str, dataset: str, shots: float | None = None, train_size: float | None = None,
                  protocol: str = "", modules: Iterable[str] = ()) -> str:
    """A setting in words, where its label's codes ("minilm · presidential_debates · 64-shot") would be read without
    the tables (the paper's prose): "MiniLM on presidential-debate statements (64 examples per class)", with the
    protocol its label names ("targets query+value+intermediate.dense", "every linear layer", "minimum rank 0":
    `_protocol_words`); the model's default targets, where a label names them beside another setting's, by the types
    of `modules` (a run's adapted module names: "query and value"), else not at all."""
    amount = (f" ({int(shots)} examples per class)" if pd.notna(shots) else
              f" ({int(train_size):,} training examples)" if pd.notna(train_size) and train_size else "")
    types = list(dict.fromkeys(module_type(name) for name in modules))
    defaults = listed(types) if types else ""
    rest = ", ".join(defaults if part == DEFAULT_TARGETS else _protocol_words(part) for part in protocol.split(", ")
                     if part and (part != DEFAULT_TARGETS or defaults))
    return (f"{MODEL_WORDS.get(model, model)} on {DATASET_WORDS.get(dataset, dataset.replace('_', ' '))}{amount}"
            + (f", {rest}" if rest else ""))


def listed(items: list[str], last: str = " and ") -> str:
    """"a", "a and b", "a, b and c" (`last`: what joins the last two)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + last + items[-1]


def module_type(name: str) -> str:
    """What kind of module a target is, by its name's end: "encoder.layer.0.attention.self.query" is "query"; a
    `dense` layer keeps its parent ("intermediate.dense")."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1] == "dense" and len(parts) > 1 else parts[-1]


def words_of(frame: pd.DataFrame, setting: str) -> str:
    """`setting_words` of a setting label among the runs of `frame` (the label itself where no run has it)."""
    runs = frame[frame["setting"] == setting]
    if runs.empty:
        return setting
    first = runs.iloc[0]
    return setting_words(first["model"], first["dataset"], first["shots"], first["train_size"], first["protocol"],
                         adapted_modules(first["result"]))


def adapted_modules(result: dict[str, Any]) -> list[str]:
    """The names of the modules a run adapted (its allocation's), none where it records no allocation."""
    return [m["name"] for m in result.get("allocation") or []]


def _effective(config: dict[str, Any], name: str) -> Any:
    """A config value as the run used it: a field the config leaves out has RunConfig's default."""
    if name in (config.get("tuned") or []):
        return SELECTED
    value = config.get(name, DEFAULTS.get(name))
    if name == "epochs" and value is None:
        return default_epochs(config.get("shots"))
    return tuple(value) if isinstance(value, list) else value


def _varying(configs: list[dict[str, Any]], names: Iterable[str]) -> list[str]:
    return [n for n in names if len({repr(_effective(c, n)) for c in configs}) > 1]


def _options(config: dict[str, Any], names: list[str], defaults: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """{name: value as the run used it} for `names`, leaving out a value that is one of `defaults`'."""
    return {n: _effective(config, n) for n in names if not any(_effective(config, n) == _effective(d, n) for d in defaults)}


def _describe(config: dict[str, Any], names: list[str], defaults: tuple[dict[str, Any], ...] = ()) -> str:
    """`name=value` for `names`, leaving out a value that is one of `defaults`' (so the default variant of
    a method keeps the plain method name)."""
    return variant_words(_options(config, names, defaults))


@functools.cache
def _task_defaults(task: str) -> dict[str, Any]:
    return tasks.with_task_defaults(RunConfig(), task).to_dict()


def _defaults_of(result: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """What a run's config counts as default: RunConfig's, and the values its task resolves them to (the
    warm-start step of a causal LM is not a classifier's)."""
    return DEFAULTS, _task_defaults(tasks.of_result(result).name)


# The lever study's options as an arm's label says them: the paper and the README read words, not field names.
OPTION_WORDS = {"scaling_rule": "{} scaling", "warmstart_init": "{} init", "loraplus_ratio": "LoRA+ ratio {}",
                "max_rank": "ranks ≤ {}"}
VALUE_WORDS = {"rslora": "rsLoRA", "gora": "GoRA's", "balora": "mean-gradient"}


def base_weights(result: dict[str, Any]) -> str | None:
    """The first 8 hex digits of each base-weights checksum a run records (None where it records none)."""
    sums = (result.get("environment") or {}).get("weights_sha256") or {}
    return ", ".join(digest[:8] for _, digest in sorted(sums.items())) or None


def _shown(name: str, value: Any) -> str:
    """One field of a label; target modules read as a placement (None: the model's default targets)."""
    if name == BASE_WEIGHTS:
        return f"base weights {value}"
    if name == "target_modules" and value != SELECTED:
        return DEFAULT_TARGETS if value is None else f"targets {'+'.join(value)}"
    if name == "loraplus_ratio" and value == SELECTED:  # the selection table gives the ratio
        return "LoRA+"
    if name in OPTION_WORDS:
        return OPTION_WORDS[name].format(VALUE_WORDS.get(value, value) if isinstance(value, str) else value)
    return f"{name}={value}"


def _budget(result: dict[str, Any]) -> float:
    config = result["config"]
    if config.get("budget_rank") is not None:
        return float(config["budget_rank"])
    return round(float(result["budget"]["rank_equivalent"]), 2)


def _peak(memory: dict[str, float] | None) -> float:
    return max(memory.values()) if memory else math.nan


def _one_protocol_per_arm(results: list[dict[str, Any]], settings: list[str], variants: list[str]) -> list[str]:
    """Each run's arm variant, extended where needed so that an arm never holds two protocols in one place.

    A table row is an arm in one setting and budget, so runs that share these and their arm but differ
    in anything except the seed (a budget given as a count instead of a rank, an option the arm's name
    leaves out, ...) get the fields they differ in added to their arm's name: separate rows, never one
    merged row."""
    places: dict[tuple, list[int]] = {}
    for i, (result, setting, variant) in enumerate(zip(results, settings, variants)):
        places.setdefault((setting, _budget(result), result["config"]["method"], variant), []).append(i)
    extended = list(variants)
    for members in places.values():
        configs = [protocol(results[i]["config"]) for i in members]
        if len({protocol_key(c) for c in configs}) < 2:
            continue
        names = _varying(configs, sorted({k for c in configs for k in c}))
        for i, config in zip(members, configs):
            extended[i] = ", ".join(part for part in (variants[i], _describe(config, names)) if part)
    return extended


def _quantisation(result: dict[str, Any]) -> dict[str, Any]:
    """Format, base-weight memory ratio and the final mean balance of a run on a quantised base (NaN otherwise)."""
    summary = result.get("quantisation") or {}
    curve = summary.get("balance") or []
    return {"quant": result["config"].get("quant"),
            "quant_ratio": float(summary.get("memory", {}).get("ratio", math.nan)),
            "balance": float(curve[-1][1]["mean"]) if curve else math.nan}


def _protocols(configs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Each config's protocol as its setting label shows it, and the protocol fields it names.

    A label names the protocol fields that differ between configs of one model and dataset (regime (b)'s targets
    and min_rank beside regime (a)'s), not in another's (the debates keep their plain label), and not fields that
    differ only because some config selected them on validation (each arm's own choice, module docstring), nor,
    within a data setting, the fields some config there selected (not, say, epochs between few-shot and full)."""
    def data_of(config: dict[str, Any]) -> tuple:
        return tuple(repr(config.get(f)) for f in SETTING_FIELDS)

    by_data: dict[tuple, list[dict[str, Any]]] = {}
    for c in configs:
        by_data.setdefault(data_of(c), []).append(c)
    selected = {data: {f for c in group for f in c.get("tuned") or []} for data, group in by_data.items()}
    varying: dict[tuple, set[str]] = {}  # by model and dataset
    for data, group in by_data.items():
        varying.setdefault(data[:2], set()).update(set(_varying(group, PROTOCOL_FIELDS)) - selected[data])
    fields = [[f for f in sorted(varying[data_of(c)[:2]]) if f not in selected[data_of(c)]] for c in configs]
    return [_describe(c, names) for c, names in zip(configs, fields)], fields


def setting_labels(configs: list[dict[str, Any]], protocols: list[str] | None = None) -> list[str]:
    """Each config's setting label, among `configs`, as `load_runs` gives it to evaluation runs
    (`protocols`: `_protocols(configs)`'s, where the caller has them)."""
    protocols = _protocols(configs)[0] if protocols is None else protocols
    return [setting_label(c["model"], c["dataset"], c.get("shots"), c.get("train_size"), p)
            for c, p in zip(configs, protocols)]


def arm_label(method: str, variant: str) -> str:
    """The report's name for an arm: its method's, with the variant's options where it has any."""
    return f"{method_name(method)} ({variant})" if variant else method_name(method)


def variant_options(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's variant of its method as {option: value}: the options (not data, protocol, seed or budget) that
    vary among the runs of its method and task on its data setting in `results`, leaving out its task's defaults
    ({} for the default variant). A causal LM's preset sizes (its test subset, say) do not make variants of the
    classifiers' arms, nor does an option a spec sets for one setting (the debates' gradient samples) make one of
    that setting's arm. A plug-in's options read as fields (`protocol`), so they make variants as a built-in's do."""
    def group(result: dict[str, Any]) -> tuple:
        config = result["config"]
        return tasks.of_result(result).name, config["method"], *(repr(config.get(f)) for f in SETTING_FIELDS)

    configs = [protocol(r["config"]) for r in results]
    options = sorted({k for c in configs for k in c} - set(NOT_VARIANT))
    varying = {g: _varying([c for r, c in zip(results, configs) if group(r) == g], options) for g in map(group, results)}
    return [_options(c, varying[group(r)], tuple(map(protocol, _defaults_of(r)))) for r, c in zip(results, configs)]


def variant_words(options: dict[str, Any]) -> str:
    """A variant (`variant_options`) as an arm's label says it ("" for the default variant)."""
    return ", ".join(_shown(n, value) for n, value in options.items())


def method_variants(results: list[dict[str, Any]]) -> list[str]:
    """Each run's variant of its method (`variant_options`) in words ("" for the default variant)."""
    return list(map(variant_words, variant_options(results)))


def steps_to_reach(curve: list[tuple[int, float]], target: float, metric: stats.Metric = stats.ACCURACY) -> int | None:
    """The first step of `curve` (of `metric`) whose value reaches `target` (≥ it where higher is better, ≤ where
    lower is), or None."""
    if not math.isfinite(target):
        return None
    return next((step for step, value in curve if metric.sign * value >= metric.sign * target), None)


def anytime_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`anytime`, `reference_final` and `steps_to_reference` of each run (module docstring), the reference
    being the run of the reference arm (`REFERENCE`'s plain arm, else its first variant) with the same seed
    in the same setting and budget (a seed stored twice keeps its last run)."""
    curves = pd.Series([validation_curve(r) for r in frame["result"]], index=frame.index, dtype=object)
    # at matched steps: every run of a setting and budget over the shortest training among them
    horizon = frame.groupby(["setting", "budget"], sort=False)["steps"].transform(
        lambda steps: matched_horizon(list(steps)))
    frame = frame.assign(anytime=[anytime_value(c, s, h) for c, s, h in zip(curves, frame["steps"], horizon)],
                         anytime_steps=horizon)
    finals: dict[tuple, float] = {}
    for (setting, budget), cell in frame.groupby(["setting", "budget"], sort=False):
        reference = cell[cell["arm"] == reference_arm(cell, REFERENCE)]
        for seed, curve in zip(reference["seed"], curves[reference.index]):
            if len(curve) >= MIN_CURVE_POINTS:
                finals[(setting, budget, int(seed))] = curve[-1][1]
    targets = [finals.get((setting, budget, int(seed)), math.nan)
               for setting, budget, seed in zip(frame["setting"], frame["budget"], frame["seed"])]
    reached = [steps_to_reach(c, t, tasks.of_result(r).metric) if len(c) >= MIN_CURVE_POINTS else None
               for c, t, r in zip(curves, targets, frame["result"])]
    return frame.assign(reference_final=targets, steps_to_reference=pd.Series(reached, index=frame.index, dtype=object))


def load_runs(results: list[dict[str, Any]], stale: set[str] | None = None) -> pd.DataFrame:
    """One row per run: labels, metrics, parameter counts, timings, memory, and the result itself
    (tuning runs are left out: they have no test metrics; so are evaluation runs at a value their cell
    no longer selects, `balora.tuning.superseded`, which callers that already have them pass as `stale`)."""
    stale = superseded(results) if stale is None else stale
    results = [r for r in results if not r["config"].get("tuning") and str(r.get("key")) not in stale]
    configs = [dict(r["config"], **{BASE_WEIGHTS: base_weights(r)}) for r in results]
    protocols, named_fields = _protocols(configs)
    settings = setting_labels(configs, protocols)
    options = variant_options(results)
    arm_variants = _one_protocol_per_arm(results, settings, list(map(variant_words, options)))
    rows = []
    for result, setting, shown_protocol, named, variant, option in zip(results, settings, protocols, named_fields,
                                                                      arm_variants, options):
        config, metrics, params = result["config"], result["metrics"], result["params"]
        method, task = config["method"], tasks.of_result(result)
        budget = _budget(result)
        timings = dict(result.get("timings", {}))
        timings.setdefault("total", sum(timings.values()))
        memory = result.get("memory", {})
        rows.append({
            "sweep": result.get("sweep"), "key": result.get("key"), "method": method,
            "arm": f"{method} ({variant})" if variant else method,
            "arm_label": arm_label(method, variant), "variant_options": option,
            "model": config["model"], "dataset": config["dataset"], "shots": config.get("shots"),
            "train_size": config.get("train_size"), "protocol": shown_protocol, "setting": setting,
            # few-shot settings that differ only in the shot count (and so possibly in epochs) form a family
            "family": " · ".join(p for p in (config["model"], config["dataset"], "k-shot",
                                             _describe(config, [f for f in named if f != "epochs"])) if p),
            "budget": budget, "budget_params": int(result["budget"]["lora_budget"]),
            "protocol_key": protocol_key(config),
            "seed": int(config["seed"]), "machine": machine(result),
            **{m: float(metrics[m]) for m in METRICS if m in metrics},
            "task": task.name,  # results stored before causal LMs are the fallback task's (classification)
            "metric": task.metric.name,
            "majority_rate": float(metrics.get("majority_rate", math.nan)),
            "not_learnt": "accuracy" in metrics
            and float(metrics["accuracy"]) < float(metrics["majority_rate"]) + MAJORITY_TOLERANCE,
            "lora_params": int(params["lora"]), "lora_final": int(params.get("lora_final", params["lora"])),
            # the adapter file's count, recorded where it differs (PEFT's conversion of PiSSA, OLoRA, LoRA-GA)
            "saved_params": int(params.get("saved_adapter", params.get("lora_final", params["lora"]))),
            "head_params": int(params["head"]), "total_trainable": int(params["total_trainable"]),
            **{f"time_{p}": float(timings[p]) for p in (*PHASES, "total") if p in timings},
            "peak_rss_mib": _peak(memory.get("peak_rss_mib")), "peak_cuda_mib": _peak(memory.get("peak_cuda_mib")),
            "steps": result.get("steps"), "convergence_step": result.get("convergence_step"),
            "time_per_step": float(timings.get("train", math.nan)) / result["steps"] if result.get("steps") else math.nan,
            **_quantisation(result),
            "result": result,
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = anytime_columns(frame)
    # A family whose shot count holds two settings (say two epoch counts at 16 shots) is split by setting:
    # a few-shot table row is one shot count, and must hold one protocol.
    for family, part in frame[frame["shots"].notna()].groupby("family"):
        if (part.groupby("shots")["setting"].nunique() > 1).any():
            frame.loc[part.index, "family"] = family + " · " + part["protocol"]
    # the key last: the same runs give the same order whether they come from the database or from files
    return frame.sort_values(["model", "dataset", "train_size", "shots", "protocol", "budget", "seed", "key"],
                             na_position="last").reset_index(drop=True)


def arm_order(arms: Iterable[str]) -> list[str]:
    """Arms in the report's order: main methods, heuristics, ablations, then anything else."""
    order = {m: i for i, m in enumerate(method_registry.report_order())}
    return sorted(set(arms), key=lambda a: (order.get(a.split(" (")[0], len(order)), a))


def reference_arm(cell: pd.DataFrame, method: str) -> str | None:
    """The reference method's plain arm in `cell`, or its first variant."""
    arms = [a for a in arm_order(cell["arm"]) if a.split(" (")[0] == method]
    return method if method in arms else (arms[0] if arms else None)


def settings(frame: pd.DataFrame) -> list[str]:
    """Setting labels in data order (model, dataset, training size or shots)."""
    return list(dict.fromkeys(frame["setting"]))


def by_seed(frame: pd.DataFrame, column: str) -> dict[int, float]:
    """{seed: value} of one arm's replicates (a seed stored twice keeps its last run)."""
    return dict(zip(frame["seed"].astype(int), frame[column].astype(float)))


def equivalence_margin(runs: pd.DataFrame, metric: stats.Metric) -> stats.Margin:
    """The equivalence margin of a comparison of `runs` (both arms'): the one their sweeps' specs declare,
    found by sweep name (`specs.report_spec`: a run file records no more of its spec);
    `metric`'s default where none declares one; where they declare different ones, the smallest, whose
    test of equivalence is the strictest."""
    sweeps = sorted({s for s in runs["sweep"] if isinstance(s, str) and s})
    declared = {s: m for s in sweeps if (m := specs.report_spec(s).equivalence_margin) is not None}
    if not declared:
        return stats.Margin(metric.margin, f"the default for {metric.name}: no preset among the compared runs' "
                                           "sweeps declares equivalence_margin")
    if len(set(declared.values())) == 1:
        several = "s" if len(declared) > 1 else ""
        return stats.Margin(min(declared.values()), f"declared (equivalence_margin) by the spec{several} of "
                                                    f"sweep{several} {', '.join(declared)}")
    listed = ", ".join(f"{s} ±{metric.amount(m, exact=True)}" for s, m in declared.items())
    return stats.Margin(min(declared.values()), f"the smallest of the margins the runs' specs declare ({listed})")


def machine(result: dict[str, Any]) -> str:
    """Where a run ran, as its environment recorded it: platform, CPU model and device ('' where none is)."""
    environment = result.get("environment", {})
    return " · ".join(str(environment[k]) for k in ("platform", "cpu", "device") if environment.get(k))


def same_machine_ratios(runs: pd.DataFrame, reference: pd.DataFrame, column: str) -> list[float]:
    """`column` of each run over the reference run with the same seed on the same machine (a seed stored
    twice keeps its last run). Runs without one are left out: across machines a time ratio measures the
    machines, not the method."""
    base = {(int(s), m): float(v) for s, m, v in zip(reference["seed"], reference["machine"], reference[column])}
    return [float(v) / base[(int(s), m)] for s, m, v in zip(runs["seed"], runs["machine"], runs[column])
            if base.get((int(s), m), 0) > 0]


def _layer_and_suffix(module: str) -> tuple[int, list[str]]:
    """Transformer block index of a module name and the name parts after it."""
    parts = module.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    return (0, parts[-1:]) if index is None else (int(parts[index]), parts[index + 1:])


def module_label(module: str) -> str:
    """A short module name for axis labels: layer index and the last part of the name (`3.query`)."""
    layer, suffix = _layer_and_suffix(module)
    return f"{layer}.{suffix[-1]}" if suffix else str(layer)


def dynamic_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that reallocated ranks during training (their result has a `reallocations` history)."""
    return frame[frame["result"].map(lambda r: bool(r.get("reallocations")))]


def allocation_frame(runs: pd.DataFrame, column: str = "final_rank") -> pd.DataFrame:
    """One row per module per run: run (frame index), seed, layer, kind, importance, rank, cost (the module's
    parameters per unit of rank, d_in + d_out) and `value` (the rank after training by default; `column="rank"` for
    the allocated one).

    A module's kind is its name after the layer index, less the prefix all kinds share, e.g. `query`
    for BERT's `attention.self.query` when only query and value are adapted."""
    rows = [{"run": index, "seed": seed, "module": m["name"], "importance": float(m.get("importance", 0.0)),
             "rank": m["rank"], "cost": sum(m.get("shape", [0, 0])), "value": m.get(column, m["rank"])}
            for index, seed, result in zip(runs.index, runs["seed"], runs["result"])
            for m in result.get("allocation", [])]
    frame = pd.DataFrame(rows, columns=["run", "seed", "module", "importance", "rank", "cost", "value"])
    split = {name: _layer_and_suffix(name) for name in frame["module"].unique()}
    suffixes = [suffix for _, suffix in split.values()]
    shared = 0
    while suffixes and all(len(s) > shared + 1 and s[shared] == suffixes[0][shared] for s in suffixes):
        shared += 1
    frame["layer"] = frame["module"].map(lambda n: split[n][0])
    frame["kind"] = frame["module"].map(lambda n: ".".join(split[n][1][shared:]))
    return frame

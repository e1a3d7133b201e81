"""Each unit's options (balora.options, the methods' in balora.method_registry) and the nested configuration
(`RunConfig.nested`, `RunConfig.from_nested`): declared once, checked where declared, and, nested, the same run
with the same key as every stored run's flat config."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError, fields, is_dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balora import method_registry, tasks
from balora.base_transform import FullPrecision, base_transform
from balora.config import DEFAULTS, KEYED_ALWAYS, KEYED_WHEN_SET, SECTIONS, RunConfig, section_of
from balora.errors import BaloraError
from balora.method_registry import AdaLoRAOptions, DynamicOptions, LinearDecayOptions, WarmStartOptions
from balora.options import TASK_OPTIONS, CausalLMOptions, QuantisedOptions

ROOT = Path(__file__).parents[1]
UNITS = ([method_registry.get(name).options for name in method_registry.names()]
         + list(TASK_OPTIONS.values()) + [QuantisedOptions])


@pytest.mark.parametrize("options", sorted(set(UNITS), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_a_unit_s_options_are_a_frozen_dataclass_with_help_on_every_field(options):
    assert is_dataclass(options)
    for f in fields(options):
        assert f.metadata.get("help"), f"{options.__name__}.{f.name} has no help text"
        assert DEFAULTS[f.name] == f.default  # RunConfig's field is the option itself
    with pytest.raises(FrozenInstanceError):
        options().__setattr__(fields(options)[0].name if fields(options) else "x", None)


@pytest.mark.parametrize("options, values, message", [
    (LinearDecayOptions, {"decay_direction": "up"}, "decay_direction must be 'decreasing' or 'increasing'"),
    (LinearDecayOptions, {"heuristic_ratio": 0.0}, "heuristic_ratio must be a positive number"),
    (DynamicOptions, {"realloc_every": 0}, "realloc_every must be a positive number"),
    (DynamicOptions, {"realloc_ema": -0.1}, "realloc_ema must not be negative"),
    (DynamicOptions, {"top_k": 0}, "top_k must be a positive number"),  # inherited from the allocators' options
    (AdaLoRAOptions, {"adalora_init_ratio": 0.5}, "adalora_init_ratio must be at least 1"),
    (WarmStartOptions, {"warmstart_init": "pissa"}, "warmstart_init must be one of balora, gora"),
    (CausalLMOptions, {"prompt_template": "llama"}, "prompt_template must be 'alpaca' or 'chat'"),
    (QuantisedOptions, {"qa_lora": True}, "need\\(s\\) a quantised base"),
    (QuantisedOptions, {"quant": "nf4", "quant_backend": "bitsandbytes", "quant_group_size": 48},
     "bitsandbytes cannot do --quant-group-size 48"),
])
def test_a_unit_checks_its_own_options(options, values, message):
    with pytest.raises(BaloraError, match=message):
        options(**values)
    with pytest.raises(BaloraError, match=message):  # and so does a run that sets them
        RunConfig(**values)


@pytest.mark.parametrize("name", tasks.names())
def test_each_task_and_base_transform_names_its_options(name):
    assert tasks.get(name).options is TASK_OPTIONS[name]
    assert set(TASK_OPTIONS[name].names()) <= set(SECTIONS["task"].names)
    assert base_transform(RunConfig(quant="int8")).options is QuantisedOptions and FullPrecision.options().names() == ()


def test_every_field_is_in_one_section_or_common_and_new_fields_are_keyed_only_when_set():
    owners = [section_of(name) for name in DEFAULTS]
    assert {o for o in owners if o} == set(SECTIONS)
    for name in DEFAULTS:  # each option is declared once: in one section only
        assert sum(name in section.names for section in SECTIONS.values()) <= 1, name
    assert KEYED_WHEN_SET == set(DEFAULTS) - KEYED_ALWAYS and "warmstart_init" in KEYED_WHEN_SET


def test_the_nested_view_has_the_method_s_options_under_its_name():
    view = RunConfig(method="ba_lora_dynamic", task="causal_lm", realloc_every=25, quant="nf4").nested()
    assert view["method"]["name"] == "ba_lora_dynamic" and view["method"]["realloc_every"] == 25
    assert set(view["method"]) == {"name", *method_registry.get("ba_lora_dynamic").settings}
    assert set(view["task"]) == {"name", "instruction_columns", "prompt_template", "train_on_prompt"}
    assert view["base_transform"]["quant"] == "nf4" and set(view["base_transform"]) == set(QuantisedOptions.names())
    assert "learning_rate" in view and "strategy" not in view
    assert RunConfig(method="lora").nested()["method"] == {"name": "lora"}
    assert RunConfig().nested()["base_transform"] == {"quant": None}


@pytest.mark.parametrize("values, message", [
    ({"method": {"quant": "nf4"}}, "'quant' is not in section method: write it in section base_transform"),
    ({"base_transform": {"learning_rate": 1e-3}}, "'learning_rate' is not in section base_transform: write it at the top level"),
    ({"task": {"prompt": "chat"}}, "unknown key 'prompt' in section task; it has name, "),
    ({"quant": "nf4", "base_transform": {"quant": "nf4"}}, "quant is given twice"),
    ({"base_transform": "nf4"}, "section base_transform is a mapping of its options"),
])
def test_a_field_in_the_wrong_section_names_the_right_one(values, message):
    with pytest.raises(BaloraError, match=message):
        RunConfig.from_nested(values)


COMMITTED = sorted(ROOT.glob("results/*/*.json"))


def test_every_committed_run_round_trips_through_the_nested_form_with_its_key():
    assert len(COMMITTED) > 100
    for path in COMMITTED:
        stored = json.loads(path.read_text())
        config = RunConfig.from_dict(stored["config"], str(path))
        again = RunConfig.from_nested(json.loads(json.dumps(config.nested())))  # as a YAML or JSON file holds it
        assert again == config and again.key() == config.key() == stored["key"], path
        assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(config.to_dict(), sort_keys=True)


def _option_values(method: str) -> st.SearchStrategy[dict]:
    """Valid values of a few of `method`'s options: drawn from ones the checks accept."""
    choices = {"strategy": st.sampled_from(["proportional", "minmax", "threshold", "top_k", "uniform"]),
               "allocation_power": st.floats(0.25, 4.0), "threshold": st.floats(0.0, 1.0), "top_k": st.integers(1, 8),
               "warmstart": st.booleans(), "gamma_normalise": st.booleans(), "realloc_every": st.integers(1, 99),
               "realloc_uncertainty": st.booleans(), "adalora_init_ratio": st.floats(1.0, 3.0),
               "eva_rho": st.floats(1.0, 4.0), "heuristic_ratio": st.floats(0.5, 4.0),
               "decay_direction": st.sampled_from(["decreasing", "increasing"])}
    readable = {name: s for name, s in choices.items() if name in method_registry.get(method).settings}
    return st.fixed_dictionaries({}, optional=readable)


@st.composite
def configs(draw: st.DrawFn) -> RunConfig:
    method = draw(st.sampled_from(method_registry.names()))
    quantised = method in ("lora", "ba_lora") and draw(st.booleans())
    base = {"quant": draw(st.sampled_from(["nf4", "int4"])), "quant_schedule": draw(st.sampled_from(["constant", "cosine"])),
            "grad_scale": draw(st.floats(0.5, 2.0))} if quantised else {}
    task = draw(st.sampled_from(["auto", "classification", "causal_lm", "image"]))
    lm = {"prompt_template": draw(st.sampled_from(["alpaca", "chat"])), "train_on_prompt": draw(st.booleans())}
    return RunConfig(method=method, task=task, learning_rate=draw(st.floats(1e-5, 1e-2)), seed=draw(st.integers(0, 99)),
                     shots=draw(st.none() | st.integers(1, 64)), **draw(_option_values(method)), **base,
                     **(lm if task == "causal_lm" else {}))


@settings(max_examples=150, deadline=None)
@given(configs())
def test_nested_then_flat_is_the_same_run(config):
    view = config.nested()
    assert RunConfig.from_nested(view) == config and RunConfig.from_nested(view).key() == config.key()
    assert RunConfig.from_nested(config.to_dict()) == config  # the flat form is read too


FLAT_SPEC = """name: flat
base: {model: minilm, dataset: rotten_tomatoes, shots: 8, budget_rank: 4, task: classification, label_column: label}
overrides:
  lora: {learning_rate: 1.0e-3}
  ba_lora: {warmstart: false}
grids:
  - {method: [lora, ba_lora], seed: [42, 43]}
  - {method: lora, quant: [nf4, int4], quant_schedule: cosine, seed: 42}
  - {method: linear_decay, decay_direction: [decreasing, increasing], seed: 42}
"""
NESTED_SPEC = """name: flat
base:
  model: minilm
  dataset: rotten_tomatoes
  shots: 8
  budget_rank: 4
  task: {name: classification, label_column: label}
overrides:
  lora: {learning_rate: 1.0e-3}
  ba_lora:
    method: {warmstart: false}
grids:
  - {method: {name: [lora, ba_lora]}, seed: [42, 43]}
  - {method: lora, base_transform: {quant: [nf4, int4], quant_schedule: cosine}, seed: 42}
  - method: {name: linear_decay, decay_direction: [decreasing, increasing]}
    seed: 42
"""


def _keys(text: str, tmp_path: Path) -> list[str]:
    from balora.specs import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return [p.config.key() for p in load_spec(str(path)).runs]


def test_a_spec_by_section_plans_the_runs_of_its_flat_form(tmp_path):
    keys = _keys(NESTED_SPEC, tmp_path)
    assert len(keys) == 4 + 2 + 2 and keys == _keys(FLAT_SPEC, tmp_path)


@pytest.mark.parametrize("old, new, message", [
    ("task: {name: classification, label_column: label}", "task: {name: classification, quant: nf4}",
     "line 7: 'quant' is not in section task: write it in section base_transform"),
    ("method: {warmstart: false}", "base_transform: {warmstart: false}",
     "line 11: 'warmstart' is not in section base_transform: write it in section method"),
    ("base_transform: {quant: [nf4, int4], quant_schedule: cosine}", "base_transform: {quant: nf4, seed: 1}",
     "line 14: 'seed' is not in section base_transform: write it at the top level"),
    ("decay_direction: [decreasing, increasing]}", "direction: [decreasing]}",
     "line 15: unknown key 'direction' in section method; it has name, "),
    ("method: {name: [lora, ba_lora]}, seed", "method: {name: [lora, lora]}, seed", "line 13: grid grid0 lists method lora twice"),
    ("    method: {warmstart: false}\n", "    method: {warmstart: false}\n    warmstart: true\n",
     "line 12: warmstart is given twice"),
])
def test_a_spec_field_in_the_wrong_section_is_one_error_naming_its_line_and_the_right_section(old, new, message, tmp_path,
                                                                                              capsys):
    assert old in NESTED_SPEC
    assert message in dry_run_error(NESTED_SPEC.replace(old, new), tmp_path, capsys)


def dry_run_error(spec: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    """The one line `balora sweep --dry-run` writes when it refuses `spec`."""
    from balora.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    assert main(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"balora: error: {path}, ") and err.count("\n") == 1, err
    return err


# Each preset written by section, with the digest of the run keys (evaluation, then tuning) its flat form planned.
PRESETS_BY_SECTION = {"qa": (15, 50, "f60642fdcb4cd958"), "dynamic": (48, 144, "2ea39cba8cfeb739"),
                      "vision": (30, 100, "632017f9b8295504")}


@pytest.mark.parametrize("preset", PRESETS_BY_SECTION)
def test_a_preset_written_by_section_plans_the_runs_it_planned_flat(preset):
    import hashlib

    import yaml

    from balora.specs import load_spec

    spec = load_spec(preset)
    text = (ROOT / "balora" / "presets" / f"{preset}.yaml").read_text()
    entries = [yaml.safe_load(text)["base"], *yaml.safe_load(text)["grids"],
               *(yaml.safe_load(text).get("overrides") or {}).values()]
    assert any(isinstance(e.get(s), dict) for e in entries for s in SECTIONS)  # written by section
    keys, tuning = sorted(p.config.key() for p in spec.runs), sorted(p.config.key() for p in spec.tuning_runs())
    digest = hashlib.sha256(" ".join(keys + tuning).encode()).hexdigest()[:16]
    assert (len(keys), len(tuning), digest) == PRESETS_BY_SECTION[preset]


def test_the_cli_groups_the_run_options_by_section_under_their_old_names(capsys):
    from balora.cli import main

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps by the terminal's width
    groups = ["run options:", "method options:", "task options:", "base_transform options:"]
    assert all(g in text for g in groups) and [text.index(g) for g in groups] == sorted(text.index(g) for g in groups)
    starts = dict(zip(groups, [text.index(g) for g in groups], strict=True))
    for name in (n for n in DEFAULTS if n != "method_options"):  # a plug-in's options are flags of their own
        at = re.search(f"--{name.replace('_', '-')}[ ,]", text[starts[groups[0]]:]).start() + starts[groups[0]]
        section = section_of(name) or {"method": "method", "task": "task"}.get(name)
        group = f"{section} options:" if section else "run options:"
        after = [g for g in groups if starts[g] > starts[group]]
        assert starts[group] < at < (starts[after[0]] if after else len(text)), name
    assert "--peft_method" in text and "--ba_lora_base_rank" in text and "Read by ba_lora_dynamic." in text


TUNED_FLAT_SPEC = """name: tuned
base: {model: minilm, shots: 8, method: ba_lora}
tune: {learning_rate: [1.0e-3, 2.0e-3], allocation_power: [0.5, 1.0], seeds: [0]}
grids:
  - {budget_rank: [4, 8], seed: [42, 43]}
  - tune: {learning_rate: [1.0e-3], quant_group_size: [32, 64], seeds: [0, 1]}
    quant: nf4
    budget_rank: 4
    seed: 42
hypotheses:
  - name: BA-LoRA beats LoRA on a full-precision base
    arm: ba_lora
    where: {budget_rank: [4, 8], quant: null, strategy: proportional}
"""
TUNED_NESTED_SPEC = """name: tuned
base: {model: minilm, shots: 8, method: ba_lora}
tune:
  learning_rate: [1.0e-3, 2.0e-3]
  method: {allocation_power: [0.5, 1.0]}
  seeds: [0]
grids:
  - {budget_rank: [4, 8], seed: [42, 43]}
  - tune: {learning_rate: [1.0e-3], base_transform: {quant_group_size: [32, 64]}, seeds: [0, 1]}
    base_transform: {quant: nf4}
    budget_rank: 4
    seed: 42
hypotheses:
  - name: BA-LoRA beats LoRA on a full-precision base
    arm: ba_lora
    where:
      budget_rank: [4, 8]
      base_transform: {quant: null}
      method: {strategy: proportional}
"""


def test_tune_and_where_read_sections_like_the_grids(tmp_path):
    from balora.specs import load_spec

    def planned(text: str) -> tuple:
        path = tmp_path / "spec.yaml"
        path.write_text(text)
        spec = load_spec(str(path))
        return ([p.config.key() for p in spec.runs], [p.config.key() for p in spec.tuning_runs()],
                [p.tune for p in spec.runs], spec.report)

    flat = planned(TUNED_FLAT_SPEC)
    # tuning runs: 2 budgets × 4 candidates × 1 seed (the cells of seeds 42 and 43 share theirs), then 2 × 2
    assert len(flat[1]) == 2 * 4 + 2 * 2 and planned(TUNED_NESTED_SPEC) == flat


@pytest.mark.parametrize("old, new, message", [
    ("method: {allocation_power: [0.5, 1.0]}", "base_transform: {allocation_power: [0.5, 1.0]}",
     "line 5: 'allocation_power' is not in section base_transform: write it in section method"),
    ("base_transform: {quant_group_size: [32, 64]}", "task: {quant_group_size: [32, 64]}",
     "line 9: 'quant_group_size' is not in section task: write it in section base_transform"),
    ("method: {strategy: proportional}", "task: {strategy: proportional}",
     "line 19: 'strategy' is not in section task: write it in section method"),
    ("base_transform: {quant: null}", "task: {quant: null}",
     "line 18: 'quant' is not in section task: write it in section base_transform"),
    ("  learning_rate: [1.0e-3, 2.0e-3]\n", "  learning_rate: [1.0e-3, 2.0e-3]\n  allocation_power: [2.0]\n",
     "line 6: allocation_power is given twice"),
])
def test_a_tune_or_where_field_in_the_wrong_section_is_one_error_naming_its_line(old, new, message, tmp_path, capsys):
    assert old in TUNED_NESTED_SPEC
    assert message in dry_run_error(TUNED_NESTED_SPEC.replace(old, new), tmp_path, capsys)

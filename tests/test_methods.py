"""The method registry (a method is one record and one build function, known everywhere once registered), the
peers at the same budget (PiSSA, OLoRA, LoRA-GA, DoRA), the scaling rules across heterogeneous ranks, LoRA+, and
the `peers` preset (issue 38)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import random_batches, tiny_bert, tiny_gpt2
from peft import LoraConfig, PeftModel, get_peft_model, initialize_lora_eva_weights
from test_run import tiny_config
from transformers import AutoModelForSequenceClassification

from balora import allocation, config, method_registry
from balora.config import DEFAULTS, RunConfig, method_settings
from balora.errors import BaloraError
from balora.initialisation import lora_layer
from balora.method_registry import HeuristicOptions, Method, Style, register, unregister
from balora.methods import METHODS, dora_rank, eva, get_method, lora_config, olora
from balora.methods.base import MethodContext, Prepared, allocate_ranks, lora_config_for
from balora.models import TargetModule, target_modules
from balora.options import Options, check_positive, option
from balora.reallocation import RankController, ReallocationConfig
from balora.run import run_experiment
from balora.specs import load_spec
from balora.training import TrainSettings, optimizer_groups, train
from balora.tuning import candidate_of, cell_key

MINILM_QV = [TargetModule(f"layer.{i}.{kind}", 384, 384) for i in range(6) for kind in ("query", "value")]


def toy(name: str, option: str, options: type[Options]) -> Iterator[Method]:
    """A toy method, registered by its one `register` call for a test and forgotten after it: the first target
    gets `option`'s value × the rank of the others, LoRA's init."""
    def build(ctx: MethodContext) -> Prepared:
        weight = {t.name: getattr(ctx.config, option) if i == 0 else 1.0 for i, t in enumerate(ctx.targets)}
        ranks = allocate_ranks(ctx, weight, "proportional", power=1.0)
        return Prepared(lora_config_for(ctx, ranks), ranks)

    yield register(Method(name, build, name.replace("_", "-"), "heuristic", Style("yellow", ":", "o"), options=options,
                          importance_pass=False))
    unregister(name)


@pytest.fixture
def toy_method():
    """`first_heavy`, reading a built-in option."""
    yield from toy("first_heavy", "heuristic_ratio", HeuristicOptions)


def test_a_method_registered_in_one_call_is_known_everywhere(toy_method, tiny_model_dir, tiny_csv, tmp_path, capsys):
    """Nothing but the record and its build function: the method runs from the CLI and a sweep spec, RunConfig
    checks its settings, the dry run knows it makes no importance pass, the report orders, names and draws it."""
    from balora.cli import main
    from balora.estimate import Rates
    from balora.report.figures import OKABE_ITO, arm_style
    from balora.report.runs import arm_order, method_name

    assert get_method("first_heavy") is toy_method.build and METHODS["first_heavy"] is toy_method.build
    # the settings it reads, and only those
    assert "first_heavy" in method_settings()["heuristic_ratio"]
    RunConfig(method="first_heavy", heuristic_ratio=3.0)
    with pytest.raises(BaloraError, match="method first_heavy ignores --strategy"):
        RunConfig(method="first_heavy", strategy="top_k")
    # the CLI builds it
    data = ["--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4"]
    assert main(["allocate", "--method", "first_heavy", *data, "--heuristic-ratio", "3", "--json"]) == 0
    ranks = [m["rank"] for m in json.loads(capsys.readouterr().out)["modules"]]
    assert ranks[0] > max(ranks[1:])
    assert main(["allocate", "--method", "first_heavy", *data, "--strategy", "top_k"]) == 2
    assert "method first_heavy ignores --strategy" in capsys.readouterr().err
    # a sweep spec plans it
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: toy\nbase: {model: minilm, dataset: rotten_tomatoes, shots: 8, budget_rank: 4}\n"
                    "grids:\n  - {method: [lora, first_heavy], seed: [42]}\n")
    assert [p.config.method for p in load_spec(str(spec)).runs] == ["lora", "first_heavy"]
    # the dry run: no importance pass before training, unlike BA-LoRA
    rates = Rates(step_seconds=1.0, example_seconds=0.0)
    assert rates.overhead_for(RunConfig(method="first_heavy")) == 0.0 < rates.overhead_for(RunConfig(method="ba_lora"))
    # the report: after the other heuristics, before the ablations; its label and its style
    assert arm_order(["ba_lora_uniform", "first_heavy", "activation", "lora"]) == [
        "lora", "activation", "first_heavy", "ba_lora_uniform"]
    assert method_name("first_heavy") == "first-heavy"
    assert arm_style("first_heavy") == {"color": OKABE_ITO["yellow"], "linestyle": ":", "marker": "o"}


@dataclass(frozen=True)
class FirstWeightOptions(Options):
    """A plug-in's own options: no RunConfig field has this name."""
    first_weight: float = option(2.0, "first_weighted: the first target's weight against the others'.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "first_weight")


@pytest.fixture
def plugin_method():
    """`first_weighted`, registered after balora.config loaded, reading an option of its own."""
    yield from toy("first_weighted", "first_weight", FirstWeightOptions)


def test_a_plug_in_method_brings_options_of_its_own(plugin_method, tiny_model_dir, tiny_csv, tmp_path, capsys):
    """Its options are no RunConfig fields: a run keeps them in `method_options`, and they read like fields
    (an attribute, a flag, a key under method: in the nested form and in a spec), checked by their class."""
    from balora.cli import main

    config = RunConfig.from_nested({"method": {"name": "first_weighted", "first_weight": 4.0}})
    assert config.first_weight == 4.0 and config.method_options == {"first_weight": 4.0}
    assert config.nested()["method"] == {"name": "first_weighted", "first_weight": 4.0}
    assert RunConfig.from_nested(config.nested()) == config == RunConfig.from_dict(config.to_dict())
    # at its default it is not stored, so the key is the key of the run that leaves it out
    default = RunConfig.from_dict({"method": "first_weighted", "first_weight": 2.0})
    assert default.method_options is None and default.first_weight == 2.0
    assert default.key() == RunConfig(method="first_weighted").key() != config.key()
    for values, message in [({"method": "lora", "first_weight": 4.0}, "method lora ignores --first-weight "
                                                                      r"\(read only by first_weighted\)"),
                            ({"method": "first_weighted", "first_weight": -1.0}, "first_weight must be a positive"),
                            ({"method": "first_weighted", "first_weight": "x"}, "first_weight must be float"),
                            ({"method_options": {"strategy": "top_k"}}, "'strategy' is no plug-in method's option")]:
        with pytest.raises(BaloraError, match=message):
            RunConfig.from_dict(values)
    # a sweep spec plans it by section, and names the line of an option in the wrong section
    spec = tmp_path / "spec.yaml"
    text = ("name: toy\nbase: {model: minilm, shots: 8, budget_rank: 4}\n"
            "grids:\n  - {method: {name: first_weighted, first_weight: [2.0, 4.0]}, seed: [42]}\n")
    spec.write_text(text)
    assert [p.config.first_weight for p in load_spec(str(spec)).runs] == [2.0, 4.0]
    # and tunes it: a tuning run's candidate is its value, in the cell of the run it tunes
    spec.write_text(text.replace("first_weight: [2.0, 4.0]}", "}, tune: {method: {first_weight: [2.0, 4.0]}, seeds: [0]}"))
    tuned = load_spec(str(spec))
    assert tuned.runs[0].config.tuned == ["first_weight"]
    tuning = [p.config.to_dict() for p in tuned.tuning_runs()]
    assert [candidate_of(c, ["first_weight"]) for c in tuning] == [(2.0,), (4.0,)]
    assert {cell_key(c) for c in tuning} == {cell_key(tuned.runs[0].config.to_dict())}
    spec.write_text(text.replace("first_weight: [2.0, 4.0]}", "}, base_transform: {first_weight: 4.0}"))
    assert main(["sweep", str(spec), "--dry-run", "--db", str(tmp_path / "db")]) == 2
    assert "line 4: 'first_weight' is not in section base_transform: write it in section method" in capsys.readouterr().err
    # the CLI has its flag, and the build reads it from the config
    data = ["--model", str(tiny_model_dir), "--dataset", str(tiny_csv), "--budget-rank", "4"]
    assert main(["allocate", "--method", "first_weighted", *data, "--first-weight", "4", "--json"]) == 0
    ranks = [m["rank"] for m in json.loads(capsys.readouterr().out)["modules"]]
    assert ranks[0] > max(ranks[1:])


def test_plug_in_options_are_read_from_the_registry_once_per_change_of_it(plugin_method, monkeypatch):
    """Every RunConfig checks the plug-in options and which methods read each setting (planning the paper preset
    asks thousands of times): asked again, they come from the cache without reading the options classes or the
    records; forgetting or registering a method reads them anew."""
    reads = []
    monkeypatch.setattr(config, "fields", lambda options: reads.append(options) or fields(options))
    monkeypatch.setattr(method_registry, "readers", lambda real=method_registry.readers: reads.append("readers") or real())
    assert "first_weight" in config.plugin_options() and "first_weight" in config.method_settings()
    reads.clear()
    assert "first_weight" in config.plugin_options() and config.method_settings()["first_weight"] == ("first_weighted",)
    assert reads == []
    unregister(plugin_method.name)
    try:
        assert "first_weight" not in config.plugin_options() and "first_weight" not in config.method_settings()
        assert "readers" in reads and len(reads) > 1
    finally:
        register(plugin_method)  # for the fixture to forget
    assert config.plugin_options()["first_weight"].default == 2.0 and "first_weight" in config.method_settings()
    # copies: a caller's change does not reach the next caller
    config.plugin_options().clear()
    config.method_settings().clear()
    assert "first_weight" in config.plugin_options() and "first_weight" in config.method_settings()


def test_an_unregistered_method_is_unknown_again(toy_method):
    unregister(toy_method.name)
    try:
        with pytest.raises(BaloraError, match="unknown method 'first_heavy'"):
            get_method("first_heavy")
        assert "first_heavy" not in METHODS and "first_heavy" not in method_settings()["heuristic_ratio"]
        with pytest.raises(BaloraError, match="already registered"):
            register(method_registry.get("lora"))
    finally:
        register(toy_method)  # for the fixture to forget


def test_every_registered_method_builds_and_reads_only_settings_runconfig_has():
    for name in method_registry.names():
        method = method_registry.get(name)
        assert callable(METHODS[name]) and set(method.settings) <= set(DEFAULTS) - {"method"}, name
    with pytest.raises(BaloraError, match="group must be one of"):
        Method("x", "balora.methods.lora:lora", "x", "extra", Style("black", "-", "o"))
    with pytest.raises(BaloraError, match="colour must be one of"):
        Method("x", "balora.methods.lora:lora", "x", "main", Style("red", "-", "o"))
    with pytest.raises(BaloraError, match="ranks must be one of uniform, allocated, shuffled"):
        Method("x", "balora.methods.lora:lora", "x", "main", Style("black", "-", "o"), ranks="random", init="zero")


def test_config_and_the_dry_run_read_the_registry_without_importing_torch():
    code = "import sys, balora.config, balora.estimate, balora.method_registry; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_dora_takes_the_largest_uniform_rank_whose_factors_and_magnitudes_fit():
    """MiniLM q+v at r=8 (73,728): rank 8 with the 12 × 384 magnitudes costs 78,336, rank 7 costs 69,120."""
    budget = allocation.rank_budget(MINILM_QV, 8)
    assert budget == 73_728
    assert dora_rank(MINILM_QV, budget) == 7 and 7 * 12 * 768 + 12 * 384 == 69_120
    assert dora_rank(MINILM_QV, 78_336) == 8 and dora_rank(MINILM_QV, 78_335) == 7
    with pytest.raises(BaloraError, match="DoRA"):
        dora_rank(MINILM_QV, 12 * 768 + 12 * 384 - 1)


def test_a_dora_run_counts_its_magnitudes_and_records_what_it_leaves_of_the_budget(tiny_model_dir, tiny_csv):
    result = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method="dora", epochs=1), progress=False).result
    budget, rank = result["budget"]["lora_budget"], result["allocation"][0]["rank"]
    per_rank, magnitudes = 4 * (32 + 32), 4 * 32  # tiny BERT's query and value, 2 layers, 32 × 32
    assert {m["rank"] for m in result["allocation"]} == {rank}
    assert result["params"]["lora"] == result["params"]["lora_final"] == rank * per_rank + magnitudes
    assert rank * per_rank + magnitudes <= budget < (rank + 1) * per_rank + magnitudes
    assert result["budget"]["unspent"] == budget - result["params"]["lora"]


BATCH = {"input_ids": torch.tensor([[2, 5, 9, 3], [2, 12, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}


@pytest.mark.parametrize("method", ["pissa", "olora", "lora_ga", "dora"])
def test_each_peer_saves_an_adapter_plain_peft_loads_on_the_original_base(method, tmp_path, tiny_model_dir, tiny_csv):
    out = tmp_path / "run"
    output = run_experiment(tiny_config(tiny_model_dir, tiny_csv, method=method, epochs=1), out, progress=False)
    result, trained = output.result, output.model.eval()
    original = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    query = "bert.encoder.layer.0.attention.self.query"
    mutated = not torch.equal(lora_layer(trained, query).base_layer.weight, original.get_submodule(query).weight)
    assert mutated == (method != "dora")  # PiSSA, OLoRA and LoRA-GA train on a residual of the base weights
    with torch.no_grad():
        expected = trained(**BATCH).logits
        reloaded = PeftModel.from_pretrained(original, out / "adapter").eval()
        torch.testing.assert_close(reloaded(**BATCH).logits, expected, rtol=1e-4, atol=1e-5)
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    ranks = {m["name"].replace(".", "\\."): m["rank"] for m in result["allocation"]}
    if method == "dora":
        assert saved["use_dora"] and saved["rank_pattern"] == ranks and "saved_adapter" not in result["params"]
    else:  # PEFT's conversion into a LoRA of the original base: [A | A₀], [B | −B₀], twice the rank, same scaling
        assert saved["rank_pattern"] == {k: 2 * r for k, r in ranks.items()}
        assert all(saved["alpha_pattern"][k] == 2 * r for k, r in saved["rank_pattern"].items())
        assert result["params"]["saved_adapter"] == 2 * result["params"]["lora"]
        assert result["params"]["lora"] == sum(m["params"] for m in result["allocation"]) <= result["budget"]["lora_budget"]


def _tiny_ranks() -> list[allocation.ModuleRank]:
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value",
             "bert.encoder.layer.1.attention.self.query"]
    return [allocation.ModuleRank(name, 32, 32, 0.0, rank) for name, rank in zip(names, (2, 8, 32))]


@pytest.mark.parametrize("rule, expected", [
    ("constant", (2.0, 2.0, 2.0)),  # alpha_ratio whatever the rank
    ("rslora", (4.0, 2.0, 1.0)),  # 2·√(8/r): 2·√4, 2·√1, 2·√(1/4)
    ("standard", (8.0, 2.0, 0.5)),  # 2·8/r: a fixed alpha of 16
])
def test_each_scaling_rule_sets_every_module_s_scaling(rule, expected):
    """Ranks 2, 8 and 32 at rank-equivalent 8, alpha_ratio 2: the scalings PEFT's layers end up with."""
    config = lora_config(_tiny_ranks(), task_type="SEQ_CLS", alpha_ratio=2.0, lora_dropout=0.0, modules_to_save=None,
                         scaling_rule=rule, reference_rank=8.0)
    model = get_peft_model(tiny_bert(), config)
    assert tuple(lora_layer(model, m.name).scaling["default"] for m in _tiny_ranks()) == pytest.approx(expected)
    assert not config.use_rslora  # every rule is in alpha_pattern, which PEFT's conversions and reloads keep


def test_dynamic_reallocation_keeps_the_scaling_rule_when_it_resizes():
    """Four 32 × 32 modules at rank 4 each (rank-equivalent 4), the standard rule: a reallocation that moves
    ranks to the first module leaves every module at scaling 2·4/r, and the saved patterns say so."""
    names = [f"bert.encoder.layer.{i}.attention.self.{kind}" for i in (0, 1) for kind in ("query", "value")]
    targets = [TargetModule(name, 32, 32) for name in names]
    initial = [allocation.ModuleRank(name, 32, 32, 1.0, 4) for name in names]
    config = lora_config(initial, task_type="SEQ_CLS", alpha_ratio=2.0, lora_dropout=0.0, modules_to_save=None,
                         scaling_rule="standard", reference_rank=4.0)
    model = get_peft_model(tiny_bert(), config)
    controller = RankController(ReallocationConfig(), targets, 4 * 4 * 64, 100, 2.0, initial, scaling_rule="standard")
    controller.smoothed = torch.tensor([10.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert controller.reallocate(model, 50, None)
    ranks = controller.ranks
    assert ranks[names[0]] > 4 and sum(ranks.values()) == 16
    for name in names:
        assert lora_layer(model, name).scaling["default"] == pytest.approx(2.0 * 4 / ranks[name])
        assert model.peft_config["default"].alpha_pattern[name.replace(".", "\\.")] == pytest.approx(8.0)


@pytest.mark.parametrize("rule, power", [("constant", 0.0), ("rslora", 0.5), ("standard", 1.0)])
def test_eva_follows_the_scaling_rule_across_the_ranks_it_redistributes(rule, power):
    """EVA moves ranks itself: handed a redistribution of rank 4 (2, 6, 4, 4), every module's scaling is
    2·(4/r)^power, at rank 4 alpha_ratio's 2 whatever the rule."""
    names = [m.name for m in _tiny_ranks()] + ["bert.encoder.layer.1.attention.self.value"]
    ctx = SimpleNamespace(config=RunConfig(method="eva", scaling_rule=rule), targets=[TargetModule(n, 32, 32) for n in names],
                          budget=4 * 4 * 64, task_type="SEQ_CLS", head_modules=["classifier"])
    model = get_peft_model(tiny_bert(), eva(ctx).peft_config)
    ranks = dict(zip(names, (2, 6, 4, 4)))
    initialize_lora_eva_weights(model, eva_state_dict={f"base_model.model.{n}": torch.randn(r, 32) for n, r in ranks.items()})
    for name, rank in ranks.items():
        assert lora_layer(model, name).r["default"] == rank
        assert lora_layer(model, name).scaling["default"] == pytest.approx(2.0 * (4 / rank) ** power)


def test_olora_refuses_gpt2_s_conv1d_layers_which_peft_s_init_cannot_factor():
    model = tiny_gpt2()
    ctx = SimpleNamespace(model=model, targets=target_modules(model, None))
    with pytest.raises(BaloraError, match="olora cannot adapt transformer.h.0.attn.c_attn"):
        olora(ctx)


def test_loraplus_gives_every_b_its_ratio_times_the_learning_rate_of_the_rest():
    model = get_peft_model(tiny_bert(), LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=2))
    groups = optimizer_groups(model, 1e-3, 16.0)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(lr) == {id(p) for p in trainable.values()}
    assert {n for n, p in trainable.items() if lr[id(p)] == pytest.approx(16e-3)} == {n for n in trainable if "lora_B" in n}
    assert {lr[id(p)] for n, p in trainable.items() if "lora_B" not in n} == {1e-3}  # A and the head
    assert len(optimizer_groups(model, 1e-3, 1.0)) == 1  # off: one group, the optimizer as before

    seen = []  # the schedule scales both groups alike: B stays at 16 × A at every step
    train(model, random_batches(3), TrainSettings(epochs=1, learning_rate=1e-3, loraplus_ratio=16.0, progress=False),
          after_step=lambda _m, _s, optimizer: seen.append([g["lr"] for g in optimizer.param_groups]) and False)
    assert all(b == pytest.approx(16 * a) and a > 0 for a, b in seen[:-1])


def test_a_sweep_tunes_the_scaling_rule_and_loraplus_like_a_learning_rate(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: levers\nbase: {model: minilm, dataset: rotten_tomatoes, shots: 8, budget_rank: 4}\n"
                    "tune: {learning_rate: [0.001], scaling_rule: [constant, rslora, standard], "
                    "loraplus_ratio: [1.0, 4.0, 16.0], seeds: [0, 1]}\n"
                    "grids:\n  - {method: [lora, ba_lora], seed: [42, 43, 44]}\n")
    loaded = load_spec(str(spec))
    tuning = loaded.tuning_runs()
    assert len(tuning) == 2 * 3 * 3 * 2
    assert {(p.config.scaling_rule, p.config.loraplus_ratio) for p in tuning} == {
        (rule, ratio) for rule in ("constant", "rslora", "standard") for ratio in (1.0, 4.0, 16.0)}
    assert all(set(p.config.tuned) == {"learning_rate", "scaling_rule", "loraplus_ratio"} for p in loaded.runs)


def test_the_new_settings_at_their_defaults_keep_every_stored_run_s_key():
    stored = json.loads(next(Path(__file__).parents[1].joinpath("results", "paper").glob("*.json")).read_text())
    config = RunConfig.from_dict(stored["config"])
    assert (config.scaling_rule, config.loraplus_ratio) == ("constant", 1.0) and config.key() == stored["key"]
    assert RunConfig(scaling_rule="rslora").key() != RunConfig().key() != RunConfig(loraplus_ratio=4.0).key()


@pytest.mark.parametrize("values, message", [
    (dict(scaling_rule="sqrt"), "scaling-rule"),
    (dict(loraplus_ratio=0.0), "loraplus-ratio"),
    (dict(method="adalora", scaling_rule="rslora"), "adalora"),
    (dict(method="pissa", quant="nf4"), "pissa"),
])
def test_settings_a_method_cannot_honour_are_refused_with_the_fix(values, message):
    with pytest.raises(BaloraError, match=message):
        RunConfig(**values)


def test_the_peers_preset_compares_every_peer_at_experiment_1_s_r8_and_reuses_the_paper_s_runs():
    peers, paper = load_spec("peers"), load_spec("paper")
    assert peers.results_dir == "results/peers"
    assert {p.config.method for p in peers.runs} == {"lora", "ba_lora", "pissa", "olora", "lora_ga", "dora", "adalora",
                                                     "eva"}
    assert len(peers.runs) == 8 * 5 and {p.config.seed for p in peers.runs} == {42, 43, 44, 45, 46}
    assert {(c.model, c.dataset, c.train_size, c.budget_rank, c.batch_size, c.target_modules, c.evaluations)
            for c in (p.config for p in peers.runs)} == {("minilm", "rotten_tomatoes", 2000, 8, 32, None, 4)}
    assert all(p.tune.seeds == [0, 1] and p.tune.extend == 2 and p.tune.lengthen == 1 for p in peers.runs)
    assert all(p.config.tuned == ["learning_rate"] and p.config.epochs == 3 for p in peers.runs
               if p.config.method != "adalora")
    # LoRA, BA-LoRA, EVA and AdaLoRA are the paper's own cells: their tuning runs (and the evaluation seeds the
    # paper has) have the paper's keys, so a sweep with the paper's database runs only the rest
    paper_keys = {p.config.key() for p in [*paper.runs, *paper.tuning_runs()]}
    shared = [p for p in [*peers.runs, *peers.tuning_runs()] if p.config.method in ("lora", "ba_lora", "eva", "adalora")
              and (p.config.tuning or p.config.seed <= 44 or p.config.method in ("lora", "ba_lora"))]
    assert len(shared) == 8 + 8 + 8 + 16 + 5 + 5 + 3 + 3 and all(p.config.key() in paper_keys for p in shared)


def test_a_dry_run_of_the_peers_preset_plans_both_phases_and_trains_nothing(tmp_path, monkeypatch, capsys):
    from balora import estimate
    from balora.store import ResultsStore
    from balora.sweeps import run_sweep

    monkeypatch.setattr(estimate.Estimator, "seconds", lambda self, config: 60.0)  # no calibration: planning only
    run_sweep(load_spec("peers"), db=str(tmp_path / "r.db"), dry_run=True, results_dir=str(tmp_path / "runs"))
    out = capsys.readouterr().out
    assert re.search(r"tuning +72 runs: 0 done, 72 to run", out)  # 7 cells × 4 rates × 2 seeds, AdaLoRA's 4 × 2 epochs × 2
    assert re.search(r"evaluation +40 runs: 0 done, 40 to run; 0 of 8 tuned cells selected, 40 runs awaiting", out)
    with ResultsStore(str(tmp_path / "r.db")) as store:
        assert store.runs() == []


def test_a_sweep_keeps_the_grid_points_of_a_plug_in_option(plugin_method, tmp_path):
    """`--only` reads a plug-in's option as it reads a field, its value as the option's type (4 is 4.0)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: toy\nbase: {model: minilm, shots: 8, budget_rank: 4}\n"
                    "grids:\n  - {method: {name: first_weighted, first_weight: [2.0, 4.0]}, seed: [42]}\n")
    assert [p.config.first_weight for p in load_spec(str(spec), ["first_weight=4"]).runs] == [4.0]
    with pytest.raises(BaloraError, match="'second_weight' is not a run setting"):
        load_spec(str(spec), ["second_weight=4"])


def test_an_arm_that_varies_a_plug_in_option_is_named_by_it(plugin_method):
    """The report names the arm by the option, as by a field: first_weight=4.0, not the method_options it is stored in;
    the run at the option's default keeps the method's plain name."""
    from test_report import make_result

    from balora.report.runs import load_runs

    results = []
    for options in (None, {"first_weight": 4.0}):
        for seed in (42, 43):
            result = make_result("lora", 8, 64, seed)
            result["config"] |= {"method": "first_weighted", "method_options": options}
            result["key"] += str(options)
            results.append(result)
    assert sorted(set(load_runs(results)["arm_label"])) == ["first-weighted", "first-weighted (first_weight=4.0)"]


def test_a_hypothesis_s_where_reads_a_plug_in_option_as_the_protocol_does(plugin_method):
    """`where: {first_weight: 4.0}` picks the runs that stored it in method_options, and the default's runs by
    the default, as `--only` and the arm labels read it."""
    from test_report import make_result

    from balora.report.criteria import _value
    from balora.report.runs import load_runs

    results = []
    for options in (None, {"first_weight": 4.0}):
        result = make_result("lora", 8, 64, 42)
        result["config"] |= {"method": "first_weighted", "method_options": options}
        result["key"] += str(options)
        results.append(result)
    frame = load_runs(results)
    default = RunConfig(method="first_weighted").first_weight
    assert sorted(_value(row, "first_weight") for _, row in frame.iterrows()) == sorted([default, 4.0])

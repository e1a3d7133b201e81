from __future__ import annotations

import pytest
from conftest import TINY_MODELS

from balora.errors import BaloraError
from balora.models import default_target_names, head_module_names, head_parameter_count, target_modules


@pytest.mark.parametrize("arch, expected", [("bert", ["query", "value"]), ("gpt2", ["c_attn"]), ("llama", ["q_proj", "v_proj"])])
def test_default_targets_per_architecture(arch, expected):
    assert default_target_names(TINY_MODELS[arch]()) == expected


def test_distilbert_defaults_to_q_lin_v_lin():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=48))
    assert default_target_names(model) == ["q_lin", "v_lin"]
    assert head_module_names(model) == ["pre_classifier", "classifier"]
    assert head_parameter_count(model) == 32 * 32 + 32 + 32 * 2 + 2


def test_conv1d_shapes_are_reported_as_out_by_in():
    targets = target_modules(TINY_MODELS["gpt2"](), ["c_attn", "c_fc"])
    shapes = {t.name.split(".")[-1]: (t.d_out, t.d_in) for t in targets}
    assert shapes == {"c_attn": (96, 32), "c_fc": (128, 32)}
    assert len(targets) == 4


def test_head_is_never_a_target_and_is_counted_apart():
    model = TINY_MODELS["bert"]()
    targets = target_modules(model, ["dense"])
    assert all(not t.name.startswith("classifier") for t in targets)
    assert head_module_names(model) == ["classifier"]
    assert head_parameter_count(model) == 32 * 2 + 2


def test_unknown_module_names_the_fix():
    with pytest.raises(BaloraError, match="q_lin not found.*try query value"):
        target_modules(TINY_MODELS["bert"](), ["q_lin"])


@pytest.mark.parametrize("path", ["/nonexistent/dir", "./nonexistent", "../nonexistent/model"])
def test_a_missing_model_folder_is_called_missing_not_looked_up_on_the_hub(path):
    from balora.models import model_config, resolve_model_path
    from balora.tasks import task_of

    for call in (resolve_model_path, model_config, task_of):
        with pytest.raises(BaloraError, match=f"model folder '{path}' does not exist; check the path"):
            call(path)

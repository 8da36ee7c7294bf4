"""Shared fixtures: tiny generated image folders (no downloads, no shared data)."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from degrader.threads import set_threads

# The suite shares 2 CPU cores with other processes. With 2 torch threads per process, busy cores leave
# OpenMP threads waiting on each other: a 10-step tiny fit took 45 s with 2 threads and 1 s with 1. Set through
# degrader.threads, so that the library's runs keep it rather than apply the policy.
set_threads(1)


def load_script(path: Path, name: str) -> types.ModuleType:
    """A script that is not a package module (benchmarks/, examples/), imported from its file as `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smooth_image(size: int, seed: int) -> Image.Image:
    """A smooth random colour image (a 4x4 random grid enlarged bicubically): structure a tiny net can learn."""
    rs = np.random.RandomState(seed)
    small = Image.fromarray(rs.randint(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
    return small.resize((size, size), Image.Resampling.BICUBIC)


def write_images(folder: Path, n: int, size: int, seed: int = 0, fmt: str = "png") -> list[Path]:
    """Write `n` smooth `size` x `size` images named 000.png, 001.png, ... into `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.{fmt}"
        smooth_image(size, seed * 1000 + i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def make_images():
    """`write_images(folder, n, size, seed=0)`: write smooth generated PNGs, for tests that need odd folders."""
    return write_images


@pytest.fixture
def folders(tmp_path: Path, make_images) -> tuple[Path, Path]:
    """12 HR images (64 px) and 40 real LR images (16 px): enough for a 20-image held-out LR set."""
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    make_images(hr, 12, 64, seed=1)
    make_images(lr, 40, 16, seed=2)
    return hr, lr


@pytest.fixture
def tiny_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two unpaired folders: `hr/` with 6 smooth 64x64 PNGs and `lr/` with 6 smooth 16x16 PNGs."""
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 6, 64, seed=1)
    write_images(lr, 6, 16, seed=2)
    return hr, lr

"""Fixtures: a tiny synthetic IDX dataset that a small CNN can learn in seconds."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0800|ndim, big-endian dims, raw bytes."""
    header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


PATTERNS = np.random.default_rng(42).random((10, 6, 6)) > 0.5  # one fixed 6x6 glyph per class


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each image is its class's glyph (scaled x2) at a random place, on noise: any conv net with a
    GAP or flatten head can learn it in a few hundred steps, chance is 10%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    glyphs = PATTERNS.repeat(2, 1).repeat(2, 2)
    for i, y in enumerate(labels):
        r, c = rng.integers(0, 28 - 12, 2)
        images[i, r : r + 12, c : c + 12][glyphs[y]] = 255
    return images, labels


def write_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 1200, n_test: int = 300) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_split(n, seed)
        (raw / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (raw / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return raw


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    write_idx_dataset(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Tests run in a temp dir (studies/ lands there) and never see the real data root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUDGETNAS_DATA", raising=False)

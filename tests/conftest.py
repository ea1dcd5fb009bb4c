"""Shared fixtures. Real recordings live in ../shared (read-only, not shipped with the package)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPIKECUT_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "real"
NMNIST_1K = SHARED / "data" / "nmnist_1k"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the real recordings live in ../shared next to the checkout "
            "(set SPIKECUT_SHARED to point elsewhere)"
        )
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """`../shared/data/real`: 27 real recordings described in its SOURCES.md."""
    return _require(REAL)


@pytest.fixture(scope="session")
def nmnist_1k() -> Path:
    """`../shared/data/nmnist_1k`: the first 1000 N-MNIST training samples with labels."""
    return _require(NMNIST_1K)

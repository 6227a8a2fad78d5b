from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Decoded-image caches go to a per-session folder unless the caller chose one (CI may reuse it).
    os.environ.setdefault("LBSTUDY_CACHE", str(tmp_path_factory.mktemp("lbstudy-cache")))


@pytest.fixture
def shared_cifar() -> Path:
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {SHARED_CIFAR} (see shared/data/README.md)")
    return SHARED_CIFAR

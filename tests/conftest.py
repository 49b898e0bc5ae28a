"""Shared fixtures: a tiny synthetic dataset generated once per test session."""

from __future__ import annotations

import pytest

from snn.data.synthetic import generate_dataset
from snn.data.synthetic_config import SyntheticConfig

TINY = {"height": 32, "width": 32, "num_frames": 5}


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate_dataset(root, SyntheticConfig(**TINY), 3, 1, 1, seed=0, workers=1, progress=False)
    return root

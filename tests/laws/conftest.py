"""Fixtures for the loss-law tests: the shared law data sets, loaded once per session."""

from __future__ import annotations

import pytest

from planner.laws.data import read_loss_data
from planner.laws.fit_report import drop_highest_loss


@pytest.fixture(scope="session")
def laws_dir(shared_dir):
    folder = shared_dir / "data" / "laws"
    if not folder.is_dir():
        pytest.skip(f"law data not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def epoch_csv(laws_dir):
    return laws_dir / "chinchilla_epoch_svg_extracted.csv"


@pytest.fixture(scope="session")
def gemstones_hot(laws_dir):
    return laws_dir / "gemstones_hot_100b.jsonl"


@pytest.fixture(scope="session")
def epoch_points(epoch_csv):
    """The 240 points Besiroglu et al. 2024 fitted: the digitisation less its 5 highest losses."""
    return drop_highest_loss(read_loss_data(str(epoch_csv)), 5)

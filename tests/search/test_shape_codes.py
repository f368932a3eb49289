"""The frontier's per-shape numbering (search.stopping._shape_codes) is the numbering np.unique over the stacked
columns gives, whatever the values: whole numbers through its one-key sort, the rest through np.unique itself."""

from __future__ import annotations

import numpy as np
import pytest

from planner.search.stopping import _shape_codes


def _reference(*columns):
    _, codes = np.unique(np.stack([np.asarray(c) for c in columns]), axis=1, return_inverse=True)
    return codes.reshape(-1)


@pytest.mark.parametrize("seed", range(5))
def test_whole_numbers_are_numbered_as_the_stacked_unique_numbers_them(seed):
    rng = np.random.default_rng(seed)
    rows = 20_000
    models = rng.integers(0, 30, rows).astype(np.int32)
    gpus = rng.choice([8, 16, 64, 1024, 8192], rows).astype(np.int32)
    batch = rng.choice([32.0, 512.0, 1536.0, 4672.0, 2.0 ** 40], rows)  # sequences, as the search's float column
    codes = _shape_codes(models, gpus, batch)
    np.testing.assert_array_equal(codes, _reference(models, gpus, batch))
    assert codes.max() + 1 == len({(m, g, b) for m, g, b in zip(models, gpus, batch)})


def test_values_one_key_cannot_hold_take_the_stacked_unique():
    fractional = np.array([1.5, 1.25, 1.5, 3.0])
    huge = np.array([2.0 ** 61, 1.0, 2.0 ** 61, 5.0])
    small = np.array([1, 0, 1, 0], dtype=np.int32)
    for column in (fractional, huge, -fractional, np.array([1.0, np.nan, 1.0, 2.0]), np.array([np.inf, 1.0, 1.0, 0.0])):
        np.testing.assert_array_equal(_shape_codes(small, column), _reference(small, column))
    # 1.5 and 1.25 are two shapes, not one (a cast to int64 would merge them)
    assert len(set(_shape_codes(fractional).tolist())) == 3


def test_no_rows():
    empty = np.array([], dtype=np.int32)
    assert _shape_codes(empty, empty, np.array([])).shape == (0,)

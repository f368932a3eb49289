"""Muennighoff et al. 2023 effective data, and --unique-tokens through load_law."""

from __future__ import annotations

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.laws.data_constrained import R_D_STAR, DataConstrainedLaw, effective_amount
from planner.laws.published import EPOCH_2024, MUENNIGHOFF_2023
from planner.laws.registry import BUILTIN_LAWS, DEFAULT_LAW, load_law


def test_effective_data_formula():
    U = 1e11
    assert float(effective_amount(5e10, 5e10, R_D_STAR)) == 5e10          # one pass: nothing lost
    four_epochs = float(effective_amount(4 * U, U, R_D_STAR))
    expected = U + U * 15.39 * (1 - np.exp(-3 / 15.39))                   # eq. 5 by hand
    assert four_epochs == pytest.approx(expected, rel=1e-12)
    assert 0.9 * 4 * U < four_epochs < 4 * U     # ~4 epochs are worth almost as much as fresh data
    assert float(effective_amount(1e6 * U, U, R_D_STAR)) == pytest.approx(U * (1 + 15.39), rel=1e-9)


def test_unique_tokens_leave_unrepeated_runs_alone_and_hurt_repeated_ones():
    law = load_law("epoch", unique_tokens=1e12)
    assert isinstance(law, DataConstrainedLaw) and law.base is EPOCH_2024
    N = np.array([1e9, 1e10])
    assert np.allclose(law.predict(N, 5e11), EPOCH_2024.predict(N, 5e11), rtol=1e-12)
    assert np.all(law.predict(N, 2e13) > EPOCH_2024.predict(N, 2e13))
    # More data can never hurt: loss still falls (slowly) with more repeated epochs.
    D = np.logspace(12, 14, 9)
    assert np.all(np.diff(law.predict(1e10, D)) < 0)
    # Muennighoff et al.: excess parameters lose value faster than repeated tokens (R_N* < R_D*),
    # so under a data cap the optimum spends compute on more epochs, not on a bigger model.
    n_free, d_free = EPOCH_2024.compute_optimal(1e25)
    n_capped, d_capped = law.compute_optimal(1e25)
    assert n_capped < n_free and d_capped > d_free and np.isclose(6 * n_capped * d_capped, 1e25)
    assert any("epochs" in w for w in law.extrapolation_warnings(1e10, 1e14))


def test_registry_names_default_and_errors(tmp_path):
    assert DEFAULT_LAW == "epoch" and {"chinchilla", "epoch", "kaplan", "muennighoff"} <= set(BUILTIN_LAWS)
    assert load_law("muennighoff", unique_tokens=1e11).base is MUENNIGHOFF_2023
    with pytest.raises(PlannerInputError, match="--unique-tokens"):
        load_law("muennighoff")
    with pytest.raises(PlannerInputError, match="Chinchilla-form"):
        load_law("kaplan", unique_tokens=1e11)
    with pytest.raises(PlannerInputError, match=r"--law.*epoch.*chinchilla"):
        load_law("gpt-7")
    with pytest.raises(PlannerInputError, match="no such law file"):
        load_law(str(tmp_path / "missing.yaml"))

"""Batch-size rules: published formulas, McCandlish's token penalty and the largest batch allowed."""

from __future__ import annotations

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.laws import batch_size as bs

D = np.array([1e10, 3e11, 1.4e12, 1.5e13])


def test_step_law_and_deepseek_formulas():
    assert np.allclose(bs.optimal_batch_tokens(D), 0.58 * D**0.571, rtol=1e-12)
    # Chinchilla's 1.4T tokens: Step Law puts B_opt near 5M tokens (Chinchilla used 1.5M-3M).
    assert 4e6 < float(bs.optimal_batch_tokens(1.4e12)) < 6e6
    N = 7e10
    assert np.allclose(bs.optimal_batch_tokens(D, N, "deepseek"), 0.292 * (6 * N * D) ** 0.3271, rtol=1e-12)
    with pytest.raises(PlannerInputError, match="needs the model size"):
        bs.optimal_batch_tokens(D, rule="deepseek")
    with pytest.raises(PlannerInputError, match="--batch-rule"):
        bs.optimal_batch_tokens(D, rule="huge")


def test_batch_grows_with_data_only_under_step_law():
    b = bs.optimal_batch_tokens(D)
    assert np.all(np.diff(b) > 0)
    assert np.all(bs.critical_batch_tokens(D) > b)


def test_penalty_is_one_up_to_b_opt_and_follows_mccandlish_above():
    b_opt = bs.optimal_batch_tokens(D)
    assert np.allclose(bs.token_efficiency_penalty(b_opt, D), 1.0)
    assert np.allclose(bs.token_efficiency_penalty(b_opt / 4, D), 1.0)
    b_crit = bs.critical_batch_tokens(D)
    big = 10 * b_crit
    expected = (1 + big / b_crit) / (1 + b_opt / b_crit)     # E = E_min (1 + B/B_noise)
    assert np.allclose(bs.token_efficiency_penalty(big, D), expected)
    assert np.all(np.diff(bs.token_efficiency_penalty(np.logspace(5, 9, 20), 1e12)) >= 0)


@pytest.mark.parametrize("extra", [0.0, 0.25, 0.5, 1.0])
def test_max_batch_is_where_the_penalty_reaches_the_tolerance(extra):
    b_max = bs.max_batch_tokens(D, max_extra_tokens=extra)
    assert np.allclose(bs.token_efficiency_penalty(b_max, D), 1 + extra)
    assert np.all(b_max >= bs.optimal_batch_tokens(D) * (1 - 1e-12))


def test_kaplan_critical_batch_from_loss():
    # Kaplan et al. 2020 eq. 5.3: B_crit = 2e8 tokens / L^(1/0.21); about 7.4M tokens at L = 2.
    assert float(bs.kaplan_critical_batch_tokens(2.0)) == pytest.approx(2e8 / 2 ** (1 / 0.21), rel=1e-12)
    assert 7e6 < float(bs.kaplan_critical_batch_tokens(2.0)) < 8e6

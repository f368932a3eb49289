"""Built-in laws against their papers: frontier exponents, closed forms, intervals, warnings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner.laws.base import LossLaw
from planner.laws.chinchilla import OvertrainingLaw
from planner.laws.published import EPOCH_2024, HOFFMANN_2022, KAPLAN_2020, MUENNIGHOFF_2023

BUDGETS = np.logspace(20, 26, 7)


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def test_hoffmann_frontier_exponent_is_the_published_0_46():
    # Hoffmann et al. 2022, Table 2, approach 3: N_opt ∝ C^0.46, D_opt ∝ C^0.54.
    n_opt, d_opt = HOFFMANN_2022.compute_optimal(BUDGETS)
    assert slope(BUDGETS, n_opt) == pytest.approx(0.46, abs=0.005)
    assert slope(BUDGETS, d_opt) == pytest.approx(0.54, abs=0.005)
    assert np.allclose(6 * n_opt * d_opt, BUDGETS, rtol=1e-12)


def test_epoch_law_is_near_20_tokens_per_parameter():
    # Besiroglu et al. 2024: their refit implies ~20 tokens per parameter, in line with
    # Hoffmann's approaches 1 and 2; Hoffmann's own approach-3 fit does not (it gives far more).
    tpp = EPOCH_2024.tokens_per_param_opt(np.array([1e22, 1e24]))
    assert np.all((tpp > 15) & (tpp < 25))
    assert HOFFMANN_2022.tokens_per_param_opt(1e24) > 2 * EPOCH_2024.tokens_per_param_opt(1e24)


@pytest.mark.parametrize("law", [HOFFMANN_2022, EPOCH_2024, KAPLAN_2020, MUENNIGHOFF_2023], ids=lambda l: l.name)
def test_closed_form_frontier_matches_numerical_iso_flop_minimum(law):
    n_closed, d_closed = law.compute_optimal(BUDGETS)
    n_num, d_num = LossLaw.compute_optimal(law, BUDGETS)  # the generic numerical search
    assert np.allclose(n_closed, n_num, rtol=1e-6)
    assert np.allclose(d_closed, d_num, rtol=1e-6)
    # And it is a minimum: moving off it along the iso-FLOP line raises the loss.
    for factor in (0.9, 1.1):
        assert np.all(law.predict(n_closed * factor, d_closed / factor) > law.predict(n_closed, d_closed))


def test_predict_broadcasts_and_matches_the_formula():
    N = np.array([[1e9], [1e10]])
    D = np.array([2e10, 2e11, 2e12])
    got = HOFFMANN_2022.predict(N, D)
    assert got.shape == (2, 3)
    expected = 1.6934 + 406.40 / N**0.33917 + 410.72 / D**0.28491
    assert np.allclose(got, expected, rtol=1e-12)


def test_kaplan_matches_eq_1_5_and_its_frontier_exponent():
    N, D = 1e9, 2e10
    expected = ((6.4e13 / N) ** (0.076 / 0.103) + 1.8e13 / D) ** 0.103
    assert float(KAPLAN_2020.predict(N, D)) == pytest.approx(expected, rel=1e-12)
    n_opt, _ = KAPLAN_2020.compute_optimal(BUDGETS)
    assert slope(BUDGETS, n_opt) == pytest.approx(1 / (1 + 0.076 / 0.103), abs=1e-6)
    assert KAPLAN_2020.n_definition == "non-embedding"


@pytest.mark.parametrize("law", [HOFFMANN_2022, EPOCH_2024, KAPLAN_2020], ids=lambda l: l.name)
def test_interval_brackets_the_prediction_and_widens_with_level(law):
    N, D = np.array([1e9, 7e10]), np.array([2e10, 1.4e12])
    center = law.predict(N, D)
    low80, high80 = law.predict_interval(N, D, 0.8)
    low95, high95 = law.predict_interval(N, D, 0.95)
    assert np.all(low95 <= low80) and np.all(low80 < center) and np.all(center < high80) and np.all(high80 <= high95)
    # A loss band of a few percent, not a degenerate or absurd one.
    assert np.all((high80 - low80) / center > 0.002) and np.all((high80 - low80) / center < 0.2)


def test_extrapolation_warnings_only_far_outside_the_fitted_runs():
    assert EPOCH_2024.extrapolation_warnings(1e9, 2e10) == []
    assert EPOCH_2024.extrapolation_warnings(7e10, 1.4e12) == []  # Chinchilla itself: 4x beyond, fine
    far = EPOCH_2024.extrapolation_warnings(np.array([1e9, 1e12]), np.array([2e10, 2e13]))
    assert any("N = 1e+12" in w for w in far) and any("D = 2e+13" in w for w in far)
    assert any("D/N" in w for w in EPOCH_2024.extrapolation_warnings(1e9, 1e9 * 1e5))


def test_overtraining_form_is_chinchilla_with_tied_exponents():
    law = OvertrainingLaw(name="t", source="test", n_definition="total", c_definition="6ND",
                          validity=EPOCH_2024.validity, E=1.8, A=500.0, B=1500.0, alpha=0.34, beta=0.34)
    N, D = np.array([1e8, 1e9, 1e10]), np.array([1e10, 3e10, 1e12])
    assert np.allclose(law.predict_cm(6 * N * D, D / N), law.predict(N, D), rtol=1e-12)
    g = law.gadre_coefficients()
    m_star = (g["b"] / g["a"]) ** (1 / (2 * g["eta"]))  # Gadre: optimal M independent of C
    assert np.allclose(law.tokens_per_param_opt(BUDGETS), m_star, rtol=1e-9)
    with pytest.raises(ValueError):
        OvertrainingLaw(name="t", source="t", n_definition="total", c_definition="6ND",
                        validity=EPOCH_2024.validity, E=1.8, A=500.0, B=1500.0, alpha=0.3, beta=0.4)


@pytest.mark.parametrize("level", [0.01, 0.05, 0.5])
def test_a_narrow_band_still_holds_the_point(level):
    """Bootstrap quantiles need not straddle the fit's own prediction: at level 0.05 the band of epoch's 70B x 15T
    was 1.93052-1.93062 beside a point of 1.93027. The band now always holds the point it is printed with."""
    N, D = np.array([7e10]), np.array([1.5e13])
    low, high = EPOCH_2024.predict_interval(N, D, level)
    center = EPOCH_2024.predict(N, D)
    assert np.all(low <= center) and np.all(center <= high)


def test_one_coefficient_sample_gives_no_spread():
    """A law saved from one bootstrap sample printed a zero-width band away from its point; fewer than two samples
    is no spread: the law's stated relative error (none here), so the band is the point."""
    one = dataclasses.replace(EPOCH_2024, samples=EPOCH_2024.samples[:1], relative_sigma=None)
    N, D = np.array([1e9, 2e10]), np.array([2e10, 2e12])
    low, high = one.predict_interval(N, D, 0.95)
    assert np.array_equal(low, one.predict(N, D)) and np.array_equal(high, one.predict(N, D))

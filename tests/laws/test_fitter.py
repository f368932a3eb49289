"""The fitter on synthetic data with known answers, its gradients, constraints and failure modes."""

from __future__ import annotations

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.laws.fitter import LawFitter
from planner.laws.forms import FORMS

TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def synthetic(rng, n=300, noise=0.0, coef=TRUE):
    N = np.exp(rng.uniform(np.log(5e7), np.log(2e10), n))
    D = N * np.exp(rng.uniform(np.log(1.0), np.log(300.0), n))
    L = coef["E"] + coef["A"] * N ** -coef["alpha"] + coef["B"] * D ** -coef["beta"]
    return N, D, L * np.exp(noise * rng.standard_normal(n))


def test_recovers_known_parameters_from_noise_free_data():
    N, D, L = synthetic(np.random.default_rng(0))
    fit = LawFitter(n_starts=5).fit(N, D, L)
    for name, value in TRUE.items():
        assert fit.coef_[name] == pytest.approx(value, rel=1e-3), name
    assert fit.objective_ < 1e-9
    assert np.max(np.abs(fit.residuals_)) < 1e-5
    assert fit.predict(1e9, 2e10) == pytest.approx(
        TRUE["E"] + TRUE["A"] * 1e9 ** -TRUE["alpha"] + TRUE["B"] * 2e10 ** -TRUE["beta"], rel=1e-6)


def test_noisy_data_recovers_exponents_roughly():
    N, D, L = synthetic(np.random.default_rng(1), n=400, noise=0.005)
    fit = LawFitter(n_starts=5).fit(N, D, L)
    assert fit.coef_["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit.coef_["beta"] == pytest.approx(TRUE["beta"], abs=0.03)
    assert fit.coef_["E"] == pytest.approx(TRUE["E"], abs=0.05)


def test_fixed_and_tied_parameters_hold_exactly():
    tied_truth = {**TRUE, "beta": TRUE["alpha"]}
    N, D, L = synthetic(np.random.default_rng(2), coef=tied_truth)
    tied = LawFitter(tied=[("alpha", "beta")], n_starts=5).fit(N, D, L)
    assert tied.coef_["alpha"] == tied.coef_["beta"] == pytest.approx(TRUE["alpha"], rel=1e-3)
    assert tied.n_free_params_ == 4
    fixed = LawFitter(fixed={"E": 1.8, "alpha": 0.35}, n_starts=5).fit(N, D, L)
    assert fixed.coef_["E"] == pytest.approx(1.8, rel=1e-12) and fixed.coef_["alpha"] == 0.35
    assert fixed.n_free_params_ == 3
    bounded = LawFitter(bounds={"beta": (None, 0.3)}, n_starts=5).fit(N, D, L)
    assert bounded.coef_["beta"] <= 0.3 + 1e-12


def test_overtraining_form_ties_exponents_by_default():
    N, D, L = synthetic(np.random.default_rng(3), coef={**TRUE, "beta": TRUE["alpha"]})
    fit = LawFitter(form="overtraining", n_starts=5).fit(N, D, L)
    assert fit.coef_["alpha"] == fit.coef_["beta"] == pytest.approx(TRUE["alpha"], rel=1e-3)
    assert fit.law_.gadre_coefficients()["eta"] == pytest.approx(TRUE["alpha"] / 2, rel=1e-3)


def test_kaplan_form_recovers_its_parameters():
    rng = np.random.default_rng(4)
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 200))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 200))
    L = ((6.4e13 / N) ** (0.076 / 0.103) + 1.8e13 / D) ** 0.103
    fit = LawFitter(form="kaplan", n_starts=20).fit(N, D, L)
    assert fit.coef_["alpha_N"] == pytest.approx(0.076, rel=1e-2)
    assert fit.coef_["alpha_D"] == pytest.approx(0.103, rel=1e-2)
    assert np.allclose(fit.predict(N, D), L, rtol=1e-4)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_analytic_gradient_matches_finite_differences(form):
    rng = np.random.default_rng(5)
    log_n, log_d = np.log(rng.uniform(1e8, 1e10, 7)), np.log(rng.uniform(1e9, 1e12, 7))
    theta = {"chinchilla": [0.6, 6.0, 7.5, 0.35, 0.37], "overtraining": [0.6, 6.0, 7.5, 0.35, 0.37],
             "kaplan": [31.0, 30.0, 0.08, 0.1],
             "farseer": [0.1, -1.0, 0.3, 0.2, 7.0, -0.2, 0.5, 0.6, -0.1]}[form]
    theta = np.array(theta, dtype=float)
    log_predict = FORMS[form].log_predict
    _, jac = log_predict(theta[None], log_n, log_d, True)
    step = 1e-6
    for k in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[k] += step
        down[k] -= step
        numeric = (log_predict(up[None], log_n, log_d, False)[0] - log_predict(down[None], log_n, log_d, False)[0]) / (2 * step)
        assert np.allclose(jac[0, k], numeric[0], rtol=1e-5, atol=1e-7), k


def test_pruned_starts_reach_the_optimum_of_many_more_starts(epoch_points):
    d = epoch_points
    pruned = LawFitter(n_starts=20).fit(d.N, d.D, d.loss)
    wide = LawFitter(n_starts=60).fit(d.N, d.D, d.loss)
    assert pruned.objective_ == pytest.approx(wide.objective_, rel=1e-9)
    for name in ("E", "alpha", "beta"):
        assert pruned.coef_[name] == pytest.approx(wide.coef_[name], rel=1e-5)


def test_non_convergence_raises_a_one_line_input_error():
    N, D, L = synthetic(np.random.default_rng(6), noise=0.01)
    with pytest.raises(PlannerInputError, match="did not converge") as caught:
        LawFitter(max_iter=2, n_starts=3).fit(N, D, L)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("bad", ["nan", "zero", "negative", "inf"])
def test_bad_values_are_refused(bad):
    N, D, L = synthetic(np.random.default_rng(7), n=20)
    L[3] = {"nan": np.nan, "zero": 0.0, "negative": -1.0, "inf": np.inf}[bad]
    with pytest.raises(PlannerInputError, match="loss"):
        LawFitter().fit(N, D, L)


def test_fewer_points_than_parameters_is_refused():
    N, D, L = synthetic(np.random.default_rng(8), n=5)
    with pytest.raises(PlannerInputError, match="5 data point.*5 free parameters"):
        LawFitter().fit(N, D, L)
    LawFitter(fixed={"E": 1.8}, n_starts=3).fit(N, D, L)  # 4 free parameters: enough


def test_unknown_parameter_names_are_refused():
    N, D, L = synthetic(np.random.default_rng(9), n=20)
    with pytest.raises(PlannerInputError, match="'gamma' is not in the chinchilla form"):
        LawFitter(fixed={"gamma": 1.0}).fit(N, D, L)
    with pytest.raises(PlannerInputError, match="unknown law form"):
        LawFitter(form="nope").fit(N, D, L)

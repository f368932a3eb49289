"""Golden fits on the shared data: Epoch's Chinchilla refit and the Gemstones extrapolation."""

from __future__ import annotations

import numpy as np
import pytest

from planner.laws.bootstrap import bootstrap_over_runs, frontier_samples, parameter_intervals, percentile_interval
from planner.laws.data import read_loss_data
from planner.laws.fitter import LawFitter
from planner.laws.holdout import extrapolation_error, heldout_runs

# Besiroglu et al. 2024, Table 1 (estimate, bootstrap standard error).
EPOCH = {"E": (1.8172, 0.03), "A": (482.01, 124.58), "B": (2085.43, 1293.23),
         "alpha": (0.3478, 0.02), "beta": (0.3658, 0.02)}


def epoch_tokens_per_param(C: float) -> float:
    """D_opt/N_opt from Epoch's published coefficients, by Hoffmann's eq. 4 written out here."""
    E, A, B, alpha, beta = (EPOCH[k][0] for k in ("E", "A", "B", "alpha", "beta"))
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return (C / 6) ** b / G / (G * (C / 6) ** a)


@pytest.fixture(scope="module")
def epoch_fit(epoch_points):
    d = epoch_points
    return LawFitter().fit(d.N, d.D, d.loss)


def test_epoch_refit_reproduces_published_estimates(epoch_points, epoch_fit):
    assert epoch_points.loss.size == 240
    c = epoch_fit.coef_
    assert c["alpha"] == pytest.approx(0.348, abs=0.01)
    assert c["beta"] == pytest.approx(0.366, abs=0.01)
    assert c["E"] == pytest.approx(1.82, abs=0.02)
    # A and B are weakly identified: only ask for the published value within one standard error.
    for name in ("A", "B"):
        assert abs(c[name] - EPOCH[name][0]) < EPOCH[name][1]
    ours = float(epoch_fit.law_.tokens_per_param_opt(1e24))
    assert ours == pytest.approx(epoch_tokens_per_param(1e24), rel=0.10)


def test_epoch_bootstrap_intervals(epoch_points, epoch_fit):
    d = epoch_points
    boot = bootstrap_over_runs(epoch_fit, d.N, d.D, d.loss, d.run, n_resamples=60, seed=1)
    assert boot.n_failed == 0
    intervals = parameter_intervals(boot, level=0.9)
    assert intervals["beta"]["low"] < 0.366 < intervals["beta"]["high"]
    assert intervals["alpha"]["low"] < 0.348 < intervals["alpha"]["high"]
    # Bootstrap standard errors of the exponents and E agree with Epoch's to within a factor 2.
    for name in ("E", "alpha", "beta"):
        assert 0.5 < intervals[name]["se"] / EPOCH[name][1] < 2.0, name
    # Derived: tokens per parameter at 1e24 has an interval that holds Epoch's ~18.
    tpp = frontier_samples(epoch_fit.law_, boot.samples, np.array([1e24]))["tokens_per_param"]
    low, high = percentile_interval(tpp, 0.9)
    assert low[0] < epoch_tokens_per_param(1e24) < high[0]


def test_gemstones_extrapolation_to_larger_models(gemstones_hot):
    data = read_loss_data(str(gemstones_hot))
    assert data.n_runs == 22 and data.loss.size == 770
    fitter = LawFitter()
    mask, rule = heldout_runs(data, n_above=600e6)
    result = extrapolation_error(fitter, data, mask, rule)
    assert result.n_heldout_runs == 6 and result.n_train_runs == 16
    assert all(row["N"] > 600e6 and row["D"] == pytest.approx(3.5e11, rel=0.01) for row in result.rows)
    assert result.mean_abs_rel_error < 0.02

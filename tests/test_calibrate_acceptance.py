"""Calibration on real measurements: the committed cpu-local profiles and the published A100 runs.

These hold the figures the calibration issue asks for, on the data committed to the repo (the
profiles) and in data/ (the published runs), with explicit tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from planner.calibrate.calibration import calibrate
from planner.calibrate.samples import load_samples, predict
from planner.specs.clusters import load_cluster
from planner.profile.runs_csv import read_runs

pytestmark = pytest.mark.xdist_group("test_calibrate_acceptance")  # its module fixtures built once (pyproject.toml)


HELD_OUT_TARGET = 0.15  # the bar for held-out step-time MAPE on the committed profiles

# The published runs split by source into two halves of about 20 rows, each with one of Narayanan's
# tables, one of Korthikanti's two settings, and a third source.
HALF_A = ("Korthikanti22 Table3/Table5", "Narayanan21 SC21 Table1", "llm-foundry benchmarking/README.md")


@pytest.fixture(scope="module")
def cpu_local_report(repo_root):
    runs, problems = read_runs(repo_root / "profiles" / "cpu-local.csv")
    assert not problems
    cluster = load_cluster("cpu-local")
    samples, skipped = load_samples(runs, cluster, "step_time_p10_s")
    assert len(samples) >= 50 and not skipped
    return calibrate(samples, cluster, k=5)


def test_committed_profiles_calibrate_under_the_held_out_target(cpu_local_report):
    held = cpu_local_report["heldout"]
    assert held["after"]["mape"] < HELD_OUT_TARGET
    assert held["after"]["mape"] < held["before"]["mape"] / 2
    assert "selection and fit redone per fold" in cpu_local_report["heldout_kind"]
    assert cpu_local_report["train"]["after"]["mape"] < cpu_local_report["train"]["before"]["mape"]


def test_committed_calibrated_spec_predicts_the_profiles_it_was_made_from(repo_root, cpu_local_report):
    runs, _ = read_runs(repo_root / "profiles" / "cpu-local.csv")
    calibrated = load_cluster("cpu-local.calibrated")
    samples, _ = load_samples(runs, calibrated, "step_time_p10_s")
    measured = np.array([s.run.step_time_s for s in samples])
    mape = float(np.mean(np.abs(predict(samples, calibrated) / measured - 1)))
    # The committed spec is what `planner calibrate` writes from these rows today (within rounding).
    assert mape == pytest.approx(cpu_local_report["train"]["after"]["mape"], abs=0.005)
    for name, value in cpu_local_report["fitted_parameters"].items():
        assert getattr(calibrated.efficiency, name) == pytest.approx(value, rel=0.02)


@pytest.fixture(scope="module")
def published_halves(shared_dir):
    runs, _ = read_runs(shared_dir / "data" / "runs" / "published_runs_dev.csv")
    cluster = load_cluster("dgx-a100-80gb")
    samples, _ = load_samples(runs, cluster)
    half_a = [s for s in samples if s.group in HALF_A]
    half_b = [s for s in samples if s.group not in HALF_A]
    assert {s.group for s in half_a} == set(HALF_A) and len({s.group for s in half_b}) == 3
    return cluster, half_a, half_b


def test_a_calibration_that_would_not_generalise_is_not_applied(published_halves):
    """Half B holds Narayanan's 2021 DeepSpeed ZeRO-3 rows, which the model of today's DeepSpeed and NCCL
    predicts 25-75% too fast (the cost model's known gap, issue 11's closing note). Calibrated on B, the
    selection learns a slow scale-out network and latency that would not transfer: the nested
    cross-validation by source sees it, and the guard keeps the defaults exactly when the held-out error
    after is not below the defaults'."""
    cluster, half_a, half_b = published_halves
    report = calibrate(half_b, cluster, k=3)
    held = report["heldout"]
    assert "selection and fit redone per fold" in report["heldout_kind"]
    assert report["applied"] == (held["after"]["mape"] < held["before"]["mape"])
    if not report["applied"]:
        assert report["fitted_parameters"] == {} and report["cluster"] == cluster


def test_calibrating_on_the_other_half_never_makes_the_held_out_half_much_worse(published_halves):
    """Fitted on half A (Megatron Table 1, Korthikanti full recompute, llm-foundry: 5.6% MAPE with the
    defaults), the calibration changes little and predicts half B within a point of the defaults."""
    cluster, half_a, half_b = published_halves
    report = calibrate(half_a, cluster, holdout=half_b)
    assert report["train"]["after"]["mape"] <= report["train"]["before"]["mape"]
    assert report["heldout"]["after"]["mape"] <= report["heldout"]["before"]["mape"] + 0.01


def test_committed_calibrated_spec_records_what_it_was_fitted_on(repo_root):
    """The shipped spec lacked `calibrated_on` (written by every `planner calibrate` since the band was kept):
    simulate and optimize then gave its predictions the published runs' band from other hardware, and no warning
    for a stack or dtype its rows did not have."""
    runs, _ = read_runs(repo_root / "profiles" / "cpu-local.csv")
    recorded = load_cluster("cpu-local.calibrated").calibrated_on
    assert recorded is not None and recorded.held_out_rows == len(runs)
    assert set(recorded.frameworks) == {r.extra["framework"] for r in runs}
    assert set(recorded.dtypes) == {r.dtype for r in runs}
    low, high = recorded.held_out_step_time_ratio_90
    assert 0 < low < 1 < high


def test_committed_calibrated_band_is_the_calibrations_own(cpu_local_report):
    low, high = load_cluster("cpu-local.calibrated").calibrated_on.held_out_step_time_ratio_90
    assert (low, high) == pytest.approx((cpu_local_report["held_out_band"]["low"],
                                         cpu_local_report["held_out_band"]["high"]), abs=0.005)

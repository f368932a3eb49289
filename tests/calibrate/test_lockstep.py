"""Fits run side by side (calibrate.lockstep) give what they give one after another, and fail as they would.

The forward selection's candidate fits run in lockstep, their cost-model calls priced together; each fit must see
exactly the numbers it would alone, so the selection's cross-validated errors, and the parameters it picks, are the
same to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from planner.calibrate import selection
from planner.calibrate.lockstep import run_together
from planner.calibrate.samples import load_samples, sample_batch
from planner.cost.step_time import step_time
from planner.profile.runs_csv import read_runs
from planner.specs.clusters import load_cluster


@pytest.fixture(scope="module")
def published(shared_dir):
    """Two sources of the published A100 runs (Narayanan's Table 1, Korthikanti's tables): 14 rows, two groups."""
    runs, _ = read_runs(shared_dir / "data" / "runs" / "published_runs_dev.csv")
    cluster = load_cluster("dgx-a100-80gb")
    samples, _ = load_samples(runs, cluster)
    kept = [s for s in samples if s.group in ("Korthikanti22 Table3/Table5", "Narayanan21 SC21 Table1")]
    assert len(kept) >= 10
    return kept, cluster


def test_each_job_gets_its_own_rows_priced_and_jobs_that_never_ask_end_too(published):
    samples, cluster = published
    batch = sample_batch(samples)
    settings = [{"matmul_peak_fraction": 0.5}, {"latency_scale": 30.0, "hbm_efficiency": 0.4}]

    def asking(rows, times):  # asks `times` times for its rows, under the settings
        return lambda ask: [ask(rows, settings) for _ in range(times)]

    jobs = [asking(np.arange(0, 5), 3), asking(np.arange(3, 11), 1), lambda ask: "no request", asking(None, 2)]
    results = run_together(batch, cluster, jobs)
    assert results[2] == "no request"
    for rows, answers in ((np.arange(0, 5), results[0]), (np.arange(3, 11), results[1]), (None, results[3])):
        own = batch if rows is None else batch.take(rows)
        alone = np.stack([step_time(own, cluster.with_efficiency(**s))["step_time_s"] for s in settings])
        for answer in answers:
            np.testing.assert_array_equal(answer, alone)


def test_the_first_failing_job_in_order_raises_after_every_job_ended(published):
    samples, cluster = published
    ended = []

    def failing(label):
        def job(ask):
            ask(np.arange(2), [{}])
            ended.append(label)
            raise ValueError(label)
        return job

    def fine(ask):
        ask(np.arange(3), [{}, {"dp_overlap": 0.5}])
        ended.append("fine")
        return "ok"

    with pytest.raises(ValueError, match="^second$"):
        run_together(sample_batch(samples), cluster, [fine, failing("second"), failing("third")])
    assert sorted(ended) == ["fine", "second", "third"]


def test_a_selection_round_in_lockstep_scores_as_one_fit_after_another(published):
    samples, cluster = published
    name_sets = [["matmul_peak_fraction"], ["latency_scale"], ["hbm_efficiency", "dp_overlap"]]
    together = selection._cv_mapes(samples, cluster, name_sets, 2)
    alone = [selection._cv_mape(samples, cluster, names, 2) for names in name_sets]
    assert together == alone  # exactly: the same fits, the same numbers


def test_a_request_that_fails_fails_its_own_job_only(published):
    """Pricing a round together fails on one job's bad rows: each request is then priced alone, so the other job
    gets its numbers and the bad one its own error (the first failing job in order, as one after another)."""
    samples, cluster = published
    got = []

    def good(ask):
        got.append(ask(np.arange(4), [{}]))
        return "good"

    def bad(ask):
        return ask(np.array([10_000]), [{}])  # no such row

    with pytest.raises(IndexError):
        run_together(sample_batch(samples), cluster, [good, bad])
    assert len(got) == 1 and got[0].shape == (1, 4)


def test_jobs_run_under_the_callers_numpy_error_state(published):
    samples, cluster = published
    with np.errstate(divide="raise"):
        with pytest.raises(FloatingPointError):
            run_together(sample_batch(samples), cluster, [lambda ask: np.float64(1.0) / 0.0])
    with pytest.warns(RuntimeWarning, match="divide by zero"):  # numpy's default state, where the caller kept it
        assert run_together(sample_batch(samples), cluster, [lambda ask: np.float64(1.0) / 0.0]) == [np.inf]
